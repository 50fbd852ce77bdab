//! A token bucket: this worker's share of a webhook's `rateLimit`.
//!
//! Tokens accrue at `rate` per second up to a burst of half a second's worth (at least
//! one). With N workers each holding a bucket of `rateLimit / N`, the fleet sends at most
//! `rateLimit` per second plus N half-second bursts, which over any 10-second window
//! stays within 5 % of the limit.

use std::time::Duration;

use tokio::time::Instant;

/// The burst a bucket holds, in seconds of its rate.
pub const BURST_SECONDS: f64 = 0.5;

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// Tokens per second.
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket of `rate` tokens per second.
    pub fn new(rate: f64, now: Instant) -> Bucket {
        let mut b = Bucket {
            rate: rate.max(f64::MIN_POSITIVE),
            tokens: 0.0,
            at: now,
        };
        b.tokens = b.capacity();
        b
    }

    fn capacity(&self) -> f64 {
        (self.rate * BURST_SECONDS).max(1.0)
    }

    /// The rate, tokens per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Changes the rate (the webhook's limit or the fleet's size changed), keeping the
    /// tokens earned so far.
    pub fn set_rate(&mut self, rate: f64, now: Instant) {
        self.refill(now);
        self.rate = rate.max(f64::MIN_POSITIVE);
        self.tokens = self.tokens.min(self.capacity());
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity());
        self.at = now;
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until `n` tokens will have accrued (zero when they already have).
    pub fn wait_for(&mut self, n: usize, now: Instant) -> Duration {
        self.refill(now);
        let missing = n as f64 - self.tokens;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.rate)
        }
    }

    /// Whether the bucket is full: forgetting it changes nothing.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(got: Duration, want: Duration) {
        let diff = got.abs_diff(want);
        assert!(diff < Duration::from_micros(1), "{got:?} != {want:?}");
    }

    #[test]
    fn bursts_half_a_second_then_follows_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10.0, t0);
        let burst = (0..20).filter(|_| b.try_take(t0)).count();
        assert_eq!(burst, 5);
        assert_close(b.wait_for(1, t0), Duration::from_millis(100));
        assert_close(b.wait_for(3, t0), Duration::from_millis(300));
        // Over 10 s at most the rate plus the burst.
        let mut sent = burst;
        for ms in 1..=10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            while b.try_take(now) {
                sent += 1;
            }
        }
        // 5 of burst and 100 earned (floating-point accrual may leave the last one
        // a hair short).
        assert!((104..=105).contains(&sent), "{sent}");
    }

    #[test]
    fn slow_rates_still_hold_one_token() {
        let t0 = Instant::now();
        let mut b = Bucket::new(0.5, t0);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0));
        assert_close(b.wait_for(1, t0), Duration::from_secs(2));
        assert!(b.try_take(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn a_new_rate_keeps_what_was_earned() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100.0, t0);
        assert!(b.is_full(t0));
        for _ in 0..50 {
            assert!(b.try_take(t0));
        }
        assert!(!b.is_full(t0));
        b.set_rate(10.0, t0);
        assert_eq!(b.rate(), 10.0);
        assert_close(b.wait_for(1, t0), Duration::from_millis(100));
        assert!(b.is_full(t0 + Duration::from_secs(1)));
    }
}
