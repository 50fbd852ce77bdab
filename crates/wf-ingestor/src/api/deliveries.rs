//! The delivery log of one webhook: `GET /webhooks/{id}/deliveries`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use futures::future::try_join_all;
use serde::Deserialize;
use serde_json::{json, Value};
use wf_broker::routes;
use wf_core::ids::{DeliveryId, WebhookId};
use wf_core::messages::DeliveryJob;
use wf_core::requests::{self, ReplayWindow};
use wf_core::time::format_ms;
use wf_store::{Delivery, DeliveryStatus, ReplayFilter, ReplayItem, Webhook};

use super::auth::Caller;
use super::json::JsonObject;
use super::webhooks::{cursor_error, parse_limit};
use super::ApiError;
use crate::AppState;

/// The Delivery object (docs/api.md, "Delivery").
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
pub async fn own_webhook(state: &AppState, caller: &Caller, id: &str) -> Result<Webhook, ApiError> {
    let id = WebhookId::parse(id).map_err(|_| ApiError::not_found("webhook not found"))?;
    state
        .store
        .get_webhook(&caller.org, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook not found"))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let webhook = own_webhook(&state, &caller, &id).await?.id;
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

/// Deliveries re-queued per database round trip during a replay.
const REPLAY_BATCH: i64 = 500;
/// Most deliveries one replay call re-queues; replay again for more.
const REPLAY_MAX: usize = 100_000;

/// Re-queues `items` on `workflows.deliveries` (confirmed) and marks them pending.
/// Returns how many were queued and how many had no payload left to send.
async fn requeue(state: &AppState, items: &[ReplayItem]) -> Result<(usize, usize), ApiError> {
    let jobs: Vec<DeliveryJob> = items
        .iter()
        .filter_map(ReplayItem::logged)
        .map(DeliveryJob::requeued_from_log)
        .collect();
    try_join_all(
        jobs.iter()
            .map(|j| routes::queue_delivery(&state.publisher, j)),
    )
    .await
    .map_err(|e| ApiError::unavailable("event broker unavailable", e))?;
    let ids: Vec<DeliveryId> = jobs.iter().map(|j| j.v1().delivery_id.clone()).collect();
    state.store.mark_requeued(&ids).await?;
    Ok((jobs.len(), items.len() - jobs.len()))
}

/// Refuses to re-queue for a webhook that would drop the deliveries anyway.
async fn active_webhook(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<WebhookId, ApiError> {
    let w = own_webhook(state, caller, id).await?;
    if !w.is_active {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "webhook_inactive",
            "the webhook is inactive; enable it before re-queueing deliveries",
        ));
    }
    Ok(w.id)
}

/// `POST /webhooks/{id}/deliveries/{deliveryId}/retry`: re-queue one delivery now,
/// whatever its status; it is signed afresh and numbered as the next attempt.
pub async fn retry(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let webhook = active_webhook(&state, &caller, &id).await?;
    let delivery =
        DeliveryId::parse(&delivery_id).map_err(|_| ApiError::not_found("delivery not found"))?;
    let items = state
        .store
        .replay_items(&ReplayFilter {
            org: Some(&caller.org),
            webhook: Some(&webhook),
            delivery: Some(&delivery),
            limit: 1,
            ..ReplayFilter::default()
        })
        .await?;
    if items.is_empty() {
        return Err(ApiError::not_found("delivery not found"));
    }
    let (queued, _) = requeue(&state, &items).await?;
    if queued == 0 {
        return Err(ApiError::new(
            StatusCode::GONE,
            "payload_expired",
            "the event payload is past the log retention and can no longer be sent",
        ));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "data": { "id": delivery, "status": "pending" } })),
    ))
}

/// `POST /webhooks/{id}/replay` with `{"status": "dead", "since"?, "until"?}`: re-queues
/// the webhook's dead deliveries created in the window.
pub async fn replay(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ReplayWindow { since, until } = requests::replay(&body)?;
    let webhook = active_webhook(&state, &caller, &id).await?;
    let (mut queued, mut skipped) = (0usize, 0usize);
    let mut after: Option<DeliveryId> = None;
    while queued + skipped < REPLAY_MAX {
        let items = state
            .store
            .replay_items(&ReplayFilter {
                org: Some(&caller.org),
                webhook: Some(&webhook),
                status: Some(DeliveryStatus::Dead),
                since,
                until,
                after: after.as_ref(),
                limit: REPLAY_BATCH,
                ..ReplayFilter::default()
            })
            .await?;
        let Some(last) = items.last() else { break };
        after = Some(last.delivery_id.clone());
        let (q, s) = requeue(&state, &items).await?;
        queued += q;
        skipped += s;
        if items.len() < REPLAY_BATCH as usize {
            break;
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "data": { "queued": queued, "skipped": skipped } })),
    ))
}
