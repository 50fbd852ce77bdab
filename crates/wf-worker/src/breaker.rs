//! Per-endpoint isolation (README, "Scaling"): an endpoint that keeps failing must not
//! slow delivery to healthy ones.
//!
//! Two mechanisms, both keyed by *endpoint* — scheme, host and port of the webhook URL
//! (see [`endpoint_key`]), so every webhook pointing at one server shares them:
//!
//! * **A concurrency bound.** At most [`BreakerConfig::per_endpoint_concurrency`]
//!   deliveries to one endpoint are in flight. Without it, a slow endpoint would soak up
//!   every worker slot (each attempt holds one for up to `WF_DELIVERY_TIMEOUT`) and
//!   healthy endpoints would queue behind it. A caller waits for a slot at most
//!   `max_wait`, then gets [`Rejected::Busy`] and treats the job as a retryable failure
//!   without sending it.
//! * **A circuit breaker.** After [`BreakerConfig::failure_threshold`] consecutive
//!   failures the circuit *opens*: for [`BreakerConfig::open_for`] every delivery gets
//!   [`Rejected::Open`] at once and goes straight to the retry schedule, costing no
//!   connection, no timeout and no worker slot. When the period is over the next caller
//!   becomes the single *half-open probe*; its success closes the circuit, its failure
//!   opens it again.
//!
//! ```text
//! Closed --(failure_threshold consecutive failures)--> Open
//! Open ----(open_for over; next acquire is the probe)--> HalfOpen
//! HalfOpen --(probe success)--> Closed
//! HalfOpen --(probe failure: period doubled, up to 5 min)--> Open
//! HalfOpen --(probe dropped unreported)--> Open, probe-able at once
//! ```
//!
//! The gauge `wf_circuit_open_endpoints` always equals the number of endpoints
//! that are open or half-open in this process: it moves only on the Closed→Open and
//! HalfOpen→Closed transitions, open entries are never evicted, and dropping the last
//! [`Endpoints`] handle subtracts whatever it still held open.
//!
//! All state is in memory and per process: a restarted worker starts with every circuit
//! closed, which only costs a few failed attempts per dead endpoint.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use wf_core::url_policy::WebhookUrl;
use wf_telemetry::metrics;

/// The longest an open period grows to through repeated probe failures (unless
/// [`BreakerConfig::open_for`] itself is longer). An endpoint that is down for hours is
/// then probed every 5 minutes rather than every 30 s, yet noticed soon after it recovers;
/// its deliveries keep following the retry schedule either way.
pub const MAX_OPEN_FOR: Duration = Duration::from_secs(5 * 60);

/// Tuning of [`Endpoints`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Deliveries in flight to one endpoint at most (default 64, what the worker runs
    /// with). `0` is taken as `1`.
    pub per_endpoint_concurrency: usize,
    /// Consecutive failures that open the circuit (default 5). `0` is taken as `1`.
    pub failure_threshold: u32,
    /// How long an opened circuit rejects before admitting a probe (default 30 s).
    /// Doubled after each failed probe, up to [`MAX_OPEN_FOR`]; reset when it closes.
    pub open_for: Duration,
    /// Memory bound on the endpoint table (default 100 000). When it is full, entries
    /// that carry no information — closed, no failures, nothing in flight or waiting —
    /// are evicted (they are recreated for free). Open, failing or busy entries are
    /// kept, so the table can exceed the bound only by those (plus a sweep slack of
    /// 1/16 of the bound that keeps eviction amortised O(1)).
    pub max_endpoints: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            per_endpoint_concurrency: 64,
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
            max_endpoints: 100_000,
        }
    }
}

/// Why [`Endpoints::acquire`] did not admit a delivery. Either way nothing was sent and
/// the caller schedules the job's next retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The endpoint's circuit is open (or half-open with its probe in flight).
    #[error("circuit open for this endpoint")]
    Open,
    /// No per-endpoint slot freed up within `max_wait`.
    #[error("endpoint concurrency limit reached")]
    Busy,
}

