//! Shutdown and crashes of the real worker: a SIGTERM mid-load, deliveries slower than the
//! grace period, a SIGKILL while the delivery log is stalled. Nothing is lost; what was in
//! flight is delivered again, with the same delivery ids. And the ingestor's drain: a
//! request in flight at SIGTERM is answered.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use serde_json::json;
use wf_testkit::prometheus::scrape;
use wf_testkit::{eventually, Recorded};

use super::support::*;

/// SIGTERM to a worker that is busy delivering to a slow endpoint: it exits 0 within the
/// grace period, and a fresh worker delivers the rest: every event arrives (at least once)
/// and the delivery log shows all of them delivered.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_load_loses_nothing_and_exits_zero() {
    const EVENTS: usize = 200;
    const CONCURRENCY: usize = 16;
    let d = Deployment::new(&[("WF_SHUTDOWN_GRACE", "3s"), ("WF_WORKER_CONCURRENCY", "16")]).await;
    d.receiver.delay("/slow", Duration::from_millis(300));
    let mut ingestor = d.start(INGESTOR).await;
    let mut worker = d.start(WORKER).await;
    let key = d.api_key().await;
    let webhook = d
        .webhook(&ingestor, &key, "/slow", &["alert.created"])
        .await;

    let api = ingestor.api;
    let publishing = {
        let key = key.clone();
        tokio::spawn(async move {
            futures::future::join_all((0..EVENTS).map(|n| {
                let key = key.clone();
                async move {
                    let body = json!({"event": "alert.created", "data": {"n": n}});
                    post(api, "/api/v1/events", &key, &body).await
                }
            }))
            .await
        })
    };

    // Mid-load: deliveries are running and most events are still to go.
    let ops = worker.ops;
    eventually("deliveries in flight", Duration::from_secs(30), || async {
        let in_flight = scrape(ops).await.value("wf_deliveries_in_flight", &[]);
        let got = d.receiver.requests("/slow").len();
        (in_flight > 0.0 && got >= 20).then_some(())
    })
    .await;
    let at_sigterm = d.receiver.requests("/slow").len();
    let took = worker.stop(d.grace() + EXIT_MARGIN).await;
    let at_exit = d.receiver.requests("/slow").len();
    println!("worker exited 0 {took:?} after SIGTERM; {at_sigterm} requests at SIGTERM, {at_exit} at exit");
    assert!(
        at_exit - at_sigterm <= 2 * CONCURRENCY,
        "the worker kept taking new work after SIGTERM: {at_sigterm} requests then, {at_exit} at exit"
    );
    assert!(
        at_exit < EVENTS,
        "the load was over before the worker stopped; nothing was handed back"
    );

    for (s, b) in publishing.await.unwrap() {
        assert_eq!(s, 202, "POST /events: {b}");
    }

    let mut worker = d.start(WORKER).await;
    let seen = eventually(
        "every event delivered after the restart",
        Duration::from_secs(90),
        || async {
            let got = d.receiver.requests("/slow");
            let ns: BTreeSet<u64> = got
                .iter()
                .filter_map(|r| r.json()["data"]["n"].as_u64())
                .collect();
            (ns.len() == EVENTS).then_some(got)
        },
    )
    .await;
    let ids: HashSet<&str> = seen
        .iter()
        .map(|r| r.header("x-workflows-delivery"))
        .collect();
    assert_eq!(ids.len(), EVENTS, "distinct X-WorkFlows-Delivery ids");
    println!(
        "{} requests for {EVENTS} events ({} duplicates)",
        seen.len(),
        seen.len() - EVENTS
    );

    // The delivery log agrees: nothing stuck as pending, nothing acked but unlogged.
    eventually(
        "all deliveries logged as delivered",
        Duration::from_secs(30),
        || async {
            let n = deliveries(api, &key, &webhook, "delivered").await.len();
            (n == EVENTS).then_some(())
        },
    )
    .await;

    worker.stop(d.grace() + EXIT_MARGIN).await;
    ingestor.stop(d.grace() + EXIT_MARGIN).await;
}

