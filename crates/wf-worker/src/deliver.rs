//! The delivery step: one job from `workflows.deliveries` becomes one signed HTTPS POST.
//! What follows the attempt is decided by [`wf_core::lifecycle::next_step`]; this module
//! carries it out through [`wf_broker::routes`] before the job is acked: a success is
//! logged, a failure is queued on the retry tier of its next attempt, and a dead delivery
//! goes to the dead-letter queue and is marked `dead`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use tracing::{info, warn, Instrument};
use wf_broker::{routes, Incoming, Publisher};
use wf_core::duration::{format_duration, RetrySchedule};
use wf_core::envelope::Event;
use wf_core::events::EventType;
use wf_core::lifecycle::{next_step, Attempted, DeadReason, Step};
use wf_core::messages::{DeliveryJob, DeliveryJobV1};
use wf_core::url_policy::{AllowedCidrs, WebhookUrl};
use wf_core::views::WebhookView;
use wf_store::{AttemptRecord, DeliveryStatus, Store, Subscription};
use wf_telemetry::metrics;

use crate::breaker::{counts_as_endpoint_failure, endpoint_key, Endpoints, Rejected};
use crate::cache::SubscriptionCache;
use crate::client::{AttemptKind, AttemptOutcome, DeliveryClient};
use crate::log::{DeliveryLog, LogRecord, Logged};

/// What the delivery step needs.
pub struct Deliverer {
    pub cache: SubscriptionCache,
    pub publisher: Publisher,
    pub log: DeliveryLog,
    pub client: DeliveryClient,
    pub store: Store,
    pub schedule: RetrySchedule,
    pub allowed: AllowedCidrs,
    /// Per-endpoint concurrency bound and circuit breaker.
    pub endpoints: Endpoints,
}

/// How long a delivery waits for a free slot at its endpoint before it is sent to the
/// retry schedule instead: short, because the waiting delivery holds a worker slot that a
/// healthy endpoint could use.
pub const ENDPOINT_WAIT: Duration = Duration::from_millis(500);

impl Deliverer {
    /// Handles one job message and settles it (ack, or nack-requeue when its outcome
    /// could not be made durable: then the attempt is simply made again).
    pub async fn handle(self: Arc<Self>, msg: Incoming) {
        let job = match DeliveryJob::decode(&msg.body) {
            Ok(j) => j,
            Err(e) => {
                self.unattempted(&msg, DeadReason::UndecodableJob, &e.to_string())
                    .await;
                return;
            }
        };
        if msg.redelivery_limit_reached() {
            self.unattempted(
                &msg,
                DeadReason::RedeliveryLimit,
                "job was redelivered too many times",
            )
            .await;
            return;
        }
        let span = delivery_span(job.v1());
        match self.attempt(&job).instrument(span.clone()).await {
            Ok(logged) => self.log.ack_when_logged(msg, vec![logged]),
            Err(e) => {
                async {
                    warn!(error = %e, "could not record the outcome; requeueing the job");
                    if let Err(e) = msg.nack(true).await {
                        warn!(error = %e, "could not settle job; the broker will redeliver it");
                    }
                }
                .instrument(span)
                .await
            }
        }
    }

    /// A job that cannot be (or must not be) attempted goes straight to the dead-letter
    /// queue, with the reason and why.
    async fn unattempted(&self, msg: &Incoming, reason: DeadReason, why: &str) {
        warn!(
            reason = reason.as_str(),
            error = why,
            "dead-lettering delivery job without an attempt"
        );
        metrics().deliveries.with_label_values(&["dead"]).inc();
        let settled = match routes::dead_letter_unattempted(&self.publisher, msg, reason, why).await
        {
            Ok(()) => msg.ack().await,
            Err(_) => msg.nack(true).await,
        };
        if let Err(e) = settled {
            warn!(error = %e, "could not settle an unattempted job");
        }
    }

    /// The first attempt of a freshly fanned-out delivery, made by the fan-out step itself
    /// (no second trip through the broker). Ok once the outcome is handed to the log (and
    /// its next attempt queued, if any); the receipt says when the log has it. On Err the
    /// caller queues the job on `workflows.deliveries` instead, or leaves the event unacked.
    ///
    /// # Errors
    /// When the next attempt or dead letter could not be published.
    pub async fn deliver_first(
        &self,
        job: &DeliveryJob,
        sub: &Subscription,
    ) -> anyhow::Result<Logged> {
        self.attempt_with(job, sub)
            .instrument(delivery_span(job.v1()))
            .await
    }

