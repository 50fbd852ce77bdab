//! The real binaries as child processes: built once per run, started with an empty
//! environment but `PATH` and `WF_*` variables, waited for until ready, stopped with a real
//! SIGTERM (or killed), their log shown when a test fails.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::{Child, Command};
use wf_testkit::prometheus::{scrape, Metrics};
use wf_testkit::{eventually, unique, Database, Receiver, Recorded, Vhost};

use crate::harness::{base_env, http_request, wait_ready};

pub const INGESTOR: &str = "wf-ingestor";
pub const WORKER: &str = "wf-worker";
pub const WFCTL: &str = "wfctl";

/// On top of `WF_SHUTDOWN_GRACE`: flushing the delivery log and closing connections.
pub const EXIT_MARGIN: Duration = Duration::from_secs(10);

/// Builds the three binaries once per test run (a no-op when `cargo test` already built
/// them) and returns the directory that holds them.
fn build_binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ lives in the workspace");
        let out = std::process::Command::new(env!("CARGO"))
            .current_dir(root)
            .args(["build", "-p", INGESTOR, "-p", WORKER, "-p", WFCTL])
            .output()
            .expect("running cargo build");
        assert!(
            out.status.success(),
            "cargo build of the binaries failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => root.join(dir), // an absolute dir replaces `root`
            None => root.join("target"),
        };
        target.join("debug")
    })
}

async fn binary(name: &str) -> PathBuf {
    let dir = tokio::task::spawn_blocking(build_binaries)
        .await
        .expect("build task");
    let path = dir.join(name);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A free loopback port (bound, read, released).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// A command with an empty environment but `PATH` and the given `WF_*` variables.
pub async fn command(name: &str, env: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new(binary(name).await);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// A running service binary; killed (SIGKILL) when dropped. A failing test prints the
/// tail of its log.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    /// `WF_METRICS_ADDR`.
    pub ops: SocketAddr,
    /// `WF_HTTP_ADDR` (the ingestor's API).
    pub api: SocketAddr,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id().expect("process still running")
    }

    /// Sends a real SIGTERM. (`kill(1)`, because the workspace forbids `unsafe`, which
    /// `libc::kill` needs.)
    pub fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits for the process to exit, at most `limit`; returns its status and how long it
    /// took.
    pub async fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => (status.expect("wait"), started.elapsed()),
            Err(_) => panic!(
                "{} did not exit within {limit:?} of SIGTERM\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }

    /// SIGTERM, then assert exit status 0 within `limit`.
    pub async fn stop(&mut self, limit: Duration) -> Duration {
        self.sigterm();
        let (status, took) = self.wait_exit(limit).await;
        assert_eq!(
            status.code(),
            Some(0),
            "{} exited with {status} after SIGTERM\n{}",
            self.name,
            self.log_tail()
        );
        took
    }

    /// Everything the process has written to stdout and stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "--- last lines of {} ({}):\n{tail}",
            self.name,
            self.log.display()
        )
    }

    pub async fn metrics(&self) -> Metrics {
        scrape(self.ops).await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        let _ = self.child.start_kill();
    }
}

/// The processes' logs, removed with the deployment.
struct LogDir(PathBuf);

impl Drop for LogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One deployment under test: its own database, vhost and HTTPS receiver, and the `WF_*`
/// variables every process of it gets.
pub struct Deployment {
    pub env: BTreeMap<String, String>,
    pub receiver: Receiver,
    logs: LogDir,
    // Dropped last, after the processes of the test.
    pub db: Database,
    pub vhost: Vhost,
}