/// Whether an attempt's result should count as a failure *of the endpoint* for the
/// breaker: transport errors (connect, TLS, timeout), `5xx`, `408 Request Timeout` and
/// `429 Too Many Requests`.
///
/// Any other answer — `2xx`, `3xx`, a `4xx` such as `400`, `401` or `410` — means the
/// endpoint is up and answered; the request was refused, which opening the circuit would
/// not help, so report it to the breaker with [`Permit::success`] even though the
/// delivery itself failed and is retried. Pass `transport_error = false` and `None` for
/// an attempt that never left the process (an address blocked by the URL policy): that
/// is not the endpoint being down.
pub fn counts_as_endpoint_failure(status: Option<u16>, transport_error: bool) -> bool {
    if transport_error {
        return true;
    }
    matches!(status, Some(408 | 429 | 500..=599))
}

/// The endpoint key of a webhook URL: `scheme://host:port`, the port always explicit
/// (`https://example.com:443`), the host as normalised by the URL parser (lower-case,
/// IPv6 in brackets). Paths and queries are left out so that every webhook on one server
/// shares one bound and one breaker.
pub fn endpoint_key(url: &WebhookUrl) -> String {
    let u = url.url();
    match u.port_or_known_default() {
        Some(port) => format!("{}://{}:{port}", u.scheme(), url.host_str()),
        None => format!("{}://{}", u.scheme(), url.host_str()),
    }
}

/// The per-endpoint concurrency bounds and circuit breakers of one worker process.
/// Cheap to clone (one `Arc`); share a single instance between all delivery tasks.
#[derive(Clone)]
pub struct Endpoints {
    inner: Arc<Inner>,
}

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field("cfg", &self.inner.cfg)
            .field("tracked", &self.inner.lock().map.len())
            .finish()
    }
}

struct Inner {
    cfg: BreakerConfig,
    /// A `std` mutex: every critical section is a few map operations and never spans an
    /// `.await`, so it is cheaper than an async lock.
    table: Mutex<Table>,
}

struct Table {
    map: HashMap<Arc<str>, Entry>,
    /// The table size at which the next eviction sweep may run (see `insert_slot`).
    next_sweep_at: usize,
}

struct Entry {
    /// The map key, shared with permits so that an acquire allocates no string.
    key: Arc<str>,
    /// The concurrency bound. Its own `Arc` so a caller can wait on it without the map
    /// lock.
    slots: Arc<Semaphore>,
    state: State,
    /// Consecutive failures while closed.
    failures: u32,
    /// The length of the next open period (grows on failed probes).
    open_for: Duration,
    /// Bumped on every state transition. A permit's report changes the state only if
    /// its epoch is current: results of attempts admitted before the circuit opened
    /// (still in flight when it did) must neither close it nor count against the
    /// freshly closed circuit later.
    epoch: u64,
    /// Admitted callers not yet finished: waiting for a slot or holding one. An entry
    /// with users is never evicted — a waiter on an evicted entry's semaphore would then
    /// run beside a fresh semaphore's holders and break the bound.
    users: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// The probe is out; everybody else is rejected until it reports.
    HalfOpen,
}

impl Entry {
    fn new(key: Arc<str>, cfg: &BreakerConfig) -> Entry {
        Entry {
            key,
            slots: Arc::new(Semaphore::new(
                cfg.per_endpoint_concurrency
                    .clamp(1, Semaphore::MAX_PERMITS),
            )),
            state: State::Closed,
            failures: 0,
            open_for: cfg.open_for,
            epoch: 0,
            users: 0,
        }
    }

    /// Carries nothing worth keeping: recreating it gives the same behaviour.
    fn evictable(&self) -> bool {
        self.state == State::Closed && self.failures == 0 && self.users == 0
    }
}

/// What the holder of a permit learned about the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Report {
    Success,
    Failure,
    /// Dropped without a verdict (cancelled, or gave up waiting for a slot).
    Nothing,
}

impl Inner {
    /// The table, even if a thread panicked while holding the lock: every critical
    /// section leaves the table consistent between statements, and refusing all
    /// deliveries would be worse than using it.
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The synchronous half of [`Endpoints::acquire`]: decides under the lock whether
    /// the caller may send, and registers it as a user of the entry if so.
    fn admit(self: &Arc<Self>, endpoint: &str) -> Result<(Arc<Semaphore>, Ticket), Rejected> {
        let mut table = self.lock();
        let Some(entry) = self.entry_mut(&mut table, endpoint) else {
            return Err(Rejected::Busy);
        };
        let probe = match entry.state {
            State::Closed => false,
            State::Open { until } if Instant::now() < until => return Err(Rejected::Open),
            State::Open { .. } => {
                entry.state = State::HalfOpen;
                entry.epoch += 1;
                true
            }
            State::HalfOpen => return Err(Rejected::Open),
        };
        entry.users += 1;
        let ticket = Ticket {
            inner: self.clone(),
            key: entry.key.clone(),
            epoch: entry.epoch,
            probe,
            settled: false,
        };
        Ok((entry.slots.clone(), ticket))
    }

