use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Environment variable naming the `moto_server` executable; `scripts/moto-prepare` exports it.
pub const MOTO_SERVER_VAR: &str = "REMAUDIT_MOTO_SERVER";

/// How long moto may take to answer after it is started (it usually needs about a second).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the endpoint is tried while moto starts.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A moto server (S3 in server mode) of its own on a free `127.0.0.1` port,
/// killed when dropped.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
    /// moto's stdout and stderr (a line per request), shown when it fails to start.
    log: tempfile::NamedTempFile,
    http: reqwest::Client,
}

impl MotoServer {
    /// Starts `$REMAUDIT_MOTO_SERVER` (`moto_server` on `PATH` when unset) and
    /// waits until it answers HTTP.
    ///
    /// # Panics
    /// When moto is not installed (the message says to run
    /// `scripts/moto-prepare`), or it exits or does not answer in time.
    pub async fn start() -> Self {
        let program =
            std::env::var_os(MOTO_SERVER_VAR).unwrap_or_else(|| OsString::from("moto_server"));
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("temporary file for moto's log");
        let output = || log.reopen().expect("reopen moto's log");
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(output())
            .stderr(output())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "\n\n*** tests need moto, the local S3 server, but {} could not be started: {e}.\n\
                     *** Run `source scripts/moto-prepare` (scripts/test does), which installs \
                     moto[server] from PyPI and sets {MOTO_SERVER_VAR}. ***\n\n",
                    program.to_string_lossy()
                )
            });
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        let mut server = Self {
            child,
            port,
            log,
            http,
        };
        server.wait_until_ready().await;
        server
    }

    /// The server's base URL, `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (an unsigned `PUT /BUCKET`, which moto accepts).
    ///
    /// # Panics
    /// When moto does not answer with success.
    pub async fn create_bucket(&self, name: &str) {
        let url = format!("{}/{name}", self.endpoint());
        let response = self
            .http
            .put(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "creating bucket {name}: PUT {url} answered {status}: {body}"
        );
    }

    /// The environment under which `object_store`'s `AmazonS3Builder::from_env()`
    /// talks to this server, with static test credentials.
    #[must_use]
    pub fn s3_env(&self) -> Vec<(String, String)> {
        let endpoint = self.endpoint();
        [
            // object_store reads both names into the same setting.
            ("AWS_ENDPOINT", endpoint.as_str()),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
    }

    /// Polls the endpoint until moto answers; panics with its log when it
    /// exits first or the time runs out.
    async fn wait_until_ready(&mut self) {
        let url = self.endpoint();
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ready = tokio::time::timeout(STARTUP_TIMEOUT, async {
            loop {
                tick.tick().await;
                if let Some(status) = self.child.try_wait().expect("poll moto_server") {
                    return Err(format!("moto_server exited with {status}"));
                }
                // Connection refused until moto listens; any HTTP answer means it serves.
                if self.http.get(&url).send().await.is_ok() {
                    return Ok(());
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "moto_server did not answer at {url} within {STARTUP_TIMEOUT:?}"
            ))
        });
        if let Err(why) = ready {
            let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
            panic!("{why}; its output:\n{log}");
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago: bound on port 0, then released
/// for moto to bind.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind a free loopback port")
        .port()
}
