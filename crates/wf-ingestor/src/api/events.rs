//! `POST /events`: HTTP ingest. Answers `202` only after the broker confirmed the publish;
//! a producer-supplied `id` makes the call idempotent for 24 h.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use wf_core::requests;
use wf_store::EventRecord;
use wf_telemetry::metrics;

use super::auth::Caller;
use super::emit::publish;
use super::json::JsonObject;
use super::{schema, ApiError};
use crate::AppState;

/// Takes an event for fan-out. Answers only once RabbitMQ has confirmed it; with an `id`,
/// the same call within 24 hours answers the first response and fans out once.
#[utoipa::path(
    post,
    path = "/events",
    tag = "events",
    operation_id = "ingestEvent",
    security(("bearer" = [])),
    request_body(content = schema::IngestEvent, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: the broker has the event", body = schema::AcceptedEventData),
        (status = 400, description = "`invalid_json`, `invalid_body`", body = schema::ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 1 MiB, or the event over 256 KiB", body = schema::ErrorBody),
        (status = 422, description = "`event_required`, `unknown_event`, `invalid_event_id`, `invalid_timestamp`, `invalid_data`", body = schema::ErrorBody),
    )
)]
pub async fn ingest(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let supplied_id = body.contains_key("id") && !body["id"].is_null();
    let event = requests::event(body, &caller.org).map_err(|r| {
        metrics()
            .events_rejected
            .with_label_values(&[r.reason()])
            .inc();
        ApiError::from(requests::event_rejection(&r))
    })?;
    let response = json!({ "data": { "id": event.id, "event": event.event } });

    if supplied_id {
        match state
            .store
            .record_event(&caller.org, &event.id, event.event, &response)
            .await?
        {
            EventRecord::Existing {
                published: true,
                response,
            } => return Ok((StatusCode::ACCEPTED, Json(response))),
            // A first attempt that died before the confirm: publish again (at least once).
            EventRecord::Existing {
                published: false, ..
            }
            | EventRecord::New => {}
        }
    }
    publish(&state, &event).await.map_err(|e| {
        metrics()
            .events_rejected
            .with_label_values(&["publish_failed"])
            .inc();
        ApiError::unavailable("event broker unavailable", e)
    })?;
    if supplied_id {
        state
            .store
            .mark_event_published(&caller.org, &event.id)
            .await?;
    }
    metrics()
        .events_ingested
        .with_label_values(&["http", event.event.as_str()])
        .inc();
    Ok((StatusCode::ACCEPTED, Json(response)))
}
