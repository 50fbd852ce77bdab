//! Auto-disable (`WF_AUTO_DISABLE_AFTER`, here 3 s): no 2xx for the window and at least
//! 10 failed attempts since the last one disables a webhook with the reason `failing` and
//! emits `webhook.disabled`; fewer failures, or a 2xx inside the window, do not.

use std::time::Duration;

use serde_json::json;
use wf_testkit::{eventually, Receiver};

use crate::harness::{create_webhook, post_event, wait_status, Stack, StackOpts};

/// Every event of `events` to `key`'s organisation, one after the other.
async fn post_n(stack: &Stack, key: &str, event: &str, n: usize) {
    for i in 0..n {
        post_event(stack, key, event, json!({ "n": i })).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_webhooks_are_disabled_and_only_those() {
    let stack = Stack::start_with(StackOpts {
        // Three attempts per delivery, each a failure the circuit breaker ignores (a 400:
        // breakers count only transport errors, 5xx, 408 and 429), so every attempt is
        // really sent.
        retry_schedule: "1s,1s",
        extra: vec![("WF_AUTO_DISABLE_AFTER", "3s".to_owned())],
        ..StackOpts::default()
    })
    .await;
    let (_, key) = stack.new_org().await;
    // Each webhook has an endpoint (receiver port) of its own.
    let watcher = stack.receiver.another_port().await;
    create_webhook(&stack, &key, &watcher.url("/watch"), &["webhook.*"]).await;

    // Recovering: 11 failures (first attempts), then a 2xx well inside the window, then
    // only 2xx (the retries).
    let recovering = stack.receiver.another_port().await;
    recovering.plan("/r", &[400; 11], 200);
    let (r_id, _) = create_webhook(&stack, &key, &recovering.url("/r"), &["alert.created"]).await;
    post_n(&stack, &key, "alert.created", 12).await;
    wait_status(&stack, &key, &r_id, "delivered", 12).await;

    // Few: 9 failures (3 deliveries of 3 attempts), dead.
    let few = stack.receiver.another_port().await;
    few.plan("/f", &[], 400);
    let (few_id, _) = create_webhook(&stack, &key, &few.url("/f"), &["csv.uploaded"]).await;
    post_n(&stack, &key, "csv.uploaded", 3).await;
    wait_status(&stack, &key, &few_id, "dead", 3).await;
    assert_eq!(few.requests("/f").len(), 9);

    // Failing: 12 failures, started after the others finished.
    let failing = stack.receiver.another_port().await;
    failing.plan("/x", &[], 400);
    let (x_id, _) = create_webhook(&stack, &key, &failing.url("/x"), &["user.joined"]).await;
    post_n(&stack, &key, "user.joined", 4).await;

    let path = format!("/api/v1/webhooks/{x_id}");
    let disabled = eventually(
        "the failing webhook disabled",
        Duration::from_secs(30),
        || {
            let (stack, key, path) = (&stack, &key, &path);
            async move {
                let (_, b) = stack.api("GET", path, Some(key), None).await;
                (b["data"]["isActive"] == false).then_some(b)
            }
        },
    )
    .await;
    assert_eq!(disabled["data"]["disabledReason"], "failing", "{disabled}");
    assert!(failing.requests("/x").len() >= 10);

    // The others were past the window at that check too, and stay active.
    for id in [&r_id, &few_id] {
        let (_, b) = stack
            .api("GET", &format!("/api/v1/webhooks/{id}"), Some(&key), None)
            .await;
        assert_eq!(b["data"]["isActive"], true, "{b}");
        assert_eq!(b["data"]["disabledReason"], serde_json::Value::Null);
    }

    // The organisation heard about it.
    let ev = wait_for_event(&watcher, "webhook.disabled").await;
    assert_eq!(ev["data"]["id"], x_id.as_str());
    assert_eq!(ev["data"]["disabledReason"], "failing");
    assert_eq!(ev["data"]["isActive"], false);

    // Enabling it clears the reason and forgets the streak.
    let (s, b) = stack
        .api("PATCH", &path, Some(&key), Some(json!({"isActive": true})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["isActive"], true);
    assert_eq!(b["data"]["disabledReason"], serde_json::Value::Null);
    let id = wf_core::ids::WebhookId::parse(&x_id).unwrap();
    assert_eq!(stack.store.webhook_health(&id).await.unwrap(), None);
    let ev = wait_for_event(&watcher, "webhook.enabled").await;
    assert_eq!(ev["data"]["disabledReason"], serde_json::Value::Null);
}

/// The first event of type `event` the watcher received.
async fn wait_for_event(watcher: &Receiver, event: &str) -> serde_json::Value {
    eventually(
        &format!("{event} at the watcher"),
        Duration::from_secs(20),
        || async move {
            watcher
                .requests("/watch")
                .iter()
                .map(|r| r.json())
                .find(|b| b["event"] == event)
        },
    )
    .await
}
