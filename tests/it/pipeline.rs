//! The whole path: register a webhook, publish events over HTTP and straight onto the
//! exchange, and check what the subscriber receives, byte for byte.

use std::time::Duration;

use serde_json::{json, Value};

use wf_testkit::signature::{seed_verify, standard_verify};
use wf_testkit::{eventually, Recorded};

use crate::amqp::Amqp;
use crate::harness::{refuse_events, Stack};

fn assert_signed_delivery(r: &Recorded, secret: &str, event: &str, attempt: &str) {
    assert!(
        seed_verify(&r.body, secret, r.header("x-workflows-signature")),
        "seed verification failed: {}",
        r.header("x-workflows-signature")
    );
    assert!(
        standard_verify(r, secret),
        "standard webhooks verification failed"
    );
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("x-workflows-event"), event);
    assert!(r.header("x-workflows-delivery").starts_with("dlv_"));
    assert_eq!(r.header("x-workflows-attempt"), attempt);
    assert_eq!(r.header("webhook-id"), r.header("x-workflows-delivery"));
    let ts: i64 = r
        .header("webhook-timestamp")
        .parse()
        .expect("numeric timestamp");
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 300);
    assert!(r.header("webhook-signature").starts_with("v1,"));
    assert!(r.header("user-agent").starts_with("WorkFlows-Webhooks/"));
}

