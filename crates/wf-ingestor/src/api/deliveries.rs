//! The delivery log of one webhook: `GET /webhooks/{id}/deliveries`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use wf_core::ids::WebhookId;
use wf_core::time::format_ms;
use wf_store::{Delivery, DeliveryStatus};

use super::auth::Caller;
use super::webhooks::{cursor_error, parse_limit};
use super::ApiError;
use crate::AppState;

/// The Delivery object of SPEC §3.
pub fn delivery_json(d: &Delivery) -> Value {
    let attempts: Vec<Value> = d
        .attempts
        .iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "at": format_ms(a.at),
                "statusCode": a.status_code,
                "error": a.error,
                "durationMs": a.duration_ms,
            })
        })
        .collect();
    json!({
        "id": d.id,
        "eventId": d.event_id,
        "event": d.event,
        "status": d.status.as_str(),
        "attempts": attempts,
        "createdAt": format_ms(d.created_at),
        "updatedAt": format_ms(d.updated_at),
    })
}

#[derive(Deserialize)]
pub struct DeliveriesQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Finds the caller's webhook or answers 404 (also for another organisation's).
pub async fn own_webhook(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<WebhookId, ApiError> {
    let id = WebhookId::parse(id).map_err(|_| ApiError::not_found("webhook not found"))?;
    state
        .store
        .get_webhook(&caller.org, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook not found"))?;
    Ok(id)
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let webhook = own_webhook(&state, &caller, &id).await?;
    let limit = parse_limit(q.limit.as_deref())?;
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "invalid_status",
                "status",
                "`status` must be one of pending, delivered, failed, dead",
            )
        })?),
    };
    let page = state
        .store
        .list_deliveries(
            &caller.org,
            &webhook,
            status,
            limit,
            q.cursor.as_deref().filter(|c| !c.is_empty()),
        )
        .await
        .map_err(cursor_error)?;
    let data: Vec<Value> = page.items.iter().map(delivery_json).collect();
    Ok(Json(
        json!({ "data": data, "nextCursor": page.next_cursor }),
    ))
}
