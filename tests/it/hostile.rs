//! Hostile clients of the API: slow headers, slow bodies, too many connections, too
//! many requests, oversized bodies, and one organisation reaching for another's
//! resources on every route the OpenAPI document lists.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wf_testkit::prometheus::scrape;
use wf_testkit::{eventually, within};

use crate::harness::{assert_error, post_event, wait_status, Stack, StackOpts};

fn opts(extra: &[(&'static str, &str)]) -> StackOpts {
    StackOpts {
        extra: extra.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        ..StackOpts::default()
    }
}

/// Reads until the server closes the connection (or resets it); what arrived before.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A raw HTTP/1.1 response: its status and its body as JSON (`Null` when it has none).
fn parse_response(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

fn counter(m: &wf_testkit::prometheus::Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.get(name, labels).unwrap_or(0.0)
}

/// A client that sends its headers one byte a second is cut off by the header timeout:
/// the connection is closed (with a `408` or without a word), and it is counted.
#[tokio::test(flavor = "multi_thread")]
async fn slow_headers_are_cut_off() {
    let stack = Stack::start_with(opts(&[("WF_HTTP_HEADER_TIMEOUT", "1s")])).await;
    let before = counter(
        &scrape(stack.ingestor_ops).await,
        "wf_http_header_timeouts_total",
        &[],
    );
    let mut stream = TcpStream::connect(stack.api).await.unwrap();
    stream
        .write_all(b"GET /api/v1/event-types HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let (mut r, mut w) = stream.split();
    let got = within(
        "the server closes a connection whose headers never end",
        Duration::from_secs(60),
        async {
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                tokio::select! {
                    read = r.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return got,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    },
                    () = tokio::time::sleep(Duration::from_secs(1)) => {
                        if w.write_all(b"a").await.is_err() {
                            return got;
                        }
                    }
                }
            }
        },
    )
    .await;
    if !got.is_empty() {
        assert_eq!(
            parse_response(&got).0,
            408,
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }
    let after = counter(
        &scrape(stack.ingestor_ops).await,
        "wf_http_header_timeouts_total",
        &[],
    );
    assert!(after > before, "header timeouts {before} -> {after}");
}

/// A client that sends its headers but not the body it announced gets
/// `408 request_timeout` in the API's error shape.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_never_comes_is_408() {
    let stack = Stack::start_with(opts(&[("WF_HTTP_REQUEST_TIMEOUT", "1s")])).await;
    let (_, key) = stack.new_org().await;
    let mut stream = TcpStream::connect(stack.api).await.unwrap();
    let head = format!(
        "POST /api/v1/webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let got = within(
        "an answer to a request whose body stalls",
        Duration::from_secs(60),
        read_to_close(&mut stream),
    )
    .await;
    let (status, body) = parse_response(&got);
    assert_error(status, &body, 408, "request_timeout");
    // Nothing was created.
    let (s, b) = stack.api("GET", "/api/v1/webhooks", Some(&key), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"], json!([]));
}

/// Above `WF_HTTP_MAX_CONNECTIONS` open connections, one more is answered `503
/// too_many_connections` and closed, and counted; once one closes, requests are served
/// again.
#[tokio::test(flavor = "multi_thread")]
async fn connections_above_the_bound_are_refused() {
    let stack = Stack::start_with(opts(&[
        ("WF_HTTP_MAX_CONNECTIONS", "3"),
        ("WF_HTTP_HEADER_TIMEOUT", "5m"),
    ]))
    .await;
    let before = counter(
        &scrape(stack.ingestor_ops).await,
        "wf_http_connections_refused_total",
        &[],
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(stack.api).await.unwrap());
    }
    let mut extra = TcpStream::connect(stack.api).await.unwrap();
    let got = within(
        "the connection over the bound is closed",
        Duration::from_secs(30),
        read_to_close(&mut extra),
    )
    .await;
    let (status, body) = parse_response(&got);
    assert_error(status, &body, 503, "too_many_connections");
    let after = counter(
        &scrape(stack.ingestor_ops).await,
        "wf_http_connections_refused_total",
        &[],
    );
    assert!(after > before, "refused connections {before} -> {after}");

    // The held connections still work.
    held[0]
        .write_all(b"GET /api/v1/event-types HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = within(
        "an answer on a held connection",
        Duration::from_secs(30),
        read_to_close(&mut held[0]),
    )
    .await;
    assert_eq!(parse_response(&got).0, 200);
    // That one is closed now, so there is room for a new one.
    held.remove(0);
    eventually(
        "a new connection is served once one closed",
        Duration::from_secs(30),
        || async { stack.api("GET", "/api/v1/event-types", None, None).await.0 == 200 },
    )
    .await;
    drop(held);
}

/// A POST that answers with its status and `Retry-After`.
async fn post_with_headers(
    addr: SocketAddr,
    path: &str,
    key: &str,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let auth = format!("Bearer {key}");
    let r = wf_testkit::http::request(
        addr,
        "POST",
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Some(body.to_string().into_bytes()),
    )
    .await
    .expect("request");
    let retry_after = r.header("retry-after").map(str::to_owned);
    (r.status, retry_after, r.json_or_text())
}

/// Sends `path` with `key` until it is refused (at most `max` times); the first refusal.
async fn until_refused(
    stack: &Stack,
    method: &str,
    path: &str,
    key: &str,
    body: &Value,
    max: usize,
) -> (usize, Option<String>, Value) {
    for sent in 1..=max {
        let (s, retry_after, b) = if method == "POST" {
            post_with_headers(stack.api, path, key, body).await
        } else {
            let (s, b) = stack.api(method, path, Some(key), None).await;
            (s, None, b)
        };
        if s == 429 {
            return (sent, retry_after, b);
        }
        assert!((200..300).contains(&s), "{method} {path}: {s} {b}");
    }
    panic!("{method} {path} was never refused in {max} requests");
}

/// A key that spends its budget gets `429 rate_limited` with `Retry-After`; another key,
/// and the same key's other budget, are unaffected; refusals are counted by budget.
#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_are_per_key_and_per_budget() {
    let stack = Stack::start_with(opts(&[
        ("WF_API_RATE_LIMIT_EVENTS", "1,3"),
        ("WF_API_RATE_LIMIT_MANAGEMENT", "1,2"),
    ]))
    .await;
    let before = scrape(stack.ingestor_ops).await;
    let (_, greedy) = stack.new_org().await;
    let (_, other) = stack.new_org().await;
    let event = json!({"event": "alert.created", "data": {"n": 1}});

    let (sent, retry_after, body) =
        until_refused(&stack, "POST", "/api/v1/events", &greedy, &event, 50).await;
    assert!(
        sent > 3,
        "the burst of 3 was served first (refused at request {sent})"
    );
    assert_error(429, &body, 429, "rate_limited");
    let secs: u64 = retry_after
        .expect("Retry-After on a 429")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(secs >= 1, "{secs}");

    // Another key has its own budget; the greedy key's management budget is untouched.
    post_event(&stack, &other, "alert.created", json!({})).await;
    let (s, b) = stack
        .api("GET", "/api/v1/webhooks", Some(&greedy), None)
        .await;
    assert_eq!(s, 200, "{b}");

    // The management budget runs out on its own.
    let (sent, _, body) =
        until_refused(&stack, "GET", "/api/v1/webhooks", &greedy, &Value::Null, 50).await;
    assert!(sent >= 2, "refused at request {sent}");
    assert_error(429, &body, 429, "rate_limited");

    let after = scrape(stack.ingestor_ops).await;
    for budget in ["events", "management"] {
        let labels = [("budget", budget)];
        assert!(
            counter(&after, "wf_http_rate_limited_total", &labels)
                > counter(&before, "wf_http_rate_limited_total", &labels),
            "{budget} refusals counted"
        );
    }
}

/// The path parameters of the API, and what to put in them.
struct Ids {
    webhook: String,
    delivery: String,
    event: String,
    api_key: String,
}

impl Ids {
    /// `template` with these ids; panics on a parameter this test does not know, so that
    /// a new route makes the test say what to do with it.
    fn fill(&self, template: &str) -> String {
        let mut path = template.to_owned();
        if path.starts_with("/api/v1/api-keys/") {
            path = path.replace("{id}", &self.api_key);
        }
        path = path
            .replace("{id}", &self.webhook)
            .replace("{deliveryId}", &self.delivery)
            .replace("{eventId}", &self.event);
        assert!(
            !path.contains('{'),
            "{template}: a path parameter this test does not know; add it to `Ids`"
        );
        path
    }

    fn all(&self) -> [&str; 4] {
        [&self.webhook, &self.delivery, &self.event, &self.api_key]
    }
}

/// A valid body for each operation that takes one, so that what answers is the
/// ownership check, not the body's.
fn valid_body(method: &str, template: &str, url: &str) -> Option<Value> {
    Some(match (method, template) {
        ("post", "/api/v1/webhooks") => {
            json!({"name": "b's hook", "url": url, "events": ["alert.created"]})
        }
        ("patch", "/api/v1/webhooks/{id}") => json!({"name": "taken over"}),
        ("post", "/api/v1/webhooks/{id}/replay") => json!({"status": "dead"}),
        ("post", "/api/v1/webhooks/{id}/test") => json!({"event": "alert.created"}),
        ("post", "/api/v1/events") => json!({"event": "alert.created", "data": {}}),
        ("post", "/api/v1/api-keys") => json!({"name": "b's key"}),
        _ => return None,
    })
}

/// The secured operations of the served OpenAPI document: (method, path template, takes
/// a body).
async fn secured_operations(stack: &Stack) -> Vec<(String, String, bool)> {
    let (s, doc) = stack.api("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, 200, "{doc}");
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op.get("security").is_some() {
                ops.push((
                    method.clone(),
                    path.clone(),
                    op.get("requestBody").is_some(),
                ));
            }
        }
    }
    assert!(
        ops.len() >= 15,
        "the document lists {} secured operations",
        ops.len()
    );
    ops
}

