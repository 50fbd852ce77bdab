//! Consuming with manual acks, surviving dropped channels and connections.

use crate::connection::{Broker, OP_PATIENCE};
use crate::error::BrokerError;
use crate::fields::{from_field_table, short, HeaderValue};
use crate::settle::{Cmd, Settler};
use backon::{ExponentialBuilder, Retryable};
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Acker, Channel};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::{debug, info, warn};

/// A subscription to one queue. Each consumer has its own channel, so one consumer's
/// failure (or prefetch) never affects another.
///
/// When the channel or the connection drops, [`Consumer::next`] re-subscribes by itself
/// (with backoff) on a fresh channel. Deliveries handed out before that cannot be settled
/// any more — [`Incoming::ack`] returns an error — and the broker redelivers them with
/// `redelivered = true`: processing must be idempotent (delivery is at least once).
pub struct Consumer {
    broker: Broker,
    queue: String,
    prefetch: u16,
    tag: String,
    current: Option<Subscription>,
    cancelled: bool,
}

struct Subscription {
    channel: Channel,
    stream: lapin::Consumer,
    settler: Settler,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", &self.queue)
            .field("tag", &self.tag)
            .field("prefetch", &self.prefetch)
            .field("subscribed", &self.current.is_some())
            .field("cancelled", &self.cancelled)
            .finish()
    }
}

impl Consumer {
    pub(crate) async fn open(
        broker: Broker,
        queue: &str,
        prefetch: u16,
        tag: &str,
    ) -> Result<Consumer, BrokerError> {
        for name in [queue, tag] {
            short(name).map_err(|detail| BrokerError::InvalidName {
                name: crate::fields::truncate(name, 64),
                detail,
            })?;
        }
        let sub = subscribe(&broker, queue, prefetch, tag, Some(OP_PATIENCE)).await?;
        info!(queue, tag, prefetch, "consuming");
        Ok(Consumer {
            broker,
            queue: queue.to_owned(),
            prefetch,
            tag: tag.to_owned(),
            current: Some(sub),
            cancelled: false,
        })
    }

    /// The next delivery. Waits as long as it takes, re-subscribing after failures.
    /// Cancel-safe: dropping the future (e.g. in `tokio::select!` with a shutdown signal)
    /// loses nothing.
    ///
    /// Returns `None` only after [`Consumer::cancel`] or [`Broker::close`].
    pub async fn next(&mut self) -> Option<Incoming> {
        loop {
            if self.cancelled || self.broker.is_closed() {
                return None;
            }
            if self.current.is_none() {
                self.current = Some(self.resubscribe().await?);
            }
            let sub = self.current.as_mut()?;
            match sub.stream.next().await {
                Some(Ok(delivery)) => {
                    return Some(Incoming::from_subscription(
                        delivery,
                        sub.channel.clone(),
                        &sub.settler,
                    ));
                }
                Some(Err(e)) => {
                    warn!(queue = %self.queue, error = %e, "consumer channel failed; re-subscribing");
                    self.current = None;
                }
                None if self.cancelled => return None,
                None => {
                    warn!(queue = %self.queue, "the broker cancelled the consumer; re-subscribing");
                    self.current = None;
                }
            }
        }
    }

    /// Stops the subscription: no new deliveries arrive, and deliveries the broker had
    /// already pushed but [`Consumer::next`] had not handed out are requeued at once.
    /// Deliveries already handed out stay settleable (their channel stays open until the
    /// last of them is dropped), so a shutdown can finish or nack what is in flight.
    pub async fn cancel(&mut self) {
        self.cancelled = true;
        let Some(mut sub) = self.current.take() else {
            return;
        };
        if !sub.channel.status().connected() {
            return;
        }
        if let Err(e) = sub
            .channel
            .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default())
            .await
        {
            debug!(queue = %self.queue, error = %e, "basic.cancel failed");
        }
        let mut requeued = 0usize;
        while let Some(Some(Ok(delivery))) = sub.stream.next().now_or_never() {
            let nack = BasicNackOptions {
                requeue: true,
                multiple: false,
            };
            if delivery.acker.nack(nack).await.is_ok() {
                requeued += 1;
            }
        }
        info!(queue = %self.queue, requeued, "consumer cancelled");
    }

    async fn resubscribe(&self) -> Option<Subscription> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times();
        let attempt = || subscribe(&self.broker, &self.queue, self.prefetch, &self.tag, None);
        let result = attempt
            .retry(backoff)
            .when(|e| !matches!(e, BrokerError::Closed))
            .notify(|e, next| {
                warn!(queue = %self.queue, error = %e, retry_in = ?next, "could not re-subscribe yet");
            })
            .await;
        match result {
            Ok(sub) => {
                info!(queue = %self.queue, "re-subscribed");
                Some(sub)
            }
            Err(_) => None,
        }
    }
}