    async fn attempt(&self, job: &DeliveryJob) -> anyhow::Result<Logged> {
        let j = job.v1();
        let Some(sub) = self.cache.webhook(&j.org_id, &j.webhook_id).await? else {
            // Deleted or deactivated since the event was fanned out: not sent.
            info!(
                outcome = "dropped",
                "webhook deleted or inactive; dropping delivery"
            );
            metrics().deliveries.with_label_values(&["dropped"]).inc();
            return Ok(Logged::nothing());
        };
        self.attempt_with(job, &sub).await
    }

    /// One attempt to an active webhook: its next step is decided, carried out on the
    /// broker (awaited) and its record handed to the log (the receipt says when it is
    /// written).
    async fn attempt_with(&self, job: &DeliveryJob, sub: &Subscription) -> anyhow::Result<Logged> {
        let j = job.v1();
        let started_at = chrono::Utc::now();
        metrics().in_flight.inc();
        let (outcome, sent) = self.send(j, sub).await;
        metrics().in_flight.dec();
        if sent {
            metrics()
                .delivery_attempts
                .with_label_values(&[outcome.kind.label()])
                .inc();
            metrics()
                .delivery_duration
                .observe(outcome.duration.as_secs_f64());
        }
        let attempted = if outcome.kind.is_success() {
            Attempted::Delivered
        } else {
            Attempted::Failed {
                status: outcome.status,
                retry_after: outcome.retry_after,
            }
        };
        let step = next_step(attempted, j, &self.schedule);
        let error = attempt_error(&outcome, sent);
        // What the retry / dead-letter message carries as `x-wf-last-error`.
        let header_error = error
            .clone()
            .or_else(|| outcome.status.map(|c| format!("HTTP {c}")));
        self.carry_out(step, job, sub, header_error.as_deref())
            .await?;
        if step == Step::Delivered {
            let lag_ms =
                started_at.timestamp_millis() - j.event_ts_ms + outcome.duration.as_millis() as i64;
            metrics()
                .event_to_delivery
                .observe((lag_ms.max(0) as f64) / 1000.0);
        }
        info!(
            outcome = outcome_label(step),
            result = outcome.kind.label(),
            status = outcome.status,
            duration_ms = outcome.duration.as_millis() as u64,
            "delivery attempt"
        );
        let logged = self
            .log
            .record(LogRecord::Attempt(Box::new(AttemptRecord {
                delivery_id: j.delivery_id.clone(),
                org_id: j.org_id.clone(),
                webhook_id: j.webhook_id.clone(),
                event_id: j.event_id.clone(),
                event: j.event,
                attempt: j.attempt,
                at: started_at,
                status_code: outcome.status,
                error,
                duration_ms: outcome.duration.as_millis().min(u32::MAX as u128) as u32,
                response_snippet: outcome.response_snippet.clone(),
                new_status: match step {
                    Step::Delivered => DeliveryStatus::Delivered,
                    Step::Retry { .. } => DeliveryStatus::Failed,
                    Step::Dead { .. } => DeliveryStatus::Dead,
                },
            })))
            .await;
        Ok(logged)
    }

    /// Carries out `step` for `job`: publishes its next attempt or its dead letter
    /// (awaiting the confirm) and counts it; disables the webhook on `410 Gone`.
    async fn carry_out(
        &self,
        step: Step,
        job: &DeliveryJob,
        sub: &Subscription,
        last_error: Option<&str>,
    ) -> anyhow::Result<()> {
        match step {
            Step::Delivered => {}
            Step::Retry { tier } => {
                routes::retry(&self.publisher, job, tier, last_error).await?;
                metrics()
                    .retries_scheduled
                    .with_label_values(&[&format_duration(tier)])
                    .inc();
            }
            Step::Dead { reason } => {
                if reason == DeadReason::Gone {
                    self.disable_gone(sub).await;
                }
                routes::dead_letter(&self.publisher, job, reason, last_error).await?;
            }
        }
        metrics()
            .deliveries
            .with_label_values(&[outcome_label(step)])
            .inc();
        Ok(())
    }

    /// `410 Gone`: the subscriber asked us to stop. Disable the webhook and tell its
    /// organisation with a `webhook.disabled` event.
    async fn disable_gone(&self, sub: &Subscription) {
        match self
            .store
            .disable_webhook(&sub.webhook_id, "endpoint returned 410 Gone")
            .await
        {
            Ok(Some(w)) => {
                self.cache.invalidate_org(&sub.org_id);
                let ev = Event {
                    id: wf_core::ids::EventId::generate(),
                    event: EventType::WebhookDisabled,
                    org_id: sub.org_id.clone(),
                    timestamp: wf_core::time::now_ms(),
                    data: WebhookView {
                        id: w.id.as_str(),
                        name: &w.name,
                        url: &w.url,
                        events: &w.events,
                        is_active: w.is_active,
                        disabled_reason: w.disabled_reason.as_deref(),
                        created_at: w.created_at,
                        updated_at: w.updated_at,
                    }
                    .to_json(),
                };
                wf_service::outbox::emit(&self.store, &self.publisher, &ev, "system").await;
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "could not disable webhook after 410 Gone"),
        }
    }

