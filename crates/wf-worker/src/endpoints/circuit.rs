//! The circuit breaker of one endpoint.
//!
//! ```text
//! Closed --(failure_threshold consecutive failures)--> Open
//! Open ----(open_for over; next delivery is the probe)--> HalfOpen
//! HalfOpen --(probe answered)--> Closed
//! HalfOpen --(probe failed: period doubled, up to MAX_OPEN_FOR)--> Open
//! HalfOpen --(probe dropped unreported)--> Open, probe-able at once
//! ```
//!
//! Only failures of the endpoint count: transport errors and `5xx` always; signs of
//! overload (timeouts, `408`, `429`, `503`) only once the endpoint's concurrency limit is
//! at its floor, because until then they lower the limit instead (see `limit.rs`): our
//! own load must not turn a healthy slow endpoint into an open circuit.

use std::time::Duration;

use tokio::time::Instant;

/// The longest an open period grows to through repeated probe failures (unless the
/// configured period itself is longer). An endpoint that is down for hours is then
/// probed every 5 minutes rather than every 30 s, yet noticed soon after it recovers.
pub const MAX_OPEN_FOR: Duration = Duration::from_secs(5 * 60);

/// Where the circuit stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Deliveries flow.
    Closed,
    /// Nothing is sent until `until`.
    Open {
        /// When the next delivery may probe.
        until: Instant,
    },
    /// The probe is out; everybody else is held back until it reports.
    HalfOpen,
}

/// What an attempt taught the circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The endpoint answered.
    Up,
    /// The endpoint failed.
    Down,
    /// Nothing (cancelled, or an overload the limit absorbed).
    Nothing,
}

/// A state change the caller reports (gauge, logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Closed → Open.
    Opened,
    /// HalfOpen → Open.
    Reopened,
    /// HalfOpen → Closed.
    Closed,
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Circuit {
    state: State,
    failures: u32,
    open_for: Duration,
    /// Bumped on every transition: a verdict changes the state only if its attempt was
    /// admitted under the current epoch (results of attempts admitted before the circuit
    /// opened must neither close it nor count against the freshly closed circuit).
    epoch: u64,
}

