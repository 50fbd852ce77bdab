use crate::support::*;
use std::time::{Duration, Instant};
use wf_broker::{names, Broker, BrokerError, ConnectOptions, DEFAULT_FRAME_MAX};

const WAIT: Duration = Duration::from_secs(15);

/// The broker drops every connection (as on a restart or a network cut): the consumer
/// re-subscribes by itself, the unacked delivery is redelivered, acking it on the dead
/// channel is an error, and the publisher carries on on a fresh channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_and_publisher_survive_a_forced_connection_close() {
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect_with_topology(&url, "survivor").await;
    let publisher = broker.publisher().await.unwrap();
    let mut consumer = broker
        .consume(names::DELIVERIES_QUEUE, 10, "survivor")
        .await
        .unwrap();
    let publish = |body: &'static [u8]| {
        let publisher = publisher.clone();
        async move {
            publish_retrying(
                &publisher,
                message(
                    names::DELIVERIES_EXCHANGE,
                    names::DELIVERY_ROUTING_KEY,
                    body,
                ),
            )
            .await;
        }
    };

    publish(b"\"a\"").await;
    let a = within("a", WAIT, consumer.next()).await.unwrap();
    a.ack().await.unwrap();
    publish(b"\"b\"").await;
    let b = within("b", WAIT, consumer.next()).await.unwrap();
    assert_eq!(b.body, b"\"b\"");

    rabbitmqctl(&["close_all_connections", "-p", &vhost.name, "test"]);

    let b_again = within("b redelivered after re-subscribing", WAIT, consumer.next())
        .await
        .unwrap();
    assert_eq!(b_again.body, b"\"b\"");
    assert!(b_again.redelivered);
    let stale = b.ack().await.unwrap_err();
    assert!(matches!(stale, BrokerError::Settle { .. }), "{stale:?}");
    b_again.ack().await.unwrap();

    publish(b"\"c\"").await;
    let c = within("c after the reconnection", WAIT, consumer.next())
        .await
        .unwrap();
    assert_eq!(c.body, b"\"c\"");
    c.ack().await.unwrap();
    assert!(broker.is_connected());
    broker.close().await;
    assert!(!broker.is_connected());
    assert!(
        consumer.next().await.is_none(),
        "closed broker ends the consumer"
    );
}

/// An idle process (nothing publishing or consuming) reconnects too, so `/readyz`
/// recovers without traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_broker_reconnects_by_itself() {
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect(&url, "idle").await;
    assert!(broker.is_connected());
    // Peer ports of this vhost's connections: a new port means a new connection.
    let ports = || {
        rabbitmqctl(&[
            "list_connections",
            "--no-table-headers",
            "vhost",
            "peer_port",
        ])
        .lines()
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next() == Some(vhost.name.as_str())).then(|| cols.next().map(str::to_owned))?
        })
        .collect::<Vec<String>>()
    };
    let before = ports();
    assert_eq!(before.len(), 1, "{before:?}");
    rabbitmqctl(&["close_all_connections", "-p", &vhost.name, "test"]);
    eventually("a new connection replaces the closed one", WAIT, || async {
        let now = ports();
        now.len() == 1 && now != before && broker.is_connected()
    })
    .await;
    broker.close().await;
}

/// `frame_max` of this vhost's connections, as the broker negotiated it.
fn negotiated_frame_max(vhost: &str) -> Vec<u32> {
    rabbitmqctl(&[
        "list_connections",
        "--no-table-headers",
        "vhost",
        "frame_max",
    ])
    .lines()
    .filter_map(|l| {
        let mut cols = l.split_whitespace();
        (cols.next() == Some(vhost)).then(|| cols.next()?.parse().ok())?
    })
    .collect()
}

/// Connections ask for 32 KiB frames unless the URL says otherwise (lapin keeps 32 frames
/// of buffer each way, so the broker's 128 KiB default costs 8 MiB per connection), and a
/// body several frames long still arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_default_to_32_kib_and_the_url_can_override_it() {
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect_with_topology(&url, "frames").await;
    assert_eq!(negotiated_frame_max(&vhost.name), vec![DEFAULT_FRAME_MAX]);
    let publisher = broker.publisher().await.unwrap();
    let mut consumer = broker
        .consume(names::DELIVERIES_QUEUE, 10, "frames")
        .await
        .unwrap();
    let big = format!("\"{}\"", "x".repeat(3 * DEFAULT_FRAME_MAX as usize + 17));
    publish_retrying(
        &publisher,
        message(
            names::DELIVERIES_EXCHANGE,
            names::DELIVERY_ROUTING_KEY,
            big.as_bytes(),
        ),
    )
    .await;
    let got = within("the multi-frame body", WAIT, consumer.next())
        .await
        .unwrap();
    assert_eq!(got.body, big.as_bytes());
    got.ack().await.unwrap();
    broker.close().await;

    let broker = connect(&format!("{url}?frame_max=16384"), "frames-url").await;
    assert!(negotiated_frame_max(&vhost.name).contains(&16384));
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_name_the_url_without_the_password() {
    let started = Instant::now();
    let err = Broker::connect_with(
        "amqp://guest:s3cret@127.0.0.1:1/%2f",
        ConnectOptions {
            name: "unreachable".into(),
            patience: Duration::from_millis(1500),
        },
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("amqp://guest:***@127.0.0.1:1/%2f"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(err.is_retryable(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // Refusals fail at once: waiting would not help.
    let started = Instant::now();
    let err = Broker::connect_with(
        "amqp://guest:guest@127.0.0.1:5672/wf_test_no_such_vhost",
        ConnectOptions {
            name: "no-vhost".into(),
            patience: Duration::from_secs(30),
        },
    )
    .await
    .unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let err = Broker::connect_with(
        "amqp://guest:wrong-password@127.0.0.1:5672/%2f",
        ConnectOptions {
            name: "bad-password".into(),
            patience: Duration::from_secs(30),
        },
    )
    .await
    .unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    assert!(!err.to_string().contains("wrong-password"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let err = Broker::connect("http://nope").await.unwrap_err();
    assert!(matches!(err, BrokerError::InvalidUrl { .. }), "{err:?}");
}
