//! The services under test as child processes, and what `/proc` tells about them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use rand::RngCore as _;

/// How long a service may take to answer `/readyz` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a service may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A service binary in `bin_dir`, by default the directory of the running `wfctl`
/// (`target/release/` for `cargo run --release -p wfctl`).
pub fn service_binary(bin_dir: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    let dir = match bin_dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_exe()
            .context("locating the wfctl executable")?
            .parent()
            .context("the wfctl executable has no parent directory")?
            .to_path_buf(),
    };
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{name} not found at {}: wfctl bench runs the real {name} binary, next to wfctl \
         unless --bin-dir says otherwise. Build the services first with \
         `cargo build --release -p wf-worker -p wf-ingestor` (or `make build`), then run \
         `make bench` / `target/release/wfctl bench` again",
        path.display()
    );
    Ok(path)
}

/// A note when `bin` was built before the running wfctl: `make bench` rebuilds only
/// wfctl, so a service binary older than it may not contain the latest changes.
pub fn staleness_note(bin: &Path) -> Option<String> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let exe = std::env::current_exe().ok()?;
    let (service, wfctl) = (modified(bin)?, modified(&exe)?);
    let behind = wfctl.duration_since(service).ok()?;
    (behind > std::time::Duration::from_secs(60)).then(|| {
        format!(
            "note: {} was built {} min before this wfctl; if the services changed since, \
             run `cargo build --release --workspace` (make build) first",
            bin.display(),
            behind.as_secs() / 60
        )
    })
}

/// A free loopback port: bound, read and released (the child binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The `WF_*` variables every service of a run shares, and the start of each service
/// with them.
#[derive(Clone, Debug)]
pub struct ServiceVars {
    vars: Vec<(String, String)>,
    /// The `WF_SECRET_KEY` of the run (fresh, random): the key of webhook secrets the
    /// run stores itself.
    pub secret_key: [u8; 32],
}

