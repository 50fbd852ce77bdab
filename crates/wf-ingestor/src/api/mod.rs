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
        .layer(axum::middleware::from_fn(wf_telemetry::track_http_requests))
        .with_state(state)
}
