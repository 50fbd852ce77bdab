use crate::support::*;
use std::time::{Duration, Instant};
use wf_broker::{names, BrokerError, Topology};
use wf_core::config::QueueType;

fn topology(queue_type: QueueType, retry_delays: Vec<Duration>) -> Topology {
    Topology {
        queue_type,
        retry_delays,
        quorum_group_size: None,
    }
}

async fn declared_twice(queue_type: QueueType) {
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect(&url, "topology-twice").await;
    let delays = vec![
        Duration::from_secs(5),
        Duration::from_secs(30),
        Duration::from_secs(120),
        Duration::from_secs(5),
    ];
    let t = topology(queue_type, delays);
    broker
        .declare_topology(&t)
        .await
        .expect("first declaration");
    broker
        .declare_topology(&t)
        .await
        .expect("identical re-declaration is a no-op");

    let mut expected = vec![
        names::FANOUT_QUEUE.to_owned(),
        names::DELIVERIES_QUEUE.to_owned(),
        names::DEAD_QUEUE.to_owned(),
        names::INVALID_QUEUE.to_owned(),
        "workflows.retry.5s".to_owned(),
        "workflows.retry.30s".to_owned(),
        "workflows.retry.2m".to_owned(),
    ];
    for q in &expected {
        assert_eq!(depth(&broker, q).await, 0, "{q}");
    }
    let mut actual = vhost.queue_column("type");
    actual.sort();
    expected.sort();
    assert_eq!(
        actual.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(
        actual.iter().all(|(_, t)| t == queue_type.as_str()),
        "{actual:?}"
    );
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_topology_can_be_declared_twice() {
    declared_twice(QueueType::Quorum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_topology_can_be_declared_twice() {
    declared_twice(QueueType::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_redeclaration_names_the_queue() {
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect(&url, "topology-conflict").await;
    broker
        .declare_topology(&topology(QueueType::Classic, vec![Duration::from_secs(5)]))
        .await
        .expect("classic declaration");
    let err = broker
        .declare_topology(&topology(QueueType::Quorum, vec![Duration::from_secs(5)]))
        .await
        .expect_err("quorum over classic must fail");
    match &err {
        BrokerError::TopologyConflict { kind, name, .. } => {
            assert_eq!(*kind, "queue");
            assert_eq!(name, names::FANOUT_QUEUE);
        }
        other => panic!("unexpected error: {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("`workflows.fanout`"), "{text}");
    assert!(text.contains("delete"), "{text}");
    assert!(!err.is_retryable());
    // The broker handle is still usable after the refused declaration.
    assert_eq!(depth(&broker, names::FANOUT_QUEUE).await, 0);
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_queue_dead_letters_back_to_deliveries_after_its_ttl() {
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect(&url, "retry-ttl").await;
    let delay = Duration::from_millis(300);
    broker
        .declare_topology(&topology(QueueType::Quorum, vec![delay]))
        .await
        .unwrap();
    let publisher = broker.publisher().await.unwrap();
    let retry_queue = names::retry_queue(delay);
    assert_eq!(retry_queue, "workflows.retry.300ms");

    let published = Instant::now();
    let mut msg = message("", &retry_queue, br#"{"attempt":2}"#);
    msg.message_id = Some("dlv_retry");
    publisher
        .publish(msg)
        .await
        .expect("publish to the retry queue");
    eventually(
        "the retried message is back in workflows.deliveries",
        Duration::from_secs(10),
        || async { depth(&broker, names::DELIVERIES_QUEUE).await == 1 },
    )
    .await;
    assert!(
        published.elapsed() >= Duration::from_millis(250),
        "came back after {:?}, before its TTL",
        published.elapsed()
    );
    assert_eq!(depth(&broker, &retry_queue).await, 0);

    let m = broker
        .get(names::DELIVERIES_QUEUE)
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(m.body, br#"{"attempt":2}"#);
    assert_eq!(m.exchange, names::DELIVERIES_EXCHANGE);
    assert_eq!(m.routing_key, names::DELIVERY_ROUTING_KEY);
    assert_eq!(m.message_id.as_deref(), Some("dlv_retry"));
    m.ack().await.unwrap();
    broker.close().await;
}

/// A deployment whose quorum queues were declared without a replica count (or with
/// another one) still starts: the queues keep their members, with a warning, since
/// RabbitMQ cannot change that argument of an existing queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_other_replica_count_on_existing_queues_is_kept() {
    let vhost = Vhost::create();
    let broker = connect(&vhost.url(), "group-size").await;
    let delays = vec![Duration::from_secs(5)];
    broker
        .declare_topology(&topology(QueueType::Quorum, delays.clone()))
        .await
        .expect("declared without a group size");
    for size in [Some(3), Some(1), None] {
        let t = Topology {
            quorum_group_size: size,
            ..topology(QueueType::Quorum, delays.clone())
        };
        broker
            .declare_topology(&t)
            .await
            .unwrap_or_else(|e| panic!("group size {size:?}: {e}"));
    }
    // A genuine conflict is still refused.
    let err = broker
        .declare_topology(&topology(QueueType::Classic, delays.clone()))
        .await
        .expect_err("classic over quorum");
    assert!(matches!(err, BrokerError::TopologyConflict { .. }), "{err}");
    // A fresh vhost gets the replica count it asks for.
    let fresh = Vhost::create();
    let b2 = connect(&fresh.url(), "group-size-fresh").await;
    b2.declare_topology(&Topology {
        quorum_group_size: Some(3),
        ..topology(QueueType::Quorum, delays)
    })
    .await
    .unwrap();
    let args = fresh.queue_column("arguments");
    assert!(
        args.iter()
            .all(|(_, a)| a.contains("x-quorum-initial-group-size")),
        "{args:?}"
    );
    broker.close().await;
    b2.close().await;
}
