//! The keep-alive pool's bookkeeping: which idle connections are kept, and which one
//! goes first when there are too many.
//!
//! A worker may talk to tens of thousands of endpoints. An idle TLS connection costs
//! about 35 KiB (rustls and HTTP buffers), so a pool bounded only per host grows with the
//! number of endpoints touched within the idle timeout: 10,000 endpoints hold 350 MiB.
//! This pool is bounded twice: per host (`max_per_host`), and over all hosts
//! (`max_total`). Connections in use are not counted here: they are bounded by the
//! deliveries in flight.
//!
//! When the pool is full, a connection coming back closes the least recently used one.
//! A fan-out wider than the pool, cycle after cycle with nothing in between, reuses
//! nothing under this rule (each connection is closed just before its endpoint's turn
//! comes again); events that arrive while earlier ones are still being fanned out, and
//! traffic from many organisations, do reuse (see BENCHMARKS.md). Size the pool above the
//! number of endpoints one worker reaches within the idle timeout to keep them all.
//!
//! The type is generic over what it keeps so that its rules are tested without sockets;
//! the client keeps hyper's `SendRequest` handles in it. Dropping a handle closes its
//! connection.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The limits of an [`IdlePool`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Idle connections kept for one host (`host:port`).
    pub max_per_host: usize,
    /// Idle connections kept over all hosts.
    pub max_total: usize,
    /// An idle connection older than this is closed rather than reused.
    pub idle_timeout: Duration,
}

/// One idle connection.
struct Idle<T> {
    seq: u64,
    conn: T,
}

/// Idle connections by host, with a global least-recently-used order.
///
/// Invariants: every entry of `hosts` has exactly one entry in `order` under its `seq`
/// (and the reverse); each host's line is in increasing `seq`, so its front is its oldest;
/// no host has an empty line.
pub struct IdlePool<T> {
    limits: Limits,
    hosts: HashMap<Arc<str>, VecDeque<Idle<T>>>,
    /// `seq` → host and the time it went idle, oldest first.
    order: BTreeMap<u64, (Arc<str>, Instant)>,
    next_seq: u64,
}

