//! Who may send what, now: the worker's delivery slots shared fairly between endpoints,
//! each endpoint's adaptive concurrency limit, its circuit breaker, the pause a
//! `Retry-After` asks for, and each rate-limited webhook's token bucket.
//!
//! An *endpoint* is the scheme, host and port of a webhook URL ([`endpoint_key`]), so
//! every webhook on one server shares its limit and its circuit.
//!
//! A delivery asks [`Endpoints::admit`] before it is sent and gets one of:
//! - [`Admission::Go`]: send now. The [`Permit`] holds one of the worker's slots
//!   (`WF_WORKER_CONCURRENCY` in all) and one of the endpoint's; report how the attempt
//!   went with [`Permit::report`].
//! - [`Admission::Wait`]: the endpoint (or the worker) is busy, but only for about as long
//!   as the caller said it may wait. The delivery waits in the endpoint's line, in order,
//!   without holding a worker slot; [`Waiting::wait`] resolves with a permit, or with a
//!   [`HoldBack`] if the wait turned out much longer than expected.
//! - [`Admission::Hold`]: not now, and not soon: the circuit is open, the endpoint asked us
//!   to wait (`Retry-After`), the webhook's rate limit is spent, or the line is longer
//!   than the caller may wait. Nothing was sent and no attempt is spent; the caller parks
//!   the delivery in the broker for about [`HoldBack::wait`].
//! - [`Admission::Closed`]: the worker is shutting down ([`Endpoints::close`]); nothing
//!   new starts, and the caller hands the delivery back to the broker.
//!
//! Fairness: when a worker slot frees up, endpoints that wait only for a worker slot are
//! served in turn, before the endpoint that just finished sends its next delivery; and
//! the last quarter of the worker's slots is kept for endpoints with fewer than
//! [`Config::light`] deliveries in flight. A flood of slow deliveries to a few endpoints
//! therefore cannot keep a quiet endpoint waiting behind it.
//!
//! All state is in memory and per process. What must hold across the fleet (a webhook's
//! `rateLimit`) is split between workers by the caller.

mod circuit;
mod limit;
mod rate;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use wf_core::lifecycle::HoldReason;
use wf_core::url_policy::WebhookUrl;
use wf_telemetry::metrics;

pub use circuit::MAX_OPEN_FOR;
use circuit::{Circuit, State, Transition, Verdict};
use limit::Limit;
use rate::Bucket;

/// The longest a `Retry-After` pauses an endpoint: a receiver asking for days must not
/// park its deliveries beyond what the retry schedule would.
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// Tuning of [`Endpoints`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Deliveries in flight in this worker at most (`WF_WORKER_CONCURRENCY`).
    pub worker_slots: usize,
    /// The upper bound of every endpoint's adaptive limit
    /// (`WF_ENDPOINT_MAX_CONCURRENCY`).
    pub max_limit: usize,
    /// A new endpoint's limit, grown from there while it keeps up.
    pub initial_limit: usize,
    /// Consecutive endpoint failures that open its circuit.
    pub failure_threshold: u32,
    /// How long an opened circuit holds deliveries back before one probes (doubled after
    /// each failed probe, up to [`MAX_OPEN_FOR`]).
    pub open_for: Duration,
    /// Memory bound on the endpoint table. When it is full, entries that carry no
    /// information (closed, nothing in flight or waiting, nothing learned worth keeping
    /// beyond the limit) are evicted; the rest are kept, so the table can exceed the bound
    /// only by those (plus a sweep slack of 1/16 of the bound).
    pub max_endpoints: usize,
    /// Worker slots kept for endpoints with fewer than [`Config::light`] deliveries in
    /// flight.
    pub reserve: usize,
    /// See [`Config::reserve`].
    pub light: usize,
}

impl Config {
    /// The defaults for a worker of `worker_slots` slots and endpoints of at most
    /// `max_limit`: a quarter of the slots in reserve for endpoints with fewer than 4 in
    /// flight, circuits opening after 5 consecutive failures for 30 s, 100,000 endpoints.
    pub fn new(worker_slots: usize, max_limit: usize) -> Config {
        let worker_slots = worker_slots.max(1);
        let max_limit = max_limit.max(1);
        Config {
            worker_slots,
            max_limit,
            initial_limit: max_limit.min(8),
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
            max_endpoints: 100_000,
            reserve: worker_slots / 4,
            light: 4,
        }
    }
}

