//! The delivery step: one delivery becomes one signed HTTPS POST, when its endpoint can
//! take it. Jobs from `workflows.deliveries` come through [`Deliverer::handle`]; fan-out
//! makes each first attempt itself through [`Deliverer::admit`] and the methods after it.
//!
//! Before anything is sent, the endpoint's dispatcher ([`crate::endpoints`]) admits the
//! delivery, lets it wait in the endpoint's line for a short while, or holds it back
//! (endpoint busy, rate limited, circuit open). What follows an attempt, or a hold, is
//! decided by [`wf_core::lifecycle::next_step`]; this module carries the step out through
//! [`wf_broker::routes`] before the message is acked: a success is logged, a failure is
//! queued on the retry tier of its next attempt, a held-back delivery is parked with the
//! same attempt number, and a dead delivery goes to the dead-letter queue and is marked
//! `dead`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::{info, warn, Instrument};
use wf_broker::{routes, Incoming, Publisher};
use wf_core::duration::{format_duration, RetrySchedule};
use wf_core::envelope::Event;
use wf_core::events::EventType;
use wf_core::lifecycle::{next_step, Attempted, DeadReason, Step};
use wf_core::messages::{DeliveryJob, DeliveryJobV1};
use wf_core::url_policy::{AllowedCidrs, WebhookUrl};
use wf_store::{AttemptRecord, DeliveryStatus, NewDelivery, Store, Subscription, UnsentDead};
use wf_telemetry::metrics;

use crate::cache::SubscriptionCache;
use crate::client::{AttemptKind, AttemptOutcome, DeliveryClient};
use crate::endpoints::{
    endpoint_key, Admission, Ask, Endpoints, HoldBack, Permit, Refused, Report,
};
use crate::log::{DeliveryLog, LogRecord, Logged};
use crate::signed::signed_headers;

/// How long a delivery straight from fan-out may wait in its endpoint's line: short,
/// because its event stays unacked meanwhile and a long line belongs in the broker
/// (`workflows.deliveries`), where it waits without holding up other events.
pub const FANOUT_MAY_WAIT: Duration = Duration::from_millis(250);

/// How long a job from `workflows.deliveries` may wait in its endpoint's line. Waiting in
/// memory costs the broker nothing (the job is simply unacked, within the prefetch);
/// beyond this the job is parked on a retry tier instead, so one endpoint's backlog does
/// not hold the prefetch window for long.
pub const QUEUED_MAY_WAIT: Duration = Duration::from_secs(10);

/// The size of the worker fleet, as last counted (consumers of `workflows.fanout`). Each
/// worker sends `1/size` of every webhook's `rateLimit`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Fleet(Arc<AtomicU32>);

impl Default for Fleet {
    fn default() -> Self {
        Fleet(Arc::new(AtomicU32::new(1)))
    }
}

impl Fleet {
    /// Workers now (at least 1).
    pub fn size(&self) -> u32 {
        self.0.load(Ordering::Relaxed).max(1)
    }

    /// Records a new count.
    pub fn set(&self, workers: u32) {
        self.0.store(workers.max(1), Ordering::Relaxed);
        metrics().worker_fleet_size.set(i64::from(workers.max(1)));
    }
}

/// Where a delivery comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Straight from fan-out: its first attempt, the event unacked meanwhile.
    Fanout,
    /// A job from `workflows.deliveries` (a retry, a hand-off, a replay).
    Queue,
}

impl Origin {
    fn may_wait(self) -> Duration {
        match self {
            Origin::Fanout => FANOUT_MAY_WAIT,
            Origin::Queue => QUEUED_MAY_WAIT,
        }
    }
}

/// What the delivery step needs.
pub struct Deliverer {
    pub cache: SubscriptionCache,
    pub publisher: Publisher,
    pub log: DeliveryLog,
    pub client: DeliveryClient,
    pub store: Store,
    pub schedule: RetrySchedule,
    pub allowed: AllowedCidrs,
    /// The worker's slots and every endpoint's limit, circuit and lines.
    pub endpoints: Endpoints,
    pub fleet: Fleet,
    /// Held-back deliveries being parked in the broker at once (`WF_WORKER_CONCURRENCY`
    /// permits): each holds a serialised copy of its job until the broker confirms it, so
    /// without a bound an event with a thousand subscribers on one busy endpoint would
    /// build a thousand copies of its payload at once.
    pub parking: Arc<tokio::sync::Semaphore>,
}