impl Deployment {
    pub async fn new(overrides: &[(&str, &str)]) -> Deployment {
        let vhost = Vhost::create();
        // Not created here: the services create their database when it is missing.
        let db = Database::reserve();
        let receiver = Receiver::start().await;
        let logs = LogDir(std::env::temp_dir().join(unique("wf_proc_logs")));
        std::fs::create_dir_all(&logs.0).unwrap();
        let mut env: BTreeMap<String, String> = base_env(&db, &vhost, &receiver)
            .into_iter()
            .chain([
                ("WF_RETRY_SCHEDULE", "1s,1s".to_owned()),
                ("WF_DELIVERY_TIMEOUT", "5s".to_owned()),
                ("WF_SHUTDOWN_GRACE", "5s".to_owned()),
                ("WF_LOG", "info".to_owned()),
            ])
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        for (k, v) in overrides {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        Deployment {
            env,
            receiver,
            logs,
            db,
            vhost,
        }
    }

    pub fn grace(&self) -> Duration {
        let g = &self.env["WF_SHUTDOWN_GRACE"];
        Duration::from_secs(g.trim_end_matches('s').parse().expect("grace in seconds"))
    }

    /// Starts `name` on fresh ports and waits until `/readyz` answers 200.
    pub async fn start(&self, name: &'static str) -> Proc {
        let (api, ops) = (free_addr(), free_addr());
        let mut env = self.env.clone();
        env.insert("WF_HTTP_ADDR".into(), api.to_string());
        env.insert("WF_METRICS_ADDR".into(), ops.to_string());
        let log = self.logs.0.join(format!("{}.log", unique(name)));
        let file = std::fs::File::create(&log).unwrap();
        let child = command(name, &env)
            .await
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut proc = Proc {
            name,
            child,
            ops,
            api,
            log,
        };
        wait_ready(ops, name, || {
            let status = proc.child.try_wait().expect("child status")?;
            Some(format!("{status}\n{}", proc.log_tail()))
        })
        .await;
        proc
    }

    /// `wfctl api-key create` (the binary, same environment): the key of a new organisation.
    pub async fn api_key(&self) -> String {
        let org = unique("org");
        let out = command(WFCTL, &self.env)
            .await
            .args(["api-key", "create", "--org", &org, "--name", "t"])
            .output()
            .await
            .expect("running wfctl");
        assert!(
            out.status.success(),
            "wfctl api-key create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        assert!(key.starts_with("wf_live_"), "wfctl printed {key:?}");
        key
    }

    /// Registers a webhook for `events` pointing at `path` on the receiver.
    pub async fn webhook(&self, ingestor: &Proc, key: &str, path: &str, events: &[&str]) -> String {
        let body = json!({"name": path, "url": self.receiver.url(path), "events": events});
        let (s, b) = post(ingestor.api, "/api/v1/webhooks", key, &body).await;
        assert_eq!(s, 201, "{b}");
        b["data"]["id"].as_str().unwrap().to_owned()
    }
}

pub async fn post(addr: SocketAddr, path: &str, key: &str, body: &Value) -> (u16, Value) {
    http_request(
        addr,
        "POST",
        path,
        Some(key),
        Some(body.to_string().into_bytes()),
    )
    .await
}

/// Every delivery of `webhook` with `status`, following `nextCursor`.
pub async fn deliveries(api: SocketAddr, key: &str, webhook: &str, status: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/webhooks/{webhook}/deliveries?status={status}&limit=100");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (s, b) = http_request(api, "GET", &path, Some(key), None).await;
        assert_eq!(s, 200, "{b}");
        all.extend(b["data"].as_array().cloned().unwrap_or_default());
        match b["nextCursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
            _ => return all,
        }
    }
}

/// Waits (60 s at most) until the delivery log lists `n` deliveries of `webhook` as
/// delivered; returns the receiver's requests on `path`, after checking that they carry
/// exactly `n` distinct `X-WorkFlows-Delivery` ids.
pub async fn all_logged_delivered(
    d: &Deployment,
    api: SocketAddr,
    key: &str,
    webhook: &str,
    path: &str,
    n: usize,
) -> Vec<Recorded> {
    eventually(
        &format!("{n} deliveries logged as delivered"),
        Duration::from_secs(60),
        || async { deliveries(api, key, webhook, "delivered").await.len() == n },
    )
    .await;
    let got = d.receiver.requests(path);
    let ids: HashSet<&str> = got
        .iter()
        .map(|r| r.header("x-workflows-delivery"))
        .collect();
    assert_eq!(ids.len(), n, "distinct X-WorkFlows-Delivery ids");
    got
}

/// A sample and the value it must have: `(name, labels, value)`.
pub type Expected = (&'static str, &'static [(&'static str, &'static str)], f64);

/// Waits (20 s at most) until `proc`'s `/metrics` shows every `expected` value (and no
/// rejected event); the differences left are shown when it does not.
pub async fn metrics_settle(proc: &Proc, expected: &[Expected]) {
    eventually(
        &format!("{} /metrics", proc.name),
        Duration::from_secs(20),
        || async {
            let m = proc.metrics().await;
            let mut diff = Vec::new();
            for (name, labels, want) in expected {
                let got = m.value(name, labels);
                if got != *want {
                    diff.push(format!("{name}{labels:?} = {got}, expected {want}"));
                }
            }
            if m.sum("wf_events_rejected_total") != 0.0 {
                diff.push("wf_events_rejected_total is not 0".to_owned());
            }
            if diff.is_empty() {
                Ok(())
            } else {
                Err(format!("  {}", diff.join("\n  ")))
            }
        },
    )
    .await;
}
