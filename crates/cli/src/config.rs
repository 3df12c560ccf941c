//! `remaudit config print COMMAND`: the settings a command would run with,
//! after the defaults, the settings file, the environment and the flags, as
//! TOML (a settings file in its own right), with secrets redacted.

use std::path::Path;

use clap::ArgMatches;
use serde::Serialize;

use crate::DatabaseArgs;
use crate::controller::{ControllerArgs, ControllerSettings};
use crate::publish::{PublishArgs, PublishSettings};
use crate::retention::PolicyArgs;
use crate::settings::{
    MigrateArgs, MigrateSettings, RetentionRunSettings, ServeArgs, ServeSettings, read_file,
    redact_url,
};

/// `remaudit config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Print the effective settings of a command as TOML (secrets redacted):
    /// its defaults, then the settings file, then the environment, then the
    /// flags given after the command's name.
    Print {
        #[command(subcommand)]
        process: Process,
    },
}

/// The commands that read a settings file.
#[derive(Debug, clap::Subcommand)]
enum Process {
    /// The settings of `remaudit serve`.
    Serve(ServeArgs),
    /// The settings of `remaudit migrate`.
    Migrate(MigrateArgs),
    /// The settings of `remaudit publish`.
    Publish(PublishArgs),
    /// The settings of `remaudit controller`.
    Controller(ControllerArgs),
    /// The settings of `remaudit retention run | verify`.
    Retention {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

/// Prints the settings; `m` are the matches of the command's own flags.
///
/// # Errors
/// An unreadable or invalid settings file, or a value out of range.
pub fn run(args: &ConfigArgs, m: &ArgMatches, file: Option<&Path>) -> anyhow::Result<u8> {
    let ConfigCommand::Print { process } = &args.command;
    let text = match process {
        Process::Serve(args) => {
            let mut s = ServeSettings::load(args, m, file)?;
            // The effective value, derived from the request timeout when unset.
            s.analytics_statement_timeout_secs =
                Some(s.pool().read_statement_timeout.map_or(0, |d| d.as_secs()));
            to_toml(&s)?
        }
        Process::Migrate(args) => to_toml(&MigrateSettings::load(args, m, file)?)?,
        Process::Publish(args) => {
            let mut s = PublishSettings::load(args, m, file)?;
            s.publisher.url = redact_url(&s.publisher.url);
            to_toml(&s)?
        }
        Process::Controller(args) => {
            let mut s = ControllerSettings::load(args, m, file)?;
            s.publisher.url = redact_url(&s.publisher.url);
            to_toml(&s)?
        }
        Process::Retention { .. } => to_toml(&RetentionRunSettings::load(read_file(file)?, m)?)?,
    };
    print!("{text}");
    Ok(0)
}

fn to_toml(settings: &impl Serialize) -> anyhow::Result<String> {
    Ok(toml::to_string(settings)?)
}
