//! The dispatcher's rules, on tokio's paused clock.

use super::*;

/// Process-wide gauges (`wf_circuit_open_endpoints`, `wf_deliveries_waiting`,
/// `wf_endpoint_concurrency_limits`) move with every table; the tests that read them take
/// turns (an async lock: it is held across awaits).
static GAUGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const EP: &str = "https://a.example:443";
const OTHER: &str = "https://b.example:443";
const SEC: Duration = Duration::from_secs(1);

fn cfg(worker_slots: usize, initial: usize) -> Config {
    Config {
        initial_limit: initial,
        failure_threshold: 3,
        ..Config::new(worker_slots, 64)
    }
}

/// A table whose endpoints' limits stay at `limit`.
fn fixed(worker_slots: usize, limit: usize) -> Config {
    Config {
        max_limit: limit,
        ..cfg(worker_slots, limit)
    }
}

fn ask(endpoint: &str, may_wait: Duration) -> Ask<'_> {
    Ask {
        endpoint,
        rate: None,
        may_wait,
    }
}

#[track_caller]
fn go(a: Admission) -> Permit {
    match a {
        Admission::Go(p) => p,
        other => panic!("expected Go, got {other:?}"),
    }
}

#[track_caller]
fn wait(a: Admission) -> Waiting {
    match a {
        Admission::Wait(w) => w,
        other => panic!("expected Wait, got {other:?}"),
    }
}

#[track_caller]
fn hold(a: Admission) -> HoldBack {
    match a {
        Admission::Hold(h) => h,
        other => panic!("expected Hold, got {other:?}"),
    }
}

/// A waiter's answer as an owned future, to spawn.
async fn owned(mut w: Waiting) -> Result<Permit, HoldBack> {
    w.wait().await.map_err(|r| match r {
        Refused::Hold(h) => h,
        Refused::Closed => panic!("closed"),
    })
}

fn answered(ms: u64) -> Report {
    Report::Answered {
        latency: Duration::from_millis(ms),
    }
}

fn open_gauge() -> i64 {
    metrics().circuit_open_endpoints.get()
}

/// Opens `ep`'s circuit: drives its limit to the floor, then fails it `threshold` times.
fn open_circuit(e: &Endpoints, ep: &str) {
    for _ in 0..3 {
        go(e.admit(ask(ep, SEC))).report(Report::Failed);
    }
}

#[tokio::test(start_paused = true)]
async fn the_classification_of_answers() {
    let l = Duration::from_millis(7);
    let ra = Some(SEC);
    assert_eq!(Report::classify(Some(200), false, l, None), answered(7));
    assert_eq!(Report::classify(Some(404), false, l, None), answered(7));
    assert_eq!(Report::classify(Some(410), false, l, None), answered(7));
    assert_eq!(
        Report::classify(Some(429), false, l, ra),
        Report::Overloaded { retry_after: ra }
    );
    assert_eq!(
        Report::classify(Some(503), false, l, None),
        Report::Overloaded { retry_after: None }
    );
    assert_eq!(
        Report::classify(Some(408), false, l, None),
        Report::Overloaded { retry_after: None }
    );
    assert_eq!(Report::classify(Some(500), false, l, None), Report::Failed);
    assert_eq!(Report::classify(Some(502), false, l, None), Report::Failed);
    assert_eq!(
        Report::classify(None, true, l, None),
        Report::Overloaded { retry_after: None }
    );
    assert_eq!(Report::classify(None, false, l, None), Report::Failed);
}

#[test]
fn endpoint_keys_ignore_path_and_default_the_port() {
    let allowed = wf_core::url_policy::AllowedCidrs::default();
    let key = |u: &str| endpoint_key(&WebhookUrl::parse(u, &allowed).unwrap());
    assert_eq!(key("https://Example.COM/a?b=c"), "https://example.com:443");
    assert_eq!(
        key("https://example.com:8443/x"),
        "https://example.com:8443"
    );
    assert_eq!(
        key("https://example.com/x"),
        key("https://example.com:443/y")
    );
}

