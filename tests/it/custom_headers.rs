//! Custom request headers: the rules on create and update, the mask, what the receiver
//! gets (outside any signature), and no value in clear in the database.

use serde_json::{json, Value};
use wf_testkit::signature::{seed_verify, standard_verify};

use crate::harness::{assert_error, post_event, Stack};

async fn create(stack: &Stack, key: &str, path: &str, headers: Value) -> (u16, Value) {
    let url = stack.receiver.url(path);
    stack
        .api(
            "POST",
            "/api/v1/webhooks",
            Some(key),
            Some(json!({"name": "h", "url": url, "events": ["alert.*"], "headers": headers})),
        )
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn header_rules_on_create_and_update() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let (s, b) = create(&stack, &key, "/ok", json!({})).await;
    assert_eq!(s, 201, "{b}");
    let patch_path = format!("/api/v1/webhooks/{}", b["data"]["id"].as_str().unwrap());

    let many: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    let twenty: serde_json::Map<String, Value> =
        (0..20).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    let mut cases: Vec<(Value, &str)> = vec![
        (Value::Object(many), "too_many_headers"),
        (json!({"X-Big": "v".repeat(4096)}), "headers_too_large"),
        (json!({"X Space": "v"}), "invalid_header_name"),
        (json!({"X-Colon:": "v"}), "invalid_header_name"),
        (json!({"": "v"}), "invalid_header_name"),
        (
            json!({"X-Inject": "a\r\nX-Evil: 1"}),
            "invalid_header_value",
        ),
        (json!({"X-Lf": "a\nb"}), "invalid_header_value"),
        (json!({"X-Cr": "a\rb"}), "invalid_header_value"),
        (json!({"X-Ctl": "a\u{1}b"}), "invalid_header_value"),
        (json!({"X-Utf8": "é"}), "invalid_header_value"),
        (json!({"X-A": "1", "x-a": "2"}), "duplicate_header"),
    ];
    for reserved in [
        "Content-Type",
        "content-length",
        "HOST",
        "User-Agent",
        "Transfer-Encoding",
        "Connection",
        "X-WorkFlows-Signature",
        "x-workflows-delivery",
        "X-WorkFlows-Custom",
        "webhook-id",
        "Webhook-Signature",
        "webhook-anything",
    ] {
        cases.push((json!({ reserved: "v" }), "reserved_header"));
    }
    for (headers, code) in cases {
        let (s, b) = create(&stack, &key, "/r", headers.clone()).await;
        assert_error(s, &b, 422, code);
        assert_eq!(b["error"]["field"], "headers", "{headers} -> {b}");
        let (s, b) = stack
            .api(
                "PATCH",
                &patch_path,
                Some(&key),
                Some(json!({ "headers": headers })),
            )
            .await;
        assert_error(s, &b, 422, code);
    }
    // Wrong JSON types are 400.
    for bad in [
        json!(["X-A"]),
        json!("X-A: 1"),
        json!({"X-A": 1}),
        json!({"X-A": null}),
    ] {
        let (s, b) = create(&stack, &key, "/r", bad.clone()).await;
        assert_error(s, &b, 400, "invalid_json");
        assert_eq!(b["error"]["field"], "headers", "{bad}");
    }
    // The limits themselves are fine: 20 headers, 4096 bytes in all.
    let (s, b) = create(&stack, &key, "/r", Value::Object(twenty)).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = create(&stack, &key, "/r", json!({"X-Big": "v".repeat(4091)})).await;
    assert_eq!(s, 201, "{b}");
    // The webhook refused above is unchanged.
    let (s, b) = stack.api("GET", &patch_path, Some(&key), None).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["headers"], json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_are_sent_masked_in_the_api_replaced_and_cleared() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let (s, b) = create(
        &stack,
        &key,
        "/hdr",
        json!({"X-Api-Key": "gateway-secret-42", "X-Tenant": "acme corp"}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    // The create response shows the values, once.
    assert_eq!(
        b["data"]["headers"],
        json!({"X-Api-Key": "gateway-secret-42", "X-Tenant": "acme corp"})
    );
    let id = b["data"]["id"].as_str().unwrap().to_owned();
    let secret = b["data"]["secret"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/webhooks/{id}");
    let masked = json!({"X-Api-Key": "********", "X-Tenant": "********"});
    let (_, got) = stack.api("GET", &path, Some(&key), None).await;
    assert_eq!(got["data"]["headers"], masked);
    let (_, list) = stack.api("GET", "/api/v1/webhooks", Some(&key), None).await;
    assert_eq!(list["data"][0]["headers"], masked);

    // A delivery carries them, and both signatures verify: they cover the body (and the
    // Standard Webhooks id and timestamp), not the custom headers.
    post_event(&stack, &key, "alert.created", json!({"n": 1})).await;
    let r = stack.receiver.wait_for("/hdr", 1).await.remove(0);
    assert_eq!(r.header("x-api-key"), "gateway-secret-42");
    assert_eq!(r.header("x-tenant"), "acme corp");
    assert!(seed_verify(
        &r.body,
        &secret,
        r.header("x-workflows-signature")
    ));
    assert!(standard_verify(&r, &secret));
    let mut tampered = r.clone();
    tampered
        .headers
        .insert("x-api-key", "something-else".parse().unwrap());
    assert!(
        standard_verify(&tampered, &secret),
        "headers are not signed"
    );

    // PATCH replaces the whole set, and answers masked.
    let (s, b) = stack
        .api(
            "PATCH",
            &path,
            Some(&key),
            Some(json!({"headers": {"X-Other": "v2"}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["headers"], json!({"X-Other": "********"}));
    post_event(&stack, &key, "alert.created", json!({"n": 2})).await;
    let r = stack.receiver.wait_for("/hdr", 2).await.remove(1);
    assert_eq!(r.header("x-other"), "v2");
    assert_eq!(r.header("x-api-key"), "");

    // A PATCH of something else keeps them; `null` and `{}` clear them.
    let (_, b) = stack
        .api("PATCH", &path, Some(&key), Some(json!({"name": "renamed"})))
        .await;
    assert_eq!(b["data"]["headers"], json!({"X-Other": "********"}));
    for clear in [Value::Null, json!({})] {
        let (s, b) = stack
            .api(
                "PATCH",
                &path,
                Some(&key),
                Some(json!({ "headers": {"X-Again": "1"} })),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = stack
            .api(
                "PATCH",
                &path,
                Some(&key),
                Some(json!({ "headers": clear })),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["data"]["headers"], json!({}));
    }
    post_event(&stack, &key, "alert.created", json!({"n": 3})).await;
    let r = stack.receiver.wait_for("/hdr", 3).await.remove(2);
    assert_eq!(r.header("x-other"), "");
    assert_eq!(r.header("x-again"), "");

    // The database never held a value in clear.
    let (s, _) = stack
        .api(
            "PATCH",
            &path,
            Some(&key),
            Some(json!({"headers": {"X-Api-Key": "gateway-secret-42"}})),
        )
        .await;
    assert_eq!(s, 200);
    let c = stack.db.connect().await;
    let dump: String = c
        .query_one("SELECT string_agg(w::text, ' ') FROM webhooks w", &[])
        .await
        .unwrap()
        .get(0);
    assert!(dump.contains("X-Api-Key"));
    assert!(!dump.contains("gateway-secret-42"));
    let hex: String = "gateway-secret-42"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!dump.contains(&hex));
    // Nor does any system event (they carry the Webhook object, masked).
    let outbox: Option<String> = c
        .query_one("SELECT string_agg(body, ' ') FROM event_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!outbox.unwrap_or_default().contains("gateway-secret-42"));
}
