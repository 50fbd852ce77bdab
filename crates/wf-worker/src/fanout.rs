//! Fan-out: one event from `workflows.fanout` becomes one delivery per subscribed, active
//! webhook of its organisation, each first attempted right here (no second trip through
//! the broker) or, when its endpoint cannot take it soon, queued durably with its
//! attempt unspent, before the event is acked. Invalid events go to
//! `workflows.events.invalid` with the reason; nothing is dropped silently.
//!
//! An event's deliveries are worked through, not started all at once: each asks its
//! endpoint for admission in turn, and the attempts run concurrently within the worker's
//! slots. However many webhooks an organisation has, what is in flight stays within
//! `WF_WORKER_CONCURRENCY` and every delivery shares the one serialised payload.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use tracing::{debug, warn, Instrument};
use wf_broker::{routes, Incoming, Publisher};
use wf_core::envelope::Event;
use wf_core::messages::DeliveryJob;
use wf_store::{NewDelivery, NewPayload, Subscription};
use wf_telemetry::metrics;

use crate::cache::SubscriptionCache;
use crate::deliver::{delivery_span, Admitted, Deliverer, Origin};
use crate::endpoints::{endpoint_key, Refused};
use crate::log::{DeliveryLog, LogRecord, Logged};

/// What the fan-out step needs.
pub struct Fanout {
    pub cache: SubscriptionCache,
    /// Makes each delivery's first attempt.
    pub deliverer: Arc<Deliverer>,
    pub publisher: Publisher,
    pub log: DeliveryLog,
}

/// One delivery's work in progress: its job and what it came to.
type Running<'a> = Pin<Box<dyn Future<Output = (DeliveryJob, anyhow::Result<Logged>)> + Send + 'a>>;
/// Deliveries of one event that may wait in their endpoints' lines at once (at most one
/// more per endpoint than the first, see [`Fanout::work_through`]).
pub const MAX_WAITING: usize = 8;

/// Whether some endpoint appears twice in `lines`.
fn has_twice(lines: &[String]) -> bool {
    lines
        .iter()
        .enumerate()
        .any(|(i, l)| lines[i + 1..].contains(l))
}

/// A delivery waiting in its endpoint's line, and what it was granted.
type Granted<'a> = Pin<
    Box<
        dyn Future<
                Output = (
                    DeliveryJob,
                    &'a Subscription,
                    wf_core::url_policy::WebhookUrl,
                    Result<crate::endpoints::Permit, Refused>,
                ),
            > + Send
            + 'a,
    >,
>;

impl Fanout {
    /// Handles one event message; acks it once its outcome is durable, nacks it (requeue)
    /// when a dependency failed so it is tried again.
    pub async fn handle(self: Arc<Self>, mut msg: Incoming) {
        let result = match Event::from_amqp(&msg.body, msg.message_id.as_deref()) {
            Err(rejection) => {
                self.reject(&msg, rejection.reason(), &rejection.to_string())
                    .await
            }
            Ok(event) => {
                // Events the ingestor published (API ingest and its system events,
                // source `http`) were counted there; the worker's own system events
                // (`webhook.disabled` after a 410) are not ingested. Only what producers
                // published straight to the exchange (no source) is counted here.
                if routes::event_source(&msg).is_none() {
                    metrics()
                        .events_ingested
                        .with_label_values(&["amqp", event.event.as_str()])
                        .inc();
                }
                // The payload is all that is needed from here on: the message body may
                // go while the deliveries are worked through.
                msg.body = Vec::new();
                self.fan_out(event).await
            }
        };
        match result {
            // Acked once the payload and every first attempt are in the log.
            Ok(logged) => self.log.ack_when_logged(msg, logged),
            Err(e) => {
                warn!(error = %e, "fan-out failed; requeueing the event");
                if let Err(e) = msg.nack(true).await {
                    // The channel went away; the broker redelivers the event (at least once).
                    warn!(error = %e, "could not settle event message");
                }
            }
        }
    }

    async fn reject(
        &self,
        msg: &Incoming,
        reason: &'static str,
        detail: &str,
    ) -> anyhow::Result<Vec<Logged>> {
        metrics().events_rejected.with_label_values(&[reason]).inc();
        warn!(reason, detail, routing_key = %msg.routing_key, "rejecting invalid event");
        routes::reject_event(&self.publisher, msg, reason, detail).await?;
        Ok(Vec::new())
    }