/// Why a delivery is not sent now, and for about how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldBack {
    /// Why.
    pub reason: HoldReason,
    /// How long until the endpoint is expected to take it.
    pub wait: Duration,
    /// Whether the endpoint is unavailable (its circuit is open, or it asked us to wait
    /// with `Retry-After`) rather than busy or rate limited by its webhook's own
    /// `rateLimit`. Only unavailability counts towards giving a delivery up.
    pub unavailable: bool,
}

impl HoldBack {
    /// The endpoint is at its limit and its line is long.
    pub fn busy(wait: Duration) -> HoldBack {
        HoldBack {
            reason: HoldReason::Busy,
            wait,
            unavailable: false,
        }
    }

    /// The webhook's rate limit is spent for now.
    pub fn rate_limited(wait: Duration) -> HoldBack {
        HoldBack {
            reason: HoldReason::RateLimited,
            wait,
            unavailable: false,
        }
    }

    /// The endpoint asked us to wait (`Retry-After`).
    pub fn paused(wait: Duration) -> HoldBack {
        HoldBack {
            reason: HoldReason::RateLimited,
            wait,
            unavailable: true,
        }
    }

    /// The endpoint's circuit is open.
    pub fn circuit_open(wait: Duration) -> HoldBack {
        HoldBack {
            reason: HoldReason::CircuitOpen,
            wait,
            unavailable: true,
        }
    }
}

/// One delivery asking to be sent.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// The endpoint ([`endpoint_key`]).
    pub endpoint: &'a str,
    /// The webhook and this worker's share of its rate limit (deliveries per second),
    /// when it has one.
    pub rate: Option<(&'a str, f64)>,
    /// How long the caller may keep the delivery waiting in memory.
    pub may_wait: Duration,
}

/// The answer to [`Endpoints::admit`]; see the module docs.
#[derive(Debug)]
pub enum Admission {
    /// Send now.
    Go(Permit),
    /// Wait in line.
    Wait(Waiting),
    /// Park it elsewhere.
    Hold(HoldBack),
    /// The worker is shutting down: hand it back.
    Closed,
}

/// Why a waiting delivery was not granted a permit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Park it elsewhere (see [`Admission::Hold`]).
    Hold(HoldBack),
    /// The worker is shutting down (see [`Admission::Closed`]).
    Closed,
}

/// How an attempt went, for the endpoint's limit and circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// The endpoint answered (any status but the ones below), in `latency`.
    Answered {
        /// Time to the full response.
        latency: Duration,
    },
    /// The endpoint is overloaded: a timeout, `408`, `429` or `503`. Lowers the limit;
    /// counts against the circuit only once the limit is at its floor. `Retry-After`
    /// pauses the endpoint.
    Overloaded {
        /// The endpoint's `Retry-After`, as a delay from now.
        retry_after: Option<Duration>,
    },
    /// The endpoint failed: a connection or TLS error, or another `5xx`.
    Failed,
}

impl Report {
    /// The report for an attempt that got `status` (or none: a transport failure, where
    /// `timed_out` tells a timeout from a refused or broken connection).
    pub fn classify(
        status: Option<u16>,
        timed_out: bool,
        latency: Duration,
        retry_after: Option<Duration>,
    ) -> Report {
        match status {
            Some(408 | 429 | 503) => Report::Overloaded { retry_after },
            Some(500..=599) => Report::Failed,
            Some(_) => Report::Answered { latency },
            None if timed_out => Report::Overloaded { retry_after: None },
            None => Report::Failed,
        }
    }
}

/// The endpoint key of a webhook URL: `scheme://host:port`, the port always explicit
/// (`https://example.com:443`), the host as normalised by the URL parser (lower-case,
/// IPv6 in brackets). Paths and queries are left out so that every webhook on one server
/// shares one limit and one breaker.
pub fn endpoint_key(url: &WebhookUrl) -> String {
    let u = url.url();
    match u.port_or_known_default() {
        Some(port) => format!("{}://{}:{port}", u.scheme(), url.host_str()),
        None => format!("{}://{}", u.scheme(), url.host_str()),
    }
}

