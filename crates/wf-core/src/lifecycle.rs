//! What follows a delivery attempt. This is the one place that decides whether a delivery
//! is done, waits, goes to which retry tier, or is dead-lettered with which reason; the
//! worker only carries the decision out (publishes, logs, counts).
//!
//! The rules (README, "Retries, dead letters, replay"):
//! - a `2xx` is delivered;
//! - `410 Gone` is dead at once (reason `gone`; the worker also disables the webhook);
//! - any other failure takes the next delay of the retry schedule, counted from the
//!   job's `retry_base` (so a replayed delivery gets the whole schedule again); after the
//!   last delay the delivery is dead (reason `retries_exhausted`);
//! - a `Retry-After` shorter than the scheduled delay moves the retry to the largest
//!   tier not above it (tiers are fixed queues, so a delay between tiers cannot be
//!   honoured exactly); a longer one does not lengthen the schedule;
//! - a delivery that was not sent because its endpoint is busy, rate limited or its
//!   circuit is open is *deferred*: it keeps its attempt number. Straight from fan-out,
//!   a delivery held back because its endpoint is busy joins `workflows.deliveries`,
//!   where it waits its turn; any other held-back delivery waits on the shortest tier
//!   that covers the expected wait (the longest tier when none does). A delivery whose
//!   endpoint stays *unavailable* (its circuit open, or asking us to wait with
//!   `Retry-After`) for longer than the whole schedule's span is dead (reason
//!   `endpoint_unavailable`); a busy endpoint, or a webhook's own `rateLimit`, only makes
//!   it wait.

use std::fmt;
use std::time::Duration;

use crate::duration::RetrySchedule;
use crate::messages::DeliveryJobV1;

/// What an attempt came to, as far as the decision is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempted {
    /// A `2xx` within the delivery timeout.
    Delivered,
    /// Anything else: another status (`status`), a timeout, a connection or TLS failure,
    /// an address the policy blocks, or a delivery the worker held back (endpoint busy or
    /// its circuit open: `status` is `None`).
    Failed {
        /// The HTTP status, when the endpoint answered.
        status: Option<u16>,
        /// The endpoint's `Retry-After` (on `429` and `503`), as a delay from now.
        retry_after: Option<Duration>,
    },
    /// Not sent: the endpoint could not take it now, and would not for about `wait`.
    HeldBack {
        /// Why.
        reason: HoldReason,
        /// How long until the endpoint is expected to take it.
        wait: Duration,
        /// Whether the job came off `workflows.deliveries` (else straight from fan-out).
        queued: bool,
        /// Whether the endpoint is unavailable (circuit open, `Retry-After`) rather than
        /// busy or held to the webhook's `rateLimit`: only unavailability runs the clock
        /// that gives a delivery up (`unavailable_since_ms`).
        unavailable: bool,
    },
}

/// Why a delivery was held back without being sent: the `reason` of
/// `wf_deliveries_deferred_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HoldReason {
    /// The endpoint is at its concurrency limit and its wait line is long.
    Busy,
    /// The webhook's `rateLimit`, or the endpoint's `Retry-After`, says not yet.
    RateLimited,
    /// The endpoint's circuit is open: it kept failing.
    CircuitOpen,
}

impl HoldReason {
    /// Every reason, for initialising metrics.
    pub const ALL: [HoldReason; 3] = [
        HoldReason::Busy,
        HoldReason::RateLimited,
        HoldReason::CircuitOpen,
    ];

    /// The metric label and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::Busy => "busy",
            HoldReason::RateLimited => "rate_limited",
            HoldReason::CircuitOpen => "circuit_open",
        }
    }
}

/// Why a delivery was dead-lettered: the `x-wf-reason` header of its message in
/// `workflows.deliveries.dead`, and the reason in the worker's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeadReason {
    /// The endpoint answered `410 Gone`; the webhook is disabled.
    Gone,
    /// Every delay of the retry schedule was used and the last attempt failed too.
    RetriesExhausted,
    /// The job message could not be decoded (not JSON, or an unknown version).
    UndecodableJob,
    /// The broker redelivered the job until its delivery limit: workers kept dying or
    /// failing to settle it.
    RedeliveryLimit,
    /// The delivery was held back (endpoint busy, rate limited, circuit open) for longer
    /// than the whole retry schedule's span without being sent.
    EndpointUnavailable,
}

