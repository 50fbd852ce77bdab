//! Where each message goes. This module owns every route a job or an event takes through
//! the topology (see [`crate::names`]) and every `x-wf-*` header those messages carry:
//!
//! | what | route | headers |
//! |---|---|---|
//! | an event (ingested over HTTP, or a system event) | `workflows.events`, routing key = event type | `x-wf-source` |
//! | an invalid event | `workflows.events.invalid` | `x-wf-reason`, `x-wf-detail`, `x-wf-routing-key`, `x-wf-message-id` |
//! | a delivery job queued now (fan-out fallback, manual retry, replay) | `workflows.deliveries` | — |
//! | a job's next attempt | `workflows.retry.<delay>`, back to `workflows.deliveries` when it expires | `x-wf-attempts`, `x-wf-last-error` |
//! | a job held back, same attempt (endpoint busy, rate limited, circuit open) | `workflows.retry.<delay>`, likewise | `x-wf-deferred` |
//! | a dead delivery | `workflows.dead` → `workflows.deliveries.dead` | `x-wf-reason`, `x-wf-attempts`, `x-wf-last-error` |
//!
//! Services call these functions; they never name an exchange or a header themselves.
//! Every route publishes persistent, `mandatory` messages and resolves once the broker
//! confirmed them, so a missing binding is an error rather than a silent loss.

use std::time::Duration;

use wf_core::envelope::Event;
use wf_core::lifecycle::{DeadReason, HoldReason};
use wf_core::messages::DeliveryJob;

use crate::consumer::Incoming;
use crate::error::PublishError;
use crate::fields::HeaderValue;
use crate::names;
use crate::publisher::{OutgoingMessage, Publisher};

/// The `x-wf-*` header names.
pub mod headers {
    /// Where an event came from: `http` (`POST /api/v1/events`), `system` (an event the
    /// services emit themselves); absent for events producers publish to the exchange.
    pub const SOURCE: &str = "x-wf-source";
    /// Why a message was dead-lettered or rejected.
    pub const REASON: &str = "x-wf-reason";
    /// The rejection's details (invalid events).
    pub const DETAIL: &str = "x-wf-detail";
    /// The routing key an invalid event was published with.
    pub const ROUTING_KEY: &str = "x-wf-routing-key";
    /// The `message_id` an invalid event was published with.
    pub const MESSAGE_ID: &str = "x-wf-message-id";
    /// Attempts made so far (retry and dead-letter messages).
    pub const ATTEMPTS: &str = "x-wf-attempts";
    /// What the last attempt failed with.
    pub const LAST_ERROR: &str = "x-wf-last-error";
    /// Why a job was held back without being sent (`busy`, `rate_limited`,
    /// `circuit_open`).
    pub const DEFERRED: &str = "x-wf-deferred";
}

/// Free text in headers is cut to this many characters.
const MAX_TEXT_CHARS: usize = 512;

fn text(s: &str) -> HeaderValue {
    HeaderValue::Str(s.chars().take(MAX_TEXT_CHARS).collect())
}

fn str_header(name: &str, value: &str) -> (String, HeaderValue) {
    (name.to_owned(), HeaderValue::Str(value.to_owned()))
}

/// Publishes an event to `workflows.events` exactly as an ingested one: the canonical wire
/// body, routing key = event type, `message_id` = event id, `x-wf-source: source`.
///
/// # Errors
/// As [`Publisher::publish`].
pub async fn publish_event(
    publisher: &Publisher,
    event: &Event,
    source: &str,
) -> Result<(), PublishError> {
    publish_event_wire(
        publisher,
        event.event.as_str(),
        event.id.as_str(),
        &event.to_wire(),
        source,
    )
    .await
}

/// [`publish_event`] for an event already in its wire form (a parked system event).
///
/// # Errors
/// As [`Publisher::publish`].
pub async fn publish_event_wire(
    publisher: &Publisher,
    event_type: &str,
    event_id: &str,
    wire: &[u8],
    source: &str,
) -> Result<(), PublishError> {
    publisher
        .publish(OutgoingMessage {
            exchange: names::EVENTS_EXCHANGE,
            routing_key: event_type,
            body: wire,
            message_id: Some(event_id),
            headers: vec![str_header(headers::SOURCE, source)],
            mandatory: true,
        })
        .await
}

/// Where an event message came from (its `x-wf-source`), `None` when a producer
/// published it straight to the exchange.
pub fn event_source(msg: &Incoming) -> Option<&str> {
    match msg.headers.get(headers::SOURCE) {
        Some(HeaderValue::Str(s)) => Some(s),
        _ => None,
    }
}

