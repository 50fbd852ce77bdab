//! Secrets never leave: with every process at `WF_LOG=debug`, deliveries (first attempts,
//! retries, a test send, a secret rotation) to webhooks with a custom `Authorization`
//! header leave no webhook secret, API key, custom header value or event payload in any
//! log line of the ingestor or the worker, nor in their `/metrics`.

use std::time::Duration;

use serde_json::{json, Value};
use wf_testkit::eventually;

use super::support::*;
use crate::harness::http_request;

async fn metrics_text(ops: std::net::SocketAddr) -> String {
    let r = wf_testkit::http::get(ops, "/metrics")
        .await
        .expect("/metrics");
    assert_eq!(r.status, 200);
    r.text()
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_stay_out_of_debug_logs_and_metrics() {
    let d = Deployment::new(&[("WF_LOG", "debug")]).await;
    let mut ingestor = d.start(INGESTOR).await;
    let mut worker = d.start(WORKER).await;
    let key = d.api_key().await;
    let header_value = "Basic c2VjcmV0LXVzZXI6c3dvcmRmaXNoLTQyLXF1YXJ0eg==";
    let gateway_key = "gw-4f1c9e07a2d84b6b8d1e3c5a7f902b11";
    let payload_marker = "payload-7d0e5b9c41a8f2";

    // Two webhooks with custom headers: one answers at once, one fails first (a retry).
    d.receiver.plan("/flaky", &[500], 200);
    let mut secrets = Vec::new();
    let mut webhooks = Vec::new();
    for path in ["/steady", "/flaky"] {
        let body = json!({
            "name": path,
            "url": d.receiver.url(path),
            "events": ["alert.*"],
            "headers": {"Authorization": header_value, "X-Gateway-Key": gateway_key},
        });
        let (s, b) = post(ingestor.api, "/api/v1/webhooks", &key, &body).await;
        assert_eq!(s, 201, "{b}");
        secrets.push(b["data"]["secret"].as_str().unwrap().to_owned());
        webhooks.push(b["data"]["id"].as_str().unwrap().to_owned());
    }
    for n in 0..3 {
        let body = json!({"event": "alert.created", "data": {"n": n, "note": payload_marker}});
        let (s, b) = post(ingestor.api, "/api/v1/events", &key, &body).await;
        assert_eq!(s, 202, "{b}");
    }
    let (s, b) = post(
        ingestor.api,
        &format!("/api/v1/webhooks/{}/test", webhooks[0]),
        &key,
        &json!({"event": "alert.critical"}),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let (s, b) = post(
        ingestor.api,
        &format!("/api/v1/webhooks/{}/rotate-secret", webhooks[1]),
        &key,
        &Value::Null,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    secrets.push(b["data"]["secret"].as_str().unwrap().to_owned());
    // A caller with a key that does not exist: its token must not be logged either.
    let unknown = "wf_live_ThisKeyDoesNotExist0123456789abcdef";
    let (s, _) = http_request(ingestor.api, "GET", "/api/v1/webhooks", Some(unknown), None).await;
    assert_eq!(s, 401);

    // Deliveries arrived, carrying the custom headers (so they went through the code that
    // sends them), and the flaky one was retried.
    let steady = d.receiver.wait_for("/steady", 4).await;
    let flaky = d.receiver.wait_for("/flaky", 4).await;
    for r in steady.iter().chain(&flaky) {
        assert_eq!(r.header("authorization"), header_value);
        assert_eq!(r.header("x-gateway-key"), gateway_key);
    }
    eventually("the retry recorded", Duration::from_secs(30), || async {
        deliveries(ingestor.api, &key, &webhooks[1], "delivered")
            .await
            .len()
            == 3
    })
    .await;

    let mut texts = vec![
        ("ingestor /metrics", metrics_text(ingestor.ops).await),
        ("worker /metrics", metrics_text(worker.ops).await),
    ];
    worker.stop(d.grace() + EXIT_MARGIN).await;
    ingestor.stop(d.grace() + EXIT_MARGIN).await;
    texts.push(("ingestor log", ingestor.log_text()));
    texts.push(("worker log", worker.log_text()));

    let base64_part = header_value.trim_start_matches("Basic ");
    let mut forbidden: Vec<(&str, &str)> = vec![
        ("the API key", key.as_str()),
        ("an unknown API key", unknown),
        ("the custom Authorization value", base64_part),
        ("a custom header value", gateway_key),
        ("any webhook secret", "whsec_"),
        ("an event payload", payload_marker),
    ];
    for s in &secrets {
        forbidden.push(("a webhook secret's key", s.trim_start_matches("whsec_")));
    }
    for (what, text) in &texts {
        let debug_lines = text.lines().filter(|l| l.contains("DEBUG")).count();
        if what.ends_with("log") {
            assert!(
                debug_lines > 0,
                "{what} has no debug line: is WF_LOG=debug in effect?"
            );
        }
        for (name, value) in &forbidden {
            if let Some(line) = text.lines().find(|l| l.contains(value)) {
                panic!("{what} leaks {name}: {line}");
            }
        }
        println!(
            "{what}: {} lines ({debug_lines} debug), no secret",
            text.lines().count()
        );
    }
}