async fn subscribe(
    broker: &Broker,
    queue: &str,
    prefetch: u16,
    tag: &str,
    patience: Option<Duration>,
) -> Result<Subscription, BrokerError> {
    let channel = match patience {
        Some(p) => broker.channel(p).await?,
        None => loop {
            // Consumers wait for the connection as long as it takes.
            match broker.channel(Duration::from_secs(3600)).await {
                Ok(c) => break c,
                Err(BrokerError::Unavailable { .. }) => continue,
                Err(e) => return Err(e),
            }
        },
    };
    let result = async {
        channel
            .basic_qos(prefetch, BasicQosOptions { global: false })
            .await
            .map_err(|e| BrokerError::operation("basic.qos", &e))?;
        channel
            .basic_consume(
                short(queue).map_err(|detail| BrokerError::InvalidName {
                    name: queue.to_owned(),
                    detail,
                })?,
                short(tag).map_err(|detail| BrokerError::InvalidName {
                    name: tag.to_owned(),
                    detail,
                })?,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| BrokerError::on_object("basic.consume", "queue", queue, &e))
    }
    .await;
    match result {
        Ok(stream) => {
            let settler = Settler::start(channel.clone());
            broker.register_settler(&settler);
            Ok(Subscription {
                channel,
                stream,
                settler,
            })
        }
        Err(e) => {
            crate::connection::close_quietly(&channel).await;
            Err(e)
        }
    }
}

/// One received message, to be settled with [`Incoming::ack`] or [`Incoming::nack`].
/// Dropping a consumed message unsettled requeues it (a `basic.nack` with requeue);
/// one from [`Broker::get`](crate::Broker::get) stays unacked until its channel closes.
/// Either way the broker delivers it again.
pub struct Incoming {
    /// The body exactly as published.
    pub body: Vec<u8>,
    /// The routing key it was published (or dead-lettered) with.
    pub routing_key: String,
    /// The exchange it was published to (`""` for the default exchange).
    pub exchange: String,
    /// The `message_id` property.
    pub message_id: Option<String>,
    /// Whether the broker delivered it before (to this or another consumer) without an ack.
    pub redelivered: bool,
    /// Application headers; strings and integers only (best effort: `x-death` and other
    /// nested values are skipped).
    pub headers: BTreeMap<String, HeaderValue>,
    acker: Acker,
    /// Set for consumed messages: acks go through the channel's settling task, which
    /// coalesces them (see `settle.rs`).
    batched: Option<Batched>,
    /// Keeps the delivery's channel open until the delivery is settled or dropped, even
    /// when its consumer is cancelled or dropped first.
    _channel: Channel,
}

