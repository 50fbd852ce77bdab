//! Bad input straight onto the exchange: every malformed event lands in
//! `workflows.events.invalid` with its reason, and the worker keeps delivering.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use wf_broker::{names, HeaderValue, OutgoingMessage};

use wf_testkit::eventually;

use crate::harness::Stack;

#[tokio::test(flavor = "multi_thread")]
async fn malformed_amqp_events_are_dead_lettered_with_reasons() {
    let stack = Stack::start().await;
    let (org, key) = stack.new_org().await;
    let _ = stack.webhook(&key, "/after", &["alert.created"]).await;
    let broker = stack.broker().await;
    let publisher = broker.publisher().await.unwrap();

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
        publisher
            .publish(OutgoingMessage {
                exchange: names::EVENTS_EXCHANGE,
                routing_key: rk,
                body,
                message_id: None,
                headers: vec![],
                mandatory: true,
            })
            .await
            .unwrap();
    }
    // The worker is still delivering good events after all that.
    publisher
        .publish(OutgoingMessage {
            exchange: names::EVENTS_EXCHANGE,
            routing_key: "alert.created",
            body: json!({"event": "alert.created", "orgId": org, "data": {"ok": true}})
                .to_string()
                .as_bytes(),
            message_id: None,
            headers: vec![],
            mandatory: true,
        })
        .await
        .unwrap();
    let got = stack.receiver.wait_for("/after", 1).await;
    assert_eq!(got[0].json()["data"]["ok"], true);

    let want: HashSet<&str> = bad.iter().map(|(_, _, r)| *r).collect();
    let reasons = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    eventually(
        "all invalid events in workflows.events.invalid",
        Duration::from_secs(15),
        || {
            let (broker, reasons, want) = (&broker, reasons.clone(), &want);
            async move {
                while let Some(m) = broker.get(names::INVALID_QUEUE).await.unwrap() {
                    if let Some(HeaderValue::Str(r)) = m.headers.get("x-wf-reason") {
                        reasons.lock().unwrap().insert(r.clone());
                    }
                    m.ack().await.unwrap();
                }
                let got = reasons.lock().unwrap();
                want.iter().all(|r| got.contains(*r)).then_some(())
            }
        },
    )
    .await;
    let reasons = reasons.lock().unwrap().clone();
    assert_eq!(reasons.len(), bad.len(), "{reasons:?}");
    broker.close().await;
}
