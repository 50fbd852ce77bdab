//! Deliveries that are held back (an endpoint whose circuit is open) keep their attempt
//! number, and are given up as `endpoint_unavailable` only once their endpoint stayed
//! unavailable for longer than the whole retry schedule.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use wf_broker::HeaderValue;
use wf_core::messages::DeliveryJob;
use wf_testkit::{eventually, Recorded};

use crate::harness::{post_event, wait_status, Stack, StackOpts};

/// The `X-WorkFlows-Attempt` values each delivery id got, in arrival order.
fn attempts_by_delivery(requests: &[Recorded]) -> BTreeMap<String, Vec<u32>> {
    let mut by_id: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in requests {
        by_id
            .entry(r.header("x-workflows-delivery").to_owned())
            .or_default()
            .push(r.header("x-workflows-attempt").parse().expect("a number"));
    }
    by_id
}

#[tokio::test(flavor = "multi_thread")]
async fn held_back_deliveries_keep_their_attempt_numbers() {
    // Retries after 1 s, and circuits that stay open for 1 s (the first retry delay).
    let stack = Stack::start_with(StackOpts {
        retry_schedule: "1s,1s,1s,1s,1s,1s,1s,1s",
        ..Default::default()
    })
    .await;
    let (_, key) = stack.new_org().await;
    let (hook, _) = stack.webhook(&key, "/flaky", &["alert.created"]).await;
    // Five failures open the circuit; then the endpoint is fine again.
    stack
        .receiver
        .plan("/flaky", &[500, 500, 500, 500, 500], 200);
    for i in 0..5 {
        post_event(&stack, &key, "alert.created", json!({"i": i})).await;
    }
    wait_status(&stack, &key, &hook, "failed", 5).await;
    // While it is open these are held back; they are sent once it closes.
    for i in 5..8 {
        post_event(&stack, &key, "alert.created", json!({"i": i})).await;
    }
    let delivered = wait_status(&stack, &key, &hook, "delivered", 8).await;

    let requests = stack.receiver.requests("/flaky");
    let by_id = attempts_by_delivery(&requests);
    assert_eq!(by_id.len(), 8, "{by_id:?}");
    for (id, attempts) in &by_id {
        // Requests actually sent, numbered 1, 2, … without a gap: holding a delivery back
        // never spent a number.
        let expected: Vec<u32> = (1..=attempts.len() as u32).collect();
        assert_eq!(attempts, &expected, "{id}");
    }
    // The log agrees with what the endpoint saw, attempt by attempt.
    for d in &delivered {
        let id = d["id"].as_str().unwrap();
        let logged: Vec<u64> = d["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["attempt"].as_u64().unwrap())
            .collect();
        let sent: Vec<u64> = by_id[id].iter().map(|n| u64::from(*n)).collect();
        assert_eq!(logged, sent, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_unavailable_past_the_schedule_gives_its_deliveries_up() {
    // The schedule spans 2 s; the endpoint never recovers.
    let stack = Stack::start_with(StackOpts {
        retry_schedule: "1s,1s",
        ..Default::default()
    })
    .await;
    let (_, key) = stack.new_org().await;
    let (hook, _) = stack.webhook(&key, "/down", &["alert.created"]).await;
    stack.receiver.plan("/down", &[], 500);
    for i in 0..5 {
        post_event(&stack, &key, "alert.created", json!({"i": i})).await;
    }
    wait_status(&stack, &key, &hook, "failed", 5).await;
    for i in 5..8 {
        post_event(&stack, &key, "alert.created", json!({"i": i})).await;
    }
    wait_status(&stack, &key, &hook, "dead", 8).await;

    // Each dead letter says why; what was never sent says so, and the count of requests
    // the endpoint got for it matches: a delivery given up as `endpoint_unavailable` was
    // stopped before its next attempt, one given up as `retries_exhausted` after it.
    let requests = stack.receiver.requests("/down");
    let by_id = attempts_by_delivery(&requests);
    let broker = stack.broker().await;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let dead = eventually("8 dead letters", Duration::from_secs(10), || async {
        let n = broker
            .queue_depth("workflows.deliveries.dead")
            .await
            .unwrap();
        if n >= 8 {
            Ok(n)
        } else {
            Err(format!("{n} so far"))
        }
    })
    .await;
    assert_eq!(dead, 8);
    for _ in 0..8 {
        let m = broker
            .get("workflows.deliveries.dead")
            .await
            .unwrap()
            .expect("a dead letter");
        let job = DeliveryJob::decode(&m.body).unwrap();
        let j = job.v1();
        let sent = by_id
            .get(j.delivery_id.as_str())
            .map_or(0, |a| a.len() as u32);
        let reason = match m.headers.get("x-wf-reason") {
            Some(HeaderValue::Str(r)) => r.clone(),
            other => panic!("no reason: {other:?}"),
        };
        match reason.as_str() {
            "endpoint_unavailable" => {
                assert_eq!(sent, j.attempt - 1, "stopped before attempt {}", j.attempt);
                assert!(j.unavailable_since_ms.is_some());
                match m.headers.get("x-wf-last-error") {
                    Some(HeaderValue::Str(e)) => {
                        assert!(
                            e.starts_with("endpoint_unavailable: unavailable for"),
                            "{e}"
                        )
                    }
                    other => panic!("no last error: {other:?}"),
                }
            }
            "retries_exhausted" => assert_eq!(sent, j.attempt, "its last attempt was sent"),
            other => panic!("unexpected reason {other}"),
        }
        *reasons.entry(reason).or_default() += 1;
    }
    assert!(
        reasons.get("endpoint_unavailable").copied().unwrap_or(0) >= 1,
        "{reasons:?}"
    );
    // The log records the reason for what was given up unsent.
    let store = &stack.store;
    let unavailable = store
        .replay_items(&wf_store::ReplayFilter {
            status: Some(wf_store::DeliveryStatus::Dead),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|d| {
            d.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("endpoint_unavailable"))
        })
        .count();
    assert_eq!(unavailable, reasons["endpoint_unavailable"]);
}
