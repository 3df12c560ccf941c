//! The benchmark database: a named database on the tests' PostgreSQL
//! server, created, migrated, reused or dropped, and the store opened on it
//! the way a benchmark needs (the one place benchmarks open a `PgStore`).

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use remaudit_store::{HealthStore as _, PgStore, PoolSettings};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool};

use super::mib;

use super::print_step;
use crate::{ADMIN_URL_VAR, admin_url};

/// A URL with its password (if any) replaced by `***`, for messages.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split_once(':').map_or(user_info, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

/// A named database for one benchmark, kept between runs unless dropped.
#[derive(Debug, Clone)]
pub struct BenchDb {
    /// The database's name.
    pub name: String,
    /// Its URL.
    pub url: String,
    admin_url: String,
}

impl BenchDb {
    /// The database `name` on the benchmarks' server (not created yet).
    ///
    /// # Errors
    /// When the name is not lower-case letters, digits and underscores.
    pub fn named(name: &str) -> anyhow::Result<Self> {
        ensure!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "database name {name:?}: use lower-case letters, digits and underscores (BENCH_DATABASE)"
        );
        let admin_url = admin_url();
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        Ok(Self {
            name: name.to_owned(),
            url: format!("{base}/{name}"),
            admin_url,
        })
    }

    async fn admin(&self) -> anyhow::Result<PgConnection> {
        PgConnection::connect(&self.admin_url).await.with_context(|| {
            format!(
                "cannot reach PostgreSQL at {} ({ADMIN_URL_VAR}); the scripts/bench-* scripts start it",
                without_password(&self.admin_url)
            )
        })
    }

    /// Whether the database exists.
    ///
    /// # Errors
    /// When PostgreSQL is not reachable.
    pub async fn exists(&self) -> anyhow::Result<bool> {
        let mut admin = self.admin().await?;
        let exists =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&self.name)
                .fetch_one(&mut admin)
                .await?;
        admin.close().await?;
        Ok(exists)
    }

    /// Drops the database when it exists, then creates it empty.
    ///
    /// # Errors
    /// When PostgreSQL refuses.
    pub async fn recreate(&self) -> anyhow::Result<()> {
        let mut admin = self.admin().await?;
        for sql in [
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            format!("CREATE DATABASE {}", self.name),
        ] {
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut admin)
                .await?;
        }
        admin.close().await?;
        Ok(())
    }

    /// Drops the database.
    ///
    /// # Errors
    /// When PostgreSQL refuses.
    pub async fn drop_database(&self) -> anyhow::Result<()> {
        let mut admin = self.admin().await?;
        // `WITH (FORCE)` cannot end a superuser's session, and a superuser
        // connection the benchmark closed may still be exiting: wait for it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let superusers: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid \
                 WHERE a.datname = $1 AND r.rolsuper",
            )
            .bind(&self.name)
            .fetch_one(&mut admin)
            .await?;
            if superusers == 0 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "a superuser session is still connected to {} after 30 s",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }

    /// Applies the store's migrations to the (new, empty) database and
    /// prints how long they took.
    ///
    /// # Errors
    /// When the store cannot be opened.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let t = Instant::now();
        PgStore::connect(&self.url, PoolSettings::default())
            .await?
            .close()
            .await;
        print_step("migrations", t.elapsed().as_secs_f64(), "");
        Ok(())
    }

    /// Whether a loaded database can be reused as it is: the store opens
    /// it (applying any migration it lacks) and finds its schema its own.
    /// `false`, after saying so, when a migration changed since the load,
    /// so that the data must be loaded again.
    ///
    /// # Errors
    /// When the store cannot be opened for another reason.
    pub async fn schema_current(&self) -> anyhow::Result<bool> {
        match PgStore::connect(&self.url, PoolSettings::default()).await {
            Ok(store) => {
                store.close().await;
                Ok(true)
            }
            Err(e @ remaudit_store::StoreError::Schema(_)) => {
                println!("  the schema changed since the load ({e}): loading it afresh");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Drops the database when `drop` is set (smoke runs always do), or
    /// says how to reuse it.
    ///
    /// # Errors
    /// When PostgreSQL refuses the drop.
    pub async fn finish(&self, drop: bool) -> anyhow::Result<()> {
        if drop {
            self.drop_database().await?;
            println!("dropped {}", self.name);
        } else {
            println!(
                "kept {} for --reuse (drop it with --drop, or DROP DATABASE {})",
                self.name, self.name
            );
        }
        Ok(())
    }
}

/// A plain pool of at most `max_connections` to `url`, for the
/// benchmark's own SQL.
///
/// # Errors
/// When PostgreSQL cannot be reached.
pub async fn pool(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .connect(url)
        .await?)
}

/// Prints the size of the database `pool` is connected to.
///
/// # Errors
/// When PostgreSQL refuses.
pub async fn print_database_size(pool: &PgPool) -> anyhow::Result<()> {
    let database: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(pool)
        .await?;
    println!("database size {:.0} MiB", mib(database));
    Ok(())
}

/// How a benchmark opens the store: what it changes from the store's
/// default pool settings, and the `application_name` of its sessions (so
/// that `pg_stat_activity` tells who is who).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreOptions {
    /// Tags the sessions, when set.
    pub application: Option<&'static str>,
    /// Most connections of the main pool, when not the default.
    pub max_connections: Option<u32>,
    /// How long a call waits for a connection, when not the default.
    pub acquire_timeout: Option<Duration>,
    /// The statement timeout of reads, when not the default (28 s).
    pub read_statement_timeout: Option<Duration>,
}

/// Opens the PostgreSQL store at `url` (applying its migrations).
///
/// # Errors
/// When the store cannot be opened.
pub async fn pg_store(url: &str, options: StoreOptions) -> anyhow::Result<PgStore> {
    let url = match options.application {
        Some(app) => format!("{url}?application_name={app}"),
        None => url.to_owned(),
    };
    let defaults = PoolSettings::default();
    let settings = PoolSettings {
        max_connections: options.max_connections.unwrap_or(defaults.max_connections),
        acquire_timeout: options.acquire_timeout.unwrap_or(defaults.acquire_timeout),
        read_statement_timeout: options
            .read_statement_timeout
            .or(defaults.read_statement_timeout),
        ..defaults
    };
    Ok(PgStore::connect(&url, settings).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_hide_the_password() {
        assert_eq!(
            without_password("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(without_password("postgres://h/db"), "postgres://h/db");
    }
}
