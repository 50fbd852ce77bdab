//! Bad input straight onto the exchange: every malformed event lands in
//! `workflows.events.invalid` with its reason, and the worker keeps delivering.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use wf_testkit::eventually;

use crate::amqp::{header_str, Amqp};
use crate::harness::Stack;

/// The exchange upstream services publish their events to.
const EVENTS: &str = "workflows.events";

#[tokio::test(flavor = "multi_thread")]
async fn malformed_amqp_events_are_dead_lettered_with_reasons() {
    let stack = Stack::start().await;
    let (org, key) = stack.new_org().await;
    let _ = stack.webhook(&key, "/after", &["alert.created"]).await;
    let amqp = Amqp::connect(&stack.vhost).await;

    let oversized =
        json!({"event": "alert.created", "orgId": org, "data": {"blob": "x".repeat(300 * 1024)}})
            .to_string();
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "alert.created",
            b"this is not json".to_vec(),
            "invalid_json",
        ),
        (
            "alert.exploded",
            json!({"event": "alert.exploded", "orgId": org})
                .to_string()
                .into_bytes(),
            "unknown_event",
        ),
        (
            "alert.created",
            json!({"event": "alert.created", "data": {}})
                .to_string()
                .into_bytes(),
            "missing_org_id",
        ),
        ("alert.created", oversized.into_bytes(), "too_large"),
        ("alert.created", b"[]".to_vec(), "not_an_object"),
    ];
    for (rk, body, _) in &bad {
        amqp.publish(EVENTS, rk, body).await;
    }
    // The worker is still delivering good events after all that.
    let good = json!({"event": "alert.created", "orgId": org, "data": {"ok": true}});
    amqp.publish(EVENTS, "alert.created", good.to_string().as_bytes())
        .await;
    let got = stack.receiver.wait_for("/after", 1).await;
    assert_eq!(got[0].json()["data"]["ok"], true);

    let want: HashSet<&str> = bad.iter().map(|(_, _, r)| *r).collect();
    let reasons = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    eventually(
        "all invalid events in workflows.events.invalid",
        Duration::from_secs(15),
        || {
            let (amqp, reasons, want) = (&amqp, reasons.clone(), &want);
            async move {
                while let Some(m) = amqp.get("workflows.events.invalid").await {
                    if let Some(r) = header_str(&m, "x-wf-reason") {
                        reasons.lock().unwrap().insert(r);
                    }
                    Amqp::ack(&m).await;
                }
                let got = reasons.lock().unwrap();
                want.iter().all(|r| got.contains(*r)).then_some(())
            }
        },
    )
    .await;
    let reasons = reasons.lock().unwrap().clone();
    assert_eq!(reasons.len(), bad.len(), "{reasons:?}");
    amqp.close().await;
}
