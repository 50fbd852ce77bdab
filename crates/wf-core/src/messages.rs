//! Queue message types. These cross process versions during a rolling upgrade, so they are
//! a versioned serde enum: adding a version is a compatibility change, editing one is not
//! allowed.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::envelope::Event;
use crate::events::EventType;
use crate::ids::{DeliveryId, EventId, OrgId, WebhookId};

/// One delivery of one event to one webhook, on `workflows.deliveries` and the retry
/// queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "v")]
pub enum DeliveryJob {
    #[serde(rename = "1")]
    V1(DeliveryJobV1),
}

/// Version 1 of [`DeliveryJob`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryJobV1 {
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    pub org_id: OrgId,
    pub event_id: EventId,
    pub event: EventType,
    /// Event timestamp, milliseconds since the epoch (for event-to-delivery latency).
    pub event_ts_ms: i64,
    /// The attempt this message asks for (1 for the first). It keeps counting up across
    /// manual retries and replays, so `X-WorkFlows-Attempt` never repeats.
    pub attempt: u32,
    /// Attempts made before the current retry schedule started: 0 for a fanned-out
    /// delivery; for a replay, the attempts already spent, so the replay gets the whole
    /// schedule again. Optional on the wire (absent = 0), so older jobs still decode.
    #[serde(default)]
    pub retry_base: u32,
    /// When the delivery was first held back unsent (its endpoint busy, rate limited or
    /// its circuit open) since its last real attempt, milliseconds since the epoch; `None`
    /// while it is not being held back. For `wf_delivery_held_seconds`. Optional on the
    /// wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_since_ms: Option<i64>,
    /// Likewise, but only while its endpoint was *unavailable* (circuit open, or asking us
    /// to wait with `Retry-After`): a delivery whose endpoint stays unavailable for longer
    /// than the whole retry schedule is dead-lettered as `endpoint_unavailable`. Optional
    /// on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_since_ms: Option<i64>,
    /// When the delivery was first logged (its fan-out), milliseconds since the epoch: the
    /// delivery log's partition key, so every later record of this delivery goes to the
    /// same day without looking for it. Optional on the wire (jobs queued before it
    /// existed are looked up by id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logged_at_ms: Option<i64>,
    /// The payload, serialised once at fan-out: every attempt sends these exact bytes.
    /// Shared, never copied, between the deliveries of one event and their attempts.
    pub body: Arc<str>,
}

/// A delivery as the delivery log knows it: enough to queue it again (a manual retry, a
/// replay of dead deliveries, `wfctl dlq replay` of a delivery whose message is gone).
#[derive(Debug, Clone, Copy)]
pub struct LoggedDelivery<'a> {
    pub delivery_id: &'a DeliveryId,
    pub webhook_id: &'a WebhookId,
    pub org_id: &'a OrgId,
    pub event_id: &'a EventId,
    pub event: EventType,
    pub event_ts_ms: i64,
    /// The payload stored at fan-out.
    pub body: &'a str,
    /// The highest attempt recorded so far (0 when none was).
    pub attempts: u32,
    /// When the delivery was logged, milliseconds since the epoch.
    pub logged_at_ms: i64,
}

impl DeliveryJob {
    /// The first attempt of `event`'s delivery to `webhook_id`, as fan-out makes it. The
    /// delivery id is derived from (org, event, webhook), so fanning an event out twice
    /// yields the same ids. `logged_at_ms` is the time fan-out logs the delivery with.
    pub fn first(
        event: &Event,
        webhook_id: &WebhookId,
        body: Arc<str>,
        logged_at_ms: i64,
    ) -> DeliveryJob {
        DeliveryJob::V1(DeliveryJobV1 {
            delivery_id: DeliveryId::derive(&event.org_id, &event.id, webhook_id),
            webhook_id: webhook_id.clone(),
            org_id: event.org_id.clone(),
            event_id: event.id.clone(),
            event: event.event,
            event_ts_ms: event.timestamp.timestamp_millis(),
            attempt: 1,
            retry_base: 0,
            held_since_ms: None,
            unavailable_since_ms: None,
            logged_at_ms: Some(logged_at_ms),
            body,
        })
    }

    /// A logged delivery queued again now: the same id and payload, the attempt after the
    /// last one recorded, and the whole retry schedule again (counted from here).
    pub fn requeued_from_log(d: LoggedDelivery<'_>) -> DeliveryJob {
        DeliveryJob::V1(DeliveryJobV1 {
            delivery_id: d.delivery_id.clone(),
            webhook_id: d.webhook_id.clone(),
            org_id: d.org_id.clone(),
            event_id: d.event_id.clone(),
            event: d.event,
            event_ts_ms: d.event_ts_ms,
            attempt: d.attempts + 1,
            retry_base: d.attempts,
            held_since_ms: None,
            unavailable_since_ms: None,
            logged_at_ms: Some(d.logged_at_ms),
            body: Arc::from(d.body),
        })
    }

