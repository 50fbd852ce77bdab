//! The delivery step: one job from `workflows.deliveries` becomes one signed HTTPS POST.
//! Its outcome is made durable before the job is acked: a success is logged, a failure is
//! queued on the retry tier of its next attempt (`workflows.retry.<delay>`, which
//! dead-letters back to `workflows.deliveries` when the delay is over), and the last
//! failure goes to `workflows.dead` and is marked `dead`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue as HttpHeaderValue};
use tracing::{info, warn, Instrument};
use wf_broker::{names, HeaderValue, Incoming, OutgoingMessage, Publisher};
use wf_core::duration::{format_duration, RetrySchedule};
use wf_core::envelope::Event;
use wf_core::events::EventType;
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

/// What happens to a job after its attempt.
enum Next {
    Delivered,
    Retry { tier: Duration },
    Dead { reason: &'static str },
}

impl Deliverer {
    /// Handles one job message and settles it (ack, or nack-requeue when its outcome
    /// could not be made durable: then the attempt is simply made again).
    pub async fn handle(self: Arc<Self>, msg: Incoming) {
        let job = match DeliveryJob::decode(&msg.body) {
            Ok(j) => j,
            Err(e) => {
                self.poison(&msg, "undecodable_job", &e.to_string()).await;
                return;
            }
        };
        if crate::fanout::is_poison(&msg) {
            // Redelivered up to the broker's limit (workers died or failed to settle it
            // every time): dead-letter it with a reason rather than try once more.
            self.poison(
                &msg,
                "redelivery_limit",
                "job was redelivered too many times",
            )
            .await;
            return;
        }
        let j = job.v1();
        let span = delivery_span(j);
        match self.attempt(j).instrument(span.clone()).await {
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
    async fn poison(&self, msg: &Incoming, reason: &str, why: &str) {
        warn!(
            reason,
            error = why,
            "dead-lettering delivery job without an attempt"
        );
        metrics().deliveries.with_label_values(&["dead"]).inc();
        let res = self
            .publisher
            .publish(OutgoingMessage {
                exchange: names::DEAD_EXCHANGE,
                routing_key: names::DELIVERY_ROUTING_KEY,
                body: &msg.body,
                message_id: msg.message_id.as_deref(),
                headers: vec![
                    ("x-wf-reason".into(), HeaderValue::Str(reason.to_owned())),
                    (
                        "x-wf-last-error".into(),
                        HeaderValue::Str(why.chars().take(512).collect()),
                    ),
                ],
                mandatory: true,
            })
            .await;
        let settled = match res {
            Ok(()) => msg.ack().await,
            Err(_) => msg.nack(true).await,
        };
        if let Err(e) = settled {
            warn!(error = %e, "could not settle poison job");
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
        j: &DeliveryJobV1,
        sub: &Subscription,
    ) -> anyhow::Result<Logged> {
        self.attempt_with(j, sub).instrument(delivery_span(j)).await
    }

    async fn attempt(&self, j: &DeliveryJobV1) -> anyhow::Result<Logged> {
        let Some(sub) = self.cache.webhook(&j.org_id, &j.webhook_id).await? else {
            // Deleted or deactivated since the event was fanned out: not sent.
            info!(
                outcome = "dropped",
                "webhook deleted or inactive; dropping delivery"
            );
            metrics().deliveries.with_label_values(&["dropped"]).inc();
            return Ok(Logged::nothing());
        };
        self.attempt_with(j, &sub).await
    }

    /// One attempt to an active webhook: its next step is queued on the broker (awaited)
    /// and its record handed to the log (the receipt says when it is written).
    async fn attempt_with(&self, j: &DeliveryJobV1, sub: &Subscription) -> anyhow::Result<Logged> {
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

        let next = if outcome.kind.is_success() {
            Next::Delivered
        } else if outcome.status == Some(410) {
            Next::Dead { reason: "gone" }
        } else {
            match self.retry_tier(
                j.attempt.saturating_sub(j.retry_base).max(1),
                outcome.retry_after,
            ) {
                Some(tier) => Next::Retry { tier },
                None => Next::Dead {
                    reason: "retries_exhausted",
                },
            }
        };
        // The kind leads the text, so the log says which kind of failure it was
        // (`timeout: …`, `tls_error: …`); a plain non-2xx status needs no more words.
        let error = match (&outcome.error, outcome.kind.is_success()) {
            (Some(e), _) if !sent => Some(e.clone()),
            (Some(e), _) => Some(format!("{}: {e}", outcome.kind.label())),
            (None, false) if outcome.status.is_none() => Some(outcome.kind.label().to_owned()),
            (None, _) => None,
        };
        // What the retry / dead-letter message carries as `x-wf-last-error`.
        let header_error = error
            .clone()
            .or_else(|| outcome.status.map(|c| format!("HTTP {c}")));
        match &next {
            Next::Delivered => {
                let lag_ms = started_at.timestamp_millis() - j.event_ts_ms
                    + outcome.duration.as_millis() as i64;
                metrics()
                    .event_to_delivery
                    .observe((lag_ms.max(0) as f64) / 1000.0);
                metrics().deliveries.with_label_values(&["delivered"]).inc();
            }
            Next::Retry { tier } => {
                self.publish_next(
                    j,
                    names::retry_queue(*tier).as_str(),
                    "",
                    header_error.as_deref(),
                    None,
                )
                .await?;
                metrics().deliveries.with_label_values(&["retried"]).inc();
                metrics()
                    .retries_scheduled
                    .with_label_values(&[&format_duration(*tier)])
                    .inc();
            }
            Next::Dead { reason } => {
                if *reason == "gone" {
                    self.disable_gone(sub).await;
                }
                self.publish_next(
                    j,
                    names::DELIVERY_ROUTING_KEY,
                    names::DEAD_EXCHANGE,
                    header_error.as_deref(),
                    Some(reason),
                )
                .await?;
                metrics().deliveries.with_label_values(&["dead"]).inc();
            }
        }
        info!(
            outcome = match next {
                Next::Delivered => "delivered",
                Next::Retry { .. } => "retried",
                Next::Dead { .. } => "dead",
            },
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
                new_status: match next {
                    Next::Delivered => DeliveryStatus::Delivered,
                    Next::Retry { .. } => DeliveryStatus::Failed,
                    Next::Dead { .. } => DeliveryStatus::Dead,
                },
            })))
            .await;
        Ok(logged)
    }

