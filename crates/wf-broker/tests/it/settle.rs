//! Coalesced acks (`settle.rs`): finished deliveries are acked with `multiple` up to the
//! oldest one still in hand, the rest after a short hold; never a frame the broker
//! rejects, never an ack lost at close.

use crate::support::*;
use std::time::Duration;
use wf_broker::{names, Broker, Incoming};

const WAIT: Duration = Duration::from_secs(15);

/// `messages_unacknowledged` of the deliveries queue, from the broker itself.
fn unacked(vhost: &Vhost) -> u64 {
    vhost
        .queue_column("messages_unacknowledged")
        .into_iter()
        .find(|(name, _)| name == names::DELIVERIES_QUEUE)
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Waits until the broker holds nothing unacked on the deliveries queue, then checks the
/// queue is empty too: every message was acked, none requeued.
async fn all_acked(broker: &Broker, vhost: &Vhost, what: &str) {
    eventually(what, WAIT, || async { unacked(vhost) == 0 }).await;
    assert_eq!(depth(broker, names::DELIVERIES_QUEUE).await, 0);
}

async fn setup(url: &str, name: &str, n: usize) -> (Broker, wf_broker::Consumer, Vec<Incoming>) {
    let broker = connect_with_topology(url, name).await;
    let publisher = broker.publisher().await.unwrap();
    let bodies: Vec<String> = (0..n).map(|i| format!("{i}")).collect();
    for b in &bodies {
        publish_retrying(
            &publisher,
            message(
                names::DELIVERIES_EXCHANGE,
                names::DELIVERY_ROUTING_KEY,
                b.as_bytes(),
            ),
        )
        .await;
    }
    let mut consumer = broker
        .consume(names::DELIVERIES_QUEUE, 100, name)
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(within("a delivery", WAIT, consumer.next()).await.unwrap());
    }
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.body, format!("{i}").as_bytes());
    }
    (broker, consumer, got)
}

/// Acks in reverse order while the oldest delivery is still being worked on: they are not
/// held behind it (after the short hold they go out one by one), and once it is acked too
/// the queue is empty. The channel is still healthy afterwards: a frame the broker
/// refused (an unknown or already-acked tag) would have closed it and requeued messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_acks_are_neither_held_behind_a_slow_delivery_nor_rejected() {
    let vhost = Vhost::create();
    let url = vhost.url();
    let (broker, mut consumer, mut got) = setup(&url, "settle-order", 30).await;
    let oldest = got.remove(0);
    for m in got.iter().rev() {
        m.ack().await.unwrap();
    }
    eventually("all but the oldest acked", WAIT, || async {
        unacked(&vhost) == 1
    })
    .await;
    oldest.ack().await.unwrap();
    all_acked(&broker, &vhost, "everything acked").await;

    // In-order acks (the common case) are covered by multiple-acks; still all settled.
    let publisher = broker.publisher().await.unwrap();
    for b in [b"\"late-1\"", b"\"late-2\""] {
        publish_retrying(
            &publisher,
            message(names::DELIVERIES_EXCHANGE, names::DELIVERY_ROUTING_KEY, b),
        )
        .await;
    }
    let a = within("late-1", WAIT, consumer.next()).await.unwrap();
    let b = within("late-2", WAIT, consumer.next()).await.unwrap();
    assert_eq!(a.body, b"\"late-1\"");
    assert!(!a.redelivered, "the channel survived: nothing was requeued");
    a.ack().await.unwrap();
    b.ack().await.unwrap();
    all_acked(&broker, &vhost, "the late ones acked").await;
    broker.close().await;
}

/// A delivery dropped without being settled goes back to the queue at once (the channel
/// stays open), and the acks behind it are not held up by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_delivery_is_requeued_and_does_not_block_later_acks() {
    let vhost = Vhost::create();
    let url = vhost.url();
    let (broker, mut consumer, mut got) = setup(&url, "settle-drop", 3).await;
    let first = got.remove(0);
    drop(first);
    for m in &got {
        m.ack().await.unwrap();
    }
    let again = within("the dropped one, redelivered", WAIT, consumer.next())
        .await
        .unwrap();
    assert_eq!(again.body, b"0");
    assert!(again.redelivered);
    again.ack().await.unwrap();
    all_acked(&broker, &vhost, "everything acked").await;
    broker.close().await;
}

/// Acks still waiting for an older delivery when the broker is closed are sent before the
/// connection goes: only the one never acked comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_sends_the_acks_still_waiting() {
    let vhost = Vhost::create();
    let url = vhost.url();
    let (broker, consumer, mut got) = setup(&url, "settle-close", 20).await;
    let oldest = got.remove(0);
    for m in &got {
        m.ack().await.unwrap();
    }
    broker.close().await;
    drop((oldest, got, consumer));

    let broker = connect(&url, "settle-close-check").await;
    eventually("only the unacked one is back", WAIT, || async {
        depth(&broker, names::DELIVERIES_QUEUE).await == 1
    })
    .await;
    broker.close().await;
}
