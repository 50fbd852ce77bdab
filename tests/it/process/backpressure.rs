//! Slow, busy and rate-limited endpoints against the real worker binaries: a flood of slow
//! deliveries is worked through without spending attempts or dead-lettering anything while
//! another organisation's endpoint keeps delivering, and a webhook's `rateLimit` holds
//! across two workers.

use std::time::Duration;

use serde_json::json;
use wf_testkit::eventually;

use super::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_flooded_slow_endpoint_gets_everything_while_others_keep_delivering() {
    const FLOOD: usize = 240;
    const OTHERS: usize = 20;
    // A short schedule, as when every held-back delivery used to spend a retry.
    let d = Deployment::new(&[
        ("WF_RETRY_SCHEDULE", "1s,2s"),
        ("WF_DELIVERY_TIMEOUT", "10s"),
        ("WF_WORKER_CONCURRENCY", "32"),
    ])
    .await;
    d.receiver.delay("/slow", Duration::from_secs(1));
    let fast = d.receiver.another_port().await;
    let mut ingestor = d.start(INGESTOR).await;
    let mut worker = d.start(WORKER).await;
    let flooding = d.api_key().await;
    let other = d.api_key().await;
    let slow = d
        .webhook(&ingestor, &flooding, "/slow", &["alert.created"])
        .await;
    let body = json!({"name": "fast", "url": fast.url("/fast"), "events": ["alert.created"]});
    let (s, b) = post(ingestor.api, "/api/v1/webhooks", &other, &body).await;
    assert_eq!(s, 201, "{b}");

    let api = ingestor.api;
    let publishing = tokio::spawn({
        let key = flooding.clone();
        async move {
            for n in 0..FLOOD {
                let body = json!({"event": "alert.created", "data": {"n": n}});
                let (s, b) = post(api, "/api/v1/events", &key, &body).await;
                assert_eq!(s, 202, "{b}");
            }
        }
    });
    // Mid-flood, the other organisation's events are delivered one by one.
    eventually("the flood under way", Duration::from_secs(30), || async {
        d.receiver.requests("/slow").len() >= 10
    })
    .await;
    for n in 0..OTHERS {
        let body = json!({"event": "alert.created", "data": {"m": n}});
        let (s, b) = post(api, "/api/v1/events", &other, &body).await;
        assert_eq!(s, 202, "{b}");
        fast.wait_for("/fast", n + 1).await;
    }
    let slow_meanwhile = d.receiver.requests("/slow").len();
    assert!(
        slow_meanwhile < FLOOD,
        "the other endpoint was served while the flood was still being worked through \
         ({slow_meanwhile} of {FLOOD} slow deliveries made)"
    );
    publishing.await.unwrap();

    let got = all_logged_delivered(&d, api, &flooding, &slow, "/slow", FLOOD).await;
    let numbers: Vec<&str> = got
        .iter()
        .map(|r| r.header("x-workflows-attempt"))
        .collect();
    assert!(
        numbers.iter().all(|a| *a == "1"),
        "no delivery spent an attempt while it was held back: {numbers:?}"
    );
    assert!(deliveries(api, &flooding, &slow, "dead").await.is_empty());
    let fast_got = fast.requests("/fast");
    assert_eq!(fast_got.len(), OTHERS);
    assert!(fast_got
        .iter()
        .all(|r| r.header("x-workflows-attempt") == "1"));

    let m = worker.metrics().await;
    let sent = (FLOOD + OTHERS) as f64;
    assert_eq!(
        m.value("wf_delivery_attempts_total", &[("result", "2xx")]),
        sent
    );
    assert_eq!(
        m.sum("wf_delivery_attempts_total"),
        sent,
        "every attempt was a 2xx"
    );
    assert_eq!(m.value("wf_deliveries_total", &[("outcome", "dead")]), 0.0);
    let deferred = m.sum("wf_deliveries_deferred_total");
    let republished = m.sum("wf_deliveries_republished_total");
    println!("deferred {deferred}, re-published {republished} for {FLOOD} flooded deliveries");
    assert!(
        deferred > 0.0,
        "the flood was more than the endpoint could take at once"
    );
    assert!(
        republished <= 0.1 * FLOOD as f64,
        "waiting is cheap: {republished} re-publishes for {FLOOD} deliveries"
    );

    worker.stop(d.grace() + EXIT_MARGIN).await;
    ingestor.stop(d.grace() + EXIT_MARGIN).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_holds_across_two_workers() {
    const EVENTS: usize = 150;
    const LIMIT: usize = 10;
    let d = Deployment::new(&[("WF_RETRY_SCHEDULE", "1s,2s,4s")]).await;
    let mut ingestor = d.start(INGESTOR).await;
    let mut workers = [d.start(WORKER).await, d.start(WORKER).await];
    // Each worker takes half of the limit once it has counted the other.
    for w in &workers {
        eventually("both workers counted", Duration::from_secs(20), || async {
            w.metrics().await.value("wf_worker_fleet_size", &[]) == 2.0
        })
        .await;
    }
    let key = d.api_key().await;
    let body = json!({
        "name": "limited",
        "url": d.receiver.url("/limited"),
        "events": ["alert.created"],
        "rateLimit": LIMIT,
    });
    let (s, b) = post(ingestor.api, "/api/v1/webhooks", &key, &body).await;
    assert_eq!(s, 201, "{b}");
    let hook = b["data"]["id"].as_str().unwrap().to_owned();
    for n in 0..EVENTS {
        let body = json!({"event": "alert.created", "data": {"n": n}});
        let (s, b) = post(ingestor.api, "/api/v1/events", &key, &body).await;
        assert_eq!(s, 202, "{b}");
    }
    let got = all_logged_delivered(&d, ingestor.api, &key, &hook, "/limited", EVENTS).await;
    assert!(
        got.iter().all(|r| r.header("x-workflows-attempt") == "1"),
        "waiting for the rate limit spends no attempt"
    );
    // Over any 10-second window, at most the limit plus 10 %.
    let mut at: Vec<_> = got.iter().map(|r| r.at).collect();
    at.sort();
    let window = Duration::from_secs(10);
    let most = (0..at.len())
        .map(|i| at[i..].iter().take_while(|t| **t - at[i] < window).count())
        .max()
        .unwrap_or(0);
    let allowed = LIMIT * 10 * 11 / 10;
    println!("at most {most} deliveries in any 10 s (limit {LIMIT}/s, allowed {allowed})");
    assert!(most <= allowed, "{most} deliveries within 10 s");
    let mut deferred = 0.0;
    for w in &workers {
        deferred += w.metrics().await.value(
            "wf_deliveries_deferred_total",
            &[("reason", "rate_limited")],
        );
    }
    assert!(deferred > 0.0, "the limit held deliveries back");

    for w in &mut workers {
        w.stop(d.grace() + EXIT_MARGIN).await;
    }
    ingestor.stop(d.grace() + EXIT_MARGIN).await;
}
