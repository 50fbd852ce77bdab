//! Test support: a private vhost per test, polling with a deadline, small helpers.

use std::future::Future;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wf_broker::{Broker, ConnectOptions, OutgoingMessage, Publisher, Topology};
use wf_core::config::QueueType;

/// Base URL of the test broker (without vhost).
const BASE_URL: &str = "amqp://guest:guest@127.0.0.1:5672";

/// Deletes the vhost (and with it every queue and connection in it) when dropped, also
/// when the test panics.
pub struct VhostGuard {
    pub name: String,
}

impl Drop for VhostGuard {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "delete_vhost", &self.name])
            .output();
    }
}

/// A fresh vhost with full permissions for `guest`; returns its URL and the guard that
/// deletes it.
pub fn test_vhost() -> (String, VhostGuard) {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(
        "wf_test_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    rabbitmqctl(&["add_vhost", &name]);
    let guard = VhostGuard { name: name.clone() };
    rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
    (format!("{BASE_URL}/{name}"), guard)
}

/// Runs `rabbitmqctl -q <args>` and returns its stdout; panics when it fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(name, <column>)` of every queue in the vhost, as `rabbitmqctl list_queues` reports.
pub fn queue_column(vhost: &str, column: &str) -> Vec<(String, String)> {
    rabbitmqctl(&[
        "list_queues",
        "-p",
        vhost,
        "--no-table-headers",
        "name",
        column,
    ])
    .lines()
    .filter_map(|l| {
        let mut parts = l.split_whitespace();
        Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
    })
    .collect()
}

/// `(name, type)` of every queue in the vhost.
pub fn queue_types(vhost: &str) -> Vec<(String, String)> {
    queue_column(vhost, "type")
}

/// Logs to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=wf_broker=debug`).
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

pub async fn connect(url: &str, name: &str) -> Broker {
    init_tracing();
    Broker::connect_with(
        url,
        ConnectOptions {
            name: name.to_owned(),
            patience: Duration::from_secs(10),
        },
    )
    .await
    .expect("connects to the test broker")
}

/// Connects and declares the quorum topology (one 5 s retry tier).
pub async fn connect_with_topology(url: &str, name: &str) -> Broker {
    let broker = connect(url, name).await;
    broker
        .declare_topology(&Topology {
            queue_type: QueueType::Quorum,
            retry_delays: vec![Duration::from_secs(5)],
        })
        .await
        .unwrap();
    broker
}

/// Polls `check` every 50 ms until it returns true; panics after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Awaits `fut` for at most `within`; panics with `what` on timeout.
pub async fn within<T>(what: &str, within: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(within, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A mandatory JSON message to `exchange`/`routing_key`.
pub fn message<'a>(exchange: &'a str, routing_key: &'a str, body: &'a [u8]) -> OutgoingMessage<'a> {
    OutgoingMessage {
        exchange,
        routing_key,
        body,
        message_id: None,
        headers: Vec::new(),
        mandatory: true,
    }
}

/// Publishes, retrying connection errors for up to 15 s (for tests that break the
/// connection on purpose).
pub async fn publish_retrying(publisher: &Publisher, msg: OutgoingMessage<'_>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match publisher.publish(msg.clone()).await {
            Ok(()) => return,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("publish failed: {e}"),
        }
    }
}

pub async fn depth(broker: &Broker, queue: &str) -> u32 {
    broker.queue_depth(queue).await.expect("queue depth")
}
