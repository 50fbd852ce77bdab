//! Webhook management: create, list, read, update, delete, rotate the secret.

use std::sync::Arc;

use axum::extract::State;
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
use super::extract::{PathParams, QueryParams};
use super::json::JsonObject;
use super::{schema, ApiError};
use crate::AppState;

/// The Webhook object (docs/api.md, "Webhook"; no secret).
pub fn webhook_json(w: &Webhook) -> Map<String, Value> {
    w.view().to_json()
}

fn parse_id(id: &str) -> Result<WebhookId, ApiError> {
    WebhookId::parse(id).map_err(|_| ApiError::not_found("webhook not found"))
}

/// Registers a webhook. Emits `webhook.created`.
#[utoipa::path(
    post,
    path = "/webhooks",
    tag = "webhooks",
    operation_id = "createWebhook",
    security(("bearer" = [])),
    request_body(content = schema::CreateWebhook, content_type = "application/json"),
    responses(
        (status = 201, description = "Created. The secret and the custom header values are shown only here", body = schema::CreatedWebhookData),
        (status = 400, description = "`invalid_json`: not a JSON object, or a field of the wrong type (`field` names it); `invalid_body`: the body could not be read", body = schema::ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 1 MiB", body = schema::ErrorBody),
        (status = 422, description = "A rule is broken (the first, in field order): `name_required`, `name_too_long`, `url_required`, `invalid_url`, `url_not_https`, `url_too_long`, `url_private_address`, `events_required`, `unknown_event`, `invalid_rate_limit`, `too_many_headers`, `invalid_header_name`, `invalid_header_value`, `reserved_header`, `duplicate_header`, `headers_too_large`", body = schema::ErrorBody),
    )
)]
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
    let (webhook, secret) = state
        .store
        .create_webhook_with_headers(&caller.org, new, &body.headers)
        .await?;
    let public = webhook_json(&webhook);
    system_event(
        &state,
        &caller.org,
        EventType::WebhookCreated,
        public.clone(),
    )
    .await;

    // The only response that shows the header values (the event above masks them).
    let mut data = Map::new();
    for (k, v) in public {
        match k.as_str() {
            "headers" => {
                data.insert(k, Value::Object(body.headers.to_json()));
            }
            "createdAt" => {
                data.insert("secret".into(), json!(secret.expose()));
                data.insert(k, v);
            }
            _ => {
                data.insert(k, v);
            }
        }
    }
    Ok((StatusCode::CREATED, Json(json!({ "data": data }))))
}

/// `?limit=` and `?cursor=` of a listing.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 100, default 20.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// The previous page's `nextCursor`.
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

/// The organisation's webhooks, oldest first (no secrets, header values masked).
#[utoipa::path(
    get,
    path = "/webhooks",
    tag = "webhooks",
    operation_id = "listWebhooks",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "One page", body = schema::WebhookPage),
        (status = 400, description = "`invalid_query`: the query string cannot be read", body = schema::ErrorBody),
        (status = 422, description = "`invalid_limit`, `invalid_cursor`", body = schema::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    QueryParams(q): QueryParams<ListQuery>,
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

/// One webhook (no secret, header values masked).
#[utoipa::path(
    get,
    path = "/webhooks/{id}",
    tag = "webhooks",
    operation_id = "getWebhook",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The webhook's id (`whk_…`)")),
    responses(
        (status = 200, description = "The webhook", body = schema::WebhookData),
        (status = 404, description = "`not_found`: no such webhook in the organisation", body = schema::ErrorBody),
    )
)]
pub async fn get_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let w = state
        .store
        .get_webhook(&caller.org, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook not found"))?;
    Ok(Json(json!({ "data": webhook_json(&w) })))
}

/// Changes any of a webhook's fields, with the rules of creation. Answers the webhook with
/// its header values masked. Changing `isActive` emits `webhook.enabled` or
/// `webhook.disabled`; enabling clears `disabledReason`.
#[utoipa::path(
    patch,
    path = "/webhooks/{id}",
    tag = "webhooks",
    operation_id = "updateWebhook",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The webhook's id (`whk_…`)")),
    request_body(content = schema::UpdateWebhook, content_type = "application/json"),
    responses(
        (status = 200, description = "The webhook after the change (header values masked)", body = schema::WebhookData),
        (status = 400, description = "`invalid_json` (also `isActive: null`), `invalid_body`", body = schema::ErrorBody),
        (status = 404, description = "`not_found`: no such webhook in the organisation", body = schema::ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 1 MiB", body = schema::ErrorBody),
        (status = 422, description = "A rule is broken: `name_required`, `name_too_long`, `url_required`, `invalid_url`, `url_not_https`, `url_too_long`, `url_private_address`, `events_required`, `unknown_event`, `invalid_rate_limit`, `too_many_headers`, `invalid_header_name`, `invalid_header_value`, `reserved_header`, `duplicate_header`, `headers_too_large`", body = schema::ErrorBody),
    )
)]
pub async fn update(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams(id): PathParams<String>,
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
        headers: body.headers,
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

/// Deletes a webhook; its queued deliveries are dropped, not sent. Emits `webhook.deleted`.
#[utoipa::path(
    delete,
    path = "/webhooks/{id}",
    tag = "webhooks",
    operation_id = "deleteWebhook",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The webhook's id (`whk_…`)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such webhook in the organisation", body = schema::ErrorBody),
    )
)]
pub async fn remove(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams(id): PathParams<String>,
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

/// A new secret, shown only here; for 24 hours deliveries also carry a Standard Webhooks
/// signature made with the previous one.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    operation_id = "rotateWebhookSecret",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The webhook's id (`whk_…`)")),
    responses(
        (status = 200, description = "The new secret", body = schema::SecretData),
        (status = 404, description = "`not_found`: no such webhook in the organisation", body = schema::ErrorBody),
    )
)]
pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<schema::SecretData>, ApiError> {
    let id = parse_id(&id)?;
    let secret = state
        .store
        .rotate_secret(&caller.org, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook not found"))?;
    Ok(Json(schema::SecretData {
        data: schema::Secret {
            secret: secret.expose().to_owned(),
        },
    }))
}