/// See the module docs. Cheap to clone (one `Arc`); share one per worker.
#[derive(Clone)]
pub struct Endpoints {
    inner: Arc<Inner>,
}

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("Endpoints")
            .field("cfg", &self.inner.cfg)
            .field("tracked", &st.map.len())
            .field("used", &st.used)
            .field("waiting", &st.waiting)
            .finish()
    }
}

struct Inner {
    cfg: Config,
    /// A `std` mutex: every critical section is a few map and queue operations and never
    /// spans an `.await`.
    state: Mutex<Table>,
}

struct Table {
    /// Worker slots in use.
    used: usize,
    map: HashMap<Arc<str>, Entry>,
    /// Endpoints whose next delivery waits only for a worker slot, served in turn.
    global_queue: VecDeque<Arc<str>>,
    /// The table size at which the next eviction sweep may run.
    next_sweep_at: usize,
    next_waiter_id: u64,
    /// Deliveries waiting in lines (`wf_deliveries_waiting`).
    waiting: usize,
    /// Set by [`Endpoints::close`]: nothing new is admitted.
    closed: bool,
}

struct Entry {
    key: Arc<str>,
    circuit: Circuit,
    limit: Limit,
    in_flight: usize,
    paused_until: Option<Instant>,
    /// `lines[0]` is the endpoint's shared line; webhooks with a rate limit have their own.
    lines: Vec<Line>,
    /// Round-robin cursor over `lines`.
    next_line: usize,
    in_global_queue: bool,
    /// When a wake-up task is due for this entry (tokens or a pause running out).
    timer_at: Option<Instant>,
}

struct Line {
    webhook: Option<Arc<str>>,
    bucket: Option<Bucket>,
    waiters: VecDeque<Waiter>,
}

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Result<Permit, Refused>>,
    since: Instant,
}

impl Entry {
    fn new(key: Arc<str>, cfg: &Config) -> Entry {
        Entry {
            key,
            circuit: Circuit::new(cfg.open_for),
            limit: Limit::new(cfg.initial_limit, cfg.max_limit),
            in_flight: 0,
            paused_until: None,
            lines: vec![Line {
                webhook: None,
                bucket: None,
                waiters: VecDeque::new(),
            }],
            next_line: 0,
            in_global_queue: false,
            timer_at: None,
        }
    }

    fn waiters(&self) -> usize {
        self.lines.iter().map(|l| l.waiters.len()).sum()
    }

    /// Carries nothing worth keeping: recreating it gives the same behaviour (but for the
    /// limit it learned, which it learns again).
    fn evictable(&mut self, now: Instant) -> bool {
        self.circuit.is_pristine()
            && self.in_flight == 0
            && self.paused_until.is_none_or(|p| p <= now)
            && !self.in_global_queue
            && self.timer_at.is_none()
            && self
                .lines
                .iter_mut()
                .all(|l| l.waiters.is_empty() && l.bucket.as_mut().is_none_or(|b| b.is_full(now)))
    }

    /// The line of `rate`'s webhook (created, or its rate updated), or the shared line.
    fn line_index(&mut self, rate: Option<(&str, f64)>, now: Instant) -> usize {
        let Some((webhook, per_second)) = rate else {
            return 0;
        };
        if let Some(i) = self
            .lines
            .iter()
            .position(|l| l.webhook.as_deref() == Some(webhook))
        {
            if let Some(b) = self.lines[i].bucket.as_mut() {
                if b.rate() != per_second {
                    b.set_rate(per_second, now);
                }
            }
            return i;
        }
        self.lines.push(Line {
            webhook: Some(Arc::from(webhook)),
            bucket: Some(Bucket::new(per_second, now)),
            waiters: VecDeque::new(),
        });
        self.lines.len() - 1
    }

    /// Time for `position` more deliveries to get one of the endpoint's slots, at its
    /// current latency and limit.
    fn concurrency_wait(&self, position: usize) -> Duration {
        let per_slot = self.limit.latency() / u32::try_from(self.limit.current()).unwrap_or(1);
        per_slot.saturating_mul(u32::try_from(position).unwrap_or(u32::MAX))
    }

