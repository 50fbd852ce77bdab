//! The management and ingest API (docs/api.md), mounted under `/api/v1`.
//!
//! Every route is registered through [`utoipa_axum`]'s router together with its
//! `#[utoipa::path]` description, so the OpenAPI document ([`openapi`], served at
//! `GET /api/v1/openapi.json` and committed as `docs/openapi.json`) lists exactly the
//! routes that are served.

mod api_keys;
mod auth;
mod deliveries;
mod docs;
mod emit;
mod error;
mod event_types;
mod events;
mod extract;
mod json;
pub mod limits;
pub mod schema;
mod webhooks;

use std::sync::{Arc, OnceLock};

use axum::extract::DefaultBodyLimit;
use axum::Router;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::AppState;

/// Largest request body accepted anywhere in the API: bigger is `413`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Every route of `/api/v1`, each with its OpenAPI description.
fn routes() -> OpenApiRouter<Arc<AppState>> {
    let v1 = OpenApiRouter::new()
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(
            webhooks::get_one,
            webhooks::update,
            webhooks::remove
        ))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(deliveries::list))
        .routes(routes!(deliveries::retry))
        .routes(routes!(deliveries::replay))
        .routes(routes!(deliveries::test_send))
        .routes(routes!(deliveries::get_one))
        .routes(routes!(deliveries::get_event))
        .routes(routes!(events::ingest))
        .routes(routes!(api_keys::create))
        .routes(routes!(api_keys::revoke))
        .routes(routes!(event_types::list))
        .routes(routes!(docs::serve));
    OpenApiRouter::with_openapi(docs::ApiDoc::openapi()).nest("/api/v1", v1)
}

/// The OpenAPI 3.1 document of the API, generated from the routes and types.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes().into_openapi();
    docs::finish(&mut doc);
    doc
}

/// [`openapi`] as pretty JSON, as served and as committed in `docs/openapi.json`
/// (with a final newline).
pub fn openapi_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut json = openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises");
        json.push('\n');
        json
    })
}

/// The whole API, with its state and body limit applied.
pub fn router(state: Arc<AppState>) -> Router {
    let (api, _) = routes().split_for_parts();
    api.fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(limits::refuse_oversized))
        .layer(axum::middleware::from_fn_with_state(
            state.config.api_limits.request_timeout,
            limits::request_timeout,
        ))
        .layer(axum::middleware::from_fn(wf_telemetry::track_http_requests))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of `schema`'s properties in the document, in order.
    fn properties(doc: &serde_json::Value, schema: &str) -> Vec<String> {
        doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no schema {schema}"))
            .keys()
            .cloned()
            .collect()
    }

    /// The Webhook object is built by `wf_core::views::WebhookView` (the worker emits it
    /// too), not from its schema type: the two must name the same fields, in order.
    #[test]
    fn webhook_schema_matches_the_view() {
        let doc: serde_json::Value = serde_json::from_str(openapi_json()).unwrap();
        let now = chrono::Utc::now();
        let names = vec!["X-A".to_owned()];
        let view = wf_core::views::WebhookView {
            id: "whk_a",
            name: "n",
            url: "https://example.com/",
            events: &[],
            is_active: true,
            disabled_reason: Some("failing"),
            rate_limit: Some(5),
            header_names: &names,
            created_at: now,
            updated_at: now,
        };
        let keys: Vec<String> = view.to_json().keys().cloned().collect();
        assert_eq!(keys, properties(&doc, "Webhook"));
        let reasons = &doc["components"]["schemas"]["DisabledReason"]["enum"];
        assert_eq!(reasons, &serde_json::json!(["gone", "failing"]));
        assert!(reasons
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(wf_store::FAILING)));
    }

    #[test]
    fn document_is_openapi_3_1_with_the_bearer_scheme() {
        let doc: serde_json::Value = serde_json::from_str(openapi_json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        // Every operation but the two open ones requires the key and says what a missing
        // one answers.
        let mut open = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if op.get("security").is_some() {
                    assert!(op["responses"].get("401").is_some(), "{method} {path}");
                } else {
                    open.push(format!("{method} {path}"));
                }
            }
        }
        open.sort();
        assert_eq!(
            open,
            ["get /api/v1/event-types", "get /api/v1/openapi.json"]
        );
    }
}
