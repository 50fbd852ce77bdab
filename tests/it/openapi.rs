//! The OpenAPI document: served without authentication, identical to the committed
//! `docs/openapi.json`, and naming every route the API serves.

use crate::harness::Stack;

/// The committed document.
const COMMITTED: &str = include_str!("../../docs/openapi.json");

#[tokio::test(flavor = "multi_thread")]
async fn served_document_is_the_committed_one() {
    let stack = Stack::start().await;
    let (s, served) = stack.api("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, 200, "{served}");
    let committed: serde_json::Value =
        serde_json::from_str(COMMITTED).expect("docs/openapi.json is JSON");
    assert!(
        served == committed && wf_ingestor::api::openapi_json() == COMMITTED,
        "docs/openapi.json differs from the document the API serves; regenerate it with \
         `cargo run -q -p wf-ingestor -- openapi > docs/openapi.json` and commit it"
    );
    assert_eq!(served["openapi"], "3.1.0");
    assert!(served["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer");

    // Every documented operation is served: with no key, a secured one answers 401 (not
    // the 404 of an unknown route) and an open one 200.
    let (_, key) = stack.new_org().await;
    for (path, item) in served["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let concrete = path
                .replace("{id}", "whk_x")
                .replace("{deliveryId}", "dlv_x")
                .replace("{eventId}", "evt_x");
            let secured = op.get("security").is_some();
            let (s, b) = stack
                .api(&method.to_uppercase(), &concrete, None, None)
                .await;
            let want = if secured { 401 } else { 200 };
            assert_eq!(s, want, "{method} {path}: {b}");
            if !secured {
                continue;
            }
            // And with a key, never the unknown-route answer.
            let (s, b) = stack
                .api(&method.to_uppercase(), &concrete, Some(&key), None)
                .await;
            assert!(
                b["error"]["message"] != "no such route",
                "{method} {path}: {s} {b}"
            );
        }
    }
}