impl DeadReason {
    /// The wire spelling (`x-wf-reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Gone => "gone",
            DeadReason::RetriesExhausted => "retries_exhausted",
            DeadReason::UndecodableJob => "undecodable_job",
            DeadReason::RedeliveryLimit => "redelivery_limit",
            DeadReason::EndpointUnavailable => "endpoint_unavailable",
        }
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The next step of a delivery after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Done: nothing more to publish.
    Delivered,
    /// Publish the job's next attempt on the retry tier (queue) of this delay.
    Retry {
        /// The retry tier: one of the schedule's distinct delays.
        tier: Duration,
    },
    /// Queue the job, same attempt, on `workflows.deliveries`: it was not sent, and waits
    /// there for its turn.
    Queue {
        /// Why it was held back.
        reason: HoldReason,
    },
    /// Park the job, same attempt, on the retry tier of this delay: it was not sent.
    Defer {
        /// The retry tier: one of the schedule's distinct delays.
        tier: Duration,
        /// Why it was held back.
        reason: HoldReason,
    },
    /// Publish the job to the dead-letter queue and mark the delivery dead.
    Dead {
        /// Why.
        reason: DeadReason,
    },
}

/// Decides what follows `attempted` for `job` under `schedule` at `now_ms` (milliseconds
/// since the epoch; see the module docs).
pub fn next_step(
    attempted: Attempted,
    job: &DeliveryJobV1,
    schedule: &RetrySchedule,
    now_ms: i64,
) -> Step {
    let (status, retry_after) = match attempted {
        Attempted::Delivered => return Step::Delivered,
        Attempted::HeldBack {
            reason,
            wait,
            queued,
            unavailable,
        } => {
            let held_ms = now_ms.saturating_sub(job.unavailable_since_ms.unwrap_or(now_ms));
            let held = Duration::from_millis(u64::try_from(held_ms).unwrap_or(0));
            if unavailable && held > schedule.span() {
                return Step::Dead {
                    reason: DeadReason::EndpointUnavailable,
                };
            }
            if reason == HoldReason::Busy && !queued {
                return Step::Queue { reason };
            }
            return Step::Defer {
                tier: hold_tier(schedule, wait),
                reason,
            };
        }
        Attempted::Failed {
            status,
            retry_after,
        } => (status, retry_after),
    };
    if status == Some(410) {
        return Step::Dead {
            reason: DeadReason::Gone,
        };
    }
    match retry_tier(schedule, job.retry_number(), retry_after) {
        Some(tier) => Step::Retry { tier },
        None => Step::Dead {
            reason: DeadReason::RetriesExhausted,
        },
    }
}

/// Where a held-back delivery waits: the shortest tier that covers `wait` (so it does
/// not come back before the endpoint can take it and churn through the broker again),
/// or the longest tier when none does.
fn hold_tier(schedule: &RetrySchedule, wait: Duration) -> Duration {
    let tiers = schedule.distinct_delays();
    tiers
        .iter()
        .copied()
        .find(|t| *t >= wait)
        .unwrap_or(tiers[tiers.len() - 1])
}