impl<T> IdlePool<T> {
    /// An empty pool.
    pub fn new(limits: Limits) -> Self {
        IdlePool {
            limits,
            hosts: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Idle connections kept now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no idle connection is kept.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The most recently used idle connection to `host` that has not timed out (the one
    /// least likely to have been closed by the other side). Expired connections,
    /// of any host, are returned in `closed` for the caller to drop outside its lock.
    pub fn take(&mut self, host: &str, now: Instant, closed: &mut Vec<T>) -> Option<T> {
        self.expire(now, closed);
        let line = self.hosts.get_mut(host)?;
        let idle = line.pop_back().expect("no host has an empty line");
        if line.is_empty() {
            self.hosts.remove(host);
        }
        self.order.remove(&idle.seq);
        Some(idle.conn)
    }

    /// Keeps `conn` as an idle connection to `host`. What no longer fits is returned in
    /// `closed`, with what has expired: the host's oldest beyond `max_per_host`, the
    /// pool's least recently used beyond `max_total`; with a limit of 0, `conn` itself.
    pub fn put(&mut self, host: &str, conn: T, now: Instant, closed: &mut Vec<T>) {
        self.expire(now, closed);
        if self.limits.max_per_host == 0 || self.limits.max_total == 0 {
            closed.push(conn);
            return;
        }
        let host_full = self
            .hosts
            .get(host)
            .is_some_and(|line| line.len() >= self.limits.max_per_host);
        if host_full {
            self.pop_oldest_of(host, closed);
        } else if self.order.len() >= self.limits.max_total {
            self.pop_oldest(closed);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let key: Arc<str> = match self.hosts.get_key_value(host) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(host),
        };
        self.hosts
            .entry(Arc::clone(&key))
            .or_default()
            .push_back(Idle { seq, conn });
        self.order.insert(seq, (key, now));
    }

    /// Closes the idle connections that have been idle for longer than the timeout.
    fn expire(&mut self, now: Instant, closed: &mut Vec<T>) {
        while let Some((_, (_, since))) = self.order.first_key_value() {
            if now.saturating_duration_since(*since) < self.limits.idle_timeout {
                break;
            }
            self.pop_oldest(closed);
        }
    }

    /// Removes the oldest idle connection of `host`.
    fn pop_oldest_of(&mut self, host: &str, closed: &mut Vec<T>) {
        let Some(line) = self.hosts.get_mut(host) else {
            return;
        };
        let oldest = line.pop_front().expect("a host line is never empty");
        if line.is_empty() {
            self.hosts.remove(host);
        }
        self.order.remove(&oldest.seq);
        closed.push(oldest.conn);
    }

    /// Removes the least recently used idle connection.
    fn pop_oldest(&mut self, closed: &mut Vec<T>) {
        let Some((seq, (host, _))) = self.order.pop_first() else {
            return;
        };
        let line = self
            .hosts
            .get_mut(&host)
            .expect("every ordered entry has a host line");
        let idle = line.pop_front().expect("a host line is never empty");
        debug_assert_eq!(idle.seq, seq, "a host's oldest is first in its line");
        if line.is_empty() {
            self.hosts.remove(&host);
        }
        closed.push(idle.conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn pool<T>(per_host: usize, total: usize) -> IdlePool<T> {
        IdlePool::new(Limits {
            max_per_host: per_host,
            max_total: total,
            idle_timeout: 90 * SEC,
        })
    }

    /// Checks the invariants the type documents.
    fn check<T>(p: &IdlePool<T>) {
        let in_lines: usize = p.hosts.values().map(VecDeque::len).sum();
        assert_eq!(in_lines, p.order.len());
        for (host, line) in &p.hosts {
            assert!(!line.is_empty());
            for pair in line.iter().collect::<Vec<_>>().windows(2) {
                assert!(pair[0].seq < pair[1].seq);
            }
            for idle in line {
                assert_eq!(&*p.order[&idle.seq].0, &**host);
            }
        }
    }

    #[test]
    fn reuses_the_most_recent_of_a_host() {
        let mut p = pool(4, 10);
        let now = Instant::now();
        let mut closed = Vec::new();
        p.put("a:443", "a1", now, &mut closed);
        p.put("b:443", "b1", now, &mut closed);
        p.put("a:443", "a2", now, &mut closed);
        check(&p);
        assert_eq!(p.take("a:443", now, &mut closed), Some("a2"));
        assert_eq!(p.take("a:443", now, &mut closed), Some("a1"));
        assert_eq!(p.take("a:443", now, &mut closed), None);
        assert_eq!(p.take("c:443", now, &mut closed), None);
        assert_eq!(p.len(), 1);
        assert!(closed.is_empty());
        check(&p);
    }

    #[test]
    fn a_host_keeps_at_most_its_limit() {
        let mut p = pool(2, 10);
        let now = Instant::now();
        let mut closed = Vec::new();
        for c in ["a1", "a2", "a3"] {
            p.put("a:443", c, now, &mut closed);
        }
        assert_eq!(closed, ["a1"]);
        assert_eq!(p.len(), 2);
        check(&p);
    }

    #[test]
    fn the_least_recently_used_goes_first_over_all_hosts() {
        let mut p = pool(4, 3);
        let now = Instant::now();
        let mut closed = Vec::new();
        p.put("a:443", "a1", now, &mut closed);
        p.put("b:443", "b1", now, &mut closed);
        p.put("a:443", "a2", now, &mut closed);
        p.put("c:443", "c1", now, &mut closed);
        assert_eq!(closed, ["a1"]);
        // Taken and returned: b1 is now the most recently used.
        let b1 = p.take("b:443", now, &mut closed).expect("b1 kept");
        p.put("b:443", b1, now, &mut closed);
        p.put("d:443", "d1", now, &mut closed);
        assert_eq!(closed, ["a1", "a2"]);
        assert_eq!(p.len(), 3);
        check(&p);
        assert_eq!(p.take("a:443", now, &mut closed), None);
        assert_eq!(p.take("b:443", now, &mut closed), Some("b1"));
        check(&p);
    }

    #[test]
    fn thousands_of_hosts_stay_within_the_total() {
        let mut p = pool(8, 100);
        let now = Instant::now();
        let mut closed = Vec::new();
        for i in 0..10_000u32 {
            p.put(
                &format!("10.0.{}.{}:443", i / 256, i % 256),
                i,
                now,
                &mut closed,
            );
            assert!(p.len() <= 100);
        }
        check(&p);
        assert_eq!(closed.len(), 9_900);
        assert_eq!(
            p.hosts.len(),
            100,
            "hosts without idle connections are forgotten"
        );
        // The survivors are the last 100 hosts.
        assert_eq!(p.take("10.0.39.15:443", now, &mut closed), Some(9_999));
        assert_eq!(p.take("10.0.0.0:443", now, &mut closed), None);
    }

    #[test]
    fn expired_connections_are_closed_not_reused() {
        let mut p = pool(4, 10);
        let t0 = Instant::now();
        let mut closed = Vec::new();
        p.put("a:443", "a1", t0, &mut closed);
        p.put("b:443", "b1", t0 + 60 * SEC, &mut closed);
        let later = t0 + 91 * SEC;
        assert_eq!(p.take("a:443", later, &mut closed), None);
        assert_eq!(closed, ["a1"]);
        assert_eq!(p.take("b:443", later, &mut closed), Some("b1"));
        assert!(p.is_empty());
        check(&p);
    }

    #[test]
    fn a_limit_of_zero_keeps_nothing() {
        let mut p = pool(4, 0);
        let mut closed = Vec::new();
        p.put("a:443", "a1", Instant::now(), &mut closed);
        assert_eq!(closed, ["a1"]);
        assert!(p.is_empty());
        check(&p);
    }
}