    /// This job queued again now (from the dead-letter queue) after `attempts` attempts
    /// (the larger of what the log and the message know): the attempt after them, and
    /// the whole retry schedule again.
    pub fn requeued(&self, attempts: u32) -> DeliveryJob {
        let mut next = self.v1().clone();
        let attempts = attempts.max(next.attempt);
        next.attempt = attempts + 1;
        next.retry_base = attempts;
        next.held_since_ms = None;
        next.unavailable_since_ms = None;
        DeliveryJob::V1(next)
    }

    /// The job's next attempt, after this one was sent and failed: what goes on a retry
    /// tier. Its hold clock starts afresh.
    pub fn next_attempt(&self) -> DeliveryJob {
        let mut next = self.v1().clone();
        next.attempt += 1;
        next.held_since_ms = None;
        next.unavailable_since_ms = None;
        DeliveryJob::V1(next)
    }

    /// This job held back at `now_ms` without being sent (`unavailable`: because its
    /// endpoint was unavailable): the same attempt, and the times it was first held back
    /// (kept when it already was).
    pub fn held(&self, now_ms: i64, unavailable: bool) -> DeliveryJob {
        let mut next = self.v1().clone();
        next.held_since_ms.get_or_insert(now_ms);
        if unavailable {
            next.unavailable_since_ms.get_or_insert(now_ms);
        }
        DeliveryJob::V1(next)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serialising a job cannot fail")
    }

    /// # Errors
    /// The serde error when the bytes are not a known job version.
    pub fn decode(bytes: &[u8]) -> Result<DeliveryJob, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn v1(&self) -> &DeliveryJobV1 {
        match self {
            DeliveryJob::V1(j) => j,
        }
    }
}