impl Circuit {
    /// A closed circuit whose first open period will be `open_for`.
    pub fn new(open_for: Duration) -> Circuit {
        Circuit {
            state: State::Closed,
            failures: 0,
            open_for,
            epoch: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The current epoch (to hand to an admitted attempt).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the circuit carries anything worth keeping.
    pub fn is_pristine(&self) -> bool {
        self.state == State::Closed && self.failures == 0
    }

    /// Whether it is open or half-open (counted by `wf_circuit_open_endpoints`).
    pub fn is_open(&self) -> bool {
        self.state != State::Closed
    }

    /// Turns an expired open period into the half-open state: the caller that sees
    /// `true` sends the probe.
    pub fn try_probe(&mut self, now: Instant) -> bool {
        match self.state {
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                self.epoch += 1;
                true
            }
            _ => false,
        }
    }

    /// Applies the verdict of an attempt admitted at `epoch` (`probe`: it was the
    /// half-open probe).
    pub fn report(
        &mut self,
        epoch: u64,
        probe: bool,
        verdict: Verdict,
        threshold: u32,
        base_open_for: Duration,
        now: Instant,
    ) -> Option<Transition> {
        if epoch != self.epoch {
            return None;
        }
        match (self.state, probe, verdict) {
            (State::Closed, _, Verdict::Up) => {
                self.failures = 0;
                None
            }
            (State::Closed, _, Verdict::Down) => {
                self.failures = self.failures.saturating_add(1);
                if self.failures < threshold.max(1) {
                    return None;
                }
                self.state = State::Open {
                    until: now + self.open_for,
                };
                self.epoch += 1;
                Some(Transition::Opened)
            }
            (State::HalfOpen, true, Verdict::Up) => {
                self.state = State::Closed;
                self.failures = 0;
                self.open_for = base_open_for;
                self.epoch += 1;
                Some(Transition::Closed)
            }
            (State::HalfOpen, true, Verdict::Down) => {
                self.open_for = self
                    .open_for
                    .saturating_mul(2)
                    .min(MAX_OPEN_FOR.max(base_open_for));
                self.state = State::Open {
                    until: now + self.open_for,
                };
                self.epoch += 1;
                Some(Transition::Reopened)
            }
            (State::HalfOpen, true, Verdict::Nothing) => {
                // The probe learned nothing: let the very next delivery probe instead.
                self.state = State::Open { until: now };
                self.epoch += 1;
                None
            }
            // Closed + Nothing: no information. Open with a current epoch, or a non-probe
            // in half-open: unreachable, as every transition into those bumps the epoch
            // and only the probe is admitted under it.
            _ => None,
        }
    }

    /// The length of the current (or next) open period.
    pub fn open_for(&self) -> Duration {
        self.open_for
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(30);

    fn fail(c: &mut Circuit, n: u32, now: Instant) -> Option<Transition> {
        let mut last = None;
        for _ in 0..n {
            last = c.report(c.epoch(), false, Verdict::Down, 3, BASE, now);
        }
        last
    }

    #[test]
    fn opens_after_the_threshold_and_a_success_resets_the_count() {
        let now = Instant::now();
        let mut c = Circuit::new(BASE);
        assert_eq!(fail(&mut c, 2, now), None);
        c.report(c.epoch(), false, Verdict::Up, 3, BASE, now);
        assert_eq!(fail(&mut c, 2, now), None);
        assert_eq!(fail(&mut c, 1, now), Some(Transition::Opened));
        assert_eq!(c.state(), State::Open { until: now + BASE });
        assert!(c.is_open());
    }

    #[test]
    fn probe_success_closes_failure_doubles_up_to_the_cap() {
        let mut now = Instant::now();
        let mut c = Circuit::new(BASE);
        fail(&mut c, 3, now);
        assert!(!c.try_probe(now + Duration::from_secs(29)));
        let mut expected = BASE;
        for _ in 0..6 {
            now += c.open_for();
            assert!(c.try_probe(now));
            assert!(!c.try_probe(now), "one probe at a time");
            let t = c.report(c.epoch(), true, Verdict::Down, 3, BASE, now);
            assert_eq!(t, Some(Transition::Reopened));
            expected = (expected * 2).min(MAX_OPEN_FOR);
            assert_eq!(c.open_for(), expected);
        }
        assert_eq!(c.open_for(), MAX_OPEN_FOR);
        now += c.open_for();
        assert!(c.try_probe(now));
        let t = c.report(c.epoch(), true, Verdict::Up, 3, BASE, now);
        assert_eq!(t, Some(Transition::Closed));
        assert_eq!(c.open_for(), BASE);
        assert!(c.is_pristine());
    }

    #[test]
    fn a_dropped_probe_lets_the_next_delivery_probe() {
        let now = Instant::now();
        let mut c = Circuit::new(BASE);
        fail(&mut c, 3, now);
        let later = now + BASE;
        assert!(c.try_probe(later));
        c.report(c.epoch(), true, Verdict::Nothing, 3, BASE, later);
        assert!(c.try_probe(later));
    }

    #[test]
    fn stale_verdicts_do_not_move_the_circuit() {
        let now = Instant::now();
        let mut c = Circuit::new(BASE);
        let old_epoch = c.epoch();
        fail(&mut c, 3, now);
        // Answers to attempts sent before it opened.
        assert_eq!(c.report(old_epoch, false, Verdict::Up, 3, BASE, now), None);
        assert!(c.is_open());
        let later = now + BASE;
        assert!(c.try_probe(later));
        c.report(c.epoch(), true, Verdict::Up, 3, BASE, later);
        // A failure admitted while it was open does not count against it now.
        assert_eq!(
            c.report(old_epoch, false, Verdict::Down, 1, BASE, later),
            None
        );
        assert!(c.is_pristine());
    }
}
