//! Webhook management: create, list, read, update, delete, rotate the secret.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use wf_core::events::EventType;
use wf_core::ids::WebhookId;
use wf_core::requests;
use wf_store::{NewWebhook, Webhook, WebhookPatch};

use super::auth::Caller;
use super::emit::system_event;
use super::json::JsonObject;
use super::ApiError;
use crate::AppState;

/// The Webhook object (docs/api.md, "Webhook"; no secret).
pub fn webhook_json(w: &Webhook) -> Map<String, Value> {
    w.view().to_json()
}

fn parse_id(id: &str) -> Result<WebhookId, ApiError> {
    WebhookId::parse(id).map_err(|_| ApiError::not_found("webhook not found"))
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = requests::webhook_create(&body, &state.config.allowed_target_cidrs)?;
    let new = NewWebhook {
        name: body.name,
        url: body.url,
        events: body.events,
        is_active: body.is_active,
        rate_limit: body.rate_limit,
    };
    let (webhook, secret) = state.store.create_webhook(&caller.org, new).await?;
    let public = webhook_json(&webhook);
    system_event(
        &state,
        &caller.org,
        EventType::WebhookCreated,
        public.clone(),
    )
    .await;

    let mut data = Map::new();
    for (k, v) in public {
        if k == "createdAt" {
            data.insert("secret".into(), json!(secret.expose()));
        }
        data.insert(k, v);
    }
    Ok((StatusCode::CREATED, Json(json!({ "data": data }))))
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// Parses `?limit=` (1..=100, default 20).
pub fn parse_limit(raw: Option<&str>) -> Result<u32, ApiError> {
    match raw {
        None => Ok(20),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "invalid_limit",
                    "limit",
                    "`limit` must be an integer from 1 to 100",
                )
            }),
    }
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = parse_limit(q.limit.as_deref())?;
    let page = state
        .store
        .list_webhooks(
            &caller.org,
            limit,
            q.cursor.as_deref().filter(|c| !c.is_empty()),
        )
        .await
        .map_err(cursor_error)?;
    let data: Vec<Value> = page
        .items
        .iter()
        .map(|w| Value::Object(webhook_json(w)))
        .collect();
    Ok(Json(
        json!({ "data": data, "nextCursor": page.next_cursor }),
    ))
}

/// A malformed cursor is the caller's fault (`422`), anything else ours.
pub fn cursor_error(e: wf_store::StoreError) -> ApiError {
    if matches!(e, wf_store::StoreError::InvalidCursor) {
        ApiError::invalid(
            "invalid_cursor",
            "cursor",
            "`cursor` is not one this API returned",
        )
    } else {
        e.into()
    }
}

pub async fn get_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let w = state
        .store
        .get_webhook(&caller.org, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook not found"))?;
    Ok(Json(json!({ "data": webhook_json(&w) })))
}

pub async fn update(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let body = requests::webhook_update(&body, &state.config.allowed_target_cidrs)?;
    let patch = WebhookPatch {
        name: body.name,
        url: body.url,
        events: body.events,
        is_active: body.is_active,
        rate_limit: body.rate_limit,
    };
    let (before, after) = state
        .store
        .update_webhook(&caller.org, &id, patch)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook not found"))?;
    let public = webhook_json(&after);
    if before.is_active != after.is_active {
        let ev = if after.is_active {
            EventType::WebhookEnabled
        } else {
            EventType::WebhookDisabled
        };
        system_event(&state, &caller.org, ev, public.clone()).await;
    }
    Ok(Json(json!({ "data": public })))
}

pub async fn remove(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let w = state
        .store
        .delete_webhook(&caller.org, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook not found"))?;
    system_event(
        &state,
        &caller.org,
        EventType::WebhookDeleted,
        webhook_json(&w),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let secret = state
        .store
        .rotate_secret(&caller.org, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook not found"))?;
    Ok(Json(json!({ "data": { "secret": secret.expose() } })))
}
