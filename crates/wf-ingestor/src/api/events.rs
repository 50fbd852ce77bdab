//! `POST /events`: HTTP ingest. Answers `202` only after the broker confirmed the publish;
//! a producer-supplied `id` makes the call idempotent for 24 h.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use wf_core::envelope::{Event, EventRejection, MAX_EVENT_BYTES};
use wf_store::EventRecord;
use wf_telemetry::metrics;

use super::auth::Caller;
use super::emit::publish;
use super::json::JsonObject;
use super::{schema, ApiError};
use crate::AppState;

fn rejection_to_api(r: &EventRejection) -> ApiError {
    let (code, field) = match r {
        EventRejection::MissingEvent => ("event_required", "event"),
        EventRejection::UnknownEvent(_) => ("unknown_event", "event"),
        EventRejection::InvalidId => ("invalid_event_id", "id"),
        EventRejection::InvalidTimestamp => ("invalid_timestamp", "timestamp"),
        EventRejection::InvalidData => ("invalid_data", "data"),
        EventRejection::TooLarge => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("event exceeds {MAX_EVENT_BYTES} bytes"),
            )
        }
        other => return ApiError::bad_json(other.to_string()),
    };
    let err = ApiError::invalid(code, field, r.to_string());
    if matches!(r, EventRejection::UnknownEvent(_)) {
        ApiError {
            message: format!("{r}; see GET /api/v1/event-types"),
            ..err
        }
    } else {
        err
    }
}

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
    let event = Event::from_value(Value::Object(body), Some(&caller.org), None).map_err(|r| {
        metrics()
            .events_rejected
            .with_label_values(&[r.reason()])
            .inc();
        rejection_to_api(&r)
    })?;
    let wire_len = event.to_wire().len();
    if wire_len > MAX_EVENT_BYTES {
        metrics()
            .events_rejected
            .with_label_values(&["too_large"])
            .inc();
        return Err(rejection_to_api(&EventRejection::TooLarge));
    }
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