    /// Forgets rate-limited lines that are empty with a full bucket.
    fn tidy_lines(&mut self, now: Instant) {
        let mut i = 1;
        while i < self.lines.len() {
            let l = &mut self.lines[i];
            if l.waiters.is_empty() && l.bucket.as_mut().is_none_or(|b| b.is_full(now)) {
                self.lines.swap_remove(i);
            } else {
                i += 1;
            }
        }
        if self.next_line >= self.lines.len() {
            self.next_line = 0;
        }
    }
}

/// Whether a delivery to an endpoint with `in_flight` deliveries may take a worker slot.
fn worker_slot_free(cfg: &Config, used: usize, in_flight: usize) -> bool {
    used < cfg.worker_slots && (used + cfg.reserve < cfg.worker_slots || in_flight < cfg.light)
}

/// A permit to hand to a waiter once the lock is released.
type Grant = (
    oneshot::Sender<Result<Permit, Refused>>,
    Result<Permit, Refused>,
);

/// Why an entry could not grant its next waiter.
enum Blocked {
    /// Nothing to grant, or the endpoint itself is not ready.
    Endpoint,
    /// Ready but for a worker slot.
    WorkerSlot,
}

impl Inner {
    /// The table, even if a thread panicked while holding the lock: every critical
    /// section leaves the table consistent between statements, and refusing all
    /// deliveries would be worse than using it.
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn permit(
        self: &Arc<Self>,
        table: &mut Table,
        entry_key: &Arc<str>,
        probe: bool,
        now: Instant,
    ) -> Permit {
        let entry = table.map.get_mut(entry_key).expect("entry exists");
        entry.in_flight += 1;
        table.used += 1;
        Permit {
            inner: self.clone(),
            key: entry.key.clone(),
            epoch: entry.circuit.epoch(),
            probe,
            in_flight: entry.in_flight,
            granted_at: now,
            settled: false,
        }
    }

    /// Grants `key`'s next waiter if it can. Waiters whose caller went away are skipped.
    fn grant_one(
        self: &Arc<Self>,
        table: &mut Table,
        key: &Arc<str>,
        now: Instant,
        grants: &mut Vec<Grant>,
    ) -> Result<(), Blocked> {
        let used = table.used;
        let cfg = &self.cfg;
        let Some(entry) = table.map.get_mut(key) else {
            return Err(Blocked::Endpoint);
        };
        if entry.circuit.state() != State::Closed {
            return Err(Blocked::Endpoint);
        }
        if let Some(p) = entry.paused_until {
            if p > now {
                self.wake_at(entry, p);
                return Err(Blocked::Endpoint);
            }
            entry.paused_until = None;
        }
        if entry.in_flight >= entry.limit.current() {
            return Err(Blocked::Endpoint);
        }
        // The first line, round robin, whose head is ready (a token, if it needs one).
        let n = entry.lines.len();
        let mut chosen = None;
        let mut next_token: Option<Instant> = None;
        for step in 0..n {
            let i = (entry.next_line + step) % n;
            let line = &mut entry.lines[i];
            while line.waiters.front().is_some_and(|w| w.tx.is_closed()) {
                line.waiters.pop_front();
                table.waiting -= 1;
            }
            if line.waiters.is_empty() {
                continue;
            }
            match line.bucket.as_mut() {
                Some(b) => {
                    let wait = b.wait_for(1, now);
                    if wait.is_zero() {
                        chosen = Some(i);
                        break;
                    }
                    let at = now + wait;
                    next_token = Some(next_token.map_or(at, |t| t.min(at)));
                }
                None => {
                    chosen = Some(i);
                    break;
                }
            }
        }
        let Some(i) = chosen else {
            if let Some(at) = next_token {
                self.wake_at(entry, at);
            }
            return Err(Blocked::Endpoint);
        };
        if !worker_slot_free(cfg, used, entry.in_flight) {
            return Err(Blocked::WorkerSlot);
        }
        let line = &mut entry.lines[i];
        if let Some(b) = line.bucket.as_mut() {
            b.try_take(now);
        }
        let waiter = line.waiters.pop_front().expect("chosen line has a head");
        entry.next_line = (i + 1) % n;
        table.waiting -= 1;
        metrics()
            .delivery_wait_seconds
            .observe(now.duration_since(waiter.since).as_secs_f64());
        let key = key.clone();
        let permit = self.permit(table, &key, false, now);
        grants.push((waiter.tx, Ok(permit)));
        Ok(())
    }