#[tokio::test(flavor = "multi_thread")]
async fn http_and_amqp_events_are_delivered_signed() {
    let stack = Stack::start().await;
    let (org, key) = stack.new_org().await;
    let (_, secret) = stack
        .webhook(&key, "/hook", &["alert.created", "csv.uploaded"])
        .await;

    // Over HTTP: the response comes after the broker confirmed.
    let (status, body) = stack
        .api(
            "POST",
            "/api/v1/events",
            Some(&key),
            Some(json!({
                "event": "alert.created",
                "timestamp": "2026-05-19T12:05:00.000Z",
                "data": {"id": "alt_xyz789", "title": "Low inventory: Raw Material A", "severity": "critical",
                         "projectId": "proj_abc123", "area": "Inventory", "value": "45 units", "threshold": "100 units"}
            })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(body["data"]["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(body["data"]["event"], "alert.created");

    let got = stack.receiver.wait_for("/hook", 1).await;
    let r = &got[0];
    assert_signed_delivery(r, &secret, "alert.created", "1");
    // Byte for byte what the docs show: field order, timestamp format, data untouched.
    let expected = format!(
        r#"{{"event":"alert.created","orgId":"{org}","timestamp":"2026-05-19T12:05:00.000Z","data":{{"id":"alt_xyz789","title":"Low inventory: Raw Material A","severity":"critical","projectId":"proj_abc123","area":"Inventory","value":"45 units","threshold":"100 units"}}}}"#
    );
    assert_eq!(std::str::from_utf8(&r.body).unwrap(), expected);

    // Straight onto the exchange, as an upstream service would.
    let amqp = Amqp::connect(&stack.vhost).await;
    let amqp_body = json!({"id": "evt_from_amqp_1", "event": "csv.uploaded", "orgId": org,
                           "data": {"file": "q3.csv", "rows": 1200}})
    .to_string();
    amqp.publish("workflows.events", "csv.uploaded", amqp_body.as_bytes())
        .await;
    let got = stack.receiver.wait_for("/hook", 2).await;
    let r = &got[1];
    assert_signed_delivery(r, &secret, "csv.uploaded", "1");
    let v = r.json();
    assert_eq!(v["event"], "csv.uploaded");
    assert_eq!(v["orgId"], org.as_str());
    assert_eq!(v["data"], json!({"file": "q3.csv", "rows": 1200}));
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["event", "orgId", "timestamp", "data"]);
    amqp.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_matching_active_webhooks_of_the_org_receive() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let (_, other_key) = stack.new_org().await;

    let _ = stack.webhook(&key, "/alerts", &["alert.*"]).await;
    let _ = stack
        .webhook(&key, "/billing", &["billing.payment_failed"])
        .await;
    let (inactive, _) = stack.webhook(&key, "/inactive", &["alert.created"]).await;
    let (deleted, _) = stack.webhook(&key, "/deleted", &["alert.created"]).await;
    let _ = stack
        .webhook(&other_key, "/other-org", &["alert.created"])
        .await;

    let (s, _) = stack
        .api(
            "PATCH",
            &format!("/api/v1/webhooks/{inactive}"),
            Some(&key),
            Some(json!({"isActive": false})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = stack
        .api(
            "DELETE",
            &format!("/api/v1/webhooks/{deleted}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(s, 204);

    for ev in ["alert.created", "alert.critical", "user.joined"] {
        let (s, b) = stack
            .api(
                "POST",
                "/api/v1/events",
                Some(&key),
                Some(json!({"event": ev, "data": {}})),
            )
            .await;
        assert_eq!(s, 202, "{b}");
    }
    // A marker event after the others: once it arrives, the others had their chance.
    let (s, _) = stack
        .api(
            "POST",
            "/api/v1/events",
            Some(&key),
            Some(json!({"event": "billing.payment_failed", "data": {}})),
        )
        .await;
    assert_eq!(s, 202);
    stack.receiver.wait_for("/billing", 1).await;
    let alerts = stack.receiver.wait_for("/alerts", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let kinds: Vec<String> = alerts
        .iter()
        .map(|r| r.header("x-workflows-event").to_owned())
        .collect();
    assert!(
        kinds.contains(&"alert.created".to_owned()) && kinds.contains(&"alert.critical".to_owned())
    );
    assert_eq!(
        stack.receiver.requests("/alerts").len(),
        2,
        "user.joined must not match alert.*"
    );
    assert!(
        stack.receiver.requests("/inactive").is_empty(),
        "inactive webhook received"
    );
    assert!(
        stack.receiver.requests("/deleted").is_empty(),
        "deleted webhook received"
    );
    assert!(
        stack.receiver.requests("/other-org").is_empty(),
        "other organisation received"
    );
    assert_eq!(stack.receiver.requests("/billing").len(), 1);
}

/// A management action while the broker refuses events (here: `workflows.fanout` unbound
/// from `workflows.events`, so every event publish is unroutable): the action succeeds,
/// its system event is parked instead of lost, and it arrives once the broker routes
/// events again, published by the outbox relay.
#[tokio::test(flavor = "multi_thread")]
async fn a_system_event_the_broker_refused_arrives_once_it_takes_events_again() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    stack
        .webhook(&key, "/mgmt-later", &["webhook.created"])
        .await;
    stack.receiver.wait_for("/mgmt-later", 1).await;

    let conn = refuse_events(&stack.vhost).await;
    let (created, _) = stack.webhook(&key, "/y", &["alert.created"]).await;
    eventually("the event parked", Duration::from_secs(10), || async {
        (stack.store.parked_events().await.unwrap() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stack.receiver.requests("/mgmt-later").len(), 1);

    let broker = stack.broker().await;
    broker
        .declare_topology(&wf_broker::Topology::for_config(
            &stack.config(wf_core::config::Role::Worker),
        ))
        .await
        .unwrap();
    let got = stack.receiver.wait_for("/mgmt-later", 2).await;
    assert_eq!(got[1].header("x-workflows-event"), "webhook.created");
    assert_eq!(got[1].json()["data"]["id"], created.as_str());
    eventually("the outbox empty", Duration::from_secs(10), || async {
        (stack.store.parked_events().await.unwrap() == 0).then_some(())
    })
    .await;
    broker.close().await;
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn management_actions_emit_their_own_events() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let (_, secret) = stack
        .webhook(&key, "/mgmt", &["webhook.*", "api_key.*"])
        .await;
    let (other, _) = stack.webhook(&key, "/x", &["alert.created"]).await;
    // Its own creation and the second webhook's: a subscription is live as soon as it
    // exists, so it hears about itself too.
    let got = stack.receiver.wait_for("/mgmt", 2).await;
    let other_created = got
        .iter()
        .find(|r| r.json()["data"]["id"] == other.as_str())
        .expect("webhook.created for the second webhook");
    assert_eq!(other_created.header("x-workflows-event"), "webhook.created");
    assert!(
        other_created.json()["data"].get("secret").is_none(),
        "secret leaked into an event"
    );
    assert!(seed_verify(
        &other_created.body,
        &secret,
        other_created.header("x-workflows-signature")
    ));

    stack
        .api(
            "PATCH",
            &format!("/api/v1/webhooks/{other}"),
            Some(&key),
            Some(json!({"isActive": false})),
        )
        .await;
    stack
        .api(
            "PATCH",
            &format!("/api/v1/webhooks/{other}"),
            Some(&key),
            Some(json!({"isActive": true})),
        )
        .await;
    stack
        .api(
            "DELETE",
            &format!("/api/v1/webhooks/{other}"),
            Some(&key),
            None,
        )
        .await;
    let (s, k) = stack
        .api(
            "POST",
            "/api/v1/api-keys",
            Some(&key),
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(s, 201, "{k}");
    let kid = k["data"]["id"].as_str().unwrap();
    let (s, _) = stack
        .api(
            "DELETE",
            &format!("/api/v1/api-keys/{kid}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(s, 204);

    let got = stack.receiver.wait_for("/mgmt", 7).await;
    let mut kinds: Vec<String> = got
        .iter()
        .map(|r| r.header("x-workflows-event").to_owned())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "api_key.created",
            "api_key.deleted",
            "webhook.created",
            "webhook.created",
            "webhook.deleted",
            "webhook.disabled",
            "webhook.enabled"
        ]
    );
    let created: Vec<Value> = got
        .iter()
        .filter(|r| r.header("x-workflows-event") == "api_key.created")
        .map(Recorded::json)
        .collect();
    assert!(
        created[0]["data"].get("key").is_none(),
        "API key leaked into an event"
    );
}