    /// The retry tier after failed attempt `attempt`: the scheduled delay, shortened to
    /// the largest tier not above the endpoint's `Retry-After` when that asks for less
    /// (tiers are fixed queues, so a delay between tiers cannot be honoured exactly).
    fn retry_tier(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let step = self.schedule.delay_before_retry(attempt as usize)?;
        let Some(ra) = retry_after.filter(|ra| *ra < step) else {
            return Some(step);
        };
        let tiers = self.schedule.distinct_delays();
        Some(
            tiers
                .iter()
                .copied()
                .filter(|t| *t <= ra)
                .max()
                .unwrap_or(tiers[0])
                .min(step),
        )
    }

    /// Publishes the job's next state (next attempt on a retry tier, or the dead letter).
    async fn publish_next(
        &self,
        j: &DeliveryJobV1,
        routing_key: &str,
        exchange: &str,
        error: Option<&str>,
        dead_reason: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut next = j.clone();
        if dead_reason.is_none() {
            next.attempt += 1;
        }
        let body = DeliveryJob::V1(next).encode();
        let mut headers = vec![(
            "x-wf-attempts".to_owned(),
            HeaderValue::Int(i64::from(j.attempt)),
        )];
        if let Some(e) = error {
            headers.push((
                "x-wf-last-error".to_owned(),
                HeaderValue::Str(e.chars().take(512).collect()),
            ));
        }
        if let Some(r) = dead_reason {
            headers.push(("x-wf-reason".to_owned(), HeaderValue::Str(r.to_owned())));
        }
        self.publisher
            .publish(OutgoingMessage {
                exchange,
                routing_key,
                body: &body,
                message_id: Some(j.delivery_id.as_str()),
                headers,
                mandatory: true,
            })
            .await?;
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
            if let Ok(v) = HttpHeaderValue::from_str(&v) {
                h.insert(HeaderName::from_static(k), v);
            }
        }
        h
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