/// SIGKILL while the delivery log cannot write (a lock held on its table): the events
/// were delivered, but their outcomes were only buffered, so their messages must still be
/// unacked. A fresh worker gets them again, delivers them again (same delivery ids) and
/// logs them: no outcome is lost with the killed worker's buffer. (Were the messages acked
/// before the log had them, this log would stay empty.)
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_with_the_log_stalled_loses_no_log_record() {
    const EVENTS: usize = 20;
    let d = Deployment::new(&[]).await;
    let mut ingestor = d.start(INGESTOR).await;
    let mut worker = d.start(WORKER).await;
    let key = d.api_key().await;
    let webhook = d
        .webhook(&ingestor, &key, "/stalled-log", &["alert.created"])
        .await;

    let locker = d.db.connect().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE event_payloads IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    for n in 0..EVENTS {
        let body = json!({"event": "alert.created", "data": {"n": n}});
        let (s, b) = post(ingestor.api, "/api/v1/events", &key, &body).await;
        assert_eq!(s, 202, "{b}");
    }
    let distinct_ns = |got: &[Recorded]| -> usize {
        got.iter()
            .filter_map(|r| r.json()["data"]["n"].as_u64())
            .collect::<BTreeSet<u64>>()
            .len()
    };
    eventually(
        "every event delivered once",
        Duration::from_secs(30),
        || async { (distinct_ns(&d.receiver.requests("/stalled-log")) == EVENTS).then_some(()) },
    )
    .await;
    // Time for any ack that was going to be sent to reach the broker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.child.kill().await.expect("SIGKILL the worker");
    let before_restart = d.receiver.requests("/stalled-log").len();
    locker.batch_execute("ROLLBACK").await.unwrap();

    let mut worker = d.start(WORKER).await;
    let got = all_logged_delivered(&d, ingestor.api, &key, &webhook, "/stalled-log", EVENTS).await;
    assert!(
        got.len() >= before_restart + EVENTS,
        "every event is delivered again after the restart (it was never acked): \
         {before_restart} requests before, {} after",
        got.len()
    );

    worker.stop(d.grace() + EXIT_MARGIN).await;
    ingestor.stop(d.grace() + EXIT_MARGIN).await;
}

/// SIGTERM while every delivery in flight takes longer than `WF_SHUTDOWN_GRACE`: the worker
/// does not wait for them, exits 0 after the grace period and hands them back; a fresh
/// worker delivers them again (same delivery ids: the duplicates at-least-once allows).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_hands_back_deliveries_slower_than_the_grace() {
    // No more than a new endpoint's initial concurrency limit (8), so that every one of
    // them is in flight at once when the SIGTERM comes.
    const EVENTS: usize = 8;
    let d = Deployment::new(&[("WF_SHUTDOWN_GRACE", "1s"), ("WF_DELIVERY_TIMEOUT", "20s")]).await;
    d.receiver.delay("/slower", Duration::from_secs(8));
    let mut ingestor = d.start(INGESTOR).await;
    let mut worker = d.start(WORKER).await;
    let key = d.api_key().await;
    let webhook = d
        .webhook(&ingestor, &key, "/slower", &["alert.created"])
        .await;
    for n in 0..EVENTS {
        let body = json!({"event": "alert.created", "data": {"n": n}});
        let (s, b) = post(ingestor.api, "/api/v1/events", &key, &body).await;
        assert_eq!(s, 202, "{b}");
    }
    d.receiver.wait_for("/slower", EVENTS).await;

    // The grace period, plus a little for closing connections: not the 8 s the endpoint
    // would take to answer.
    let took = worker.stop(d.grace() + Duration::from_secs(3)).await;
    println!("worker exited 0 {took:?} after SIGTERM with {EVENTS} deliveries in flight");

    let mut worker = d.start(WORKER).await;
    let seen = all_logged_delivered(&d, ingestor.api, &key, &webhook, "/slower", EVENTS).await;
    assert!(
        seen.len() >= 2 * EVENTS,
        "every delivery abandoned at shutdown is sent again: {} requests",
        seen.len()
    );
    worker.stop(d.grace() + EXIT_MARGIN).await;
    ingestor.stop(d.grace() + EXIT_MARGIN).await;
}

/// SIGTERM to an ingestor in the middle of a request: it stops accepting connections at
/// once, yet the request in flight (its body still arriving) is answered, and the process
/// exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_ingestors_request_in_flight_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let d = Deployment::new(&[("WF_SHUTDOWN_GRACE", "20s")]).await;
    let mut ingestor = d.start(INGESTOR).await;
    let key = d.api_key().await;
    let body = json!({"name": "drained", "url": d.receiver.url("/drain"), "events": ["alert.*"]})
        .to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut stream = tokio::net::TcpStream::connect(ingestor.api).await.unwrap();
    let head = format!(
        "POST /api/v1/webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();

    ingestor.sigterm();
    let api = ingestor.api;
    eventually(
        "the ingestor refuses new connections",
        Duration::from_secs(30),
        || async move { tokio::net::TcpStream::connect(api).await.is_err() },
    )
    .await;
    stream.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("\"drained\""), "{answer}");

    let (status, _) = ingestor.wait_exit(d.grace() + EXIT_MARGIN).await;
    assert_eq!(status.code(), Some(0), "{status}");
}