/// What [`Deliverer::admit`] decided for one delivery.
pub enum Admitted {
    /// Send it now.
    Send(WebhookUrl, Permit),
    /// Wait for the endpoint, then send (or hold back).
    Wait(WebhookUrl, crate::endpoints::Waiting),
    /// Park it in the broker, unsent.
    Hold(HoldBack),
    /// Its URL no longer passes the address policy: a `blocked` attempt, sent nowhere.
    Blocked(String),
    /// The worker is shutting down: hand it back unstarted.
    Closed,
}

impl Deliverer {
    /// Handles one job message and settles it (ack, or nack-requeue when its outcome
    /// could not be made durable: then the delivery is simply handled again).
    pub async fn handle(self: Arc<Self>, mut msg: Incoming) {
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
        // The job holds its own copy of the payload; the message's may go (it can wait a
        // while in an endpoint's line).
        msg.body = Vec::new();
        let span = delivery_span(job.v1());
        match self.deliver_queued(&job).instrument(span.clone()).await {
            Ok(Some(logged)) => self.log.ack_when_logged(msg, vec![logged]),
            Ok(None) => {
                // Shutting down before it started: back to the queue as it was.
                if let Err(e) = msg.nack(true).await {
                    warn!(error = %e, "could not hand a job back; the broker will redeliver it");
                }
            }
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

    /// Delivers a job from `workflows.deliveries`; `None` when the worker is shutting down
    /// and the job was not started (the caller hands it back).
    async fn deliver_queued(&self, job: &DeliveryJob) -> anyhow::Result<Option<Logged>> {
        let j = job.v1();
        let Some(sub) = self.cache.webhook(&j.org_id, &j.webhook_id).await? else {
            // Deleted or deactivated since the event was fanned out: not sent.
            info!(
                outcome = "dropped",
                "webhook deleted or inactive; dropping delivery"
            );
            metrics().deliveries.with_label_values(&["dropped"]).inc();
            return Ok(Some(Logged::nothing()));
        };
        let logged = match self.admit(&sub, Origin::Queue) {
            Admitted::Send(url, permit) => self.attempt(job, &sub, &url, permit).await,
            Admitted::Wait(url, mut waiting) => match waiting.wait().await {
                Ok(permit) => self.attempt(job, &sub, &url, permit).await,
                Err(Refused::Hold(hold)) => self.hold_back(job, hold, Origin::Queue).await,
                Err(Refused::Closed) => return Ok(None),
            },
            Admitted::Hold(hold) => self.hold_back(job, hold, Origin::Queue).await,
            Admitted::Blocked(why) => self.blocked(job, &sub, why).await,
            Admitted::Closed => return Ok(None),
        };
        logged.map(Some)
    }

    /// Asks `sub`'s endpoint whether a delivery from `origin` may be sent now. The
    /// address policy runs again here: the URL may predate a policy change (and the
    /// client re-checks every resolved address, against DNS rebinding).
    pub fn admit(&self, sub: &Subscription, origin: Origin) -> Admitted {
        let url = match WebhookUrl::parse(&sub.url, &self.allowed) {
            Ok(u) => u,
            Err(e) => return Admitted::Blocked(e.to_string()),
        };
        let key = endpoint_key(&url);
        let rate = sub.rate_limit.map(|r| {
            (
                sub.webhook_id.as_str(),
                f64::from(r) / f64::from(self.fleet.size()),
            )
        });
        match self.endpoints.admit(Ask {
            endpoint: &key,
            rate,
            may_wait: origin.may_wait(),
        }) {
            Admission::Go(p) => Admitted::Send(url, p),
            Admission::Wait(w) => Admitted::Wait(url, w),
            Admission::Hold(h) => Admitted::Hold(h),
            Admission::Closed => Admitted::Closed,
        }
    }

    /// Sends `job` to `sub` under `permit` and carries out what follows. Ok once the
    /// outcome is handed to the log (and its next step queued, if any); the receipt says
    /// when the log has it.
    ///
    /// # Errors
    /// When the next attempt or dead letter could not be published.
    pub async fn attempt(
        &self,
        job: &DeliveryJob,
        sub: &Subscription,
        url: &WebhookUrl,
        permit: Permit,
    ) -> anyhow::Result<Logged> {
        let j = job.v1();
        if let Some(since) = j.held_since_ms {
            let held_ms = wf_core::time::now_ms().timestamp_millis() - since;
            metrics()
                .delivery_held_seconds
                .observe(held_ms.max(0) as f64 / 1000.0);
        }
        let started_at = chrono::Utc::now();
        metrics().in_flight.inc();
        let body = Bytes::from_owner(SharedBody(j.body.clone()));
        let headers = signed_headers(j, sub, &body, started_at.timestamp());
        let outcome = self.client.post(url, headers, body).await;
        metrics().in_flight.dec();
        permit.report(Report::classify(
            outcome.status,
            outcome.kind == AttemptKind::Timeout,
            outcome.duration,
            outcome.retry_after,
        ));
        self.record_attempt(job, sub, started_at, outcome).await
    }

    /// A delivery whose URL the address policy now refuses: counted and logged as a
    /// `blocked` attempt (nothing left the process) and retried like any failure, so an
    /// allow-list fixed in time still gets it delivered.
    ///
    /// # Errors
    /// As [`Deliverer::attempt`].
    pub async fn blocked(
        &self,
        job: &DeliveryJob,
        sub: &Subscription,
        why: String,
    ) -> anyhow::Result<Logged> {
        let started_at = chrono::Utc::now();
        self.record_attempt(job, sub, started_at, AttemptOutcome::blocked(why))
            .await
    }

    /// Counts an attempt that was made, decides and carries out its next step, and logs it.
    async fn record_attempt(
        &self,
        job: &DeliveryJob,
        sub: &Subscription,
        started_at: chrono::DateTime<chrono::Utc>,
        outcome: AttemptOutcome,
    ) -> anyhow::Result<Logged> {
        let j = job.v1();
        metrics()
            .delivery_attempts
            .with_label_values(&[outcome.kind.label()])
            .inc();
        metrics()
            .delivery_duration
            .observe(outcome.duration.as_secs_f64());
        let attempted = if outcome.kind.is_success() {
            Attempted::Delivered
        } else {
            Attempted::Failed {
                status: outcome.status,
                retry_after: outcome.retry_after,
            }
        };
        let step = next_step(attempted, j, &self.schedule, started_at.timestamp_millis());
        let error = attempt_error(&outcome);
        // What the retry / dead-letter message carries as `x-wf-last-error`.
        let header_error = error
            .clone()
            .or_else(|| outcome.status.map(|c| format!("HTTP {c}")));
        self.carry_out(step, job, Some(sub), header_error.as_deref())
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
                response_snippet: outcome.response_snippet,
                new_status: match step {
                    Step::Delivered => DeliveryStatus::Delivered,
                    Step::Dead { .. } => DeliveryStatus::Dead,
                    _ => DeliveryStatus::Failed,
                },
                logged_at: logged_at(j),
            })))
            .await;
        Ok(logged)
    }

    /// A delivery that was not sent: parked in the broker with the same attempt number
    /// (or, held back past the schedule's span, dead as `endpoint_unavailable`). Fan-out
    /// also logs the delivery as `pending`, as nothing else would.
    ///
    /// # Errors
    /// When the job could not be parked (or dead-lettered).
    pub async fn hold_back(
        &self,
        job: &DeliveryJob,
        hold: HoldBack,
        origin: Origin,
    ) -> anyhow::Result<Logged> {
        let now = wf_core::time::now_ms();
        // Only unavailability (circuit open, Retry-After) runs the clock that gives a
        // delivery up; a busy endpoint or the webhook's own rate limit only makes it wait.
        let held = job.held(now.timestamp_millis(), hold.unavailable);
        let h = held.v1();
        let since = |t: Option<i64>| t.map_or(0, |t| (now.timestamp_millis() - t).max(0));
        let held_for_ms = since(h.held_since_ms);
        let unavailable_for_ms = since(h.unavailable_since_ms);
        let attempted = Attempted::HeldBack {
            reason: hold.reason,
            wait: hold.wait,
            queued: origin == Origin::Queue,
            unavailable: hold.unavailable,
        };
        let step = next_step(attempted, h, &self.schedule, now.timestamp_millis());
        metrics()
            .delivery_held_seconds
            .observe(held_for_ms as f64 / 1000.0);
        // Never closed: the semaphore lives as long as the deliverer.
        let _parking = self.parking.acquire().await;
        let why = format!(
            "endpoint_unavailable: unavailable for {} ({}), not sent",
            format_duration(Duration::from_millis(unavailable_for_ms as u64)),
            hold.reason.as_str()
        );
        self.carry_out(step, &held, None, Some(&why)).await?;
        if let (Step::Defer { reason, .. }, Origin::Queue) = (step, origin) {
            // Taken off `workflows.deliveries` and parked again: broker churn.
            metrics()
                .deliveries_republished
                .with_label_values(&[reason.as_str()])
                .inc();
        }
        info!(
            outcome = outcome_label(step),
            reason = hold.reason.as_str(),
            wait_ms = hold.wait.as_millis() as u64,
            "delivery held back"
        );
        let record = match (step, origin) {
            (Step::Dead { .. }, _) => LogRecord::Unsent(Box::new(UnsentDead {
                delivery_id: h.delivery_id.clone(),
                org_id: h.org_id.clone(),
                webhook_id: h.webhook_id.clone(),
                event_id: h.event_id.clone(),
                event: h.event,
                attempts: h.attempt.saturating_sub(1),
                error: why,
                at: now,
                logged_at: logged_at(h),
            })),
            (_, Origin::Fanout) => LogRecord::Delivery(NewDelivery {
                id: h.delivery_id.clone(),
                org_id: h.org_id.clone(),
                webhook_id: h.webhook_id.clone(),
                event_id: h.event_id.clone(),
                event: h.event,
                created_at: logged_at(h).unwrap_or(now),
            }),
            (_, Origin::Queue) => return Ok(Logged::nothing()),
        };
        Ok(self.log.record(record).await)
    }

    /// Carries out `step` for `job`: publishes its next attempt, its parked copy or its
    /// dead letter (awaiting the confirm) and counts it; disables the webhook on `410
    /// Gone`.
    async fn carry_out(
        &self,
        step: Step,
        job: &DeliveryJob,
        sub: Option<&Subscription>,
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
            Step::Queue { reason } => {
                routes::queue_delivery(&self.publisher, job).await?;
                metrics()
                    .deliveries_deferred
                    .with_label_values(&[reason.as_str()])
                    .inc();
                return Ok(());
            }
            Step::Defer { tier, reason } => {
                routes::defer(&self.publisher, job, tier, reason).await?;
                metrics()
                    .deliveries_deferred
                    .with_label_values(&[reason.as_str()])
                    .inc();
                return Ok(());
            }
            Step::Dead { reason } => {
                if let (DeadReason::Gone, Some(sub)) = (reason, sub) {
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
        match self.store.disable_webhook(&sub.webhook_id, "gone").await {
            Ok(Some(w)) => {
                self.cache.invalidate_org(&sub.org_id);
                let ev = Event {
                    id: wf_core::ids::EventId::generate(),
                    event: EventType::WebhookDisabled,
                    org_id: sub.org_id.clone(),
                    timestamp: wf_core::time::now_ms(),
                    data: w.view().to_json(),
                };
                wf_service::outbox::emit(&self.store, &self.publisher, &ev, "system").await;
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "could not disable webhook after 410 Gone"),
        }
    }
}

/// The `outcome` of `wf_deliveries_total` and of the attempt's log line.
fn outcome_label(step: Step) -> &'static str {
    match step {
        Step::Delivered => "delivered",
        Step::Retry { .. } => "retried",
        Step::Queue { .. } | Step::Defer { .. } => "deferred",
        Step::Dead { .. } => "dead",
    }
}

/// The payload as the body of a request, without a copy.
struct SharedBody(Arc<str>);

impl AsRef<[u8]> for SharedBody {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The attempt record's `error`: the kind leads the text, so the log says which kind of
/// failure it was (`timeout: …`, `tls_error: …`); a plain non-2xx status needs no more
/// words.
fn attempt_error(outcome: &AttemptOutcome) -> Option<String> {
    match (&outcome.error, outcome.kind.is_success()) {
        (Some(e), _) => Some(format!("{}: {e}", outcome.kind.label())),
        (None, false) if outcome.status.is_none() => Some(outcome.kind.label().to_owned()),
        (None, _) => None,
    }
}

/// The span every attempt runs in, whether made at fan-out or from the deliveries queue.
pub(crate) fn delivery_span(j: &DeliveryJobV1) -> tracing::Span {
    tracing::info_span!(
        "delivery",
        event_id = %j.event_id,
        delivery_id = %j.delivery_id,
        webhook_id = %j.webhook_id,
        attempt = j.attempt,
    )
}

/// When `job`'s delivery was first logged: its delivery-log partition key.
fn logged_at(job: &wf_core::messages::DeliveryJobV1) -> Option<chrono::DateTime<chrono::Utc>> {
    job.logged_at_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
}
