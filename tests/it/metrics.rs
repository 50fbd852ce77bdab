//! `/metrics`, `/healthz` and `/readyz` of a running ingestor and worker.

use serde_json::json;

use wf_testkit::prometheus::CONTRACT_METRICS;

use crate::harness::{http_request, Stack};

#[tokio::test(flavor = "multi_thread")]
async fn ops_endpoints_serve_every_spec_metric() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let _ = stack.webhook(&key, "/m", &["alert.created"]).await;
    let (s, _) = stack
        .api(
            "POST",
            "/api/v1/events",
            Some(&key),
            Some(json!({"event": "alert.created", "data": {}})),
        )
        .await;
    assert_eq!(s, 202);
    stack.receiver.wait_for("/m", 1).await;

    for ops in [stack.ingestor_ops, stack.worker_ops] {
        let (s, b) = http_request(ops, "GET", "/healthz", None, None).await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = http_request(ops, "GET", "/readyz", None, None).await;
        assert_eq!(s, 200, "{b}");
        let (s, text) = http_request(ops, "GET", "/metrics", None, None).await;
        assert_eq!(s, 200);
        let text = text.as_str().unwrap_or_default().to_owned();
        let names = CONTRACT_METRICS.map(|(name, _)| name);
        for name in names.into_iter().chain(["process_resident_memory_bytes"]) {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing from {ops}"
            );
        }
        assert!(text.contains("wf_deliveries_total{outcome=\"delivered\"}"));
        assert!(
            ["\"whk_", "\"org_", "\"evt_", "\"dlv_", "127.0.0.1"]
                .iter()
                .all(|id| !text.contains(id)),
            "high-cardinality label"
        );
    }
}
