//! The management API: shapes, pagination, API keys, organisation scoping, event intake
//! rules and idempotency. (The webhook rules are in `webhook_rules`.)

use serde_json::{json, Value};

use crate::harness::{assert_error, Stack};

#[tokio::test(flavor = "multi_thread")]
async fn webhook_crud_and_shapes() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let url = stack.receiver.url("/crud");
    let (s, b) = stack
        .api(
            "POST",
            "/api/v1/webhooks",
            Some(&key),
            Some(json!({
                "name": "  Slack Notifications  ", "url": url,
                "events": ["alert.created", "alert.critical", "csv.uploaded", "alert.created"]
            })),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let d = &b["data"];
    let id = d["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("whk_"));
    assert_eq!(d["name"], "Slack Notifications");
    assert_eq!(d["url"], url.as_str());
    assert_eq!(
        d["events"],
        json!(["alert.created", "alert.critical", "csv.uploaded"])
    );
    assert_eq!(d["isActive"], true);
    assert_eq!(d["disabledReason"], Value::Null);
    assert_eq!(d["rateLimit"], Value::Null);
    let secret = d["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("whsec_") && secret.len() == 38,
        "{secret}"
    );
    let created = d["createdAt"].as_str().unwrap();
    assert_eq!(created.len(), 24, "RFC 3339 with milliseconds: {created}");
    assert!(created.ends_with('Z'));
    let keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "name",
            "url",
            "events",
            "isActive",
            "disabledReason",
            "rateLimit",
            "headers",
            "secret",
            "createdAt",
            "updatedAt"
        ]
    );

    let (s, b) = stack
        .api("GET", &format!("/api/v1/webhooks/{id}"), Some(&key), None)
        .await;
    assert_eq!(s, 200);
    assert!(b["data"].get("secret").is_none());
    assert_eq!(b["data"]["id"], id.as_str());

    let (s, b) = stack
        .api(
            "PATCH",
            &format!("/api/v1/webhooks/{id}"),
            Some(&key),
            Some(json!({"name": "Renamed", "events": ["billing.*"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["name"], "Renamed");
    assert_eq!(b["data"]["events"], json!(["billing.*"]));
    assert_eq!(b["data"]["url"], url.as_str());

    let (s, b) = stack
        .api(
            "POST",
            &format!("/api/v1/webhooks/{id}/rotate-secret"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let new_secret = b["data"]["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);

    // Pagination: 25 more, pages of 10.
    for i in 0..25 {
        let (s, _) = stack
            .api(
                "POST",
                "/api/v1/webhooks",
                Some(&key),
                Some(json!({"name": format!("h{i}"), "url": url, "events": ["user.*"]})),
            )
            .await;
        assert_eq!(s, 201);
    }
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/webhooks?limit=10&cursor={c}"),
            None => "/api/v1/webhooks?limit=10".to_owned(),
        };
        let (s, b) = stack.api("GET", &path, Some(&key), None).await;
        assert_eq!(s, 200, "{b}");
        for w in b["data"].as_array().unwrap() {
            assert!(w.get("secret").is_none());
            assert!(
                seen.insert(w["id"].as_str().unwrap().to_owned()),
                "duplicate across pages"
            );
        }
        pages += 1;
        match b["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 26);
    assert_eq!(pages, 3);
    let (s, b) = stack.api("GET", "/api/v1/webhooks", Some(&key), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        b["data"].as_array().unwrap().len(),
        20,
        "default limit is 20"
    );
    for bad in ["0", "101", "abc", "-1"] {
        let (s, b) = stack
            .api(
                "GET",
                &format!("/api/v1/webhooks?limit={bad}"),
                Some(&key),
                None,
            )
            .await;
        assert_error(s, &b, 422, "invalid_limit");
    }
    let (s, b) = stack
        .api("GET", "/api/v1/webhooks?cursor=garbage", Some(&key), None)
        .await;
    assert_error(s, &b, 422, "invalid_cursor");

    let (s, _) = stack
        .api(
            "DELETE",
            &format!("/api/v1/webhooks/{id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, b) = stack
        .api("GET", &format!("/api/v1/webhooks/{id}"), Some(&key), None)
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = stack
        .api(
            "DELETE",
            &format!("/api/v1/webhooks/{id}"),
            Some(&key),
            None,
        )
        .await;
    assert_error(s, &b, 404, "not_found");

    let (s, b) = stack.api("GET", "/api/v1/event-types", None, None).await;
    assert_eq!(s, 200);
    let types = b["data"].as_array().unwrap();
    assert_eq!(types.len(), 30);
    assert_eq!(types[0]["name"], "alert.created");
    assert_eq!(types[0]["category"], "Alerts");
    assert_eq!(types[0]["description"], "A new alert was created");
    assert_eq!(
        types[0]["example"]["title"],
        "Low inventory: Raw Material A"
    );
    for t in types {
        assert!(
            t["example"].as_object().is_some_and(|o| !o.is_empty()),
            "{t}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_and_org_scoping() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let (_, other) = stack.new_org().await;
    let (id, _) = stack.webhook(&key, "/mine", &["alert.created"]).await;

    // Missing, malformed, unknown keys.
    let (s, b) = stack.api("GET", "/api/v1/webhooks", None, None).await;
    assert_error(s, &b, 401, "missing_api_key");
    for bad in ["nope", "wf_live_", "wf_live_unknownkey123", "sk_live_abc"] {
        let (s, b) = stack.api("GET", "/api/v1/webhooks", Some(bad), None).await;
        assert_error(s, &b, 401, "invalid_api_key");
    }

    // Another organisation's webhook is 404 everywhere, never 403.
    for (m, p, body) in [
        ("GET", format!("/api/v1/webhooks/{id}"), None),
        (
            "PATCH",
            format!("/api/v1/webhooks/{id}"),
            Some(json!({"name": "x"})),
        ),
        ("DELETE", format!("/api/v1/webhooks/{id}"), None),
        ("POST", format!("/api/v1/webhooks/{id}/rotate-secret"), None),
        ("GET", format!("/api/v1/webhooks/{id}/deliveries"), None),
    ] {
        let (s, b) = stack.api(m, &p, Some(&other), body).await;
        assert_error(s, &b, 404, "not_found");
    }
    let (s, b) = stack
        .api("GET", "/api/v1/webhooks", Some(&other), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["data"], json!([]));
    // Still there for its owner.
    let (s, _) = stack
        .api("GET", &format!("/api/v1/webhooks/{id}"), Some(&key), None)
        .await;
    assert_eq!(s, 200);

    // API keys: create (shown once), use, revoke, then 401.
    let (s, b) = stack
        .api(
            "POST",
            "/api/v1/api-keys",
            Some(&key),
            Some(json!({"name": "deploy"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let new_key = b["data"]["key"].as_str().unwrap().to_owned();
    let new_id = b["data"]["id"].as_str().unwrap().to_owned();
    assert!(new_key.starts_with("wf_live_") && new_id.starts_with("key_"));
    let (s, _) = stack
        .api(
            "GET",
            &format!("/api/v1/webhooks/{id}"),
            Some(&new_key),
            None,
        )
        .await;
    assert_eq!(s, 200, "a new key of the same org sees its webhooks");
    let (s, b) = stack
        .api(
            "DELETE",
            &format!("/api/v1/api-keys/{new_id}"),
            Some(&other),
            None,
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, _) = stack
        .api(
            "DELETE",
            &format!("/api/v1/api-keys/{new_id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, b) = stack
        .api("GET", "/api/v1/webhooks", Some(&new_key), None)
        .await;
    assert_error(s, &b, 401, "invalid_api_key");
    let (s, b) = stack
        .api("POST", "/api/v1/api-keys", Some(&key), Some(json!({})))
        .await;
    assert_error(s, &b, 422, "name_required");
}

#[tokio::test(flavor = "multi_thread")]
async fn event_ingest_rules_and_idempotency() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let _ = stack.webhook(&key, "/idem", &["alert.created"]).await;

    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"data": {}}), 422, "event_required"),
        (
            json!({"event": "alert.nope", "data": {}}),
            422,
            "unknown_event",
        ),
        (
            json!({"event": "alert.created", "data": [1]}),
            422,
            "invalid_data",
        ),
        (
            json!({"event": "alert.created", "timestamp": "yesterday"}),
            422,
            "invalid_timestamp",
        ),
        (
            json!({"event": "alert.created", "id": "has space"}),
            422,
            "invalid_event_id",
        ),
    ];
    for (body, status, code) in cases {
        let (s, b) = stack
            .api("POST", "/api/v1/events", Some(&key), Some(body))
            .await;
        assert_error(s, &b, status, code);
    }
    let (s, b) = stack
        .api_raw(
            "POST",
            "/api/v1/events",
            Some(&key),
            Some(b"{oops".to_vec()),
        )
        .await;
    assert_error(s, &b, 400, "invalid_json");
    let big = json!({"event": "alert.created", "data": {"blob": "x".repeat(300 * 1024)}});
    let (s, b) = stack
        .api("POST", "/api/v1/events", Some(&key), Some(big))
        .await;
    assert_error(s, &b, 413, "payload_too_large");
    let (s, b) = stack
        .api(
            "POST",
            "/api/v1/events",
            None,
            Some(json!({"event": "alert.created"})),
        )
        .await;
    assert_error(s, &b, 401, "missing_api_key");

    // Same id twice: same response, one fan-out.
    let body = json!({"id": "evt_idem_1", "event": "alert.created", "data": {"n": 1}});
    let (s1, b1) = stack
        .api("POST", "/api/v1/events", Some(&key), Some(body.clone()))
        .await;
    let (s2, b2) = stack
        .api("POST", "/api/v1/events", Some(&key), Some(body))
        .await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(b1, b2);
    assert_eq!(b1["data"]["id"], "evt_idem_1");
    // A later, different event proves the pipeline moved on; the duplicate never came.
    let (s, _) = stack
        .api(
            "POST",
            "/api/v1/events",
            Some(&key),
            Some(json!({"id": "evt_idem_2", "event": "alert.created", "data": {"n": 2}})),
        )
        .await;
    assert_eq!(s, 202);
    let got = stack.receiver.wait_for("/idem", 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let got_now = stack.receiver.requests("/idem");
    assert_eq!(
        got_now.len(),
        2,
        "idempotent event delivered twice: {got:?}"
    );
    let ns: Vec<i64> = got_now
        .iter()
        .map(|r| r.json()["data"]["n"].as_i64().unwrap())
        .collect();
    assert!(ns.contains(&1) && ns.contains(&2));
}