    /// The entry of `endpoint`, created (after making room) if needed. `None` cannot
    /// happen (the entry was just inserted); it spares a panic path.
    fn entry_mut<'t>(&self, table: &'t mut Table, endpoint: &str) -> Option<&'t mut Entry> {
        if !table.map.contains_key(endpoint) {
            let max = self.cfg.max_endpoints;
            if table.map.len() >= max && table.map.len() >= table.next_sweep_at {
                // Sweeps scan the whole table, so when little is evictable the next
                // one waits for `slack` more insertions: amortised O(1) per insert.
                table.map.retain(|_, e| !e.evictable());
                table.next_sweep_at = table.map.len() + (max / 16).max(1);
            }
            let key: Arc<str> = Arc::from(endpoint);
            table.map.insert(key.clone(), Entry::new(key, &self.cfg));
        }
        table.map.get_mut(endpoint)
    }

    /// A permit (or a caller that gave up waiting) is done: apply its report.
    fn settle(&self, key: &str, epoch: u64, probe: bool, report: Report) {
        let mut table = self.lock();
        let Some(entry) = table.map.get_mut(key) else {
            // Cannot happen (entries with users are never evicted); nothing to update.
            return;
        };
        entry.users = entry.users.saturating_sub(1);
        if entry.epoch != epoch {
            // Admitted under an earlier state: see `Entry::epoch`.
            return;
        }
        let now = Instant::now();
        match (entry.state, probe, report) {
            (State::Closed, _, Report::Success) => entry.failures = 0,
            (State::Closed, _, Report::Failure) => {
                entry.failures = entry.failures.saturating_add(1);
                if entry.failures >= self.cfg.failure_threshold.max(1) {
                    entry.state = State::Open {
                        until: now + entry.open_for,
                    };
                    entry.epoch += 1;
                    metrics().circuit_open_endpoints.inc();
                    tracing::warn!(
                        endpoint = key,
                        failures = entry.failures,
                        open_for_s = entry.open_for.as_secs(),
                        "circuit opened: deliveries to this endpoint go straight to retry"
                    );
                }
            }
            (State::HalfOpen, true, Report::Success) => {
                entry.state = State::Closed;
                entry.failures = 0;
                entry.open_for = self.cfg.open_for;
                entry.epoch += 1;
                metrics().circuit_open_endpoints.dec();
                tracing::info!(endpoint = key, "circuit closed: probe succeeded");
            }
            (State::HalfOpen, true, Report::Failure) => {
                entry.open_for = entry
                    .open_for
                    .saturating_mul(2)
                    .min(MAX_OPEN_FOR.max(self.cfg.open_for));
                entry.state = State::Open {
                    until: now + entry.open_for,
                };
                entry.epoch += 1;
                tracing::warn!(
                    endpoint = key,
                    open_for_s = entry.open_for.as_secs(),
                    "circuit re-opened: probe failed"
                );
            }
            (State::HalfOpen, true, Report::Nothing) => {
                // The probe learned nothing: let the very next caller probe instead.
                entry.state = State::Open { until: now };
                entry.epoch += 1;
            }
            // Closed + Nothing: no information. Open with a current epoch, or a
            // non-probe in half-open: unreachable, as every transition into those
            // bumps the epoch and only the probe is admitted under it.
            _ => {}
        }
    }
}

impl Drop for Inner {
    /// The gauge is process-wide; without this, dropping an `Endpoints` (a worker
    /// restarted in-process, tests) would leave its open circuits counted forever.
    fn drop(&mut self) {
        let table = self.table.get_mut().unwrap_or_else(|e| e.into_inner());
        let open = table
            .map
            .values()
            .filter(|e| e.state != State::Closed)
            .count();
        metrics()
            .circuit_open_endpoints
            .sub(i64::try_from(open).unwrap_or(i64::MAX));
    }
}

