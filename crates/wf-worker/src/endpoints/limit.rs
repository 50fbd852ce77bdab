//! The adaptive concurrency limit of one endpoint: how many deliveries may be in flight to
//! it at once, learned from how it answers.
//!
//! Additive increase, multiplicative decrease, with a latency guard:
//! - it starts at [`Limit::new`]'s `initial` and, until the first sign of congestion, grows
//!   by one per success (doubling every round trip, like TCP's slow start);
//! - after that it grows by `1/limit` per success (one per round trip), but only while
//!   the endpoint is busy enough for the limit to matter (at least half of it in use) and
//!   its latency stays near the best it has shown (at most [`LATENCY_TOLERANCE`] × the
//!   baseline plus [`LATENCY_SLACK`]);
//! - latency beyond that means requests queue at the endpoint: the limit shrinks by 10 %;
//! - a timeout, `408`, `429` or `503` halves it;
//! - decreases happen at most once per round trip (the smoothed latency), so a burst of
//!   answers to requests that were all sent before the first one came back counts once.
//!
//! The limit stays within `[1, max]`. The baseline is the lowest latency seen, drifting
//! slowly up (1 % of the gap per sample) so an endpoint that became slower for good is
//! not judged against a past it cannot reach again.

use std::time::Duration;

use tokio::time::Instant;

/// Latency within this factor of the baseline counts as "not queueing".
pub const LATENCY_TOLERANCE: f64 = 1.5;
/// … plus this much, so that jitter on a fast endpoint (2 ms → 5 ms) is not congestion.
pub const LATENCY_SLACK: Duration = Duration::from_millis(25);
/// The latency assumed before the first answer, for wait estimates.
pub const INITIAL_LATENCY: Duration = Duration::from_millis(100);

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Limit {
    value: f64,
    max: f64,
    slow_start: bool,
    /// Seconds.
    baseline: Option<f64>,
    /// Seconds; exponentially weighted.
    smoothed: Option<f64>,
    last_decrease: Option<Instant>,
}

impl Limit {
    /// A fresh limit at `initial`, within `[1, max]`.
    pub fn new(initial: usize, max: usize) -> Limit {
        let max = max.max(1) as f64;
        Limit {
            value: (initial.max(1) as f64).min(max),
            max,
            slow_start: true,
            baseline: None,
            smoothed: None,
            last_decrease: None,
        }
    }

    /// Deliveries that may be in flight now.
    pub fn current(&self) -> usize {
        self.value as usize
    }

    /// The smoothed latency of the endpoint's answers.
    pub fn latency(&self) -> Duration {
        self.smoothed
            .map_or(INITIAL_LATENCY, Duration::from_secs_f64)
    }

    /// Whether the limit is at its floor (1): a sign of overload then means the endpoint
    /// is failing, not just busy.
    pub fn at_floor(&self) -> bool {
        self.value < 2.0
    }

    /// The endpoint answered in `latency`; `in_flight` deliveries (this one included) were
    /// in flight when it was sent.
    pub fn on_answer(&mut self, latency: Duration, in_flight: usize, now: Instant) {
        let l = latency.as_secs_f64();
        self.smoothed = Some(match self.smoothed {
            None => l,
            Some(s) => s + (l - s) * 0.2,
        });
        let baseline = match self.baseline {
            Some(b) if l >= b => b + (l - b) * 0.01,
            _ => l,
        };
        self.baseline = Some(baseline);
        if l > baseline * LATENCY_TOLERANCE + LATENCY_SLACK.as_secs_f64() {
            self.decrease(0.9, now);
            return;
        }
        if (in_flight as f64) * 2.0 < self.value {
            // Barely used: nothing says the endpoint could take more.
            return;
        }
        self.value = if self.slow_start {
            self.value + 1.0
        } else {
            self.value + 1.0 / self.value
        }
        .min(self.max);
    }

    /// The endpoint showed overload (timeout, `408`, `429`, `503`): halve.
    pub fn on_overload(&mut self, now: Instant) {
        self.decrease(0.5, now);
    }