    /// Makes the attempt, within the endpoint's concurrency bound and circuit breaker.
    /// Returns the outcome and whether a request was actually made: while the endpoint's
    /// circuit is open (or it stays saturated past [`ENDPOINT_WAIT`]) nothing is sent and
    /// the delivery moves on to its next retry step, so a failing endpoint neither holds
    /// worker slots nor delays healthy ones, and still ends dead-lettered if it never
    /// recovers.
    async fn send(&self, j: &DeliveryJobV1, sub: &Subscription) -> (AttemptOutcome, bool) {
        // The policy runs again at delivery time: the URL may predate a policy change, and
        // the client re-checks every resolved address (DNS rebinding).
        let url = match WebhookUrl::parse(&sub.url, &self.allowed) {
            Ok(u) => u,
            Err(e) => return (AttemptOutcome::blocked(e.to_string()), true),
        };
        let permit = match self
            .endpoints
            .acquire(&endpoint_key(&url), ENDPOINT_WAIT)
            .await
        {
            Ok(p) => p,
            Err(rejected) => {
                let why = match rejected {
                    Rejected::Open => "circuit_open: endpoint keeps failing; not sent",
                    Rejected::Busy => "endpoint_busy: endpoint concurrency limit reached; not sent",
                };
                let mut outcome = AttemptOutcome::blocked(why);
                outcome.duration = Duration::ZERO;
                return (outcome, false);
            }
        };
        let body = Bytes::from(j.body.clone().into_bytes());
        let headers = self.headers(j, sub, &body);
        let outcome = self.client.post(&url, headers, body).await;
        let transport = matches!(
            outcome.kind,
            AttemptKind::Timeout | AttemptKind::ConnectError | AttemptKind::TlsError
        );
        if counts_as_endpoint_failure(outcome.status, transport) {
            permit.failure();
        } else {
            permit.success();
        }
        (outcome, true)
    }

    fn headers(&self, j: &DeliveryJobV1, sub: &Subscription, body: &[u8]) -> HeaderMap {
        let ts = chrono::Utc::now().timestamp();
        let mut std_sig = sub
            .secret
            .standard_signature(j.delivery_id.as_str(), ts, body);
        if let Some(prev) = &sub.previous_secret {
            std_sig.push(' ');
            std_sig.push_str(&prev.standard_signature(j.delivery_id.as_str(), ts, body));
        }
        // Content-Type and User-Agent are the client's: it sets them on every request.
        let pairs: [(&'static str, String); 7] = [
            (
                "x-workflows-signature",
                sub.secret.workflows_signature(body),
            ),
            ("x-workflows-event", j.event.as_str().to_owned()),
            ("x-workflows-delivery", j.delivery_id.as_str().to_owned()),
            ("x-workflows-attempt", j.attempt.to_string()),
            ("webhook-id", j.delivery_id.as_str().to_owned()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", std_sig),
        ];
        let mut h = HeaderMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(HeaderName::from_static(k), v);
            }
        }
        h
    }
}

/// The `outcome` of `wf_deliveries_total` and of the attempt's log line.
fn outcome_label(step: Step) -> &'static str {
    match step {
        Step::Delivered => "delivered",
        Step::Retry { .. } => "retried",
        Step::Dead { .. } => "dead",
    }
}

/// The attempt record's `error`: the kind leads the text, so the log says which kind of
/// failure it was (`timeout: …`, `tls_error: …`); a plain non-2xx status needs no more
/// words. A delivery that was not sent carries the reason it was held back.
fn attempt_error(outcome: &AttemptOutcome, sent: bool) -> Option<String> {
    match (&outcome.error, outcome.kind.is_success()) {
        (Some(e), _) if !sent => Some(e.clone()),
        (Some(e), _) => Some(format!("{}: {e}", outcome.kind.label())),
        (None, false) if outcome.status.is_none() => Some(outcome.kind.label().to_owned()),
        (None, _) => None,
    }
}

/// The span every attempt runs in, whether made at fan-out or from the deliveries queue.
fn delivery_span(j: &DeliveryJobV1) -> tracing::Span {
    tracing::info_span!(
        "delivery",
        event_id = %j.event_id,
        delivery_id = %j.delivery_id,
        webhook_id = %j.webhook_id,
        attempt = j.attempt,
    )
}