/// Organisation isolation, one table over every secured route and method of the OpenAPI
/// document: with another organisation's ids, `404` (also when the webhook in the path is
/// the caller's own but the delivery is not); with a revoked key, `401`; with no key,
/// `401`; and no answer to the other organisation ever names the first one's resources.
/// Afterwards the first organisation's resources are as they were.
#[tokio::test(flavor = "multi_thread")]
async fn organisations_are_isolated_on_every_route() {
    let stack = Stack::start().await;
    let (_, a) = stack.new_org().await;
    let (a_webhook, _) = stack.webhook(&a, "/iso-a", &["alert.created"]).await;
    let (s, b) = stack
        .api(
            "POST",
            "/api/v1/events",
            Some(&a),
            Some(json!({"event": "alert.created", "data": {"n": 1}})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let a_event = b["data"]["id"].as_str().unwrap().to_owned();
    let delivered = wait_status(&stack, &a, &a_webhook, "delivered", 1).await;
    let a_delivery = delivered[0]["id"].as_str().unwrap().to_owned();
    let (s, b) = stack
        .api(
            "POST",
            "/api/v1/api-keys",
            Some(&a),
            Some(json!({"name": "a2"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let a_ids = Ids {
        webhook: a_webhook.clone(),
        delivery: a_delivery.clone(),
        event: a_event.clone(),
        api_key: b["data"]["id"].as_str().unwrap().to_owned(),
    };
    let a_second_key = b["data"]["key"].as_str().unwrap().to_owned();

    let (_, other) = stack.new_org().await;
    let (other_webhook, _) = stack.webhook(&other, "/iso-b", &["alert.created"]).await;
    // Other's own webhook, with a's delivery and event.
    let mixed = Ids {
        webhook: other_webhook,
        delivery: a_delivery.clone(),
        event: a_event.clone(),
        api_key: a_ids.api_key.clone(),
    };
    let (s, b) = stack
        .api(
            "POST",
            "/api/v1/api-keys",
            Some(&other),
            Some(json!({"name": "gone"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let revoked = b["data"]["key"].as_str().unwrap().to_owned();
    let revoked_id = b["data"]["id"].as_str().unwrap().to_owned();
    let (s, b) = stack
        .api(
            "DELETE",
            &format!("/api/v1/api-keys/{revoked_id}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(s, 204, "{b}");

    let url = stack.receiver.url("/iso-b2");
    let mut covered = BTreeSet::new();
    for (method, template, takes_body) in secured_operations(&stack).await {
        let m = method.to_uppercase();
        let case = format!("{m} {template}");
        let body = valid_body(&method, &template, &url);
        assert_eq!(
            body.is_some(),
            takes_body,
            "{case}: give `valid_body` a valid body for this route"
        );
        let raw = body.map(|b| b.to_string().into_bytes());
        let path = a_ids.fill(&template);

        let (s, b) = stack.api_raw(&m, &path, None, raw.clone()).await;
        assert_error(s, &b, 401, "missing_api_key");
        let (s, b) = stack.api_raw(&m, &path, Some(&revoked), raw.clone()).await;
        assert_error(s, &b, 401, "invalid_api_key");
        let (s, b) = stack
            .api_raw(&m, &path, Some("wf_live_not_a_key"), raw.clone())
            .await;
        assert_error(s, &b, 401, "invalid_api_key");

        let (s, b) = stack.api_raw(&m, &path, Some(&other), raw.clone()).await;
        if template.contains('{') {
            assert_error(s, &b, 404, "not_found");
            let mixed_path = mixed.fill(&template);
            if mixed_path != path && template.matches('{').count() > 1 {
                let (s, b) = stack.api_raw(&m, &mixed_path, Some(&other), raw).await;
                assert_error(s, &b, 404, "not_found");
            }
        } else {
            assert!(s < 500, "{case}: {s} {b}");
            let text = b.to_string();
            for id in a_ids.all() {
                assert!(
                    !text.contains(id),
                    "{case} answered another org's {id}: {b}"
                );
            }
        }
        covered.insert(case);
    }
    println!(
        "isolation checked on {} operations: {covered:?}",
        covered.len()
    );

    // Nothing of a's changed, and a's keys still work.
    let (s, b) = stack
        .api(
            "GET",
            &format!("/api/v1/webhooks/{a_webhook}"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["name"], "test hook");
    assert_eq!(b["data"]["isActive"], true);
    let (s, b) = stack
        .api(
            "GET",
            &format!("/api/v1/deliveries/{a_delivery}"),
            Some(&a_second_key),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = stack
        .api("GET", &format!("/api/v1/events/{a_event}"), Some(&a), None)
        .await;
    assert_eq!(s, 200, "{b}");
}

/// Every route, whatever its method, refuses a body announced over 1 MiB with `413
/// payload_too_large` in the API's error shape, before authentication; routes that read a
/// body refuse a real one over 1 MiB too.
#[tokio::test(flavor = "multi_thread")]
async fn every_route_has_a_body_limit() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let (s, doc) = stack.api("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, 200, "{doc}");
    let ids = Ids {
        webhook: "whk_x".into(),
        delivery: "dlv_x".into(),
        event: "evt_x".into(),
        api_key: "key_x".into(),
    };
    let mut n = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let m = method.to_uppercase();
            let path = ids.fill(template);
            let documented = &op["responses"]["413"]["content"]["application/json"];
            assert!(!documented.is_null(), "{m} {template}: 413 not documented");

            // Announced, with no body sent: refused from the headers alone.
            let mut stream = TcpStream::connect(stack.api).await.unwrap();
            let head = format!(
                "{m} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                1024 * 1024 + 1
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let got = within(
                "an answer to an oversized request",
                Duration::from_secs(30),
                read_to_close(&mut stream),
            )
            .await;
            let (s, b) = parse_response(&got);
            assert_error(s, &b, 413, "payload_too_large");

            // Sent in full, to the routes that read a body.
            if op.get("requestBody").is_some() {
                let big = json!({"name": "x".repeat(1024 * 1024)}).to_string();
                let (s, b) = stack
                    .api_raw(&m, &path, Some(&key), Some(big.into_bytes()))
                    .await;
                assert_error(s, &b, 413, "payload_too_large");
            }
            n += 1;
        }
    }
    assert!(n >= 17, "{n} operations");
}
