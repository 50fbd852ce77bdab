//! Durable retries on the `WF_RETRY_SCHEDULE` tiers (here `1s,2s`): the same delivery id
//! on every attempt, the attempt header counting up, and nothing lost when the worker
//! stops while deliveries wait in retry queues.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{eventually, seed_verify, Stack};

async fn post_event(stack: &Stack, key: &str, event: &str, data: Value) {
    let (s, b) = stack
        .api(
            "POST",
            "/api/v1/events",
            Some(key),
            Some(json!({"event": event, "data": data})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
}

/// Polls the delivery log until a delivery of `webhook` has `status`.
pub async fn wait_status(
    stack: &Stack,
    key: &str,
    webhook: &str,
    status: &str,
    n: usize,
) -> Vec<Value> {
    eventually(
        &format!("{n} deliveries of {webhook} with status {status}"),
        Duration::from_secs(30),
        || async move {
            let (s, b) = stack
                .api(
                    "GET",
                    &format!("/api/v1/webhooks/{webhook}/deliveries?status={status}"),
                    Some(key),
                    None,
                )
                .await;
            assert_eq!(s, 200, "{b}");
            let items = b["data"].as_array().cloned().unwrap_or_default();
            (items.len() >= n).then_some(items)
        },
    )
    .await
}

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

    let got = stack.receiver.wait_for("/later", 10).await;
    let mut delivered: Vec<i64> = got
        .iter()
        .filter(|r| r.header("x-workflows-attempt") == "2")
        .map(|r| r.json()["data"]["i"].as_i64().unwrap())
        .collect();
    delivered.sort();
    assert_eq!(delivered, [0, 1, 2, 3, 4]);
    wait_status(&stack, &key, &hook, "delivered", 5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failure_kinds_are_logged_with_their_error() {
    let stack = Stack::start_with(crate::harness::StackOpts {
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
    let (refused, _) = create(&stack, &key, &format!("https://127.0.0.1:{closed_port}/x")).await;
    // TLS failure: a second receiver whose certificate nobody trusts.
    let untrusted = crate::harness::Receiver::start().await;
    let (tls, _) = create(&stack, &key, &untrusted.url("/tls")).await;
    // Timeout: a listener that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let (timeout, _) = create(
        &stack,
        &key,
        &format!("https://127.0.0.1:{silent_port}/slow"),
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

async fn create(stack: &Stack, key: &str, url: &str) -> (String, String) {
    let (s, b) = stack
        .api(
            "POST",
            "/api/v1/webhooks",
            Some(key),
            Some(json!({"name": "k", "url": url, "events": ["alert.created"]})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    (
        b["data"]["id"].as_str().unwrap().to_owned(),
        b["data"]["secret"].as_str().unwrap().to_owned(),
    )
}
