use crate::support::*;
use futures::future::join_all;
use std::time::{Duration, Instant};
use wf_broker::{names, PublishError, Topology};
use wf_core::config::QueueType;

fn quorum() -> Topology {
    Topology {
        queue_type: QueueType::Quorum,
        retry_delays: vec![Duration::from_secs(5)],
        quorum_group_size: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_are_pipelined_and_all_confirmed() {
    const N: usize = 2000;
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect(&url, "pipelined").await;
    broker.declare_topology(&quorum()).await.unwrap();
    let publisher = broker.publisher().await.unwrap();

    let bodies: Vec<Vec<u8>> = (0..N)
        .map(|i| format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(900)).into_bytes())
        .collect();
    let started = Instant::now();
    let results = join_all(bodies.iter().map(|body| {
        let publisher = publisher.clone();
        async move {
            publisher
                .publish(message(
                    names::DELIVERIES_EXCHANGE,
                    names::DELIVERY_ROUTING_KEY,
                    body,
                ))
                .await
        }
    }))
    .await;
    let elapsed = started.elapsed();
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    eprintln!("{N} confirmed publishes in {elapsed:?}");
    // Confirms awaited one by one run at about 0.8k msg/s here (2.5 s for 2000); pipelined
    // ones are an order of magnitude faster. Generous bound for a busy machine.
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    eventually(
        "all messages are in the queue",
        Duration::from_secs(10),
        || async { depth(&broker, names::DELIVERIES_QUEUE).await == N as u32 },
    )
    .await;
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_mandatory_messages_are_errors() {
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect(&url, "unroutable").await;
    broker.declare_topology(&quorum()).await.unwrap();
    let publisher = broker.publisher().await.unwrap();

    let err = publisher
        .publish(message(names::DELIVERIES_EXCHANGE, "nowhere", b"{}"))
        .await
        .unwrap_err();
    assert_eq!(err, PublishError::Unroutable);
    assert!(!err.is_retryable());
    let err = publisher
        .publish(message("", "no.such.queue", b"{}"))
        .await
        .unwrap_err();
    assert_eq!(err, PublishError::Unroutable);
    // Without `mandatory` the broker drops it silently (and confirms).
    let mut msg = message(names::DELIVERIES_EXCHANGE, "nowhere", b"{}");
    msg.mandatory = false;
    publisher.publish(msg).await.expect("not mandatory");
    // The channel is still fine.
    publisher
        .publish(message(
            names::DELIVERIES_EXCHANGE,
            names::DELIVERY_ROUTING_KEY,
            b"{}",
        ))
        .await
        .expect("routable");
    assert_eq!(depth(&broker, names::DELIVERIES_QUEUE).await, 1);
    broker.close().await;
}

/// Returned messages carry no delivery tag; with many publishes in flight each return
/// must still reach the publish it belongs to, never a routable neighbour. Classic queues
/// confirm fast enough for RabbitMQ to acknowledge routed and returned messages in one
/// `multiple` batch, where lapin alone attributes the return to an arbitrary member (this
/// test fails within a run or two with that attribution).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_reach_their_own_publish_when_interleaved() {
    const N: usize = 3000;
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect(&url, "interleaved").await;
    broker
        .declare_topology(&Topology {
            queue_type: QueueType::Classic,
            retry_delays: vec![],
            quorum_group_size: None,
        })
        .await
        .unwrap();
    let publisher = broker.publisher().await.unwrap();

    let bodies: Vec<Vec<u8>> = (0..N)
        .map(|i| format!(r#"{{"n":{i}}}"#).into_bytes())
        .collect();
    let results = join_all(bodies.iter().enumerate().map(|(i, body)| {
        let publisher = publisher.clone();
        async move {
            let key = if i % 3 == 0 {
                "nowhere"
            } else {
                names::DELIVERY_ROUTING_KEY
            };
            publisher
                .publish(message(names::DELIVERIES_EXCHANGE, key, body))
                .await
        }
    }))
    .await;
    for (i, r) in results.iter().enumerate() {
        if i % 3 == 0 {
            assert_eq!(r, &Err(PublishError::Unroutable), "message {i}");
        } else {
            assert_eq!(r, &Ok(()), "message {i}");
        }
    }
    let routed = (N - N / 3) as u32;
    eventually(
        "routable messages are queued",
        Duration::from_secs(10),
        || async { depth(&broker, names::DELIVERIES_QUEUE).await == routed },
    )
    .await;
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_channel_fails_the_publish_and_the_next_one_gets_a_fresh_channel() {
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect(&url, "fresh-channel").await;
    broker.declare_topology(&quorum()).await.unwrap();
    let publisher = broker.publisher().await.unwrap();

    // Publishing to a missing exchange makes the broker close the channel (404).
    let err = publisher
        .publish(message("no.such.exchange", "x", b"{}"))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Connection(_)), "{err:?}");
    assert!(err.is_retryable());
    publisher
        .publish(message(
            names::DELIVERIES_EXCHANGE,
            names::DELIVERY_ROUTING_KEY,
            b"{}",
        ))
        .await
        .expect("a fresh channel is used");
    assert_eq!(depth(&broker, names::DELIVERIES_QUEUE).await, 1);
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_names_are_rejected_without_panicking() {
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect(&url, "overlong").await;
    let publisher = broker.publisher().await.unwrap();
    let long = "k".repeat(300);
    let err = publisher
        .publish(message("", &long, b"{}"))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Invalid(_)), "{err:?}");
    let mut msg = message("", "q", b"{}");
    msg.headers = vec![(long.clone(), wf_broker::HeaderValue::Int(1))];
    assert!(matches!(
        publisher.publish(msg).await,
        Err(PublishError::Invalid(_))
    ));
    assert!(broker.queue_depth(&long).await.is_err());
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_events_go_through_the_events_exchange() {
    let vhost = Vhost::create();
    let url = vhost.url();
    let broker = connect(&url, "system-event").await;
    broker.declare_topology(&quorum()).await.unwrap();
    let publisher = broker.publisher().await.unwrap();
    let event = wf_core::envelope::Event::from_amqp(
        br#"{"id":"evt_sys1","event":"webhook.disabled","orgId":"org_abc123","data":{"id":"wh_1"}}"#,
        None,
    )
    .expect("a valid event");
    wf_broker::routes::publish_event(&publisher, &event, "system")
        .await
        .unwrap();
    let m = broker
        .get(names::FANOUT_QUEUE)
        .await
        .unwrap()
        .expect("the event is queued for fan-out");
    assert_eq!(m.routing_key, "webhook.disabled");
    assert_eq!(m.message_id.as_deref(), Some("evt_sys1"));
    assert_eq!(
        m.headers[wf_broker::routes::headers::SOURCE],
        wf_broker::HeaderValue::Str("system".into())
    );
    assert_eq!(m.body, event.to_wire());
    m.ack().await.unwrap();
    broker.close().await;
}