/// The tier of retry number `retry` (1-based): the scheduled delay, shortened to the
/// largest tier not above `retry_after` when that asks for less. `None` after the last
/// retry.
fn retry_tier(
    schedule: &RetrySchedule,
    retry: u32,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let step = schedule.delay_before_retry(retry as usize)?;
    let Some(ra) = retry_after.filter(|ra| *ra < step) else {
        return Some(step);
    };
    let tiers = schedule.distinct_delays();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;
    use crate::ids::{DeliveryId, EventId, OrgId, WebhookId};

    fn job(attempt: u32, retry_base: u32) -> DeliveryJobV1 {
        DeliveryJobV1 {
            delivery_id: DeliveryId::parse("dlv_a").unwrap(),
            webhook_id: WebhookId::parse("whk_a").unwrap(),
            org_id: OrgId::parse("org_a").unwrap(),
            event_id: EventId::parse("evt_a").unwrap(),
            event: EventType::AlertCreated,
            event_ts_ms: 0,
            attempt,
            retry_base,
            held_since_ms: None,
            unavailable_since_ms: None,
            logged_at_ms: None,
            body: "{}".into(),
        }
    }

    const NOW: i64 = 1_800_000_000_000;

    const fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn failed(status: Option<u16>, retry_after: Option<Duration>) -> Attempted {
        Attempted::Failed {
            status,
            retry_after,
        }
    }

    fn retry(tier: Duration) -> Step {
        Step::Retry { tier }
    }

    fn dead(reason: DeadReason) -> Step {
        Step::Dead { reason }
    }

    /// Every branch of the decision, one row each.
    #[test]
    fn decision_table() {
        let schedule = RetrySchedule::parse("5s,30s,2m").unwrap();
        #[rustfmt::skip]
        let rows: &[(&str, Attempted, u32, u32, Step)] = &[
            // what,                                   attempted,                         attempt, base, step
            ("2xx on the first attempt",               Attempted::Delivered,              1, 0, Step::Delivered),
            ("2xx on the last attempt",                Attempted::Delivered,              4, 0, Step::Delivered),
            ("2xx past the schedule (a late replay)",  Attempted::Delivered,              9, 0, Step::Delivered),
            ("500 on attempt 1: first delay",          failed(Some(500), None),           1, 0, retry(s(5))),
            ("500 on attempt 2: second delay",         failed(Some(500), None),           2, 0, retry(s(30))),
            ("500 on attempt 3: last delay",           failed(Some(500), None),           3, 0, retry(s(120))),
            ("500 on attempt 4: schedule exhausted",   failed(Some(500), None),           4, 0, dead(DeadReason::RetriesExhausted)),
            ("timeout (no status) follows the schedule", failed(None, None),              2, 0, retry(s(30))),
            ("no status past the schedule",            failed(None, None),                4, 0, dead(DeadReason::RetriesExhausted)),
            ("410 on attempt 1 is dead at once",       failed(Some(410), None),           1, 0, dead(DeadReason::Gone)),
            ("410 after the schedule is still gone",   failed(Some(410), None),           4, 0, dead(DeadReason::Gone)),
            ("410 ignores Retry-After",                failed(Some(410), Some(s(1))),     1, 0, dead(DeadReason::Gone)),
            ("replay: attempt 5 after 4 is retry 1",   failed(Some(500), None),           5, 4, retry(s(5))),
            ("replay: attempt 7 after 4 is retry 3",   failed(Some(500), None),           7, 4, retry(s(120))),
            ("replay: attempt 8 after 4 is exhausted", failed(Some(500), None),           8, 4, dead(DeadReason::RetriesExhausted)),
            ("base above attempt counts as retry 1",   failed(Some(500), None),           1, 3, retry(s(5))),
            ("Retry-After shorter: largest tier below", failed(Some(429), Some(s(40))),   3, 0, retry(s(30))),
            ("Retry-After between tiers rounds down",  failed(Some(503), Some(s(29))),    3, 0, retry(s(5))),
            ("Retry-After below every tier: shortest", failed(Some(503), Some(s(1))),     2, 0, retry(s(5))),
            ("Retry-After equal to the step: the step", failed(Some(429), Some(s(30))),   2, 0, retry(s(30))),
            ("Retry-After longer: the schedule's step", failed(Some(429), Some(s(3600))), 1, 0, retry(s(5))),
            ("Retry-After past the schedule: dead",    failed(Some(429), Some(s(1))),     4, 0, dead(DeadReason::RetriesExhausted)),
            ("Retry-After zero: shortest tier",        failed(Some(503), Some(s(0))),     3, 0, retry(s(5))),
        ];
        for (what, attempted, attempt, base, want) in rows {
            let got = next_step(*attempted, &job(*attempt, *base), &schedule, NOW);
            assert_eq!(got, *want, "{what}");
        }
    }

    #[test]
    fn retry_after_never_picks_a_tier_longer_than_the_step() {
        // Tiers 1s, 10s, 60s; retry 1 is 10s. Retry-After 5s: the largest tier <= 5s is
        // 1s. A schedule whose shortest tier is the step itself keeps the step.
        let schedule = RetrySchedule::parse("10s,1s,60s").unwrap();
        let got = next_step(failed(Some(503), Some(s(5))), &job(1, 0), &schedule, NOW);
        assert_eq!(got, retry(s(1)));
        let schedule = RetrySchedule::parse("10s,60s").unwrap();
        let got = next_step(failed(Some(503), Some(s(5))), &job(1, 0), &schedule, NOW);
        assert_eq!(got, retry(s(10)));
    }

    /// Held back off the job queue; unavailable for an open circuit (and, in these rows,
    /// for `RateLimited`, as a `Retry-After` would be; see `busy_and_rate_limits`).
    fn held(reason: HoldReason, wait: Duration) -> Attempted {
        Attempted::HeldBack {
            reason,
            wait,
            queued: true,
            unavailable: reason != HoldReason::Busy,
        }
    }

    fn held_at_fanout(reason: HoldReason, wait: Duration) -> Attempted {
        Attempted::HeldBack {
            reason,
            wait,
            queued: false,
            unavailable: reason != HoldReason::Busy,
        }
    }

    fn defer(tier: Duration, reason: HoldReason) -> Step {
        Step::Defer { tier, reason }
    }

    fn held_job(attempt: u32, held_for: Option<Duration>) -> DeliveryJobV1 {
        DeliveryJobV1 {
            unavailable_since_ms: held_for.map(|d| NOW - d.as_millis() as i64),
            ..job(attempt, 0)
        }
    }

    /// Held-back deliveries: every branch, one row each. The schedule's span is 155 s.
    #[test]
    fn hold_table() {
        use HoldReason::*;
        let schedule = RetrySchedule::parse("5s,30s,2m").unwrap();
        assert_eq!(schedule.span(), s(155));
        #[rustfmt::skip]
        let rows: &[(&str, Attempted, u32, Option<Duration>, Step)] = &[
            // what,                                   attempted,                 attempt, held for,     step
            ("first hold, short wait: shortest tier",  held(Busy, s(1)),           1, None,          defer(s(5), Busy)),
            ("wait equal to a tier: that tier",        held(Busy, s(30)),          1, None,          defer(s(30), Busy)),
            ("wait between tiers: the covering tier",  held(RateLimited, s(31)),   1, None,          defer(s(120), RateLimited)),
            ("wait beyond every tier: the longest",    held(CircuitOpen, s(900)),  1, None,          defer(s(120), CircuitOpen)),
            ("zero wait: shortest tier",               held(Busy, s(0)),           1, None,          defer(s(5), Busy)),
            ("the attempt number plays no part",       held(Busy, s(1)),           9, None,          defer(s(5), Busy)),
            ("held a while, within the span",          held(CircuitOpen, s(60)),   2, Some(s(100)),  defer(s(120), CircuitOpen)),
            ("held exactly the span: not yet",         held(CircuitOpen, s(1)),    2, Some(s(155)),  defer(s(5), CircuitOpen)),
            ("held past the span: unavailable",        held(CircuitOpen, s(1)),    2, Some(s(156)),  dead(DeadReason::EndpointUnavailable)),
            ("busy past the span: only waits",         held(Busy, s(1)),           1, Some(s(3600)), defer(s(5), Busy)),
            ("Retry-After past the span: unavailable", held(RateLimited, s(1)),    2, Some(s(200)),  dead(DeadReason::EndpointUnavailable)),
            ("busy at fan-out: join the job queue",    held_at_fanout(Busy, s(60)), 1, None,         Step::Queue { reason: Busy }),
            ("open circuit at fan-out: a tier",        held_at_fanout(CircuitOpen, s(30)), 1, None,  defer(s(30), CircuitOpen)),
            ("rate limited at fan-out: a tier",        held_at_fanout(RateLimited, s(3)), 1, None,   defer(s(5), RateLimited)),
            ("held back just now",                     held(Busy, s(1)),           1, Some(s(0)),    defer(s(5), Busy)),
        ];
        for (what, attempted, attempt, held_for, want) in rows {
            let got = next_step(*attempted, &held_job(*attempt, *held_for), &schedule, NOW);
            assert_eq!(got, *want, "{what}");
        }
        // A hold time after now (clocks of two workers disagree) is not negative.
        let future = DeliveryJobV1 {
            unavailable_since_ms: Some(NOW + 60_000),
            ..job(1, 0)
        };
        assert_eq!(
            next_step(held(Busy, s(1)), &future, &schedule, NOW),
            defer(s(5), Busy)
        );
    }

    /// A busy endpoint and a webhook's own rate limit never give a delivery up, however
    /// long they hold it: the endpoint is there, the delivery waits its turn.
    #[test]
    fn busy_and_rate_limits_only_wait() {
        let schedule = RetrySchedule::parse("5s,30s,2m").unwrap();
        for reason in HoldReason::ALL {
            let a = Attempted::HeldBack {
                reason,
                wait: s(1),
                queued: true,
                unavailable: false,
            };
            let got = next_step(a, &held_job(1, Some(s(86_400))), &schedule, NOW);
            assert_eq!(got, defer(s(5), reason), "{reason:?}");
        }
    }

    #[test]
    fn hold_reasons_have_their_label() {
        let labels: Vec<&str> = HoldReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels, ["busy", "rate_limited", "circuit_open"]);
    }

    #[test]
    fn reasons_have_their_wire_spelling() {
        for (r, s) in [
            (DeadReason::Gone, "gone"),
            (DeadReason::RetriesExhausted, "retries_exhausted"),
            (DeadReason::UndecodableJob, "undecodable_job"),
            (DeadReason::RedeliveryLimit, "redelivery_limit"),
            (DeadReason::EndpointUnavailable, "endpoint_unavailable"),
        ] {
            assert_eq!(r.as_str(), s);
            assert_eq!(r.to_string(), s);
        }
    }
}