impl Endpoints {
    /// An empty table: every endpoint starts closed.
    pub fn new(cfg: BreakerConfig) -> Self {
        Endpoints {
            inner: Arc::new(Inner {
                cfg,
                table: Mutex::new(Table {
                    map: HashMap::new(),
                    next_sweep_at: 0,
                }),
            }),
        }
    }

    /// Asks to send one delivery to `endpoint` (an [`endpoint_key`]).
    ///
    /// Returns [`Rejected::Open`] at once while the circuit is open, and also while it
    /// is half-open with its single probe in flight: the caller schedules the retry
    /// without sending. Otherwise waits for one of the endpoint's slots, but at most
    /// `max_wait`, then [`Rejected::Busy`] — treat that as a retryable failure without
    /// sending, *not* as an endpoint failure (nothing was learned about the endpoint).
    /// The first caller after the open period is the probe; its permit's report decides
    /// whether the circuit closes.
    ///
    /// Cancel-safe: dropping the future releases everything it held.
    ///
    /// # Errors
    /// [`Rejected`], as above.
    pub async fn acquire(&self, endpoint: &str, max_wait: Duration) -> Result<Permit, Rejected> {
        let (slots, ticket) = self.inner.admit(endpoint)?;
        // `timeout` polls the semaphore before the timer, so a free slot is taken even
        // with a zero `max_wait`. On timeout or cancellation `ticket` is dropped, which
        // unregisters the caller and, for a probe, lets the next caller probe.
        match tokio::time::timeout(max_wait, slots.acquire_owned()).await {
            Ok(Ok(slot)) => Ok(Permit { slot, ticket }),
            // `Err(AcquireError)` would mean the semaphore was closed; it never is.
            Ok(Err(_)) | Err(_) => Err(Rejected::Busy),
        }
    }
}

/// Registration of an admitted caller with its entry; settles it exactly once, on
/// report or on drop.
struct Ticket {
    inner: Arc<Inner>,
    key: Arc<str>,
    epoch: u64,
    probe: bool,
    settled: bool,
}

impl Ticket {
    fn settle(&mut self, report: Report) {
        if !self.settled {
            self.settled = true;
            self.inner.settle(&self.key, self.epoch, self.probe, report);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.settle(Report::Nothing);
    }
}

/// Leave to send one delivery to an endpoint, holding one of its slots.
///
/// Report the attempt's result with [`Permit::success`] or [`Permit::failure`] — decide
/// which with [`counts_as_endpoint_failure`]. Dropping it unreported (the task was
/// cancelled, the worker is shutting down) frees the slot and counts as neither; if it
/// was the half-open probe, the next caller becomes the probe.
pub struct Permit {
    // Field order matters: the slot is released before the ticket settles, so an entry
    // is never evictable while one of its slots is still held.
    slot: OwnedSemaphorePermit,
    ticket: Ticket,
}

impl Permit {
    /// The endpoint answered (see [`counts_as_endpoint_failure`]): resets the
    /// consecutive-failure count, and closes the circuit if this was the probe.
    pub fn success(self) {
        self.report(Report::Success);
    }

    /// The endpoint failed (transport error, timeout, `5xx`, `408`, `429`): one more
    /// consecutive failure, opening the circuit at the threshold; re-opens it if this
    /// was the probe.
    pub fn failure(self) {
        self.report(Report::Failure);
    }

    /// Whether this permit is the half-open probe (for logs).
    pub fn is_probe(&self) -> bool {
        self.ticket.probe
    }

    fn report(self, report: Report) {
        let Permit { slot, mut ticket } = self;
        drop(slot);
        ticket.settle(report);
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("endpoint", &&*self.ticket.key)
            .field("probe", &self.ticket.probe)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `wf_circuit_open_endpoints` is process-global and every test here may move it,
    /// so the tests take turns (an async lock: it is held across awaits).
    static GAUGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    const EP: &str = "https://a.example:443";
    const OTHER: &str = "https://b.example:443";
    const WAIT: Duration = Duration::from_secs(1);

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            per_endpoint_concurrency: 2,
            failure_threshold: 3,
            open_for: Duration::from_secs(30),
            max_endpoints: 100,
        }
    }

    fn gauge() -> i64 {
        metrics().circuit_open_endpoints.get()
    }