#[tokio::test(start_paused = true)]
async fn the_endpoint_limit_bounds_what_is_in_flight_and_the_rest_waits_in_order() {
    let e = Endpoints::new(fixed(100, 2));
    let a = go(e.admit(ask(EP, SEC)));
    let b = go(e.admit(ask(EP, SEC)));
    assert_eq!(e.in_flight(), 2);
    // The limit (2) is reached: the next two wait, in order.
    let first = tokio::spawn(owned(wait(e.admit(ask(EP, SEC)))));
    let second = tokio::spawn(owned(wait(e.admit(ask(EP, SEC)))));
    tokio::task::yield_now().await;
    assert_eq!(e.waiting(), 2);
    a.report(answered(10));
    let p1 = first.await.unwrap().expect("granted");
    assert_eq!(e.waiting(), 1);
    assert!(!second.is_finished());
    b.report(answered(10));
    let p2 = second.await.unwrap().expect("granted");
    assert_eq!((e.in_flight(), e.waiting()), (2, 0));
    drop((p1, p2));
    assert_eq!(e.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_line_longer_than_the_caller_may_wait_is_held_back_as_busy() {
    let e = Endpoints::new(fixed(100, 1));
    let p = go(e.admit(ask(EP, SEC)));
    // Teach it a latency of 400 ms: one slot, so the n-th in line waits n × 400 ms.
    p.report(answered(400));
    let _busy = go(e.admit(ask(EP, SEC)));
    let w1 = wait(e.admit(ask(EP, SEC)));
    let w2 = wait(e.admit(ask(EP, SEC)));
    let h = hold(e.admit(ask(EP, SEC)));
    assert_eq!(h.reason, HoldReason::Busy);
    assert_eq!(h.wait, Duration::from_millis(1_200));
    // A caller that may not wait at all is held back at once.
    let h = hold(e.admit(ask(EP, Duration::ZERO)));
    assert_eq!(h.reason, HoldReason::Busy);
    // Leaving the line makes room.
    drop((w1, w2));
    assert_eq!(e.waiting(), 0);
    let _w = wait(e.admit(ask(EP, SEC)));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_waits_far_longer_than_expected_gives_up() {
    let e = Endpoints::new(cfg(100, 1));
    let _stuck = go(e.admit(ask(EP, SEC)));
    let w = wait(e.admit(ask(EP, Duration::from_millis(500))));
    let started = Instant::now();
    let h = owned(w).await.expect_err("gave up");
    assert_eq!(h.reason, HoldReason::Busy);
    // Twice what it may wait, but at least a second.
    assert_eq!(started.elapsed(), SEC);
    assert_eq!(e.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn worker_slots_are_shared_in_turn_and_a_reserve_is_kept_for_quiet_endpoints() {
    // 8 slots, 2 in reserve for endpoints with fewer than 4 in flight.
    let e = Endpoints::new(Config {
        reserve: 2,
        light: 4,
        ..cfg(8, 64)
    });
    let mut slow: Vec<Permit> = (0..6).map(|_| go(e.admit(ask(EP, SEC)))).collect();
    // A busy endpoint cannot take the reserve…
    let waiting_slow = tokio::spawn(owned(wait(e.admit(ask(EP, SEC)))));
    tokio::task::yield_now().await;
    // …a quiet one can, at once.
    let quiet1 = go(e.admit(ask(OTHER, SEC)));
    let quiet2 = go(e.admit(ask(OTHER, SEC)));
    assert_eq!(e.in_flight(), 8);
    // The worker is full: a third quiet delivery waits for a worker slot, and is served
    // before the busy endpoint's next one although that was waiting first.
    let waiting_quiet = tokio::spawn(owned(wait(e.admit(ask(OTHER, SEC)))));
    tokio::task::yield_now().await;
    slow.pop().unwrap().report(answered(10));
    let q3 = waiting_quiet.await.unwrap().expect("granted");
    assert!(!waiting_slow.is_finished());
    drop((quiet1, quiet2, q3));
    // Now the reserve is free again, but the busy endpoint may only use its share.
    let p = waiting_slow.await.unwrap().expect("granted");
    assert_eq!(e.in_flight(), 6);
    drop(p);
}

#[tokio::test(start_paused = true)]
async fn overload_lowers_the_limit_before_it_opens_the_circuit() {
    let _g = GAUGES.lock().await;
    let e = Endpoints::new(cfg(100, 8));
    let gauge = open_gauge();
    // Timeouts first halve the limit: 8 → 4 → 2 → 1 (once per round trip).
    for expected in [4, 2, 1] {
        go(e.admit(ask(EP, SEC))).report(Report::Overloaded { retry_after: None });
        assert_eq!(e.limit_of(EP), Some(expected));
        tokio::time::advance(SEC).await;
    }
    assert_eq!(open_gauge(), gauge, "still closed: the limit absorbed them");
    // At the floor, overload counts against the circuit.
    for _ in 0..3 {
        go(e.admit(ask(EP, SEC))).report(Report::Overloaded { retry_after: None });
        tokio::time::advance(SEC).await;
    }
    assert_eq!(open_gauge(), gauge + 1);
    assert_eq!(hold(e.admit(ask(EP, SEC))).reason, HoldReason::CircuitOpen);
    drop(e);
    assert_eq!(
        open_gauge(),
        gauge,
        "dropping the table gives its gauge back"
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_holds_back_releases_its_line_and_closes_on_a_good_probe() {
    let _g = GAUGES.lock().await;
    let e = Endpoints::new(cfg(100, 1));
    let gauge = open_gauge();
    let p = go(e.admit(ask(EP, SEC)));
    let waiter = tokio::spawn(owned(wait(e.admit(ask(EP, SEC)))));
    tokio::task::yield_now().await;
    p.report(Report::Failed);
    // The waiter was granted the freed slot; fail twice more to open.
    let p = waiter.await.unwrap().expect("granted");
    let in_line = tokio::spawn(owned(wait(e.admit(ask(EP, SEC)))));
    tokio::task::yield_now().await;
    p.report(Report::Failed);
    let p = in_line.await.unwrap().expect("granted");
    let released = tokio::spawn(owned(wait(e.admit(ask(EP, SEC)))));
    tokio::task::yield_now().await;
    p.report(Report::Failed);
    // Opened: the delivery still in line is told to go elsewhere.
    let h = released.await.unwrap().expect_err("released");
    assert_eq!(h.reason, HoldReason::CircuitOpen);
    assert_eq!(h.wait, Duration::from_secs(30));
    assert_eq!(open_gauge(), gauge + 1);
    let h = hold(e.admit(ask(EP, SEC)));
    assert_eq!(h, HoldBack::circuit_open(Duration::from_secs(30)));
    tokio::time::advance(Duration::from_secs(30)).await;
    let probe = go(e.admit(ask(EP, SEC)));
    assert!(probe.is_probe());
    // One probe at a time.
    assert_eq!(hold(e.admit(ask(EP, SEC))).reason, HoldReason::CircuitOpen);
    probe.report(answered(20));
    assert_eq!(open_gauge(), gauge);
    let _ = go(e.admit(ask(EP, SEC)));
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_longer_and_a_dropped_probe_lets_another_probe() {
    let _g = GAUGES.lock().await;
    let e = Endpoints::new(cfg(100, 8));
    let gauge = open_gauge();
    open_circuit(&e, EP);
    tokio::time::advance(Duration::from_secs(30)).await;
    go(e.admit(ask(EP, SEC))).report(Report::Failed);
    let h = hold(e.admit(ask(EP, SEC)));
    assert_eq!(h.wait, Duration::from_secs(60));
    tokio::time::advance(Duration::from_secs(60)).await;
    drop(go(e.admit(ask(EP, SEC))));
    let probe = go(e.admit(ask(EP, SEC)));
    assert!(probe.is_probe());
    // An overloaded probe counts as a failure whatever the limit.
    probe.report(Report::Overloaded { retry_after: None });
    assert_eq!(hold(e.admit(ask(EP, SEC))).wait, Duration::from_secs(120));
    assert_eq!(open_gauge(), gauge + 1);
    drop(e);
    assert_eq!(open_gauge(), gauge);
}

#[tokio::test(start_paused = true)]
async fn retry_after_pauses_the_endpoint_not_only_the_delivery() {
    let e = Endpoints::new(cfg(100, 8));
    let in_line = tokio::spawn({
        let e = e.clone();
        async move {
            // Fill the limit so the next one waits.
            let ps: Vec<Permit> = (0..8).map(|_| go(e.admit(ask(EP, SEC)))).collect();
            let w = wait(e.admit(ask(EP, SEC)));
            (ps, w)
        }
    })
    .await
    .unwrap();
    let (mut ps, w) = in_line;
    let w = tokio::spawn(owned(w));
    tokio::task::yield_now().await;
    ps.pop().unwrap().report(Report::Overloaded {
        retry_after: Some(Duration::from_secs(20)),
    });
    // The pause is longer than anyone waits: the line is released…
    let h = w.await.unwrap().expect_err("released");
    assert_eq!(h.reason, HoldReason::RateLimited);
    assert_eq!(h.wait, Duration::from_secs(20));
    // …and new deliveries are held back until it is over, whoever they are.
    let h = hold(e.admit(ask(EP, SEC)));
    assert_eq!(h, HoldBack::paused(Duration::from_secs(20)));
    drop(ps);
    tokio::time::advance(Duration::from_secs(20)).await;
    let _ = go(e.admit(ask(EP, SEC)));
    // Other endpoints were never paused.
    let _ = go(e.admit(ask(OTHER, SEC)));
}

#[tokio::test(start_paused = true)]
async fn a_short_pause_keeps_the_line_and_resumes_it_when_over() {
    let e = Endpoints::new(cfg(100, 1));
    let p = go(e.admit(ask(EP, SEC)));
    let w = tokio::spawn(owned(wait(e.admit(ask(EP, Duration::from_secs(5))))));
    tokio::task::yield_now().await;
    let t0 = Instant::now();
    p.report(Report::Overloaded {
        retry_after: Some(Duration::from_millis(800)),
    });
    let granted = w.await.unwrap().expect("granted after the pause");
    assert_eq!(t0.elapsed(), Duration::from_millis(800));
    drop(granted);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_webhook_gets_its_share_and_waits_or_is_held_back() {
    let e = Endpoints::new(cfg(100, 64));
    let limited = |may_wait| Ask {
        endpoint: EP,
        rate: Some(("whk_a", 4.0)),
        may_wait,
    };
    // A burst of half a second's worth (2), then one every 250 ms.
    let burst: Vec<Permit> = (0..2).map(|_| go(e.admit(limited(SEC)))).collect();
    drop(burst);
    let t0 = Instant::now();
    let w1 = wait(e.admit(limited(SEC)));
    let w2 = wait(e.admit(limited(SEC)));
    // The fifth would wait 750 ms; a caller that may wait 600 ms is held back.
    let h = hold(e.admit(limited(Duration::from_millis(600))));
    assert_eq!(h.reason, HoldReason::RateLimited);
    assert_eq!(h.wait, Duration::from_millis(750));
    let p1 = owned(w1).await.expect("token");
    assert_eq!(t0.elapsed(), Duration::from_millis(250));
    let p2 = owned(w2).await.expect("token");
    assert_eq!(t0.elapsed(), Duration::from_millis(500));
    // The endpoint's other webhooks are not limited by it.
    let other: Vec<Permit> = (0..10).map(|_| go(e.admit(ask(EP, SEC)))).collect();
    drop((p1, p2, other));
}

#[tokio::test(start_paused = true)]
async fn answers_adapt_the_limit() {
    let e = Endpoints::new(cfg(1_000, 4));
    // Steady answers while it is used: slow start to the maximum.
    for _ in 0..20 {
        let ps: Vec<Permit> = (0..e.limit_of(EP).unwrap_or(4))
            .map(|_| go(e.admit(ask(EP, SEC))))
            .collect();
        for p in ps {
            p.report(answered(50));
        }
        tokio::time::advance(Duration::from_millis(50)).await;
    }
    assert_eq!(e.limit_of(EP), Some(64));
    // 503s halve it.
    go(e.admit(ask(EP, SEC))).report(Report::Overloaded { retry_after: None });
    assert_eq!(e.limit_of(EP), Some(32));
}

#[tokio::test(start_paused = true)]
async fn the_limit_distribution_is_exported_without_endpoint_labels() {
    let _g = GAUGES.lock().await;
    let g = |le: &str| metrics().endpoint_limits.with_label_values(&[le]).get();
    let (le8, le4, all) = (g("8"), g("4"), g("+Inf"));
    let e = Endpoints::new(cfg(100, 8));
    go(e.admit(ask(EP, SEC))).report(answered(5));
    go(e.admit(ask(OTHER, SEC))).report(Report::Overloaded { retry_after: None });
    assert_eq!(e.limit_of(OTHER), Some(4));
    assert_eq!((g("8") - le8, g("4") - le4, g("+Inf") - all), (2, 1, 2));
    drop(e);
    assert_eq!((g("8"), g("4"), g("+Inf")), (le8, le4, all));
}

#[tokio::test(start_paused = true)]
async fn the_table_stays_bounded_but_keeps_what_it_learned_about_failing_endpoints() {
    let _g = GAUGES.lock().await;
    let e = Endpoints::new(Config {
        max_endpoints: 32,
        ..cfg(100, 8)
    });
    open_circuit(&e, EP);
    for i in 0..200 {
        let ep = format!("https://h{i}.example:443");
        go(e.admit(ask(&ep, SEC))).report(answered(5));
    }
    assert!(e.tracked() <= 32 + 2 + 1, "tracked {}", e.tracked());
    assert_eq!(hold(e.admit(ask(EP, SEC))).reason, HoldReason::CircuitOpen);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_permit_frees_its_slots_and_teaches_nothing() {
    let e = Endpoints::new(cfg(2, 1));
    let p = go(e.admit(ask(EP, SEC)));
    let w = tokio::spawn(owned(wait(e.admit(ask(EP, SEC)))));
    tokio::task::yield_now().await;
    drop(p);
    let p = w.await.unwrap().expect("granted");
    assert_eq!(e.limit_of(EP), Some(1));
    drop(p);
    assert_eq!((e.in_flight(), e.waiting()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn closing_hands_back_what_waits_and_admits_nothing_new() {
    let _g = GAUGES.lock().await;
    let waiting_before = metrics().deliveries_waiting.get();
    let e = Endpoints::new(fixed(100, 1));
    let in_flight = go(e.admit(ask(EP, SEC)));
    let mut w = wait(e.admit(ask(EP, SEC)));
    let pending = tokio::spawn(async move { w.wait().await });
    tokio::task::yield_now().await;
    e.close();
    assert_eq!(
        pending.await.unwrap().expect_err("refused"),
        Refused::Closed
    );
    assert!(matches!(e.admit(ask(OTHER, SEC)), Admission::Closed));
    assert_eq!(e.waiting(), 0);
    assert_eq!(metrics().deliveries_waiting.get(), waiting_before);
    // What was in flight finishes as usual.
    in_flight.report(answered(5));
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn handles_are_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Endpoints>();
    check::<Permit>();
    fn check_send<T: Send>() {}
    check_send::<Waiting>();
}