    /// Hands freed capacity out: first, in turn, to endpoints waiting only for a worker
    /// slot; then to `touched` (whose own capacity changed) while it has waiters.
    fn pump(
        self: &Arc<Self>,
        table: &mut Table,
        touched: Option<&Arc<str>>,
        now: Instant,
        grants: &mut Vec<Grant>,
    ) {
        let mut rounds = table.global_queue.len();
        while rounds > 0 && table.used < self.cfg.worker_slots {
            rounds -= 1;
            let Some(key) = table.global_queue.pop_front() else {
                break;
            };
            if let Some(e) = table.map.get_mut(&key) {
                e.in_global_queue = false;
            }
            match self.grant_one(table, &key, now, grants) {
                Ok(()) | Err(Blocked::WorkerSlot) => self.enqueue_global(table, &key),
                Err(Blocked::Endpoint) => {}
            }
        }
        if let Some(key) = touched {
            loop {
                match self.grant_one(table, key, now, grants) {
                    Ok(()) => {}
                    Err(Blocked::WorkerSlot) => {
                        self.enqueue_global(table, key);
                        break;
                    }
                    Err(Blocked::Endpoint) => break,
                }
            }
        }
        metrics()
            .deliveries_waiting
            .set(i64::try_from(table.waiting).unwrap_or(i64::MAX));
    }

    fn enqueue_global(&self, table: &mut Table, key: &Arc<str>) {
        if let Some(e) = table.map.get_mut(key) {
            if !e.in_global_queue && e.waiters() > 0 {
                e.in_global_queue = true;
                table.global_queue.push_back(key.clone());
            }
        }
    }

