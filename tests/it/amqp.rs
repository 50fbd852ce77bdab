//! A raw AMQP client for tests that play an outside party: a producer publishing whatever
//! it likes, a consumer handing a message back, an operator reading the dead-letter queue.
//! Plain lapin and the exchange and queue names of the contract, so these tests hold
//! whatever shape wf-broker's own API takes.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use wf_testkit::{eventually, Vhost};

pub struct Amqp {
    conn: Connection,
    channel: Channel,
}

impl Amqp {
    /// A connection to `vhost` with a confirming channel.
    pub async fn connect(vhost: &Vhost) -> Amqp {
        let conn = Connection::connect(&vhost.url(), ConnectionProperties::default())
            .await
            .expect("AMQP connection");
        let channel = conn.create_channel().await.expect("AMQP channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select");
        Amqp { conn, channel }
    }

    /// Publishes `body` (persistent, mandatory) and waits until the broker confirmed it
    /// and routed it somewhere.
    pub async fn publish(&self, exchange: &str, routing_key: &str, body: &[u8]) {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("basic.publish")
            .await
            .expect("publisher confirm");
        match confirm {
            Confirmation::Ack(None) => {}
            other => panic!("{exchange}/{routing_key} was not taken: {other:?}"),
        }
    }

    /// The next message of `queue`, unacknowledged (it goes back to the queue when this
    /// connection closes), if there is one.
    pub async fn get(&self, queue: &str) -> Option<Delivery> {
        self.channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap_or_else(|e| panic!("basic.get on {queue}: {e}"))
            .map(|m| m.delivery)
    }

    /// Waits (30 s at most) for a message on `queue`.
    pub async fn next(&self, queue: &str) -> Delivery {
        eventually(
            &format!("a message on {queue}"),
            Duration::from_secs(30),
            || self.get(queue),
        )
        .await
    }

    /// Acknowledges `d`: it leaves its queue for good.
    pub async fn ack(d: &Delivery) {
        d.ack(BasicAckOptions::default()).await.expect("basic.ack");
    }

    /// Hands `d` back to its queue, as a consumer that gave up on it would.
    pub async fn requeue(d: &Delivery) {
        d.nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await
        .expect("basic.nack");
    }

    /// Closes the connection (and with it the channel): whatever is still unacknowledged
    /// goes back to its queue.
    pub async fn close(self) {
        let _ = self.conn.close(200, "done".into()).await;
    }
}

/// A string header of `d` (`x-wf-reason`, …).
pub fn header_str(d: &Delivery, name: &str) -> Option<String> {
    match d.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// An integer header of `d` (`x-delivery-count`, …).
pub fn header_int(d: &Delivery, name: &str) -> Option<i64> {
    Some(match d.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::ShortShortInt(i) => i64::from(*i),
        AMQPValue::ShortShortUInt(i) => i64::from(*i),
        AMQPValue::ShortInt(i) => i64::from(*i),
        AMQPValue::ShortUInt(i) => i64::from(*i),
        AMQPValue::LongInt(i) => i64::from(*i),
        AMQPValue::LongUInt(i) => i64::from(*i),
        AMQPValue::LongLongInt(i) => *i,
        _ => return None,
    })
}
