//! Durable retries on the `WF_RETRY_SCHEDULE` tiers (here `1s,2s`): the same delivery id
//! on every attempt, the attempt header counting up, and nothing lost when the worker
//! stops while deliveries wait in retry queues.

use std::time::Duration;

use serde_json::{json, Value};

use wf_testkit::eventually;
use wf_testkit::signature::seed_verify;

use crate::harness::{create_webhook, post_event, wait_status, Stack, StackOpts};

#[tokio::test(flavor = "multi_thread")]
async fn fails_twice_then_delivered_on_attempt_three() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let (hook, secret) = stack.webhook(&key, "/flaky", &["alert.created"]).await;
    stack.receiver.plan("/flaky", &[500, 503], 200);
    post_event(&stack, &key, "alert.created", json!({"n": 1})).await;

    let got = stack.receiver.wait_for("/flaky", 3).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r.header("x-workflows-delivery"))
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "delivery id changed: {ids:?}"
    );
    let attempts: Vec<&str> = got
        .iter()
        .map(|r| r.header("x-workflows-attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "body changed between attempts"
    );
    for r in &got {
        assert!(seed_verify(
            &r.body,
            &secret,
            r.header("x-workflows-signature")
        ));
    }

    let d = &wait_status(&stack, &key, &hook, "delivered", 1).await[0];
    assert_eq!(d["id"], ids[0]);
    let a = d["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 3, "{d}");
    assert_eq!(a[0]["statusCode"], 500);
    assert_eq!(a[1]["statusCode"], 503);
    assert_eq!(a[2]["statusCode"], 200);
    assert_eq!(a[2]["error"], Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_stopped_with_retries_pending_loses_nothing() {
    let mut stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let (hook, _) = stack.webhook(&key, "/later", &["csv.uploaded"]).await;
    // Every first attempt fails, so every delivery sits in the 1 s retry tier.
    stack.receiver.plan("/later", &[500; 5], 200);
    for i in 0..5 {
        post_event(&stack, &key, "csv.uploaded", json!({"i": i})).await;
    }
    stack.receiver.wait_for("/later", 5).await;
    stack.stop_worker().await;
    // With no worker at all, the retries wait in RabbitMQ, not in a process.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stack.receiver.requests("/later").len(), 5);
    stack.start_worker().await;

    // Every retry comes back from the tier. (A fan-out the stopped worker had not acked
    // yet may also be delivered again, as attempt 1: at least once, not exactly once.)
    let retried = || {
        let mut seen: Vec<i64> = stack
            .receiver
            .requests("/later")
            .iter()
            .filter(|r| r.header("x-workflows-attempt") == "2")
            .map(|r| r.json()["data"]["i"].as_i64().unwrap())
            .collect();
        seen.sort();
        seen.dedup();
        seen
    };
    wf_testkit::eventually(
        "attempt 2 of every delivery",
        Duration::from_secs(30),
        || {
            let seen = retried();
            async move { seen == [0, 1, 2, 3, 4] }
        },
    )
    .await;
    wait_status(&stack, &key, &hook, "delivered", 5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failure_kinds_are_logged_with_their_error() {
    let stack = Stack::start_with(StackOpts {
        retry_schedule: "1s",
        delivery_timeout: "500ms",
        ..Default::default()
    })
    .await;
    let (_, key) = stack.new_org().await;
    // 3xx is a failure and is not followed.
    let (redirect, _) = stack.webhook(&key, "/moved", &["alert.created"]).await;
    stack.receiver.plan("/moved", &[], 302);
    // Connection refused: a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let (refused, _) = create_webhook(
        &stack,
        &key,
        &format!("https://127.0.0.1:{closed_port}/x"),
        &["alert.created"],
    )
    .await;
    // TLS failure: a second receiver whose certificate nobody trusts.
    let untrusted = wf_testkit::Receiver::start().await;
    let (tls, _) = create_webhook(&stack, &key, &untrusted.url("/tls"), &["alert.created"]).await;
    // Timeout: a listener that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let (timeout, _) = create_webhook(
        &stack,
        &key,
        &format!("https://127.0.0.1:{silent_port}/slow"),
        &["alert.created"],
    )
    .await;

    post_event(&stack, &key, "alert.created", json!({})).await;
    for (hook, want) in [
        (redirect, "3xx"),
        (refused, "connect_error"),
        (tls, "tls_error"),
        (timeout, "timeout"),
    ] {
        let d = &wait_status(&stack, &key, &hook, "dead", 1).await[0];
        let a = d["attempts"].as_array().unwrap();
        assert_eq!(a.len(), 2, "1 + N attempts with a 1-step schedule: {d}");
        let err = a[0]["error"].as_str().unwrap_or_default().to_lowercase();
        let ok = match want {
            "3xx" => a[0]["statusCode"] == 302 && err.contains("redirect"),
            "connect_error" => err.contains("connect") || err.contains("refused"),
            "tls_error" => err.contains("certificate") || err.contains("tls"),
            "timeout" => err.contains("timed out") || err.contains("timeout"),
            _ => false,
        };
        assert!(ok, "{want}: {d}");
    }
    assert_eq!(stack.receiver.requests("/moved").len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn always_failing_is_dead_lettered_then_replayed() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let (hook, secret) = stack
        .webhook(&key, "/down", &["billing.payment_failed"])
        .await;
    stack.receiver.plan("/down", &[], 500);
    post_event(
        &stack,
        &key,
        "billing.payment_failed",
        json!({"invoice": "inv_1"}),
    )
    .await;

    // 1 + N attempts with the `1s,2s` schedule, then dead: in the API and in the queue.
    let d = wait_status(&stack, &key, &hook, "dead", 1).await.remove(0);
    assert_eq!(d["attempts"].as_array().unwrap().len(), 3, "{d}");
    assert_eq!(stack.receiver.requests("/down").len(), 3);
    let broker = stack.broker().await;
    let dead = eventually("the dead letter", Duration::from_secs(10), || async {
        broker.get(wf_broker::names::DEAD_QUEUE).await.unwrap()
    })
    .await;
    let job = wf_core::messages::DeliveryJob::decode(&dead.body).unwrap();
    assert_eq!(job.v1().delivery_id.as_str(), d["id"].as_str().unwrap());
    match dead.headers.get("x-wf-last-error") {
        Some(wf_broker::HeaderValue::Str(e)) => assert!(!e.is_empty()),
        other => panic!("no last error header: {other:?}"),
    }
    assert!(
        matches!(dead.headers.get("x-wf-reason"), Some(wf_broker::HeaderValue::Str(r)) if r == "retries_exhausted")
    );
    dead.nack(true).await.unwrap();

    // Bad replay requests are refused at the edge.
    let path = format!("/api/v1/webhooks/{hook}/replay");
    let (s, b) = stack
        .api(
            "POST",
            &path,
            Some(&key),
            Some(json!({"status": "delivered"})),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (422, Some("invalid_status")),
        "{b}"
    );
    let (s, b) = stack
        .api(
            "POST",
            &path,
            Some(&key),
            Some(json!({"status": "dead", "since": "soon"})),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (422, Some("invalid_timestamp")),
        "{b}"
    );
    let (s, b) = stack
        .api(
            "POST",
            &path,
            Some(&key),
            Some(json!({"status": "dead", "until": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(
        (s, b["data"]["queued"].as_u64()),
        (202, Some(0)),
        "a window with nothing in it: {b}"
    );

    // The endpoint recovers; the replay delivers once, signed afresh, attempt 4.
    stack.receiver.plan("/down", &[], 200);
    let (s, b) = stack
        .api("POST", &path, Some(&key), Some(json!({"status": "dead"})))
        .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["data"]["queued"], 1);
    let got = stack.receiver.wait_for("/down", 4).await;
    let last = &got[3];
    assert_eq!(last.header("x-workflows-attempt"), "4");
    assert_eq!(
        last.header("x-workflows-delivery"),
        d["id"].as_str().unwrap()
    );
    assert!(seed_verify(
        &last.body,
        &secret,
        last.header("x-workflows-signature")
    ));
    assert_eq!(last.body, got[0].body);
    wait_status(&stack, &key, &hook, "delivered", 1).await;
    // Replaying again finds nothing dead.
    let (s, b) = stack
        .api("POST", &path, Some(&key), Some(json!({"status": "dead"})))
        .await;
    assert_eq!((s, b["data"]["queued"].as_u64()), (202, Some(0)));
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_retry_resends_one_delivery_now() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let (_, other_key) = stack.new_org().await;
    let (hook, _) = stack.webhook(&key, "/again", &["user.joined"]).await;
    post_event(&stack, &key, "user.joined", json!({"user": "u1"})).await;
    let d = wait_status(&stack, &key, &hook, "delivered", 1)
        .await
        .remove(0);
    let id = d["id"].as_str().unwrap();

    let path = format!("/api/v1/webhooks/{hook}/deliveries/{id}/retry");
    let (s, b) = stack.api("POST", &path, Some(&other_key), None).await;
    assert_eq!(s, 404, "another org's delivery: {b}");
    let (s, b) = stack
        .api(
            "POST",
            &format!("/api/v1/webhooks/{hook}/deliveries/dlv_nope/retry"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = stack.api("POST", &path, Some(&key), None).await;
    assert_eq!(s, 202, "{b}");
    let got = stack.receiver.wait_for("/again", 2).await;
    assert_eq!(got[1].header("x-workflows-delivery"), id);
    assert_eq!(got[1].header("x-workflows-attempt"), "2");
    assert_eq!(got[1].body, got[0].body);
}

#[tokio::test(flavor = "multi_thread")]
async fn deactivated_webhook_pending_retries_are_dropped() {
    let stack = Stack::start_with(StackOpts {
        retry_schedule: "2s",
        ..Default::default()
    })
    .await;
    let (_, key) = stack.new_org().await;
    let (hook, _) = stack.webhook(&key, "/off", &["alert.resolved"]).await;
    stack.receiver.plan("/off", &[], 500);
    post_event(&stack, &key, "alert.resolved", json!({})).await;
    wait_status(&stack, &key, &hook, "failed", 1).await;
    let (s, _) = stack
        .api(
            "PATCH",
            &format!("/api/v1/webhooks/{hook}"),
            Some(&key),
            Some(json!({"isActive": false})),
        )
        .await;
    assert_eq!(s, 200);
    // The retry comes due (2 s) and is dropped, not sent: the log stays at one attempt.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stack.receiver.requests("/off").len(), 1);
    let (s, b) = stack
        .api(
            "POST",
            &format!("/api/v1/webhooks/{hook}/replay"),
            Some(&key),
            Some(json!({"status": "dead"})),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("webhook_inactive")),
        "{b}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_endpoint_opens_its_circuit_without_slowing_others() {
    let stack = Stack::start_with(StackOpts {
        retry_schedule: "1h",
        ..Default::default()
    })
    .await;
    let (_, key) = stack.new_org().await;
    let (broken, _) = stack.webhook(&key, "/broken", &["alert.created"]).await;
    stack.receiver.plan("/broken", &[], 500);
    // A healthy receiver on another port is another endpoint.
    let healthy = stack.receiver.another_port().await;
    let (s, b) = stack
        .api(
            "POST",
            "/api/v1/webhooks",
            Some(&key),
            Some(json!({"name": "ok", "url": healthy.url("/fine"), "events": ["alert.created"]})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    // Five real failures open the circuit. (Waiting for them before the next events:
    // attempts already in flight when the fifth failure lands are sent anyway, so
    // posting all eight at once made the count of unsent ones depend on timing.)
    for i in 0..5 {
        post_event(&stack, &key, "alert.created", json!({"i": i})).await;
    }
    wait_status(&stack, &key, &broken, "failed", 5).await;
    // With the circuit open, the next ones are not sent and spend no attempt: they wait
    // on the retry tier, pending, with their attempt number untouched.
    for i in 5..8 {
        post_event(&stack, &key, "alert.created", json!({"i": i})).await;
    }
    let held = wait_status(&stack, &key, &broken, "pending", 3).await;
    for d in &held {
        assert_eq!(d["attempts"], json!([]), "held back, never sent: {d}");
    }
    assert_eq!(stack.receiver.requests("/broken").len(), 5);
    let broker = stack.broker().await;
    eventually(
        "the held-back deliveries parked on the retry tier",
        Duration::from_secs(10),
        || async {
            let n = broker.queue_depth("workflows.retry.1h").await.unwrap();
            if n >= 8 {
                Ok(())
            } else {
                Err(format!("{n} parked"))
            }
        },
    )
    .await;
    let mut deferred = 0;
    for _ in 0..8 {
        let m = broker
            .get("workflows.retry.1h")
            .await
            .unwrap()
            .expect("parked");
        let job = wf_core::messages::DeliveryJob::decode(&m.body).unwrap();
        match m.headers.get("x-wf-deferred") {
            Some(wf_broker::HeaderValue::Str(r)) => {
                assert_eq!(r, "circuit_open");
                assert_eq!(job.v1().attempt, 1, "a held-back delivery keeps its number");
                assert!(job.v1().unavailable_since_ms.is_some());
                deferred += 1;
            }
            _ => assert_eq!(
                job.v1().attempt,
                2,
                "a failed attempt's retry is the next one"
            ),
        }
    }
    assert_eq!(deferred, 3);
    // The healthy endpoint got every event, on the first attempt.
    let fine = healthy.wait_for("/fine", 8).await;
    assert!(fine.iter().all(|r| r.header("x-workflows-attempt") == "1"));
}