    /// Makes sure `entry` is pumped again at `at` (a token accrues, a pause ends).
    fn wake_at(self: &Arc<Self>, entry: &mut Entry, at: Instant) {
        if entry.timer_at.is_some_and(|t| t <= at) {
            return;
        }
        entry.timer_at = Some(at);
        let inner = self.clone();
        let key = entry.key.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let now = Instant::now();
            let mut grants = Vec::new();
            {
                let mut table = inner.lock();
                if let Some(e) = table.map.get_mut(&key) {
                    if e.timer_at == Some(at) {
                        e.timer_at = None;
                    }
                }
                inner.pump(&mut table, Some(&key), now, &mut grants);
            }
            send(grants);
        });
    }

    /// Tells every waiter of `key` to go elsewhere (its circuit opened, or it was paused
    /// for longer than anyone waits).
    fn release_waiters(table: &mut Table, key: &Arc<str>, why: Refused, grants: &mut Vec<Grant>) {
        let Some(entry) = table.map.get_mut(key) else {
            return;
        };
        for line in &mut entry.lines {
            for w in line.waiters.drain(..) {
                table.waiting -= 1;
                grants.push((w.tx, Err(why)));
            }
        }
    }

    /// An attempt finished (or its permit was dropped).
    fn settle(self: &Arc<Self>, p: &Permit, report: Option<Report>) {
        let now = Instant::now();
        let mut grants = Vec::new();
        {
            let mut table = self.lock();
            table.used = table.used.saturating_sub(1);
            let threshold = self.cfg.failure_threshold;
            let base = self.cfg.open_for;
            let Some(entry) = table.map.get_mut(&p.key) else {
                // Cannot happen (entries with deliveries in flight are never evicted).
                return;
            };
            entry.in_flight = entry.in_flight.saturating_sub(1);
            let before = entry.limit.current();
            let verdict = match report {
                None => Verdict::Nothing,
                Some(Report::Answered { latency }) => {
                    entry.limit.on_answer(latency, p.in_flight, now);
                    Verdict::Up
                }
                Some(Report::Failed) => Verdict::Down,
                Some(Report::Overloaded { retry_after }) => {
                    let at_floor = entry.limit.at_floor();
                    entry.limit.on_overload(now);
                    if let Some(ra) = retry_after {
                        let until = now + ra.min(MAX_PAUSE);
                        if entry.paused_until.is_none_or(|u| u < until) {
                            entry.paused_until = Some(until);
                        }
                    }
                    if at_floor || p.probe {
                        Verdict::Down
                    } else {
                        Verdict::Nothing
                    }
                }
            };
            let after = entry.limit.current();
            if before != after {
                metrics().endpoint_limit_changed(Some(before), Some(after));
            }
            let transition = entry
                .circuit
                .report(p.epoch, p.probe, verdict, threshold, base, now);
            let open_for = entry.circuit.open_for();
            let pause = entry.paused_until.map(|u| u.saturating_duration_since(now));
            match transition {
                Some(Transition::Opened) => {
                    metrics().circuit_open_endpoints.inc();
                    tracing::warn!(
                        endpoint = &*p.key,
                        open_for_s = open_for.as_secs(),
                        "circuit opened: deliveries to this endpoint are held back"
                    );
                    let hold = HoldBack::circuit_open(open_for);
                    Self::release_waiters(&mut table, &p.key, Refused::Hold(hold), &mut grants);
                }
                Some(Transition::Reopened) => {
                    tracing::warn!(
                        endpoint = &*p.key,
                        open_for_s = open_for.as_secs(),
                        "circuit re-opened: probe failed"
                    );
                }
                Some(Transition::Closed) => {
                    metrics().circuit_open_endpoints.dec();
                    tracing::info!(endpoint = &*p.key, "circuit closed: probe succeeded");
                }
                None => {}
            }
            if let Some(pause) = pause.filter(|d| *d > Duration::from_secs(1)) {
                let hold = HoldBack::paused(pause);
                Self::release_waiters(&mut table, &p.key, Refused::Hold(hold), &mut grants);
            }
            let key = p.key.clone();
            self.pump(&mut table, Some(&key), now, &mut grants);
        }
        send(grants);
    }

    /// Takes waiter `id` out of its line; false when it is no longer there (it was
    /// granted or released, and its answer is on the way).
    fn remove_waiter(&self, key: &Arc<str>, id: u64) -> bool {
        let mut table = self.lock();
        let Some(entry) = table.map.get_mut(key) else {
            return false;
        };
        for line in &mut entry.lines {
            if let Some(pos) = line.waiters.iter().position(|w| w.id == id) {
                line.waiters.remove(pos);
                table.waiting -= 1;
                metrics()
                    .deliveries_waiting
                    .set(i64::try_from(table.waiting).unwrap_or(i64::MAX));
                return true;
            }
        }
        false
    }

    /// The entry of `endpoint`, created (after making room) if needed.
    fn entry<'t>(&self, table: &'t mut Table, endpoint: &str, now: Instant) -> &'t mut Entry {
        if !table.map.contains_key(endpoint) {
            let max = self.cfg.max_endpoints;
            if table.map.len() >= max && table.map.len() >= table.next_sweep_at {
                // Sweeps scan the whole table, so when little is evictable the next
                // one waits for `slack` more insertions: amortised O(1) per insert.
                let before = table.map.len();
                let mut evicted_limits = Vec::new();
                table.map.retain(|_, e| {
                    let evict = e.evictable(now);
                    if evict {
                        evicted_limits.push(e.limit.current());
                    }
                    !evict
                });
                for l in evicted_limits {
                    metrics().endpoint_limit_changed(Some(l), None);
                }
                tracing::debug!(
                    evicted = before - table.map.len(),
                    "endpoint table full; forgot idle endpoints"
                );
                table.next_sweep_at = table.map.len() + (max / 16).max(1);
            }
            let key: Arc<str> = Arc::from(endpoint);
            let entry = Entry::new(key.clone(), &self.cfg);
            metrics().endpoint_limit_changed(None, Some(entry.limit.current()));
            table.map.insert(key, entry);
        }
        table.map.get_mut(endpoint).expect("just inserted")
    }
}

/// Hands out what a critical section decided, outside the lock: a permit whose waiter has
/// gone is dropped here, which settles it (and may grant the next waiter).
fn send(grants: Vec<Grant>) {
    for (tx, result) in grants {
        let _ = tx.send(result);
    }
}