    /// Fans `event` out and makes each first attempt; returns the receipts of everything
    /// logged on the way, which the event's ack waits for.
    async fn fan_out(&self, mut event: Event) -> anyhow::Result<Vec<Logged>> {
        let subs = self.cache.for_event(&event.org_id, event.event).await?;
        if subs.is_empty() {
            debug!(event_id = %event.id, event = %event.event, "no subscribers");
            return Ok(Vec::new());
        }
        // Serialised once per event: every webhook and every attempt sends these bytes.
        let body: Arc<str> = String::from_utf8(event.payload())
            .expect("JSON is UTF-8")
            .into();
        // The parsed data is not needed any more; the payload is.
        event.data = Default::default();
        // The deliveries' log time (and partition key), which their jobs carry.
        let now = wf_core::time::now_ms();
        // Logged first: the payload must exist for any later retry or replay. The log may
        // lag; the deliveries never wait for it, only the event's ack does.
        let mut logged = Vec::with_capacity(subs.len() + 1);
        logged.push(
            self.log
                .record(LogRecord::Payload(NewPayload {
                    org_id: event.org_id.clone(),
                    event_id: event.id.clone(),
                    body: body.clone(),
                    event_ts_ms: event.timestamp.timestamp_millis(),
                    created_at: now,
                }))
                .await,
        );
        let mut fallback = Vec::new();
        self.work_through(&event, &subs, &body, now, &mut logged, &mut fallback)
            .await;
        // A delivery whose outcome could not be made durable is queued on
        // `workflows.deliveries` instead; only if that fails too is the event nacked (and
        // fanned out again later: at least once, same delivery ids).
        for job in &fallback {
            routes::queue_delivery(&self.publisher, job)
                .await
                .map_err(|e| anyhow::anyhow!("queueing deliveries: {e}"))?;
        }
        for job in fallback {
            let j = job.v1();
            let l = self
                .log
                .record(LogRecord::Delivery(NewDelivery {
                    id: j.delivery_id.clone(),
                    org_id: j.org_id.clone(),
                    webhook_id: j.webhook_id.clone(),
                    event_id: j.event_id.clone(),
                    event: j.event,
                    created_at: now,
                }))
                .await;
            logged.push(l);
        }
        Ok(logged)
    }

    /// Admits the event's deliveries in turn: those whose endpoint can take them now start
    /// at once, those whose endpoint asks for a short wait wait in its line, the rest are
    /// held back. Up to [`MAX_WAITING`] wait at once in different endpoints' lines, so a
    /// healthy endpoint's delivery does not wait behind a few slow ones'; once one
    /// endpoint has two of them waiting (or eight wait), the next admission waits for a
    /// waiter to be served, which keeps a large fan-out to one endpoint paced by that
    /// endpoint instead of holding it all back at once. Receipts go to `logged`; the jobs
    /// whose outcome could not be made durable to `fallback`.
    async fn work_through(
        &self,
        event: &Event,
        subs: &[Subscription],
        body: &Arc<str>,
        logged_at: chrono::DateTime<chrono::Utc>,
        logged: &mut Vec<Logged>,
        fallback: &mut Vec<DeliveryJob>,
    ) {
        let d = &*self.deliverer;
        let mut running: FuturesUnordered<Running<'_>> = FuturesUnordered::new();
        let mut waiting: FuturesUnordered<Granted<'_>> = FuturesUnordered::new();
        let mut pending = subs.iter();
        // The endpoints of the deliveries waiting now, one entry per waiter.
        let mut lines: Vec<String> = Vec::new();
        loop {
            // A second waiter in one endpoint's line means that endpoint is the bottleneck:
            // admit the rest once it has served one.
            while waiting.len() < MAX_WAITING && !has_twice(&lines) {
                let Some(sub) = pending.next() else { break };
                let job = DeliveryJob::first(
                    event,
                    &sub.webhook_id,
                    body.clone(),
                    logged_at.timestamp_millis(),
                );
                match d.admit(sub, Origin::Fanout) {
                    Admitted::Send(url, permit) => running.push(Box::pin(async move {
                        let span = delivery_span(job.v1());
                        let r = d.attempt(&job, sub, &url, permit).instrument(span).await;
                        (job, r)
                    })),
                    Admitted::Wait(url, mut w) => {
                        lines.push(endpoint_key(&url));
                        waiting.push(Box::pin(async move {
                            let granted = w.wait().await;
                            (job, sub, url, granted)
                        }));
                    }
                    Admitted::Hold(hold) => running.push(Box::pin(async move {
                        let span = delivery_span(job.v1());
                        let r = d
                            .hold_back(&job, hold, Origin::Fanout)
                            .instrument(span)
                            .await;
                        (job, r)
                    })),
                    Admitted::Blocked(why) => running.push(Box::pin(async move {
                        let span = delivery_span(job.v1());
                        let r = d.blocked(&job, sub, why).instrument(span).await;
                        (job, r)
                    })),
                    // Shutting down: not started, queued for whichever worker is next.
                    Admitted::Closed => fallback.push(job),
                }
            }
            if running.is_empty() && waiting.is_empty() && pending.len() == 0 {
                return;
            }
            tokio::select! {
                // Biased: finishing attempts frees slots the waiters may be granted.
                biased;
                Some((job, r)) = running.next(), if !running.is_empty() => match r {
                    Ok(l) => logged.push(l),
                    Err(e) => {
                        warn!(error = %e, delivery_id = %job.v1().delivery_id, "first attempt not recorded; queueing the delivery");
                        fallback.push(job);
                    }
                },
                Some((job, sub, url, granted)) = waiting.next(), if !waiting.is_empty() => {
                    let key = endpoint_key(&url);
                    if let Some(i) = lines.iter().position(|l| *l == key) {
                        lines.swap_remove(i);
                    }
                    match granted {
                        Ok(permit) => running.push(Box::pin(async move {
                            let span = delivery_span(job.v1());
                            let r = d.attempt(&job, sub, &url, permit).instrument(span).await;
                            (job, r)
                        })),
                        Err(Refused::Hold(hold)) => running.push(Box::pin(async move {
                            let span = delivery_span(job.v1());
                            let r = d.hold_back(&job, hold, Origin::Fanout).instrument(span).await;
                            (job, r)
                        })),
                        Err(Refused::Closed) => fallback.push(job),
                    }
                }
            }
        }
    }
}
