use crate::support::*;
use std::time::{Duration, Instant};
use wf_broker::{names, BrokerError, HeaderValue, Topology, DELIVERY_LIMIT};
use wf_core::config::QueueType;

const WAIT: Duration = Duration::from_secs(10);

fn topology(queue_type: QueueType) -> Topology {
    Topology {
        queue_type,
        retry_delays: vec![Duration::from_secs(5)],
        quorum_group_size: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_ack_and_nack_with_requeue_redelivers() {
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect(&url, "consume").await;
    broker
        .declare_topology(&topology(QueueType::Quorum))
        .await
        .unwrap();
    let publisher = broker.publisher().await.unwrap();
    let mut consumer = broker
        .consume(names::DELIVERIES_QUEUE, 10, "test-consumer")
        .await
        .unwrap();

    let mut msg = message(
        names::DELIVERIES_EXCHANGE,
        names::DELIVERY_ROUTING_KEY,
        br#"{"id":1}"#,
    );
    msg.message_id = Some("dlv_1");
    msg.headers = vec![
        ("x-wf-source".into(), HeaderValue::Str("http".into())),
        ("x-wf-attempt".into(), HeaderValue::Int(3)),
    ];
    publisher.publish(msg).await.unwrap();

    let first = within("first delivery", WAIT, consumer.next())
        .await
        .unwrap();
    assert_eq!(first.body, br#"{"id":1}"#);
    assert_eq!(first.message_id.as_deref(), Some("dlv_1"));
    assert_eq!(first.exchange, names::DELIVERIES_EXCHANGE);
    assert_eq!(first.routing_key, names::DELIVERY_ROUTING_KEY);
    assert!(!first.redelivered);
    assert_eq!(
        first.headers["x-wf-source"],
        HeaderValue::Str("http".into())
    );
    assert_eq!(first.headers["x-wf-attempt"], HeaderValue::Int(3));
    assert_eq!(first.delivery_count(), None);
    first.nack(true).await.unwrap();

    let second = within("redelivery", WAIT, consumer.next()).await.unwrap();
    assert_eq!(second.body, br#"{"id":1}"#);
    assert!(second.redelivered);
    assert_eq!(second.delivery_count(), Some(1));
    second.ack().await.unwrap();
    let again = second.ack().await.unwrap_err();
    assert!(matches!(again, BrokerError::Settle { .. }), "{again:?}");

    consumer.cancel().await;
    assert!(consumer.next().await.is_none());
    assert_eq!(depth(&broker, names::DELIVERIES_QUEUE).await, 0);
    broker.close().await;
}

/// A message that keeps being handed back (a worker crashing on it, say) is
/// dead-lettered by the quorum queue's delivery limit instead of cycling forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_delivery_lands_in_the_dead_queue_after_the_delivery_limit() {
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect(&url, "poison").await;
    broker
        .declare_topology(&topology(QueueType::Quorum))
        .await
        .unwrap();
    let publisher = broker.publisher().await.unwrap();
    publisher
        .publish(message(
            names::DELIVERIES_EXCHANGE,
            names::DELIVERY_ROUTING_KEY,
            b"{\"poison\":true}",
        ))
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut requeues = 0;
    while depth(&broker, names::DEAD_QUEUE).await == 0 {
        assert!(Instant::now() < deadline, "never dead-lettered");
        if let Some(m) = broker.get(names::DELIVERIES_QUEUE).await.unwrap() {
            m.nack(true).await.unwrap();
            requeues += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(
        (DELIVERY_LIMIT..=DELIVERY_LIMIT + 2).contains(&requeues),
        "dead-lettered after {requeues} requeues"
    );
    assert_eq!(depth(&broker, names::DELIVERIES_QUEUE).await, 0);
    let dead = broker
        .get(names::DEAD_QUEUE)
        .await
        .unwrap()
        .expect("dead message");
    assert_eq!(dead.body, b"{\"poison\":true}");
    dead.ack().await.unwrap();
    broker.close().await;
}

async fn nack_without_requeue_dead_letters(queue_type: QueueType) {
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect(&url, "nack-dead").await;
    broker
        .declare_topology(&topology(queue_type))
        .await
        .unwrap();
    let publisher = broker.publisher().await.unwrap();

    publisher
        .publish(message(
            names::DELIVERIES_EXCHANGE,
            names::DELIVERY_ROUTING_KEY,
            b"{\"d\":1}",
        ))
        .await
        .unwrap();
    publisher
        .publish(message(
            names::EVENTS_EXCHANGE,
            "alert.created",
            b"{\"e\":1}",
        ))
        .await
        .unwrap();
    for queue in [names::DELIVERIES_QUEUE, names::FANOUT_QUEUE] {
        let m = broker.get(queue).await.unwrap().expect("a message");
        m.nack(false).await.unwrap();
    }
    eventually("deliveries poison in the dead queue", WAIT, || async {
        depth(&broker, names::DEAD_QUEUE).await == 1
    })
    .await;
    eventually("event poison in the invalid queue", WAIT, || async {
        depth(&broker, names::INVALID_QUEUE).await == 1
    })
    .await;
    let invalid = broker.get(names::INVALID_QUEUE).await.unwrap().unwrap();
    assert_eq!(invalid.body, b"{\"e\":1}");
    assert_eq!(invalid.routing_key, names::INVALID_QUEUE);
    invalid.ack().await.unwrap();
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_without_requeue_dead_letters_on_quorum() {
    nack_without_requeue_dead_letters(QueueType::Quorum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_without_requeue_dead_letters_on_classic() {
    nack_without_requeue_dead_letters(QueueType::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requeues_prefetched_and_keeps_handed_out_deliveries_settleable() {
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect(&url, "cancel").await;
    broker
        .declare_topology(&topology(QueueType::Quorum))
        .await
        .unwrap();
    let publisher = broker.publisher().await.unwrap();
    for i in 0..5 {
        let body = format!("{{\"n\":{i}}}");
        publisher
            .publish(message(
                names::DELIVERIES_EXCHANGE,
                names::DELIVERY_ROUTING_KEY,
                body.as_bytes(),
            ))
            .await
            .unwrap();
    }
    let mut consumer = broker
        .consume(names::DELIVERIES_QUEUE, 10, "cancel-test")
        .await
        .unwrap();
    let handed_out = within("a delivery", WAIT, consumer.next()).await.unwrap();
    consumer.cancel().await;
    assert!(consumer.next().await.is_none());
    eventually(
        "prefetched messages are back in the queue",
        WAIT,
        || async { depth(&broker, names::DELIVERIES_QUEUE).await == 4 },
    )
    .await;
    handed_out
        .ack()
        .await
        .expect("still settleable after cancel");
    drop(consumer);
    assert_eq!(depth(&broker, names::DELIVERIES_QUEUE).await, 4);
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_purge_and_depth() {
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect(&url, "get-purge").await;
    broker
        .declare_topology(&topology(QueueType::Classic))
        .await
        .unwrap();
    let publisher = broker.publisher().await.unwrap();
    for _ in 0..3 {
        publisher
            .publish(message("", names::DEAD_QUEUE, b"{}"))
            .await
            .unwrap();
    }
    assert_eq!(depth(&broker, names::DEAD_QUEUE).await, 3);
    let m = broker.get(names::DEAD_QUEUE).await.unwrap().unwrap();
    m.nack(true).await.unwrap();

    let missing = broker.queue_depth("no.such.queue").await.unwrap_err();
    assert!(
        matches!(missing, BrokerError::NotFound { .. }),
        "{missing:?}"
    );
    let missing = broker.get("no.such.queue").await.unwrap_err();
    assert!(
        matches!(missing, BrokerError::NotFound { .. }),
        "{missing:?}"
    );

    assert_eq!(broker.purge(names::DEAD_QUEUE).await.unwrap(), 3);
    assert_eq!(depth(&broker, names::DEAD_QUEUE).await, 0);
    assert!(broker.get(names::DEAD_QUEUE).await.unwrap().is_none());
    broker.close().await;
}
