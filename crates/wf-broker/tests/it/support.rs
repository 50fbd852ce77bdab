//! What these tests share beyond wf-testkit (which gives each test its own vhost): a
//! connection with the test's name, the quorum topology, and a mandatory message.

use std::time::Duration;
use wf_broker::{Broker, ConnectOptions, OutgoingMessage, Publisher};
use wf_core::config::QueueType;

pub use wf_testkit::{eventually, rabbitmqctl, within, Vhost};

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
        .declare_topology(&wf_broker::Topology {
            queue_type: QueueType::Quorum,
            retry_delays: vec![Duration::from_secs(5)],
            quorum_group_size: None,
        })
        .await
        .unwrap();
    broker
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
    eventually(
        "a publish through the reconnection",
        Duration::from_secs(15),
        || async {
            match publisher.publish(msg.clone()).await {
                Err(e) if !e.is_retryable() => panic!("publish failed: {e}"),
                done => done,
            }
        },
    )
    .await;
}

pub async fn depth(broker: &Broker, queue: &str) -> u32 {
    broker.queue_depth(queue).await.expect("queue depth")
}