impl Drop for Inner {
    /// The gauges are process-wide; without this, dropping an `Endpoints` (a worker
    /// restarted in-process, tests) would leave its endpoints counted forever.
    fn drop(&mut self) {
        let table = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let open = table.map.values().filter(|e| e.circuit.is_open()).count();
        metrics()
            .circuit_open_endpoints
            .sub(i64::try_from(open).unwrap_or(i64::MAX));
        for e in table.map.values() {
            metrics().endpoint_limit_changed(Some(e.limit.current()), None);
        }
        metrics()
            .deliveries_waiting
            .sub(i64::try_from(table.waiting).unwrap_or(i64::MAX));
    }
}

impl Endpoints {
    /// An empty table: every endpoint starts closed, at the initial limit.
    pub fn new(cfg: Config) -> Self {
        Endpoints {
            inner: Arc::new(Inner {
                cfg,
                state: Mutex::new(Table {
                    used: 0,
                    map: HashMap::new(),
                    global_queue: VecDeque::new(),
                    next_sweep_at: 0,
                    next_waiter_id: 0,
                    waiting: 0,
                    closed: false,
                }),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// Asks to send one delivery; see the module docs. Must run inside a tokio runtime
    /// (a waiting line may start a timer).
    pub fn admit(&self, ask: Ask<'_>) -> Admission {
        let inner = &self.inner;
        let cfg = &inner.cfg;
        let now = Instant::now();
        let mut table = inner.lock();
        if table.closed {
            return Admission::Closed;
        }
        let used = table.used;
        let entry = inner.entry(&mut table, ask.endpoint, now);
        let key = entry.key.clone();
        match entry.circuit.state() {
            State::Closed => {}
            State::Open { until } if now < until => {
                return Admission::Hold(HoldBack::circuit_open(until - now));
            }
            State::Open { .. } => {
                if worker_slot_free(cfg, used, 0) && entry.circuit.try_probe(now) {
                    return Admission::Go(inner.permit(&mut table, &key, true, now));
                }
                return Admission::Hold(HoldBack::circuit_open(entry.limit.latency()));
            }
            State::HalfOpen => {
                return Admission::Hold(HoldBack::circuit_open(entry.limit.latency()));
            }
        }
        if let Some(p) = entry.paused_until {
            if p > now {
                return Admission::Hold(HoldBack::paused(p - now));
            }
            entry.paused_until = None;
        }
        let endpoint_waiters = entry.waiters();
        let in_flight = entry.in_flight;
        let endpoint_free = endpoint_waiters == 0 && in_flight < entry.limit.current();
        let li = entry.line_index(ask.rate, now);
        let line = &mut entry.lines[li];
        if endpoint_free
            && line.waiters.is_empty()
            && worker_slot_free(cfg, used, in_flight)
            && line.bucket.as_mut().is_none_or(|b| b.try_take(now))
        {
            return Admission::Go(inner.permit(&mut table, &key, false, now));
        }
        let position = line.waiters.len() + 1;
        let token_wait = line
            .bucket
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait_for(position, now));
        let concurrency_wait = if endpoint_free {
            Duration::ZERO
        } else {
            entry.concurrency_wait(endpoint_waiters + 1)
        };
        let expected = token_wait.max(concurrency_wait);
        if expected > ask.may_wait {
            entry.tidy_lines(now);
            return Admission::Hold(if token_wait >= concurrency_wait {
                HoldBack::rate_limited(expected)
            } else {
                HoldBack::busy(expected)
            });
        }
        let (tx, rx) = oneshot::channel();
        table.next_waiter_id += 1;
        let id = table.next_waiter_id;
        let entry = table.map.get_mut(&key).expect("entry exists");
        entry.lines[li]
            .waiters
            .push_back(Waiter { id, tx, since: now });
        table.waiting += 1;
        // Whatever blocks it now, make sure something will wake the line: a token timer,
        // the worker-slot queue, or (for the endpoint's own limit) its next settle.
        let mut grants = Vec::new();
        inner.pump(&mut table, Some(&key), now, &mut grants);
        drop(table);
        send(grants);
        Admission::Wait(Waiting {
            inner: inner.clone(),
            key,
            id,
            rx: Some(rx),
            deadline: now + (ask.may_wait * 2).max(Duration::from_secs(1)),
            may_wait: ask.may_wait,
        })
    }

    /// Stops admitting: every delivery waiting in a line is told
    /// [`Refused::Closed`], and every later [`Endpoints::admit`] answers
    /// [`Admission::Closed`]. Deliveries in flight finish as usual. For shutdown: what has
    /// not started by now is handed back to the broker rather than started late.
    pub fn close(&self) {
        let mut grants = Vec::new();
        {
            let mut table = self.inner.lock();
            table.closed = true;
            let keys: Vec<Arc<str>> = table.map.keys().cloned().collect();
            for key in keys {
                Inner::release_waiters(&mut table, &key, Refused::Closed, &mut grants);
            }
            table.global_queue.clear();
            for e in table.map.values_mut() {
                e.in_global_queue = false;
            }
            metrics()
                .deliveries_waiting
                .set(i64::try_from(table.waiting).unwrap_or(i64::MAX));
        }
        send(grants);
    }

    /// Endpoints tracked now.
    pub fn tracked(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// Deliveries in flight now (worker slots in use).
    pub fn in_flight(&self) -> usize {
        self.inner.lock().used
    }

    /// Deliveries waiting in lines now.
    pub fn waiting(&self) -> usize {
        self.inner.lock().waiting
    }

    /// The current concurrency limit of `endpoint`, if it is tracked.
    pub fn limit_of(&self, endpoint: &str) -> Option<usize> {
        self.inner
            .lock()
            .map
            .get(endpoint)
            .map(|e| e.limit.current())
    }
}

/// A delivery waiting in an endpoint's line (see [`Admission::Wait`]). Dropping it takes
/// it out of the line.
pub struct Waiting {
    inner: Arc<Inner>,
    key: Arc<str>,
    id: u64,
    /// `None` once the answer was taken.
    rx: Option<oneshot::Receiver<Result<Permit, Refused>>>,
    deadline: Instant,
    may_wait: Duration,
}

impl fmt::Debug for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiting")
            .field("endpoint", &&*self.key)
            .field("id", &self.id)
            .finish()
    }
}

impl Waiting {
    /// Waits for the permit. Gives up (with a [`HoldBack`]) when the endpoint's circuit
    /// opens, a `Retry-After` pauses it, or the wait runs past twice what the caller said
    /// it may wait (at least a second): the endpoint became slower than it looked.
    ///
    /// Cancel-safe: dropping the future leaves the delivery in line; call again to go on
    /// waiting. Once it has returned, the answer is spent (a second call gives up).
    pub async fn wait(&mut self) -> Result<Permit, Refused> {
        let gave_up = Refused::Hold(HoldBack::busy(self.may_wait));
        let Waiting {
            inner,
            key,
            id,
            rx,
            deadline,
            ..
        } = self;
        let Some(receiver) = rx.as_mut() else {
            return Err(gave_up);
        };
        let answer = tokio::select! {
            r = &mut *receiver => r.unwrap_or(Err(gave_up)),
            _ = tokio::time::sleep_until(*deadline) => {
                if inner.remove_waiter(key, *id) {
                    Err(gave_up)
                } else {
                    // Granted or released just now: the answer is on its way.
                    (&mut *receiver).await.unwrap_or(Err(gave_up))
                }
            }
        };
        *rx = None;
        answer
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.rx.is_some() {
            self.inner.remove_waiter(&self.key, self.id);
        }
    }
}

/// Leave to send one delivery: one worker slot and one of the endpoint's. Report how the
/// attempt went with [`Permit::report`]; dropping it unreported (cancelled, shutting
/// down) frees the slots and teaches nothing — if it was the half-open probe, the next
/// delivery probes instead.
pub struct Permit {
    inner: Arc<Inner>,
    key: Arc<str>,
    epoch: u64,
    probe: bool,
    /// Deliveries in flight to the endpoint when this one was admitted (itself included).
    in_flight: usize,
    granted_at: Instant,
    settled: bool,
}

impl Permit {
    /// Reports the attempt's result; frees the slots.
    pub fn report(mut self, report: Report) {
        self.settled = true;
        self.inner.clone().settle(&self, Some(report));
    }

    /// Whether this permit is the half-open probe (for logs).
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// When it was granted.
    pub fn granted_at(&self) -> Instant {
        self.granted_at
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled {
            self.settled = true;
            self.inner.clone().settle(self, None);
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("endpoint", &&*self.key)
            .field("probe", &self.probe)
            .finish()
    }
}

#[cfg(test)]
mod tests;
