//! The rules a webhook must follow, one family per test, on create and on update: each
//! broken rule is refused at the edge with its own error code and the field at fault.

use serde_json::{json, Value};

use crate::harness::{assert_error, Stack};

/// A stack and an API key of a fresh organisation.
async fn setup() -> (Stack, String) {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    (stack, key)
}

async fn create(stack: &Stack, key: &str, body: Value) -> (u16, Value) {
    stack
        .api("POST", "/api/v1/webhooks", Some(key), Some(body))
        .await
}

/// Each body is refused with `status`, `code` and `error.field` = `field`.
async fn assert_refused(stack: &Stack, key: &str, cases: Vec<(Value, u16, &str, &str)>) {
    for (body, status, code, field) in cases {
        let (s, b) = create(stack, key, body.clone()).await;
        assert_error(s, &b, status, code);
        assert_eq!(b["error"]["field"], field, "{body} -> {b}");
    }
}

/// A valid webhook; returns the path that updates it.
async fn created(stack: &Stack, key: &str) -> String {
    let url = stack.receiver.url("/r");
    let (s, b) = create(
        stack,
        key,
        json!({"name": "a", "url": url, "events": ["alert.*"]}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    format!("/api/v1/webhooks/{}", b["data"]["id"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn names_are_required_and_at_most_100_characters() {
    let (stack, key) = setup().await;
    assert_refused(
        &stack,
        &key,
        vec![
            (
                json!({"name": "x".repeat(101), "url": "https://example.com/", "events": ["alert.created"]}),
                422,
                "name_too_long",
                "name",
            ),
            (
                json!({"name": "   ", "url": "https://example.com/", "events": ["alert.created"]}),
                422,
                "name_required",
                "name",
            ),
            (
                json!({"url": "https://example.com/", "events": ["alert.created"]}),
                422,
                "name_required",
                "name",
            ),
        ],
    )
    .await;
    // 100 characters (Unicode scalar values) is fine.
    let good = stack.receiver.url("/r");
    let (s, b) = create(
        &stack,
        &key,
        json!({"name": "é".repeat(100), "url": good, "events": ["alert.*"]}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn urls_must_be_public_https_without_credentials() {
    let (stack, key) = setup().await;
    let with_url = |url: Value| json!({"name": "a", "url": url, "events": ["alert.created"]});
    let mut cases = vec![(
        with_url(json!("http://example.com/hook")),
        422,
        "url_not_https",
        "url",
    )];
    for private in [
        "https://10.0.0.5/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://192.168.1.1/",
        "https://[::1]/",
        "https://localhost/",
        "https://metadata.google.internal/",
    ] {
        cases.push((with_url(json!(private)), 422, "url_private_address", "url"));
    }
    cases.extend([
        (with_url(json!("not a url")), 422, "invalid_url", "url"),
        (
            with_url(json!("https://user:pw@example.com/")),
            422,
            "invalid_url",
            "url",
        ),
        (
            with_url(json!(format!("https://example.com/{}", "a".repeat(2048)))),
            422,
            "url_too_long",
            "url",
        ),
        (
            json!({"name": "a", "events": ["alert.created"]}),
            422,
            "url_required",
            "url",
        ),
    ]);
    assert_refused(&stack, &key, cases).await;

    // PATCH applies the same rules.
    let path = created(&stack, &key).await;
    let (s, b) = stack
        .api(
            "PATCH",
            &path,
            Some(&key),
            Some(json!({"url": "http://example.com"})),
        )
        .await;
    assert_error(s, &b, 422, "url_not_https");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_must_be_known_types_and_not_empty() {
    let (stack, key) = setup().await;
    let with_events =
        |events: Value| json!({"name": "a", "url": "https://example.com/", "events": events});
    assert_refused(
        &stack,
        &key,
        vec![
            (
                with_events(json!(["alert.exploded"])),
                422,
                "unknown_event",
                "events",
            ),
            (
                with_events(json!(["Alert.Created"])),
                422,
                "unknown_event",
                "events",
            ),
            (with_events(json!([])), 422, "events_required", "events"),
            (
                json!({"name": "a", "url": "https://example.com/"}),
                422,
                "events_required",
                "events",
            ),
        ],
    )
    .await;

    // PATCH applies the same rules.
    let path = created(&stack, &key).await;
    let (s, b) = stack
        .api("PATCH", &path, Some(&key), Some(json!({"events": []})))
        .await;
    assert_error(s, &b, 422, "events_required");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_types_and_malformed_json_are_invalid_json() {
    let (stack, key) = setup().await;
    assert_refused(
        &stack,
        &key,
        vec![
            (
                json!({"name": 5, "url": "https://example.com/", "events": ["alert.created"]}),
                400,
                "invalid_json",
                "name",
            ),
            (
                json!({"name": "a", "url": "https://example.com/", "events": "alert.created"}),
                400,
                "invalid_json",
                "events",
            ),
            (
                json!({"name": "a", "url": "https://example.com/", "events": ["alert.created"], "isActive": "yes"}),
                400,
                "invalid_json",
                "isActive",
            ),
        ],
    )
    .await;
    // Malformed JSON, wrong top-level type, empty body.
    for raw in [&b"{\"name\": "[..], b"[1,2,3]", b"", b"nul"] {
        let (s, b) = stack
            .api_raw("POST", "/api/v1/webhooks", Some(&key), Some(raw.to_vec()))
            .await;
        assert_error(s, &b, 400, "invalid_json");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_1_mib_are_refused() {
    let (stack, key) = setup().await;
    let big = format!(
        r#"{{"name":"a","url":"https://example.com/","events":["alert.created"],"pad":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let (s, b) = stack
        .api_raw(
            "POST",
            "/api/v1/webhooks",
            Some(&key),
            Some(big.into_bytes()),
        )
        .await;
    assert_error(s, &b, 413, "payload_too_large");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_are_integers_from_1_to_10000_or_null() {
    let (stack, key) = setup().await;
    let url = stack.receiver.url("/r");
    let body =
        |rate: Value| json!({"name": "a", "url": url, "events": ["alert.*"], "rateLimit": rate});
    let mut cases = Vec::new();
    for rate in [json!(0), json!(10_001), json!(-5), json!(2.5), json!(1e9)] {
        cases.push((body(rate), 422, "invalid_rate_limit", "rateLimit"));
    }
    for rate in [
        json!("10"),
        json!(true),
        json!([5]),
        json!({"perSecond": 5}),
    ] {
        cases.push((body(rate), 400, "invalid_json", "rateLimit"));
    }
    assert_refused(&stack, &key, cases).await;

    // Accepted at both ends, returned as given; null is no limit.
    for (rate, want) in [
        (json!(1), json!(1)),
        (json!(10_000), json!(10_000)),
        (Value::Null, Value::Null),
    ] {
        let (s, b) = create(&stack, &key, body(rate)).await;
        assert_eq!(s, 201, "{b}");
        assert_eq!(b["data"]["rateLimit"], want);
    }
    // Absent is no limit too.
    let path = created(&stack, &key).await;
    let (s, b) = stack.api("GET", &path, Some(&key), None).await;
    assert_eq!((s, &b["data"]["rateLimit"]), (200, &Value::Null));

    // PATCH sets it, keeps it when absent, clears it with null, and applies the rules.
    let patch = |body: Value| {
        let (stack, key, path) = (&stack, &key, &path);
        async move { stack.api("PATCH", path, Some(key), Some(body)).await }
    };
    let (s, b) = patch(json!({"rateLimit": 25})).await;
    assert_eq!((s, &b["data"]["rateLimit"]), (200, &json!(25)), "{b}");
    let (s, b) = patch(json!({"name": "renamed"})).await;
    assert_eq!((s, &b["data"]["rateLimit"]), (200, &json!(25)), "{b}");
    let (s, b) = patch(json!({"rateLimit": 0})).await;
    assert_error(s, &b, 422, "invalid_rate_limit");
    assert_eq!(b["error"]["field"], "rateLimit");
    let (s, b) = patch(json!({"rateLimit": "fast"})).await;
    assert_error(s, &b, 400, "invalid_json");
    let (s, b) = stack.api("GET", &path, Some(&key), None).await;
    assert_eq!(
        (s, &b["data"]["rateLimit"]),
        (200, &json!(25)),
        "a refused PATCH changes nothing"
    );
    let (s, b) = patch(json!({"rateLimit": null})).await;
    assert_eq!((s, &b["data"]["rateLimit"]), (200, &Value::Null), "{b}");
}
