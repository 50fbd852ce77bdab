//! The real binaries (`wf-ingestor`, `wf-worker`, `wfctl`) as child processes, configured
//! black-box with nothing but `PATH` and `WF_*` variables (SPEC §1, §2, §7): a real SIGTERM
//! mid-load, `/metrics` of fresh processes after real deliveries, start-up errors for bad
//! configuration, and readiness when RabbitMQ goes away.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::harness::{eventually, http_request, unique, Database, Receiver, TempDir, Vhost};

const INGESTOR: &str = "wf-ingestor";
const WORKER: &str = "wf-worker";
const WFCTL: &str = "wfctl";

/// On top of `WF_SHUTDOWN_GRACE`: flushing the delivery log and closing connections.
const EXIT_MARGIN: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------ binaries and processes

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
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// A command with an empty environment but `PATH` and the given `WF_*` variables.
async fn command(name: &str, env: &BTreeMap<String, String>) -> Command {
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
struct Proc {
    name: &'static str,
    child: Child,
    /// `WF_METRICS_ADDR`.
    ops: SocketAddr,
    /// `WF_HTTP_ADDR` (the ingestor's API).
    api: SocketAddr,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id().expect("process still running")
    }

    /// Sends a real SIGTERM. (`kill(1)`, because the workspace forbids `unsafe`, which
    /// `libc::kill` needs.)
    fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits for the process to exit, at most `limit`; returns its status and how long it
    /// took.
    async fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, Duration) {
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
    async fn stop(&mut self, limit: Duration) -> Duration {
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

    async fn metrics(&self) -> Metrics {
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

/// One deployment under test: its own database, vhost and HTTPS receiver, and the `WF_*`
/// variables every process of it gets.
struct Deployment {
    env: BTreeMap<String, String>,
    receiver: Receiver,
    logs: TempDir,
    // Dropped last, after the processes of the test.
    db: Database,
    vhost: Vhost,
}

impl Deployment {
    async fn new(overrides: &[(&str, &str)]) -> Deployment {
        let vhost = Vhost::create();
        let db = Database::new();
        let receiver = Receiver::start().await;
        let logs = TempDir(std::env::temp_dir().join(unique("wf_proc_logs")));
        std::fs::create_dir_all(&logs.0).unwrap();
        let mut env: BTreeMap<String, String> = [
            ("WF_DATABASE_URL", db.url()),
            ("WF_AMQP_URL", vhost.url()),
            ("WF_ALLOWED_TARGET_CIDRS", "127.0.0.0/8".to_owned()),
            ("WF_EXTRA_ROOT_CA", receiver.ca_path.display().to_string()),
            ("WF_RETRY_SCHEDULE", "1s,1s".to_owned()),
            ("WF_DELIVERY_TIMEOUT", "5s".to_owned()),
            ("WF_SHUTDOWN_GRACE", "5s".to_owned()),
            ("WF_LOG", "info".to_owned()),
        ]
        .into_iter()
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

    fn grace(&self) -> Duration {
        let g = &self.env["WF_SHUTDOWN_GRACE"];
        Duration::from_secs(g.trim_end_matches('s').parse().expect("grace in seconds"))
    }

    /// Starts `name` on fresh ports and waits until `/readyz` answers 200.
    async fn start(&self, name: &'static str) -> Proc {
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
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = proc.child.try_wait().unwrap() {
                panic!(
                    "{name} exited during start-up with {status}\n{}",
                    proc.log_tail()
                );
            }
            if http_request(ops, "GET", "/readyz", None, None).await.0 == 200 {
                return proc;
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready after 60 s\n{}",
                proc.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `wfctl api-key create` (the binary, same environment): the key of a new organisation.
    async fn api_key(&self) -> String {
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
    async fn webhook(&self, ingestor: &Proc, key: &str, path: &str, events: &[&str]) -> String {
        let body = json!({"name": path, "url": self.receiver.url(path), "events": events});
        let (s, b) = post(ingestor.api, "/api/v1/webhooks", key, &body).await;
        assert_eq!(s, 201, "{b}");
        b["data"]["id"].as_str().unwrap().to_owned()
    }
}

async fn post(addr: SocketAddr, path: &str, key: &str, body: &Value) -> (u16, Value) {
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
async fn deliveries(api: SocketAddr, key: &str, webhook: &str, status: &str) -> Vec<Value> {
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
async fn all_logged_delivered(
    d: &Deployment,
    api: SocketAddr,
    key: &str,
    webhook: &str,
    path: &str,
    n: usize,
) -> Vec<crate::harness::Recorded> {
    eventually(
        &format!("{n} deliveries logged as delivered"),
        Duration::from_secs(60),
        || async { (deliveries(api, key, webhook, "delivered").await.len() == n).then_some(()) },
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

// ------------------------------------------------------------------ Prometheus text format

/// One scrape: samples keyed by `name` and sorted labels, and the `# TYPE` of each family.
#[derive(Debug, Default)]
struct Metrics {
    samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
    types: BTreeMap<String, String>,
}

impl Metrics {
    /// Parses the text exposition format (`name{k="v",…} value`, `# TYPE name type`).
    fn parse(text: &str) -> Metrics {
        let mut m = Metrics::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                m.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => (
                    name.to_owned(),
                    parse_labels(rest.strip_suffix('}').expect("closing brace")),
                ),
            };
            m.samples.insert((name, labels), value);
        }
        m
    }

    /// The sample with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// Like [`get`](Self::get), NaN (equal to nothing) when the series is missing.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(f64::NAN)
    }

    /// Sum over every series of `name`.
    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }

    fn series(&self, name: &str) -> usize {
        self.samples.keys().filter(|(n, _)| n == name).count()
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return labels;
        }
        assert_eq!(chars.next(), Some('"'), "label {key} in {s:?}");
        let mut value = String::new();
        loop {
            match chars.next().expect("unterminated label value") {
                '"' => break,
                '\\' => match chars.next().expect("escape") {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        labels.insert(key, value);
    }
}

/// A sample and the value it must have: `(name, labels, value)`.
type Expected = (&'static str, &'static [(&'static str, &'static str)], f64);

async fn scrape(ops: SocketAddr) -> Metrics {
    let (s, body) = http_request(ops, "GET", "/metrics", None, None).await;
    assert_eq!(s, 200, "GET /metrics on {ops}");
    Metrics::parse(body.as_str().expect("text format"))
}

/// Polls `check` (which returns the differences from what is expected) until it returns
/// none; panics with the last differences after `timeout`.
async fn settle<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let diff = check().await;
        if diff.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not settled after {timeout:?}:\n  {}",
            diff.join("\n  ")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------------ the tests

/// SIGTERM to a worker that is busy delivering to a slow endpoint: it exits 0 within the
/// grace period, and a fresh worker delivers the rest: every event arrives (at least once)
/// and the delivery log shows all of them delivered.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_load_loses_nothing_and_exits_zero() {
    const EVENTS: usize = 200;
    const CONCURRENCY: usize = 16;
    let d = Deployment::new(&[("WF_SHUTDOWN_GRACE", "3s"), ("WF_WORKER_CONCURRENCY", "16")]).await;
    d.receiver.delay("/slow", Duration::from_millis(300));
    let mut ingestor = d.start(INGESTOR).await;
    let mut worker = d.start(WORKER).await;
    let key = d.api_key().await;
    let webhook = d
        .webhook(&ingestor, &key, "/slow", &["alert.created"])
        .await;

    let api = ingestor.api;
    let publishing = {
        let key = key.clone();
        tokio::spawn(async move {
            futures::future::join_all((0..EVENTS).map(|n| {
                let key = key.clone();
                async move {
                    let body = json!({"event": "alert.created", "data": {"n": n}});
                    post(api, "/api/v1/events", &key, &body).await
                }
            }))
            .await
        })
    };

    // Mid-load: deliveries are running and most events are still to go.
    let ops = worker.ops;
    eventually("deliveries in flight", Duration::from_secs(30), || async {
        let in_flight = scrape(ops).await.value("wf_deliveries_in_flight", &[]);
        let got = d.receiver.requests("/slow").len();
        (in_flight > 0.0 && got >= 20).then_some(())
    })
    .await;
    let at_sigterm = d.receiver.requests("/slow").len();
    let took = worker.stop(d.grace() + EXIT_MARGIN).await;
    let at_exit = d.receiver.requests("/slow").len();
    println!("worker exited 0 {took:?} after SIGTERM; {at_sigterm} requests at SIGTERM, {at_exit} at exit");
    assert!(
        at_exit - at_sigterm <= 2 * CONCURRENCY,
        "the worker kept taking new work after SIGTERM: {at_sigterm} requests then, {at_exit} at exit"
    );
    assert!(
        at_exit < EVENTS,
        "the load was over before the worker stopped; nothing was handed back"
    );

    for (s, b) in publishing.await.unwrap() {
        assert_eq!(s, 202, "POST /events: {b}");
    }

    let mut worker = d.start(WORKER).await;
    let seen = eventually(
        "every event delivered after the restart",
        Duration::from_secs(90),
        || async {
            let got = d.receiver.requests("/slow");
            let ns: BTreeSet<u64> = got
                .iter()
                .filter_map(|r| r.json()["data"]["n"].as_u64())
                .collect();
            (ns.len() == EVENTS).then_some(got)
        },
    )
    .await;
    let ids: HashSet<&str> = seen
        .iter()
        .map(|r| r.header("x-workflows-delivery"))
        .collect();
    assert_eq!(ids.len(), EVENTS, "distinct X-WorkFlows-Delivery ids");
    println!(
        "{} requests for {EVENTS} events ({} duplicates)",
        seen.len(),
        seen.len() - EVENTS
    );

    // The delivery log agrees: nothing stuck as pending, nothing acked but unlogged.
    eventually(
        "all deliveries logged as delivered",
        Duration::from_secs(30),
        || async {
            let n = deliveries(api, &key, &webhook, "delivered").await.len();
            (n == EVENTS).then_some(())
        },
    )
    .await;

    worker.stop(d.grace() + EXIT_MARGIN).await;
    ingestor.stop(d.grace() + EXIT_MARGIN).await;
}

/// SIGKILL while the delivery log cannot write (a lock held on its table): the events
/// were delivered, but their outcomes were only buffered, so their messages must still be
/// unacked. A fresh worker gets them again, delivers them again (same delivery ids) and
/// logs them: no outcome is lost with the killed worker's buffer. (Before issue 5's
/// session 3 the messages were acked before the log had them, and this log stayed empty.)
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_with_the_log_stalled_loses_no_log_record() {
    const EVENTS: usize = 20;
    let d = Deployment::new(&[]).await;
    let mut ingestor = d.start(INGESTOR).await;
    let mut worker = d.start(WORKER).await;
    let key = d.api_key().await;
    let webhook = d
        .webhook(&ingestor, &key, "/stalled-log", &["alert.created"])
        .await;

    let (locker, conn) = tokio_postgres::connect(&d.db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    locker
        .batch_execute("BEGIN; LOCK TABLE event_payloads IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    for n in 0..EVENTS {
        let body = json!({"event": "alert.created", "data": {"n": n}});
        let (s, b) = post(ingestor.api, "/api/v1/events", &key, &body).await;
        assert_eq!(s, 202, "{b}");
    }
    let distinct_ns = |got: &[crate::harness::Recorded]| -> usize {
        got.iter()
            .filter_map(|r| r.json()["data"]["n"].as_u64())
            .collect::<BTreeSet<u64>>()
            .len()
    };
    eventually(
        "every event delivered once",
        Duration::from_secs(30),
        || async { (distinct_ns(&d.receiver.requests("/stalled-log")) == EVENTS).then_some(()) },
    )
    .await;
    // Time for any ack that was going to be sent to reach the broker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.child.kill().await.expect("SIGKILL the worker");
    let before_restart = d.receiver.requests("/stalled-log").len();
    locker.batch_execute("ROLLBACK").await.unwrap();

    let mut worker = d.start(WORKER).await;
    let got = all_logged_delivered(&d, ingestor.api, &key, &webhook, "/stalled-log", EVENTS).await;
    assert!(
        got.len() >= before_restart + EVENTS,
        "every event is delivered again after the restart (it was never acked): \
         {before_restart} requests before, {} after",
        got.len()
    );

    worker.stop(d.grace() + EXIT_MARGIN).await;
    ingestor.stop(d.grace() + EXIT_MARGIN).await;
}

/// SIGTERM while every delivery in flight takes longer than `WF_SHUTDOWN_GRACE`: the worker
/// does not wait for them, exits 0 after the grace period and hands them back; a fresh
/// worker delivers them again (same delivery ids: the duplicates at-least-once allows).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_hands_back_deliveries_slower_than_the_grace() {
    const EVENTS: usize = 20;
    let d = Deployment::new(&[("WF_SHUTDOWN_GRACE", "1s"), ("WF_DELIVERY_TIMEOUT", "20s")]).await;
    d.receiver.delay("/slower", Duration::from_secs(8));
    let mut ingestor = d.start(INGESTOR).await;
    let mut worker = d.start(WORKER).await;
    let key = d.api_key().await;
    let webhook = d
        .webhook(&ingestor, &key, "/slower", &["alert.created"])
        .await;
    for n in 0..EVENTS {
        let body = json!({"event": "alert.created", "data": {"n": n}});
        let (s, b) = post(ingestor.api, "/api/v1/events", &key, &body).await;
        assert_eq!(s, 202, "{b}");
    }
    d.receiver.wait_for("/slower", EVENTS).await;

    // The grace period, plus a little for closing connections: not the 8 s the endpoint
    // would take to answer.
    let took = worker.stop(d.grace() + Duration::from_secs(3)).await;
    println!("worker exited 0 {took:?} after SIGTERM with {EVENTS} deliveries in flight");

    let mut worker = d.start(WORKER).await;
    let seen = all_logged_delivered(&d, ingestor.api, &key, &webhook, "/slower", EVENTS).await;
    assert!(
        seen.len() >= 2 * EVENTS,
        "every delivery abandoned at shutdown is sent again: {} requests",
        seen.len()
    );
    worker.stop(d.grace() + EXIT_MARGIN).await;
    ingestor.stop(d.grace() + EXIT_MARGIN).await;
}

/// Fresh processes, so every counter starts at 0: after one webhook got two 200s and
/// another a 500 then a 200, both `/metrics` show exactly that.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_real_deliveries() {
    let d = Deployment::new(&[]).await;
    let ingestor = d.start(INGESTOR).await;
    let worker = d.start(WORKER).await;
    let key = d.api_key().await;
    d.webhook(&ingestor, &key, "/ok", &["alert.created"]).await;
    d.webhook(&ingestor, &key, "/flaky", &["alert.resolved"])
        .await;
    d.receiver.plan("/flaky", &[500], 200);

    for event in ["alert.created", "alert.created", "alert.resolved"] {
        let body = json!({"event": event, "data": {"alertId": "alt_1"}});
        let (s, b) = post(ingestor.api, "/api/v1/events", &key, &body).await;
        assert_eq!(s, 202, "{b}");
    }
    d.receiver.wait_for("/ok", 2).await;
    d.receiver.wait_for("/flaky", 2).await;

    let expected_worker: &[Expected] = &[
        ("wf_deliveries_total", &[("outcome", "delivered")], 3.0),
        ("wf_deliveries_total", &[("outcome", "retried")], 1.0),
        ("wf_deliveries_total", &[("outcome", "dead")], 0.0),
        ("wf_deliveries_total", &[("outcome", "dropped")], 0.0),
        ("wf_delivery_attempts_total", &[("result", "2xx")], 3.0),
        ("wf_delivery_attempts_total", &[("result", "5xx")], 1.0),
        ("wf_delivery_attempts_total", &[("result", "3xx")], 0.0),
        ("wf_delivery_attempts_total", &[("result", "4xx")], 0.0),
        ("wf_delivery_attempts_total", &[("result", "timeout")], 0.0),
        (
            "wf_delivery_attempts_total",
            &[("result", "connect_error")],
            0.0,
        ),
        (
            "wf_delivery_attempts_total",
            &[("result", "tls_error")],
            0.0,
        ),
        ("wf_delivery_attempts_total", &[("result", "blocked")], 0.0),
        ("wf_delivery_duration_seconds_count", &[], 4.0),
        (
            "wf_delivery_duration_seconds_bucket",
            &[("le", "+Inf")],
            4.0,
        ),
        ("wf_event_to_delivery_seconds_count", &[], 3.0),
        (
            "wf_event_to_delivery_seconds_bucket",
            &[("le", "+Inf")],
            3.0,
        ),
        ("wf_deliveries_in_flight", &[], 0.0),
        ("wf_circuit_open_endpoints", &[], 0.0),
        // Nothing was published straight to the exchange.
        (
            "wf_events_ingested_total",
            &[("source", "amqp"), ("event", "alert.created")],
            0.0,
        ),
    ];
    let expected_ingestor: &[Expected] = &[
        (
            "wf_events_ingested_total",
            &[("source", "http"), ("event", "alert.created")],
            2.0,
        ),
        (
            "wf_events_ingested_total",
            &[("source", "http"), ("event", "alert.resolved")],
            1.0,
        ),
        (
            "wf_events_ingested_total",
            &[("source", "amqp"), ("event", "alert.created")],
            0.0,
        ),
        // Its own registry: it delivers nothing.
        ("wf_deliveries_total", &[("outcome", "delivered")], 0.0),
        ("wf_delivery_attempts_total", &[("result", "2xx")], 0.0),
    ];
    for (proc, expected) in [(&worker, expected_worker), (&ingestor, expected_ingestor)] {
        settle(
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
                diff
            },
        )
        .await;
    }

    let w = worker.metrics().await;
    let cache = w.sum("wf_subscription_cache_requests_total");
    assert!(cache >= 3.0, "subscription lookups for 3 events: {cache}");
    // Buckets reach past the delivery timeout (the default 10 s; here 5 s).
    let max_le = w
        .samples
        .keys()
        .filter(|(n, _)| n == "wf_delivery_duration_seconds_bucket")
        .filter_map(|(_, l)| l["le"].parse::<f64>().ok())
        .filter(|le| le.is_finite())
        .fold(0.0, f64::max);
    assert!(max_le > 10.0, "largest finite bucket {max_le}");

    for proc in [&worker, &ingestor] {
        for path in ["/healthz", "/readyz"] {
            let (s, b) = http_request(proc.ops, "GET", path, None, None).await;
            assert_eq!(s, 200, "{} {path}: {b}", proc.name);
        }
        let m = proc.metrics().await;
        for (name, kind) in [
            ("wf_events_ingested_total", "counter"),
            ("wf_events_rejected_total", "counter"),
            ("wf_deliveries_total", "counter"),
            ("wf_delivery_attempts_total", "counter"),
            ("wf_delivery_duration_seconds", "histogram"),
            ("wf_event_to_delivery_seconds", "histogram"),
            ("wf_deliveries_in_flight", "gauge"),
            ("wf_subscription_cache_requests_total", "counter"),
            ("wf_circuit_open_endpoints", "gauge"),
            ("process_cpu_seconds_total", "counter"),
            ("process_resident_memory_bytes", "gauge"),
        ] {
            assert_eq!(
                m.types.get(name).map(String::as_str),
                Some(kind),
                "# TYPE of {name} on {}",
                proc.name
            );
        }
        assert!(m.value("process_resident_memory_bytes", &[]) > 0.0);
        assert!(
            m.series("wf_events_ingested_total") >= 60,
            "30 events × 2 sources"
        );
        // Cardinality: no label value is an id, a URL or an address.
        let port = d.receiver.addr.port().to_string();
        for (name, labels) in m.samples.keys() {
            for (k, v) in labels {
                let id_like = ["whk_", "org_", "evt_", "dlv_", "key_", "wf_live_"]
                    .iter()
                    .any(|p| v.starts_with(p));
                let url_like = v.contains("://") || v.contains("127.0.0.1") || v.contains(&port);
                assert!(
                    !id_like && !url_like,
                    "{}: {name}{{{k}=\"{v}\"}} carries an id or URL",
                    proc.name
                );
            }
        }
    }
}

/// A bad `WF_*` value is a start-up error naming the variable (and the value, unless it is
/// secret) with a nonzero exit, from every binary.
#[tokio::test(flavor = "multi_thread")]
async fn bad_config_is_a_startup_error_naming_the_variable() {
    // (variable, value, text the error must show, text it must never show)
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        ("WF_RETRY_SCHEDULE", "5x", "5x", None),
        ("WF_WORKER_CONCURRENCY", "0", "0", None),
        ("WF_QUEUE_TYPE", "stream", "stream", None),
        ("WF_DELIVERY_TIMEOUT", "10", "10", None),
        ("WF_SHUTDOWN_GRACE", "soon", "soon", None),
        ("WF_LOG_FORMAT", "xml", "xml", None),
        ("WF_HTTP_ADDR", "localhost", "localhost", None),
        (
            "WF_ALLOWED_TARGET_CIDRS",
            "10.0.0.0/33",
            "10.0.0.0/33",
            None,
        ),
        ("WF_DATABASE_URL", "mysql://db/x", "mysql://db/x", None),
        (
            "WF_AMQP_URL",
            "http://guest:hunter2pw@127.0.0.1:5672/",
            "WF_AMQP_URL",
            Some("hunter2pw"),
        ),
        ("WF_SECRET_KEY", "short", "WF_SECRET_KEY", Some("short`")),
        (
            // base64 of 16 bytes: valid base64, wrong length
            "WF_SECRET_KEY",
            "c2VjcmV0LXRvby1zaG9ydA==",
            "WF_SECRET_KEY",
            Some("c2VjcmV0LXRvby1zaG9ydA"),
        ),
        (
            "WF_SECRET_KEY",
            "not base64 at all: s3cr3t!",
            "WF_SECRET_KEY",
            Some("s3cr3t"),
        ),
    ];
    let runs = cases.iter().flat_map(|case| {
        [
            (INGESTOR, &[][..]),
            (WORKER, &[][..]),
            (WFCTL, &["migrate"][..]),
        ]
        .map(|(bin, args)| async move {
            let (var, value, shown, hidden) = *case;
            // Unreachable dependencies and free ports: should the bad value be accepted,
            // the process fails for another reason, touching nothing shared.
            let env: BTreeMap<String, String> = [
                (
                    "WF_DATABASE_URL",
                    "postgres://postgres@127.0.0.1:1/none".to_owned(),
                ),
                (
                    "WF_AMQP_URL",
                    "amqp://guest:guest@127.0.0.1:1/%2f".to_owned(),
                ),
                ("WF_HTTP_ADDR", free_addr().to_string()),
                ("WF_METRICS_ADDR", free_addr().to_string()),
                (var, value.to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let mut cmd = command(bin, &env).await;
            let started = Instant::now();
            let out = tokio::time::timeout(Duration::from_secs(20), cmd.args(args).output())
                .await
                .unwrap_or_else(|_| panic!("{bin} with {var}={value:?} did not exit"))
                .expect("run");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let mut problems = Vec::new();
            if out.status.success() {
                problems.push("exited 0".to_owned());
            }
            if !stderr.contains(var) || !stderr.contains(shown) {
                problems.push(format!("stderr does not name {var} and {shown:?}"));
            }
            if hidden.is_some_and(|h| stderr.contains(h)) {
                problems.push(format!("stderr shows the secret {hidden:?}"));
            }
            if started.elapsed() > Duration::from_secs(5) {
                problems.push(format!("took {:?}", started.elapsed()));
            }
            (!problems.is_empty()).then(|| {
                format!(
                    "{bin} {var}={value:?}: {}\n    stderr: {}",
                    problems.join("; "),
                    stderr.trim()
                )
            })
        })
    });
    let failures: Vec<String> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A worker whose RabbitMQ vhost is deleted stays alive (`/healthz` 200) but is not ready
/// (`/readyz` 503), and still shuts down cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn readyz_is_503_when_rabbitmq_vhost_is_gone() {
    let d = Deployment::new(&[("WF_SHUTDOWN_GRACE", "2s")]).await;
    let mut worker = d.start(WORKER).await;
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "delete_vhost", &d.vhost.name])
        .output()
        .expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ops = worker.ops;
    let body = eventually("/readyz 503", Duration::from_secs(30), || async {
        let (s, b) = http_request(ops, "GET", "/readyz", None, None).await;
        (s == 503).then_some(b)
    })
    .await;
    println!("/readyz: {body}");
    let (s, _) = http_request(ops, "GET", "/healthz", None, None).await;
    assert_eq!(s, 200, "/healthz while RabbitMQ is unusable");

    let took = worker.stop(d.grace() + EXIT_MARGIN).await;
    println!("worker without RabbitMQ exited 0 {took:?} after SIGTERM");
}

/// `wfctl dlq list` shows what is dead (in Postgres and in the queue); `wfctl dlq replay`
/// re-queues it once the endpoint recovers, drains the queue, and a second replay finds
/// nothing.
#[tokio::test(flavor = "multi_thread")]
async fn wfctl_dlq_lists_and_replays_dead_deliveries() {
    let d = Deployment::new(&[("WF_RETRY_SCHEDULE", "1s")]).await;
    let ingestor = d.start(INGESTOR).await;
    let _worker = d.start(WORKER).await;
    let key = d.api_key().await;
    let hook = d.webhook(&ingestor, &key, "/dlq", &["alert.created"]).await;
    d.receiver.plan("/dlq", &[], 500);
    for n in 0..2 {
        let (s, b) = post(
            ingestor.api,
            "/api/v1/events",
            &key,
            &json!({"event": "alert.created", "data": {"n": n}}),
        )
        .await;
        assert_eq!(s, 202, "{b}");
    }
    let dead = eventually("two dead deliveries", Duration::from_secs(30), || async {
        let dead = deliveries(ingestor.api, &key, &hook, "dead").await;
        (dead.len() == 2).then_some(dead)
    })
    .await;

    let wfctl = |args: &'static [&'static str]| {
        let env = d.env.clone();
        async move {
            let out = command(WFCTL, &env)
                .await
                .args(args)
                .output()
                .await
                .expect("running wfctl");
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "wfctl {args:?}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        }
    };
    let listed = eventually(
        "both dead letters in the queue",
        Duration::from_secs(10),
        || async {
            let out = wfctl(&["dlq", "list"]).await;
            out.contains("workflows.deliveries.dead: 2 message(s)")
                .then_some(out)
        },
    )
    .await;
    for del in &dead {
        assert!(listed.contains(del["id"].as_str().unwrap()), "{listed}");
    }
    assert!(listed.contains("2 dead deliveries"), "{listed}");

    d.receiver.plan("/dlq", &[], 200);
    let out = wfctl(&["dlq", "replay"]).await;
    assert!(out.contains("re-queued 2"), "{out}");
    let got = d.receiver.wait_for("/dlq", 6).await;
    let replayed: Vec<&str> = got[4..]
        .iter()
        .map(|r| r.header("x-workflows-attempt"))
        .collect();
    assert_eq!(
        replayed,
        ["3", "3"],
        "replays are numbered after the two failed attempts"
    );
    eventually("both delivered", Duration::from_secs(20), || async {
        (deliveries(ingestor.api, &key, &hook, "delivered")
            .await
            .len()
            == 2)
            .then_some(())
    })
    .await;
    let out = wfctl(&["dlq", "list"]).await;
    assert!(
        out.contains("workflows.deliveries.dead: 0 message(s)")
            && out.contains("0 dead deliveries"),
        "{out}"
    );
    let out = wfctl(&["dlq", "replay"]).await;
    assert!(out.contains("re-queued 0"), "{out}");
}

// ------------------------------------------------------------------ wfctl bench

/// Runs `wfctl bench` with only the given arguments and `WF_*` defaults (it makes and
/// removes its own vhost and database); `HOME` so that `rabbitmqctl` finds its cookie.
async fn bench(args: &[&str]) -> (bool, String, String) {
    let mut env = BTreeMap::new();
    if let Some(home) = std::env::var_os("HOME") {
        env.insert("HOME".to_owned(), home.to_string_lossy().into_owned());
    }
    let out = command(WFCTL, &env)
        .await
        .arg("bench")
        .args(args)
        .output()
        .await
        .expect("running wfctl bench");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of `name: value` in the bench's output.
fn figure(stdout: &str, name: &str) -> Option<f64> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.parse().ok())
}

/// A small benchmark end to end against the real binaries: every delivery arrives with a
/// valid signature, and every figure is printed, both broker ceilings included. Timings
/// are not asserted, only that they were measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_delivers_everything_and_prints_every_figure() {
    let (ok, stdout, stderr) =
        bench(&["--events", "300", "--warmup", "20", "--webhooks", "2"]).await;
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        figure(&stdout, "deliveries_received"),
        Some(600.0),
        "{stdout}"
    );
    assert_eq!(figure(&stdout, "signature_failures"), Some(0.0), "{stdout}");
    for name in [
        "deliveries_per_sec",
        "event_to_delivery_p99_ms",
        "worker_cpu_seconds_per_1000_deliveries",
        "worker_peak_rss_mib",
        "broker_ceiling_msgs_per_sec",
        "ratio_to_ceiling",
        "broker_topic_ceiling_msgs_per_sec",
        "ratio_to_topic_ceiling",
    ] {
        let v = figure(&stdout, name).unwrap_or_else(|| panic!("no `{name}` in:\n{stdout}"));
        assert!(v > 0.0, "{name} = {v}\n{stdout}");
    }
}

/// Bad options stop the bench before it creates anything, with a message naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_rejects_bad_options_before_starting() {
    let (ok, _, stderr) = bench(&["--queue-type", "lazy"]).await;
    assert!(!ok);
    assert!(stderr.contains("--queue-type"), "{stderr}");

    let (ok, _, stderr) = bench(&["--events", "10", "--bin-dir", "/nonexistent/wf"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("wf-worker not found at /nonexistent/wf/wf-worker"),
        "{stderr}"
    );
}
