//! `remaudit serve` as a child process of a benchmark: the service runs
//! as it does in production (its own `main`, settings from flags), and its
//! peak resident memory is its own, apart from the load the benchmark
//! generates.
//!
//! The binary is `REMAUDIT_BENCH_BIN` when set, else the `remaudit` beside
//! the benchmark's own build directory (`target/<profile>/remaudit`), which
//! the `scripts/bench-*` scripts build before each run; its path and build
//! time are printed once. It runs under `setpriv --pdeathsig TERM`, so it
//! stops when the benchmark dies, and without the benchmark's `REMAUDIT_*`
//! variables, so only the flags given configure it.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;

/// The variable that names the `remaudit` binary to run.
pub const BIN_VAR: &str = "REMAUDIT_BENCH_BIN";

/// How long a service may take to listen and answer `/readyz`.
const START_PATIENCE: Duration = Duration::from_mins(2);

/// How long a service may take to stop after SIGTERM before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(30);

/// Log lines kept for a failure's message.
const LOG_TAIL: usize = 40;

/// The largest peak memory of any service this process ran, in bytes.
static LARGEST_PEAK: AtomicU64 = AtomicU64::new(0);

/// How many services this process measured.
static MEASURED: AtomicUsize = AtomicUsize::new(0);

/// A running `remaudit serve`; killed if dropped before [`Service::stop`].
pub struct Service {
    name: String,
    child: Child,
    base: String,
    log: Arc<Mutex<VecDeque<String>>>,
    /// The thread that reads the log; joined once the service has exited,
    /// so that an error message holds its last lines.
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    /// Starts `remaudit serve` on a free loopback port (`--listen
    /// 127.0.0.1:0`), with JSON logs, no retention job and then `args`, and
    /// waits until `/readyz`
    /// answers 200 through `http`. `tls`: the service serves HTTPS, and is
    /// addressed as `localhost`, the name its test certificate holds.
    ///
    /// # Errors
    /// When the binary cannot be found or started, or the service exits or
    /// does not become ready in two minutes; the message ends with its log.
    pub async fn start(
        name: &str,
        args: &[String],
        http: &reqwest::Client,
        tls: bool,
    ) -> anyhow::Result<Self> {
        static ANNOUNCED: std::sync::Once = std::sync::Once::new();
        let binary = binary()?;
        ANNOUNCED.call_once(|| println!("remaudit serve: {}", describe_binary(&binary)));
        // `setpriv --pdeathsig` (util-linux) asks the kernel to send the
        // service SIGTERM if the thread that started it dies, so a benchmark
        // killed outright leaves no service behind; it then execs the binary,
        // so the child's pid (and its VmHWM) is the service's own.
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig", "TERM", "--"])
            .arg(&binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--retention-interval-secs", "0"])
            .args(args);
        // Only the flags given here configure the service, never settings
        // the benchmark's own environment happens to carry.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REMAUDIT_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} through setpriv (util-linux)",
                    binary.display()
                )
            })?;
        let stderr = child.stderr.take().context("the child's standard error")?;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        let (address_tx, address_rx) = tokio::sync::oneshot::channel();
        // Reads the log until the process ends, so that a full pipe never
        // blocks the service; keeps the tail for error messages.
        let drain = std::thread::spawn({
            let log = log.clone();
            move || drain_log(stderr, &log, address_tx)
        });
        let mut service = Self {
            name: name.to_owned(),
            child,
            base: String::new(),
            log,
            drain: Some(drain),
        };
        let address = match tokio::time::timeout(START_PATIENCE, address_rx).await {
            Ok(Ok(address)) => address,
            Ok(Err(_)) => return Err(service.failed("exited before it listened")),
            Err(_) => return Err(service.failed("did not listen within two minutes")),
        };
        let port = address.rsplit_once(':').map_or("", |(_, port)| port);
        service.base = if tls {
            format!("https://localhost:{port}")
        } else {
            format!("http://127.0.0.1:{port}")
        };
        let deadline = tokio::time::Instant::now() + START_PATIENCE;
        loop {
            let ready = http
                .get(format!("{}/readyz", service.base))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(service);
            }
            if service.child.try_wait()?.is_some() {
                return Err(service.failed("exited before it was ready"));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(service.failed("was not ready within two minutes"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The service's base URL, such as `http://127.0.0.1:40123`.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The service's peak resident memory so far (`VmHWM`), in bytes.
    #[must_use]
    pub fn peak_memory(&self) -> Option<u64> {
        vm_hwm(&format!("/proc/{}/status", self.child.id()))
    }

    /// Reads the service's peak memory, prints it under the service's
    /// name, stops the service with SIGTERM and checks that it exited
    /// cleanly; returns the peak in bytes.
    ///
    /// # Errors
    /// When `/proc` does not give the peak, or the service does not stop
    /// cleanly within 30 s (it is then killed).
    pub async fn stop(mut self) -> anyhow::Result<u64> {
        let peak = self
            .peak_memory()
            .ok_or_else(|| self.failed("gave no VmHWM in /proc"))?;
        LARGEST_PEAK.fetch_max(peak, Ordering::Relaxed);
        MEASURED.fetch_add(1, Ordering::Relaxed);
        println!(
            "{}: peak memory (VmHWM) of remaudit serve: {:.1} MiB",
            self.name,
            peak_mib(peak)
        );
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("cannot run kill")?;
        anyhow::ensure!(status.success(), "kill -TERM {}: {status}", self.child.id());
        let deadline = tokio::time::Instant::now() + STOP_PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if status.success() {
                    return Ok(peak);
                }
                return Err(self.failed(&format!("stopped with {status}")));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.failed("did not stop within 30 s of SIGTERM"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An error naming the service and `what`, with the end of its log
    /// (all of it, when the service has exited).
    fn failed(&mut self, what: &str) -> anyhow::Error {
        if matches!(self.child.try_wait(), Ok(Some(_)))
            && let Some(drain) = self.drain.take()
        {
            let _ = drain.join();
        }
        let tail = self
            .log
            .lock()
            .map(|log| Vec::from(log.clone()).join("\n"))
            .unwrap_or_default();
        anyhow::anyhow!(
            "{}: remaudit serve {what}; its log ends:\n{tail}",
            self.name
        )
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Prints the largest peak memory of the services this process ran, when
/// it ran any; called at the end of every benchmark.
pub(super) fn print_largest_peak() {
    let measured = MEASURED.load(Ordering::Relaxed);
    if measured > 0 {
        println!(
            "peak memory (VmHWM) of remaudit serve, the largest of its {measured} run(s): {:.1} MiB",
            peak_mib(LARGEST_PEAK.load(Ordering::Relaxed))
        );
    }
}

/// `VmHWM` of the status file at `path`, in bytes.
pub(super) fn vm_hwm(path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A peak from [`vm_hwm`] in MiB, through the benchmarks' one [`mib`](super::mib).
pub(super) fn peak_mib(bytes: u64) -> f64 {
    super::mib(i64::try_from(bytes).unwrap_or(i64::MAX))
}

/// The `remaudit` binary: [`BIN_VAR`], or `remaudit` in the directory
/// above the benchmark's own (`target/<profile>/deps/<bench>-<hash>`).
fn binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(BIN_VAR) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let beside = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("remaudit"));
    match beside {
        Some(path) if path.is_file() => Ok(path),
        _ => anyhow::bail!(
            "no remaudit binary in the build directory of {}: run the benchmark through its scripts/bench-* script (which builds it), build it with `cargo build [--release] --bin remaudit`, or set {BIN_VAR}",
            exe.display()
        ),
    }
}

/// The binary's path and when it was built, so that a figure can be
/// traced to the build it measured.
fn describe_binary(binary: &Path) -> String {
    let built = std::fs::metadata(binary)
        .and_then(|m| m.modified())
        .map_or_else(
            |e| format!("unknown ({e})"),
            |t| {
                chrono::DateTime::<chrono::Utc>::from(t)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            },
        );
    format!("{} (built {built})", binary.display())
}

/// Keeps the last [`LOG_TAIL`] lines of the service's JSON log, and sends
/// the address from its "remaudit listening" line.
fn drain_log(
    stderr: std::process::ChildStderr,
    log: &Mutex<VecDeque<String>>,
    address_tx: tokio::sync::oneshot::Sender<String>,
) {
    let mut address_tx = Some(address_tx);
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if address_tx.is_some()
            && let Some(address) = listening_address(&line)
            && let Some(tx) = address_tx.take()
        {
            let _ = tx.send(address);
        }
        if let Ok(mut log) = log.lock() {
            if log.len() == LOG_TAIL {
                log.pop_front();
            }
            log.push_back(line);
        }
    }
}

/// The address in a JSON log line that says the service is listening.
fn listening_address(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != "remaudit listening" {
        return None;
    }
    Some(fields.get("address")?.as_str()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address_and_others_give_none() {
        let line = r#"{"timestamp":"t","level":"INFO","fields":{"message":"remaudit listening","address":"127.0.0.1:40123","database":"postgres","tls":false},"target":"remaudit"}"#;
        assert_eq!(listening_address(line).as_deref(), Some("127.0.0.1:40123"));
        let other = r#"{"fields":{"message":"retention job scheduled","address":"x"}}"#;
        assert_eq!(listening_address(other), None);
        assert_eq!(listening_address("not json"), None);
    }

    #[test]
    fn vm_hwm_reads_this_process_in_bytes() {
        let peak = vm_hwm("/proc/self/status").expect("Linux gives VmHWM");
        assert!(peak > 1024 * 1024, "{peak} bytes is less than a MiB");
        assert_eq!(vm_hwm("/proc/self/no-such-file"), None);
    }
}
