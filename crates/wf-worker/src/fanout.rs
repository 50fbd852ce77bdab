//! Fan-out: one event from `workflows.fanout` becomes one delivery job per subscribed,
//! active webhook of its organisation, each durably queued on `workflows.deliveries`
//! before the event is acked. Invalid events go to `workflows.events.invalid` with the
//! reason; nothing is dropped silently.

use std::sync::Arc;

use futures::future::{join_all, try_join_all};
use tracing::{debug, warn};
use wf_broker::{routes, Incoming, PublishError, Publisher};
use wf_core::envelope::Event;
use wf_core::messages::DeliveryJob;
use wf_store::{NewDelivery, NewPayload};
use wf_telemetry::metrics;

use crate::cache::SubscriptionCache;
use crate::log::{DeliveryLog, LogRecord, Logged};

/// What the fan-out step needs.
pub struct Fanout {
    pub cache: SubscriptionCache,
    /// Makes each delivery's first attempt.
    pub deliverer: Arc<crate::deliver::Deliverer>,
    pub publisher: Publisher,
    pub log: DeliveryLog,
}

impl Fanout {
    /// Handles one event message; acks it once its outcome is durable, nacks it (requeue)
    /// when a dependency failed so it is tried again.
    pub async fn handle(self: Arc<Self>, msg: Incoming) {
        let result = match Event::from_amqp(&msg.body, msg.message_id.as_deref()) {
            Err(rejection) => {
                self.reject(&msg, rejection.reason(), &rejection.to_string())
                    .await
            }
            Ok(event) => {
                // Events the ingestor published (API ingest and its system events,
                // source `http`) were counted there; the worker's own system events
                // (`webhook.disabled` after a 410) are not ingested. Only what producers
                // published straight to the exchange (no source header) is counted here.
                if routes::event_source(&msg).is_none() {
                    metrics()
                        .events_ingested
                        .with_label_values(&["amqp", event.event.as_str()])
                        .inc();
                }
                self.fan_out(&event).await
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
    async fn fan_out(&self, event: &Event) -> anyhow::Result<Vec<Logged>> {
        let subs = self.cache.for_event(&event.org_id, event.event).await?;
        if subs.is_empty() {
            debug!(event_id = %event.id, event = %event.event, "no subscribers");
            return Ok(Vec::new());
        }
        // Serialised once per event: every webhook and every attempt sends these bytes.
        let body = String::from_utf8(event.payload()).expect("JSON is UTF-8");
        let now = chrono::Utc::now();
        let jobs: Vec<DeliveryJob> = subs
            .iter()
            .map(|s| DeliveryJob::first(event, &s.webhook_id, body.clone()))
            .collect();
        // Logged first: the payload must exist for any later retry or replay. The log may
        // lag; the deliveries never wait for it, only the event's ack does.
        let mut logged = Vec::with_capacity(subs.len() + 1);
        logged.push(
            self.log
                .record(LogRecord::Payload(NewPayload {
                    org_id: event.org_id.clone(),
                    event_id: event.id.clone(),
                    body,
                    event_ts_ms: event.timestamp.timestamp_millis(),
                    created_at: now,
                }))
                .await,
        );
        // First attempts straight from here: one broker pass per delivery on the happy
        // path. A delivery whose outcome could not be made durable is queued on
        // `workflows.deliveries` instead; only if that fails too is the event nacked (and
        // fanned out again later: at least once, same delivery ids).
        let outcomes = join_all(
            subs.iter()
                .zip(&jobs)
                .map(|(sub, job)| self.deliverer.deliver_first(job, sub)),
        )
        .await;
        let mut fallback: Vec<&DeliveryJob> = Vec::new();
        for (job, outcome) in jobs.iter().zip(outcomes) {
            match outcome {
                Ok(l) => logged.push(l),
                Err(e) => {
                    warn!(error = %e, delivery_id = %job.v1().delivery_id, "first attempt not recorded; queueing the delivery");
                    fallback.push(job);
                }
            }
        }
        try_join_all(
            fallback
                .iter()
                .map(|j| routes::queue_delivery(&self.publisher, j)),
        )
        .await
        .map_err(|e: PublishError| anyhow::anyhow!("queueing deliveries: {e}"))?;
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
}