impl DeliveryJobV1 {
    /// Which retry of the current schedule this attempt is (1 for the first attempt, or
    /// the first after a replay): the schedule restarts at every replay (`retry_base`).
    pub fn retry_number(&self) -> u32 {
        self.attempt.saturating_sub(self.retry_base).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_version() {
        let job = DeliveryJob::V1(DeliveryJobV1 {
            delivery_id: DeliveryId::generate(),
            webhook_id: WebhookId::generate(),
            org_id: OrgId::parse("org_a").unwrap(),
            event_id: EventId::generate(),
            event: EventType::AlertCreated,
            event_ts_ms: 1,
            attempt: 1,
            retry_base: 0,
            held_since_ms: Some(5),
            unavailable_since_ms: Some(6),
            logged_at_ms: Some(7),
            body: "{}".into(),
        });
        let bytes = job.encode();
        assert!(String::from_utf8_lossy(&bytes).starts_with(r#"{"v":"1""#));
        assert_eq!(DeliveryJob::decode(&bytes).unwrap(), job);
        assert!(DeliveryJob::decode(br#"{"v":"9"}"#).is_err());
        assert!(DeliveryJob::decode(b"garbage").is_err());
        // A job written before `retryBase` existed still decodes, with 0.
        let old = br#"{"v":"1","deliveryId":"dlv_a","webhookId":"whk_a","orgId":"o","eventId":"e","event":"alert.created","eventTsMs":1,"attempt":2,"body":"{}"}"#;
        assert_eq!(DeliveryJob::decode(old).unwrap().v1().retry_base, 0);
        assert_eq!(DeliveryJob::decode(old).unwrap().v1().held_since_ms, None);
        assert_eq!(DeliveryJob::decode(old).unwrap().v1().logged_at_ms, None);
        // A job that is not held back does not carry the field at all.
        let fresh = DeliveryJob::V1(DeliveryJobV1 {
            held_since_ms: None,
            ..job.v1().clone()
        });
        assert!(!String::from_utf8_lossy(&fresh.encode()).contains("heldSinceMs"));
    }

    #[test]
    fn holding_back_keeps_the_attempt_and_the_first_hold_time() {
        let job = DeliveryJob::first(
            &event(),
            &WebhookId::parse("whk_t").unwrap(),
            "{}".into(),
            42,
        );
        let busy = job.held(1_000, false);
        let b = busy.v1();
        assert_eq!(
            (b.attempt, b.held_since_ms, b.unavailable_since_ms),
            (1, Some(1_000), None)
        );
        let open = busy.held(5_000, true);
        let o = open.v1();
        assert_eq!(
            (o.attempt, o.held_since_ms, o.unavailable_since_ms),
            (1, Some(1_000), Some(5_000))
        );
        let again = open.held(9_000, true);
        let a = again.v1();
        assert_eq!(
            (a.attempt, a.held_since_ms, a.unavailable_since_ms),
            (1, Some(1_000), Some(5_000))
        );
        // Sent and failed: the next attempt's clocks start afresh.
        for next in [again.next_attempt(), again.requeued(3)] {
            let n = next.v1();
            assert_eq!((n.held_since_ms, n.unavailable_since_ms), (None, None));
        }
    }

    fn event() -> Event {
        Event::from_amqp(
            br#"{"id":"evt_t","event":"alert.created","orgId":"org_t","timestamp":"2026-05-19T12:00:00.000Z","data":{}}"#,
            None,
        )
        .unwrap()
    }

    #[test]
    fn first_attempt_of_a_fanned_out_delivery() {
        let ev = event();
        let webhook = WebhookId::parse("whk_t").unwrap();
        let job = DeliveryJob::first(&ev, &webhook, "{}".into(), 42);
        let j = job.v1();
        assert_eq!(
            j.delivery_id,
            DeliveryId::derive(&ev.org_id, &ev.id, &webhook)
        );
        assert_eq!((j.attempt, j.retry_base, j.retry_number()), (1, 0, 1));
        assert_eq!(j.event_ts_ms, ev.timestamp.timestamp_millis());
        assert_eq!(j.org_id, ev.org_id);
        assert_eq!(j.event_id, ev.id);
        assert_eq!(j.logged_at_ms, Some(42));
        // Fanning the same event out again gives the same job.
        assert_eq!(DeliveryJob::first(&ev, &webhook, "{}".into(), 42), job);
    }

    #[test]
    fn next_attempt_counts_up_within_the_schedule() {
        let job = DeliveryJob::first(
            &event(),
            &WebhookId::parse("whk_t").unwrap(),
            "{}".into(),
            42,
        );
        let second = job.next_attempt();
        assert_eq!((second.v1().attempt, second.v1().retry_base), (2, 0));
        assert_eq!(second.v1().retry_number(), 2);
        let third = second.next_attempt();
        assert_eq!(third.v1().retry_number(), 3);
        assert_eq!(third.v1().delivery_id, job.v1().delivery_id);
        assert_eq!(third.v1().body, job.v1().body);
    }

    #[test]
    fn requeued_jobs_number_after_the_last_attempt_and_restart_the_schedule() {
        let job = DeliveryJob::first(
            &event(),
            &WebhookId::parse("whk_t").unwrap(),
            "{}".into(),
            42,
        )
        .next_attempt()
        .next_attempt();
        // The log knows of more attempts than the message: count from the log.
        let r = job.requeued(5);
        assert_eq!(
            (r.v1().attempt, r.v1().retry_base, r.v1().retry_number()),
            (6, 5, 1)
        );
        // The message knows of more (its last attempt never reached the log).
        let r = job.requeued(1);
        assert_eq!((r.v1().attempt, r.v1().retry_base), (4, 3));
        assert_eq!(r.v1().delivery_id, job.v1().delivery_id);
        // Every transition keeps the delivery's log time.
        for next in [job.next_attempt(), job.requeued(1), job.held(1, true)] {
            assert_eq!(next.v1().logged_at_ms, Some(42));
        }

        let j = job.v1();
        let logged = LoggedDelivery {
            delivery_id: &j.delivery_id,
            webhook_id: &j.webhook_id,
            org_id: &j.org_id,
            event_id: &j.event_id,
            event: j.event,
            event_ts_ms: j.event_ts_ms,
            body: &j.body,
            attempts: 7,
            logged_at_ms: 99,
        };
        let from_log = DeliveryJob::requeued_from_log(logged);
        let f = from_log.v1();
        assert_eq!((f.attempt, f.retry_base, f.retry_number()), (8, 7, 1));
        assert_eq!(
            (&f.delivery_id, &f.body, f.event_ts_ms),
            (&j.delivery_id, &j.body, j.event_ts_ms)
        );
        assert_eq!(f.logged_at_ms, Some(99));
        // Never attempted (its first attempt was never recorded): attempt 1.
        let fresh = DeliveryJob::requeued_from_log(LoggedDelivery {
            attempts: 0,
            ..logged
        });
        assert_eq!((fresh.v1().attempt, fresh.v1().retry_base), (1, 0));
    }
}