    fn state(e: &Endpoints, ep: &str) -> Option<State> {
        e.inner.lock().map.get(ep).map(|x| x.state)
    }

    fn tracked(e: &Endpoints) -> usize {
        e.inner.lock().map.len()
    }

    async fn fail_n(e: &Endpoints, ep: &str, n: u32) {
        for _ in 0..n {
            e.acquire(ep, WAIT).await.unwrap().failure();
        }
    }

    #[test]
    fn endpoint_failure_rule() {
        assert!(counts_as_endpoint_failure(None, true));
        assert!(counts_as_endpoint_failure(Some(500), false));
        assert!(counts_as_endpoint_failure(Some(503), false));
        assert!(counts_as_endpoint_failure(Some(599), false));
        assert!(counts_as_endpoint_failure(Some(408), false));
        assert!(counts_as_endpoint_failure(Some(429), false));
        for ok in [200, 204, 301, 400, 401, 404, 410, 499, 600] {
            assert!(!counts_as_endpoint_failure(Some(ok), false), "{ok}");
        }
        assert!(
            !counts_as_endpoint_failure(None, false),
            "blocked by policy"
        );
    }

    #[test]
    fn endpoint_keys_ignore_path_and_default_the_port() {
        let allowed = wf_core::url_policy::AllowedCidrs::default();
        let key = |s: &str| endpoint_key(&WebhookUrl::parse(s, &allowed).unwrap());
        assert_eq!(
            key("https://Hooks.Example.com/a?x=1"),
            "https://hooks.example.com:443"
        );
        assert_eq!(
            key("https://hooks.example.com:443/b"),
            key("https://hooks.example.com/c")
        );
        assert_eq!(
            key("https://hooks.example.com:8443/"),
            "https://hooks.example.com:8443"
        );
        assert_eq!(
            key("https://[2606:4700::1111]/x"),
            "https://[2606:4700::1111]:443"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_rejects_while_open() {
        let _g = GAUGE.lock().await;
        let start = gauge();
        let e = Endpoints::new(cfg());
        fail_n(&e, EP, 2).await;
        assert_eq!(state(&e, EP), Some(State::Closed));
        assert_eq!(gauge(), start);
        fail_n(&e, EP, 1).await;
        assert!(matches!(state(&e, EP), Some(State::Open { .. })));
        assert_eq!(gauge(), start + 1);
        assert_eq!(e.acquire(EP, WAIT).await.unwrap_err(), Rejected::Open);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(e.acquire(EP, WAIT).await.unwrap_err(), Rejected::Open);
        drop(e);
        assert_eq!(
            gauge(),
            start,
            "dropping the table releases its open circuits"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_count() {
        let _g = GAUGE.lock().await;
        let e = Endpoints::new(cfg());
        fail_n(&e, EP, 2).await;
        e.acquire(EP, WAIT).await.unwrap().success();
        fail_n(&e, EP, 2).await;
        assert_eq!(state(&e, EP), Some(State::Closed));
        fail_n(&e, EP, 1).await;
        assert!(matches!(state(&e, EP), Some(State::Open { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_probe_success_closes_and_gauge_returns() {
        let _g = GAUGE.lock().await;
        let start = gauge();
        let e = Endpoints::new(cfg());
        fail_n(&e, EP, 3).await;
        assert_eq!(gauge(), start + 1);
        tokio::time::advance(Duration::from_secs(30)).await;
        let probe = e.acquire(EP, WAIT).await.unwrap();
        assert!(probe.is_probe());
        assert_eq!(state(&e, EP), Some(State::HalfOpen));
        assert_eq!(gauge(), start + 1, "half-open still counts as open");
        // Exactly one probe: everybody else is turned away until it reports.
        assert_eq!(e.acquire(EP, WAIT).await.unwrap_err(), Rejected::Open);
        assert_eq!(e.acquire(EP, WAIT).await.unwrap_err(), Rejected::Open);
        probe.success();
        assert_eq!(state(&e, EP), Some(State::Closed));
        assert_eq!(gauge(), start);
        let p = e.acquire(EP, WAIT).await.unwrap();
        assert!(!p.is_probe());
        p.success();
        // Closed again with a fresh count: it takes the full threshold to re-open.
        fail_n(&e, EP, 2).await;
        assert_eq!(state(&e, EP), Some(State::Closed));
        drop(e);
        assert_eq!(gauge(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_failure_reopens_with_a_longer_period() {
        let _g = GAUGE.lock().await;
        let start = gauge();
        let e = Endpoints::new(cfg());
        fail_n(&e, EP, 3).await;
        tokio::time::advance(Duration::from_secs(30)).await;
        e.acquire(EP, WAIT).await.unwrap().failure();
        assert!(matches!(state(&e, EP), Some(State::Open { .. })));
        assert_eq!(gauge(), start + 1, "re-opening does not count twice");
        // Doubled: still open after the base 30 s, probe-able after 60 s.
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(e.acquire(EP, WAIT).await.unwrap_err(), Rejected::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = e.acquire(EP, WAIT).await.unwrap();
        assert!(probe.is_probe());
        probe.success();
        assert_eq!(gauge(), start);
        // The period is back to the base after closing.
        fail_n(&e, EP, 3).await;
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(e.acquire(EP, WAIT).await.unwrap().is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn open_period_is_capped() {
        let _g = GAUGE.lock().await;
        let e = Endpoints::new(cfg());
        fail_n(&e, EP, 3).await;
        let mut waited = Duration::from_secs(30);
        for _ in 0..10 {
            tokio::time::advance(waited).await;
            e.acquire(EP, WAIT).await.unwrap().failure();
            waited = (waited * 2).min(MAX_OPEN_FOR);
        }
        tokio::time::advance(MAX_OPEN_FOR).await;
        assert!(e.acquire(EP, WAIT).await.unwrap().is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_probe_lets_another_probe() {
        let _g = GAUGE.lock().await;
        let start = gauge();
        let e = Endpoints::new(cfg());
        fail_n(&e, EP, 3).await;
        tokio::time::advance(Duration::from_secs(30)).await;
        let probe = e.acquire(EP, WAIT).await.unwrap();
        assert_eq!(e.acquire(EP, WAIT).await.unwrap_err(), Rejected::Open);
        drop(probe);
        assert_eq!(gauge(), start + 1, "still open until a probe reports");
        let probe = e.acquire(EP, WAIT).await.unwrap();
        assert!(probe.is_probe());
        probe.success();
        assert_eq!(gauge(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_results_do_not_move_the_circuit() {
        let _g = GAUGE.lock().await;
        let start = gauge();
        let e = Endpoints::new(BreakerConfig {
            per_endpoint_concurrency: 8,
            ..cfg()
        });
        // Admitted while closed, reporting after the circuit opened.
        let late_ok = e.acquire(EP, WAIT).await.unwrap();
        let late_fail = e.acquire(EP, WAIT).await.unwrap();
        fail_n(&e, EP, 3).await;
        late_ok.success();
        assert!(matches!(state(&e, EP), Some(State::Open { .. })));
        tokio::time::advance(Duration::from_secs(30)).await;
        e.acquire(EP, WAIT).await.unwrap().success();
        assert_eq!(state(&e, EP), Some(State::Closed));
        // …nor against the circuit closed since.
        late_fail.failure();
        assert_eq!(e.inner.lock().map.get(EP).map(|x| x.failures), Some(0));
        assert_eq!(gauge(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded_per_endpoint() {
        let _g = GAUGE.lock().await;
        let e = Endpoints::new(cfg());
        let a = e.acquire(EP, WAIT).await.unwrap();
        let b = e.acquire(EP, WAIT).await.unwrap();
        // The third waits the full `max_wait`, then is turned away.
        let t0 = Instant::now();
        assert_eq!(e.acquire(EP, WAIT).await.unwrap_err(), Rejected::Busy);
        let waited = t0.elapsed();
        assert!(
            waited >= WAIT && waited < WAIT + Duration::from_millis(10),
            "{waited:?}"
        );
        // Another endpoint is not held up.
        e.acquire(OTHER, Duration::ZERO).await.unwrap().success();
        // A released slot admits a waiter.
        let waiter = tokio::spawn({
            let e = e.clone();
            async move { e.acquire(EP, Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!waiter.is_finished());
        a.success();
        let c = waiter.await.unwrap().unwrap();
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_secs(3) && waited < Duration::from_millis(3010));
        // Busy is no failure and the waits did not leak users.
        drop((b, c));
        let table = e.inner.lock();
        let entry = table.map.get(EP).unwrap();
        assert_eq!((entry.failures, entry.users), (0, 0));
        assert_eq!(entry.slots.available_permits(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_waiter_releases_its_claim() {
        let _g = GAUGE.lock().await;
        let e = Endpoints::new(BreakerConfig {
            per_endpoint_concurrency: 1,
            ..cfg()
        });
        let held = e.acquire(EP, WAIT).await.unwrap();
        let waiting = tokio::time::timeout(
            Duration::from_millis(10),
            e.acquire(EP, Duration::from_secs(60)),
        )
        .await;
        assert!(waiting.is_err(), "cancelled while waiting");
        drop(held);
        assert_eq!(e.inner.lock().map.get(EP).map(|x| x.users), Some(0));
        e.acquire(EP, Duration::ZERO).await.unwrap().success();
    }

    #[tokio::test(start_paused = true)]
    async fn busy_probe_lets_another_probe() {
        let _g = GAUGE.lock().await;
        let e = Endpoints::new(cfg());
        fail_n(&e, EP, 3).await;
        tokio::time::advance(Duration::from_secs(30)).await;
        // Every slot still taken (attempts admitted before the circuit opened): the
        // would-be probe gives up with Busy and must not leave the circuit stuck in
        // half-open with no probe.
        let slots = e.inner.lock().map.get(EP).unwrap().slots.clone();
        let held = slots.clone().try_acquire_many_owned(2).unwrap();
        assert_eq!(e.acquire(EP, WAIT).await.unwrap_err(), Rejected::Busy);
        assert!(matches!(state(&e, EP), Some(State::Open { .. })));
        drop(held);
        let probe = e.acquire(EP, WAIT).await.unwrap();
        assert!(probe.is_probe());
        probe.success();
        assert_eq!(state(&e, EP), Some(State::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_are_independent() {
        let _g = GAUGE.lock().await;
        let start = gauge();
        let e = Endpoints::new(cfg());
        fail_n(&e, EP, 3).await;
        assert_eq!(e.acquire(EP, WAIT).await.unwrap_err(), Rejected::Open);
        let p = e.acquire(OTHER, WAIT).await.unwrap();
        assert!(!p.is_probe());
        p.failure();
        assert_eq!(state(&e, OTHER), Some(State::Closed));
        fail_n(&e, OTHER, 2).await;
        assert_eq!(gauge(), start + 2);
        drop(e);
        assert_eq!(gauge(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_keeps_the_table_bounded_but_not_state() {
        let _g = GAUGE.lock().await;
        let start = gauge();
        let e = Endpoints::new(BreakerConfig {
            max_endpoints: 10,
            ..cfg()
        });
        // Entries that matter: open, failing, busy.
        fail_n(&e, EP, 3).await;
        fail_n(&e, OTHER, 1).await;
        let busy = e.acquire("https://busy.example:443", WAIT).await.unwrap();
        for i in 0..1000 {
            e.acquire(&format!("https://h{i}.example:443"), WAIT)
                .await
                .unwrap()
                .success();
            assert!(tracked(&e) <= 10, "{} after {i}", tracked(&e));
        }
        assert_eq!(e.acquire(EP, WAIT).await.unwrap_err(), Rejected::Open);
        assert_eq!(e.inner.lock().map.get(OTHER).map(|x| x.failures), Some(1));
        assert!(e.inner.lock().map.contains_key("https://busy.example:443"));
        assert_eq!(gauge(), start + 1, "eviction never touches open circuits");
        drop(busy);
        drop(e);
        assert_eq!(gauge(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn table_may_exceed_the_bound_only_by_unevictable_entries() {
        let _g = GAUGE.lock().await;
        let start = gauge();
        let e = Endpoints::new(BreakerConfig {
            max_endpoints: 4,
            failure_threshold: 1,
            ..cfg()
        });
        for i in 0..20 {
            fail_n(&e, &format!("https://down{i}.example:443"), 1).await;
        }
        assert_eq!(tracked(&e), 20);
        assert_eq!(gauge(), start + 20);
        drop(e);
        assert_eq!(gauge(), start);
    }

    #[test]
    fn handles_are_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Endpoints>();
        check::<Permit>();
        check::<Rejected>();
    }
}