/// Sets an invalid event aside on `workflows.events.invalid`, body untouched, with why
/// (`reason` is the stable code, `detail` the human text) and where it came from.
///
/// # Errors
/// As [`Publisher::publish`]; the caller keeps the event unacked then.
pub async fn reject_event(
    publisher: &Publisher,
    msg: &Incoming,
    reason: &str,
    detail: &str,
) -> Result<(), PublishError> {
    let mut hs = vec![
        str_header(headers::REASON, reason),
        (headers::DETAIL.to_owned(), text(detail)),
        str_header(headers::ROUTING_KEY, &msg.routing_key),
    ];
    if let Some(id) = &msg.message_id {
        hs.push(str_header(headers::MESSAGE_ID, id));
    }
    publisher
        .publish(OutgoingMessage {
            exchange: "",
            routing_key: names::INVALID_QUEUE,
            body: &msg.body,
            message_id: msg.message_id.as_deref(),
            headers: hs,
            mandatory: true,
        })
        .await
}

/// Queues a delivery job on `workflows.deliveries` for an attempt now (fan-out's
/// fallback, manual retries, replays). The message id is the delivery id.
///
/// # Errors
/// As [`Publisher::publish`].
pub async fn queue_delivery(publisher: &Publisher, job: &DeliveryJob) -> Result<(), PublishError> {
    let to = (names::DELIVERIES_EXCHANGE, names::DELIVERY_ROUTING_KEY);
    publish_job(publisher, to, job, Vec::new()).await
}

/// Schedules the next attempt of `failed` (whose attempt just failed) on the retry tier
/// of `tier`: the queue holds it for that long, then dead-letters it back to
/// `workflows.deliveries`.
///
/// # Errors
/// As [`Publisher::publish`].
pub async fn retry(
    publisher: &Publisher,
    failed: &DeliveryJob,
    tier: Duration,
    last_error: Option<&str>,
) -> Result<(), PublishError> {
    let queue = names::retry_queue(tier);
    let hs = attempt_headers(failed, last_error);
    publish_job(publisher, ("", &queue), &failed.next_attempt(), hs).await
}

/// Parks `held` (a job held back without being sent, see
/// [`DeliveryJob::held`](wf_core::messages::DeliveryJob::held)) on the retry tier of
/// `tier`, same attempt: it comes back to `workflows.deliveries` when the delay is over.
///
/// # Errors
/// As [`Publisher::publish`].
pub async fn defer(
    publisher: &Publisher,
    held: &DeliveryJob,
    tier: Duration,
    reason: HoldReason,
) -> Result<(), PublishError> {
    let queue = names::retry_queue(tier);
    let hs = vec![str_header(headers::DEFERRED, reason.as_str())];
    publish_job(publisher, ("", &queue), held, hs).await
}

/// Dead-letters `job` (its last attempt, or the attempt it was stopped at) to
/// `workflows.deliveries.dead`, where `wfctl dlq` lists and replays it.
///
/// # Errors
/// As [`Publisher::publish`].
pub async fn dead_letter(
    publisher: &Publisher,
    job: &DeliveryJob,
    reason: DeadReason,
    last_error: Option<&str>,
) -> Result<(), PublishError> {
    let mut hs = attempt_headers(job, last_error);
    hs.push(str_header(headers::REASON, reason.as_str()));
    let to = (names::DEAD_EXCHANGE, names::DELIVERY_ROUTING_KEY);
    publish_job(publisher, to, job, hs).await
}

/// Dead-letters a job message that is not attempted at all (it cannot be decoded, or the
/// broker redelivered it up to its limit), body untouched, with the reason and why.
///
/// # Errors
/// As [`Publisher::publish`].
pub async fn dead_letter_unattempted(
    publisher: &Publisher,
    msg: &Incoming,
    reason: DeadReason,
    why: &str,
) -> Result<(), PublishError> {
    publisher
        .publish(OutgoingMessage {
            exchange: names::DEAD_EXCHANGE,
            routing_key: names::DELIVERY_ROUTING_KEY,
            body: &msg.body,
            message_id: msg.message_id.as_deref(),
            headers: vec![
                str_header(headers::REASON, reason.as_str()),
                (headers::LAST_ERROR.to_owned(), text(why)),
            ],
            mandatory: true,
        })
        .await
}

/// Publishes `job` to (exchange, routing key), message id = its delivery id.
async fn publish_job(
    publisher: &Publisher,
    (exchange, routing_key): (&str, &str),
    job: &DeliveryJob,
    headers: Vec<(String, HeaderValue)>,
) -> Result<(), PublishError> {
    publisher
        .publish(OutgoingMessage {
            exchange,
            routing_key,
            body: &job.encode(),
            message_id: Some(job.v1().delivery_id.as_str()),
            headers,
            mandatory: true,
        })
        .await
}

fn attempt_headers(job: &DeliveryJob, last_error: Option<&str>) -> Vec<(String, HeaderValue)> {
    let mut hs = vec![(
        headers::ATTEMPTS.to_owned(),
        HeaderValue::Int(i64::from(job.v1().attempt)),
    )];
    if let Some(e) = last_error {
        hs.push((headers::LAST_ERROR.to_owned(), text(e)));
    }
    hs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(600);
        match text(&long) {
            HeaderValue::Str(s) => assert_eq!(s.chars().count(), MAX_TEXT_CHARS),
            other => panic!("{other:?}"),
        }
        assert_eq!(text("short"), HeaderValue::Str("short".into()));
    }
}
