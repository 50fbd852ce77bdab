//! The management and ingest API (docs/api.md), mounted under `/api/v1`.

mod api_keys;
mod auth;
mod deliveries;
mod emit;
mod error;
mod event_types;
mod events;
mod json;
mod webhooks;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;

pub use error::ApiError;

use crate::AppState;

/// Largest request body accepted anywhere in the API: bigger is `413`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The whole API, with its state and body limit applied.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/webhooks/{id}",
            get(webhooks::get_one)
                .patch(webhooks::update)
                .delete(webhooks::remove),
        )
        .route(
            "/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route("/webhooks/{id}/deliveries", get(deliveries::list))
        .route(
            "/webhooks/{id}/deliveries/{delivery_id}/retry",
            post(deliveries::retry),
        )
        .route("/webhooks/{id}/replay", post(deliveries::replay))
        .route("/events", post(events::ingest))
        .route("/api-keys", post(api_keys::create))
        .route("/api-keys/{id}", delete(api_keys::revoke))
        .route("/event-types", get(event_types::list));
    Router::new()
        .nest("/api/v1", v1)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(wf_telemetry::track_http_requests))
        .with_state(state)
}