impl ServiceVars {
    /// Postgres and RabbitMQ at these URLs; deliveries allowed to loopback receivers whose
    /// CA is `receiver_ca`; a fresh secret key; 10 s of shutdown grace.
    pub fn new(db_url: &str, amqp_url: &str, receiver_ca: &Path) -> ServiceVars {
        let mut secret_key = [0u8; 32];
        rand::rng().fill_bytes(&mut secret_key);
        let vars = [
            ("WF_DATABASE_URL", db_url.to_owned()),
            ("WF_AMQP_URL", amqp_url.to_owned()),
            ("WF_ALLOWED_TARGET_CIDRS", "127.0.0.0/8".to_owned()),
            ("WF_EXTRA_ROOT_CA", receiver_ca.display().to_string()),
            (
                "WF_SECRET_KEY",
                base64::engine::general_purpose::STANDARD.encode(secret_key),
            ),
            ("WF_SHUTDOWN_GRACE", "10s".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        ServiceVars { vars, secret_key }
    }

    /// Sets one variable (after the others: the last setting of a name wins).
    pub fn set(mut self, name: &str, value: impl Into<String>) -> ServiceVars {
        self.vars.push((name.to_owned(), value.into()));
        self
    }

    /// Starts `bin` with these variables, `extra` and a free `WF_METRICS_ADDR` on
    /// loopback, its output appended to `log`.
    pub async fn start(
        &self,
        name: &str,
        bin: &Path,
        extra: &[(&str, String)],
        log: PathBuf,
    ) -> anyhow::Result<Service> {
        let ops = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut vars = self.vars.clone();
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        vars.push(("WF_METRICS_ADDR".to_owned(), ops.to_string()));
        Service::start(name, bin, &vars, ops, log).await
    }
}

/// A running service.
pub struct Service {
    pub name: String,
    pub pid: u32,
    pub ops: SocketAddr,
    pub log: PathBuf,
    bin: PathBuf,
    env: Vec<(String, String)>,
    child: tokio::process::Child,
}

/// Starts `bin` with `env` (every inherited `WF_*` variable removed first, so the run
/// depends only on what the caller sets), its output appended to `log`.
fn spawn(
    bin: &Path,
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<tokio::process::Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = tokio::process::Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("WF_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    cmd.spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

impl Service {
    /// Starts `bin` with `env` (see [`spawn`]), its output appended to `log`, and waits
    /// until `/readyz` on `ops` answers 200.
    pub async fn start(
        name: &str,
        bin: &Path,
        env: &[(String, String)],
        ops: SocketAddr,
        log: PathBuf,
    ) -> anyhow::Result<Service> {
        let child = spawn(bin, env, &log)?;
        let pid = child.id().context("the child exited at once")?;
        let mut service = Service {
            name: name.to_owned(),
            pid,
            ops,
            log,
            bin: bin.to_path_buf(),
            env: env.to_vec(),
            child,
        };
        service.wait_ready().await?;
        Ok(service)
    }

    /// SIGKILL, as a crash would (no drain, nothing acked), and waits for the exit.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .await
            .with_context(|| format!("killing {}", self.name))
    }

    /// Starts the same binary again with the same environment (after [`Service::kill`]
    /// or an exit), and waits until it is ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.is_running(), "{} is still running", self.name);
        self.child = spawn(&self.bin, &self.env, &self.log)?;
        self.pid = self.child.id().context("the child exited at once")?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "{} exited during start-up ({status}); its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, 20)
                );
            }
            if super::http::get_status(self.ops, "/readyz").await == Some(200) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{} did not answer /readyz with 200 on {} within {READY_TIMEOUT:?}; its log {}:\n{}",
                    self.name,
                    self.ops,
                    self.log.display(),
                    tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then waits for the exit (SIGKILL after [`STOP_TIMEOUT`]). Returns a
    /// complaint when the exit was not clean.
    pub async fn stop(mut self) -> Option<String> {
        if !self.is_running() {
            return Some(format!("{} had already exited", self.name));
        }
        // `kill(1)` rather than libc::kill: the workspace forbids unsafe code.
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if sent {
            if let Ok(Ok(status)) = tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
                return (!status.success()).then(|| {
                    format!(
                        "{} exited with {status} after SIGTERM (log: {})",
                        self.name,
                        self.log.display()
                    )
                });
            }
        }
        let _ = self.child.kill().await;
        Some(format!(
            "{} did not stop within {STOP_TIMEOUT:?} of SIGTERM and was killed (log: {})",
            self.name,
            self.log.display()
        ))
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Clock ticks per second for `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on every
/// Linux we know of). Asked of getconf because sysconf would need unsafe code.
pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Peak resident set size (`VmHWM`) in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_field_kib(pid, "VmHWM:")
}

/// Current resident set size (`VmRSS`) in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field_kib(pid, "VmRSS:")
}

fn status_field_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The pids of every process whose `comm` is `name` (e.g. `beam.smp`, `postgres`).
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

/// Busy clock ticks of the whole machine (every CPU, all but idle and iowait), from
/// `/proc/stat`.
pub fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is included in user).
    Some(v.iter().take(8).sum::<u64>() - v.get(3)? - v.get(4)?)
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU ticks of a group of processes at one moment (processes that come and go, like
/// Postgres backends, are handled by [`CpuSample::seconds_since`]).
#[derive(Clone, Debug, Default)]
pub struct CpuSample(HashMap<u32, u64>);

impl CpuSample {
    pub fn take(pids: &[u32]) -> CpuSample {
        CpuSample(
            pids.iter()
                .filter_map(|&pid| Some((pid, cpu_ticks(pid)?)))
                .collect(),
        )
    }

    /// CPU seconds used between `earlier` and `self`: per process, the difference, or
    /// everything it used if it started in between.
    pub fn seconds_since(&self, earlier: &CpuSample, ticks_per_second: f64) -> f64 {
        let ticks: u64 = self
            .0
            .iter()
            .map(|(pid, now)| now.saturating_sub(earlier.0.get(pid).copied().unwrap_or(0)))
            .sum();
        ticks as f64 / ticks_per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(peak_rss_kib(me).unwrap() > 0);
        assert!(rss_kib(me).unwrap() > 0);
        assert!(clock_ticks_per_second() > 0.0);
        assert!(machine_busy_ticks().unwrap() > 0);
        assert!(load_average().is_some());
        let a = CpuSample::take(&[me]);
        assert!(a.seconds_since(&a, 100.0).abs() < f64::EPSILON);
    }
}