struct Batched {
    tag: u64,
    settler: Settler,
    settled: AtomicBool,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the body: it holds customer data.
        f.debug_struct("Incoming")
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("message_id", &self.message_id)
            .field("redelivered", &self.redelivered)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Incoming {
    pub(crate) fn from_delivery(d: Delivery, channel: Channel) -> Self {
        Incoming {
            headers: from_field_table(d.properties.headers().as_ref()),
            message_id: d.properties.message_id().as_ref().map(|s| s.to_string()),
            routing_key: d.routing_key.to_string(),
            exchange: d.exchange.to_string(),
            redelivered: d.redelivered,
            body: d.data,
            acker: d.acker,
            batched: None,
            _channel: channel,
        }
    }

    fn from_subscription(d: Delivery, channel: Channel, settler: &Settler) -> Self {
        let tag = d.delivery_tag;
        settler.send(Cmd::Out(tag));
        let mut msg = Incoming::from_delivery(d, channel);
        msg.batched = Some(Batched {
            tag,
            settler: settler.clone(),
            settled: AtomicBool::new(false),
        });
        msg
    }

    /// Hands a settlement to the channel's settling task. The frame is sent there, in
    /// order with the channel's other acks and nacks; a failure to send it means the
    /// channel is gone, and the broker redelivers the message.
    fn settle_batched(&self, b: &Batched, op: &'static str, cmd: Cmd) -> Result<(), BrokerError> {
        if self.acker.poisoned() {
            return Err(settle_error(op, CHANNEL_CLOSED));
        }
        if b.settled.swap(true, Ordering::AcqRel) {
            return Err(settle_error(op, ALREADY_SETTLED));
        }
        if b.settler.send(cmd) {
            Ok(())
        } else {
            Err(settle_error(op, CHANNEL_CLOSED))
        }
    }

    /// Acknowledges the message: the broker forgets it. Call only once its outcome is
    /// durably recorded.
    ///
    /// For a consumed message this hands the ack to the channel's settling task and
    /// returns: the frame goes out with the next `multiple` ack, or alone within 5 ms
    /// when an older delivery is still in hand, and at the latest in
    /// [`Broker::close`](crate::Broker::close). A crash before that redelivers the message
    /// (at least once, as always).
    ///
    /// # Errors
    /// [`BrokerError::Settle`] when the delivery's channel is gone (the broker redelivers
    /// the message, so the work may happen twice) or it was already settled.
    pub async fn ack(&self) -> Result<(), BrokerError> {
        if let Some(b) = &self.batched {
            return self.settle_batched(b, "ack", Cmd::Ack(b.tag));
        }
        let result = self.acker.ack(BasicAckOptions { multiple: false }).await;
        self.settled("ack", result)
    }

    /// Negatively acknowledges the message: back to the queue with `requeue`, otherwise
    /// to the queue's dead-letter target (or dropped if it has none).
    ///
    /// # Errors
    /// As [`Incoming::ack`].
    pub async fn nack(&self, requeue: bool) -> Result<(), BrokerError> {
        if let Some(b) = &self.batched {
            return self.settle_batched(
                b,
                "nack",
                Cmd::Nack {
                    tag: b.tag,
                    requeue,
                },
            );
        }
        let result = self
            .acker
            .nack(BasicNackOptions {
                requeue,
                multiple: false,
            })
            .await;
        self.settled("nack", result)
    }

    fn settled(&self, op: &'static str, result: lapin::Result<bool>) -> Result<(), BrokerError> {
        match result {
            Ok(true) => Ok(()),
            Ok(false) if self.acker.poisoned() => Err(settle_error(op, CHANNEL_CLOSED)),
            Ok(false) => Err(settle_error(op, ALREADY_SETTLED)),
            Err(e) => Err(settle_error(op, &e.to_string())),
        }
    }

    /// How many times a quorum queue delivered this message before (`x-delivery-count`):
    /// `None` on the first delivery and on classic queues. Compared against
    /// [`crate::DELIVERY_LIMIT`] it tells how close a message is to being dead-lettered.
    pub fn delivery_count(&self) -> Option<i64> {
        match self.headers.get("x-delivery-count") {
            Some(HeaderValue::Int(n)) => Some(*n),
            _ => None,
        }
    }

    /// Whether the broker has redelivered this message so often that one more failure
    /// to settle it would make the queue dead-letter it (quorum queues count deliveries
    /// in `x-delivery-count` up to [`crate::DELIVERY_LIMIT`]). The consumer of such a
    /// message dead-letters it with a reason instead of trying it once more: it has
    /// killed or stalled every worker that took it.
    pub fn redelivery_limit_reached(&self) -> bool {
        self.delivery_count()
            .is_some_and(|n| n >= crate::DELIVERY_LIMIT - 1)
    }
}

const CHANNEL_CLOSED: &str = "its channel is closed; the broker will redeliver it";
const ALREADY_SETTLED: &str = "it was already settled";

fn settle_error(op: &'static str, detail: &str) -> BrokerError {
    BrokerError::Settle {
        op,
        detail: detail.to_owned(),
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(b) = &self.batched {
            if !b.settled.load(Ordering::Acquire) && !self.acker.poisoned() {
                // Back to the queue now, and out of the way of the channel's
                // multiple-acks, which could not pass an outstanding tag.
                b.settler.send(Cmd::Nack {
                    tag: b.tag,
                    requeue: true,
                });
            }
        }
    }
}
