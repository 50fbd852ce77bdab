//! `POST /webhooks/{id}/test`: an example event of one type, to that webhook only,
//! through the normal pipeline.

use serde_json::{json, Value};
use wf_testkit::signature::{seed_verify, standard_verify};

use crate::harness::{assert_error, wait_status, Stack};

async fn test_send(stack: &Stack, key: &str, id: &str, body: Option<Value>) -> (u16, Value) {
    stack
        .api(
            "POST",
            &format!("/api/v1/webhooks/{id}/test"),
            Some(key),
            body,
        )
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_send_arrives_signed_at_that_webhook_only_and_is_logged() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let (a, secret) = stack
        .webhook(&key, "/a", &["alert.*", "csv.uploaded"])
        .await;
    let (b, _) = stack.webhook(&key, "/b", &["alert.*"]).await;

    // No body: the first type the webhook subscribes to (`alert.*` → `alert.created`).
    let (s, r) = test_send(&stack, &key, &a, None).await;
    assert_eq!(s, 202, "{r}");
    let delivery = r["data"]["deliveryId"].as_str().unwrap().to_owned();
    let event = r["data"]["eventId"].as_str().unwrap().to_owned();
    assert!(
        delivery.starts_with("dlv_") && event.starts_with("evt_"),
        "{r}"
    );

    let got = stack.receiver.wait_for("/a", 1).await.remove(0);
    assert_eq!(got.header("x-workflows-event"), "alert.created");
    assert_eq!(got.header("x-workflows-delivery"), delivery);
    assert!(seed_verify(
        &got.body,
        &secret,
        got.header("x-workflows-signature")
    ));
    assert!(standard_verify(&got, &secret));
    let body = got.json();
    let (_, types) = stack.api("GET", "/api/v1/event-types", None, None).await;
    assert_eq!(body["event"], "alert.created");
    assert_eq!(
        body["data"], types["data"][0]["example"],
        "the catalog's example"
    );

    // In the delivery log, delivered; the event has this one delivery.
    let logged = wait_status(&stack, &key, &a, "delivered", 1).await;
    assert_eq!(logged[0]["id"], delivery.as_str());
    let (s, e) = stack
        .api("GET", &format!("/api/v1/events/{event}"), Some(&key), None)
        .await;
    assert_eq!(s, 200, "{e}");
    let deliveries = e["data"]["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{e}");
    assert_eq!(deliveries[0]["webhookId"], a.as_str());

    // An explicit type; then the other webhook's own test. B only ever gets its own.
    let (s, r) = test_send(&stack, &key, &a, Some(json!({"event": "csv.uploaded"}))).await;
    assert_eq!(s, 202, "{r}");
    let got = stack.receiver.wait_for("/a", 2).await.remove(1);
    assert_eq!(got.header("x-workflows-event"), "csv.uploaded");
    assert_eq!(got.json()["data"]["fileName"], "inventory-2026-05.csv");
    let (s, rb) = test_send(&stack, &key, &b, Some(json!({"event": "alert.critical"}))).await;
    assert_eq!(s, 202, "{rb}");
    let at_b = stack.receiver.wait_for("/b", 1).await;
    wait_status(&stack, &key, &b, "delivered", 1).await;
    assert_eq!(at_b.len(), 1);
    assert_eq!(
        at_b[0].header("x-workflows-delivery"),
        rb["data"]["deliveryId"]
    );
    let (_, log_b) = stack
        .api(
            "GET",
            &format!("/api/v1/webhooks/{b}/deliveries"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(log_b["data"].as_array().unwrap().len(), 1, "{log_b}");

    // It can be retried like any delivery.
    let (s, r) = stack
        .api(
            "POST",
            &format!("/api/v1/webhooks/{a}/deliveries/{delivery}/retry"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(s, 202, "{r}");
    let again = stack.receiver.wait_for("/a", 3).await;
    assert!(again
        .iter()
        .filter(|r| r.header("x-workflows-delivery") == delivery)
        .any(|r| r.header("x-workflows-attempt") == "2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn test_send_refusals() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let (_, other) = stack.new_org().await;
    let (id, _) = stack.webhook(&key, "/t", &["billing.*"]).await;

    let (s, b) = test_send(&stack, &key, &id, Some(json!({"event": "alert.nope"}))).await;
    assert_error(s, &b, 422, "unknown_event");
    assert_eq!(b["error"]["field"], "event");
    let (s, b) = test_send(&stack, &key, &id, Some(json!({"event": "alert.created"}))).await;
    assert_error(s, &b, 422, "event_not_subscribed");
    let (s, b) = test_send(&stack, &key, &id, Some(json!({"event": 3}))).await;
    assert_error(s, &b, 400, "invalid_json");
    let (s, b) = stack
        .api_raw(
            "POST",
            &format!("/api/v1/webhooks/{id}/test"),
            Some(&key),
            Some(b"{nope".to_vec()),
        )
        .await;
    assert_error(s, &b, 400, "invalid_json");
    let (s, b) = test_send(&stack, &other, &id, None).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = test_send(&stack, &key, "whk_missing", None).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = stack
        .api("POST", &format!("/api/v1/webhooks/{id}/test"), None, None)
        .await;
    assert_error(s, &b, 401, "missing_api_key");

    // Inactive: 409, as for a replay; enabled again, it goes.
    let path = format!("/api/v1/webhooks/{id}");
    stack
        .api("PATCH", &path, Some(&key), Some(json!({"isActive": false})))
        .await;
    let (s, b) = test_send(&stack, &key, &id, None).await;
    assert_error(s, &b, 409, "webhook_inactive");
    stack
        .api("PATCH", &path, Some(&key), Some(json!({"isActive": true})))
        .await;
    let (s, b) = test_send(&stack, &key, &id, Some(json!({}))).await;
    assert_eq!(s, 202, "{b}");
    let got = stack.receiver.wait_for("/t", 1).await.remove(0);
    assert_eq!(
        got.header("x-workflows-event"),
        "billing.subscription_activated"
    );
}