    fn decrease(&mut self, factor: f64, now: Instant) {
        self.slow_start = false;
        if let Some(last) = self.last_decrease {
            if now.duration_since(last) < self.latency() {
                return;
            }
        }
        self.last_decrease = Some(now);
        self.value = (self.value * factor).max(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn slow_start_doubles_then_grows_by_one_per_round_trip() {
        let now = Instant::now();
        let mut l = Limit::new(4, 64);
        for _ in 0..4 {
            l.on_answer(ms(10), 4, now);
        }
        assert_eq!(l.current(), 8, "one per answer in slow start");
        l.on_overload(now);
        assert_eq!(l.current(), 4);
        // Congestion avoidance: about one per `limit` answers.
        for _ in 0..4 {
            l.on_answer(ms(10), 4, now);
        }
        assert_eq!(l.current(), 4);
        for _ in 0..2 {
            l.on_answer(ms(10), 4, now);
        }
        assert_eq!(l.current(), 5);
    }

    #[test]
    fn stays_within_one_and_max() {
        let mut now = Instant::now();
        let mut l = Limit::new(100, 16);
        assert_eq!(l.current(), 16);
        for _ in 0..100 {
            l.on_answer(ms(5), 16, now);
        }
        assert_eq!(l.current(), 16);
        for _ in 0..20 {
            now += Duration::from_secs(1);
            l.on_overload(now);
        }
        assert_eq!(l.current(), 1);
        assert!(l.at_floor());
        assert_eq!(Limit::new(0, 0).current(), 1);
    }

    #[test]
    fn an_idle_endpoint_does_not_grow() {
        let now = Instant::now();
        let mut l = Limit::new(8, 64);
        for _ in 0..100 {
            l.on_answer(ms(5), 1, now);
        }
        assert_eq!(l.current(), 8);
    }

    #[test]
    fn a_slow_but_steady_endpoint_grows_to_the_max() {
        let now = Instant::now();
        let mut l = Limit::new(8, 64);
        for i in 0..200 {
            l.on_answer(Duration::from_secs(2), l.current(), now + ms(i));
        }
        assert_eq!(l.current(), 64);
    }

    #[test]
    fn queueing_latency_shrinks_the_limit_once_per_round_trip() {
        let mut now = Instant::now();
        let mut l = Limit::new(8, 64);
        for _ in 0..32 {
            l.on_answer(ms(100), l.current(), now);
        }
        assert_eq!(l.current(), 40);
        // Latency triples: the endpoint is queueing our requests.
        l.on_answer(ms(300), 40, now);
        assert_eq!(l.current(), 36);
        // Answers to requests sent before the first slow one returned: no further cut.
        l.on_answer(ms(300), 36, now + ms(10));
        assert_eq!(l.current(), 36);
        now += Duration::from_secs(1);
        l.on_answer(ms(300), 36, now);
        assert_eq!(l.current(), 32);
    }

    #[test]
    fn overload_halves_once_per_round_trip() {
        let now = Instant::now();
        let mut l = Limit::new(32, 64);
        l.on_answer(ms(200), 32, now);
        l.on_overload(now);
        assert_eq!(l.current(), 16);
        l.on_overload(now + ms(50));
        assert_eq!(l.current(), 16, "within the round trip");
        l.on_overload(now + ms(500));
        assert_eq!(l.current(), 8);
    }

    #[test]
    fn the_baseline_follows_an_endpoint_that_became_slower() {
        let now = Instant::now();
        let mut l = Limit::new(8, 64);
        l.on_answer(ms(10), 8, now);
        // 100 ms for good: first judged as queueing, then the baseline catches up and the
        // limit grows again.
        let mut t = now;
        for _ in 0..1_000 {
            t += Duration::from_secs(1);
            l.on_answer(ms(100), l.current(), t);
        }
        assert!(l.current() > 8, "limit {}", l.current());
        assert!((l.latency().as_secs_f64() - 0.1).abs() < 0.001);
    }
}
