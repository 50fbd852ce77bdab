//! Webhook management: create, list, read, update, delete, rotate the secret.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use wf_core::events::{EventFilters, EventFiltersError, EventType};
use wf_core::headers::CustomHeaders;
use wf_core::ids::WebhookId;
use wf_core::url_policy::WebhookUrl;
use wf_store::{NewWebhook, Webhook, WebhookPatch};

use super::auth::Caller;
use super::emit::system_event;
use super::extract::{PathParams, QueryParams};
use super::json::{opt_bool, opt_string, opt_string_array, opt_string_map, JsonObject};
use super::{schema, ApiError};
use crate::AppState;

/// Longest webhook name, in Unicode scalar values, after trimming.
pub const MAX_NAME_CHARS: usize = 100;

/// The Webhook object (docs/api.md, "Webhook"; no secret).
pub fn webhook_json(w: &Webhook) -> Map<String, Value> {
    w.view().to_json()
}

/// The largest `rateLimit`, deliveries per second.
pub const MAX_RATE_LIMIT: u64 = 10_000;

/// The `rateLimit` field as given: absent (`None`), `null` (`Some(None)`) or a number.
///
/// # Errors
/// `400 invalid_json` for any other type.
fn rate_limit_field(
    body: &Map<String, Value>,
) -> Result<Option<Option<&serde_json::Number>>, ApiError> {
    match body.get("rateLimit") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Number(n)) => Ok(Some(Some(n))),
        Some(_) => {
            Err(ApiError::bad_json("`rateLimit` must be an integer or null")
                .with_field("rateLimit"))
        }
    }
}

/// `rateLimit`'s rule: an integer from 1 to 10,000 deliveries per second, or `null` for
/// no limit.
///
/// # Errors
/// `422 invalid_rate_limit` otherwise.
fn parse_rate_limit(
    field: Option<Option<&serde_json::Number>>,
) -> Result<Option<Option<u32>>, ApiError> {
    let Some(value) = field else {
        return Ok(None);
    };
    let Some(n) = value else {
        return Ok(Some(None));
    };
    n.as_u64()
        .filter(|v| (1..=MAX_RATE_LIMIT).contains(v))
        .and_then(|v| u32::try_from(v).ok())
        .map(|v| Some(Some(v)))
        .ok_or_else(|| {
            ApiError::invalid(
                "invalid_rate_limit",
                "rateLimit",
                format!(
                    "`rateLimit` must be an integer from 1 to {MAX_RATE_LIMIT} (deliveries \
                     per second), or null for no limit"
                ),
            )
        })
}

/// A name (webhook or API key): trimmed, 1..=100 Unicode scalar values.
pub(super) fn parse_name(raw: Option<String>) -> Result<String, ApiError> {
    let name = raw.as_deref().map(str::trim).unwrap_or("");
    if name.is_empty() {
        return Err(ApiError::invalid(
            "name_required",
            "name",
            "`name` is required",
        ));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(
            "name_too_long",
            "name",
            format!("`name` must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_owned())
}

fn parse_url(state: &AppState, raw: Option<String>) -> Result<String, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::invalid("url_required", "url", "`url` is required"))?;
    WebhookUrl::parse(&raw, &state.config.allowed_target_cidrs)
        .map(|u| u.as_str().to_owned())
        .map_err(|e| ApiError::invalid(e.code(), "url", e.to_string()))
}

fn parse_events(raw: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let raw = raw.unwrap_or_default();
    EventFilters::parse(&raw)
        .map(|f| f.to_strings())
        .map_err(|e| match e {
            EventFiltersError::Empty => ApiError::invalid(
                "events_required",
                "events",
                "`events` must list at least one event type",
            ),
            EventFiltersError::Unknown(u) => ApiError::invalid(
                "unknown_event",
                "events",
                format!("{u}; see GET /api/v1/event-types"),
            ),
        })
}

/// `headers`' rules (see [`wf_core::headers`]).
///
/// # Errors
/// `422` with the rule's code (`too_many_headers`, `invalid_header_name`,
/// `invalid_header_value`, `reserved_header`, `duplicate_header`, `headers_too_large`).
fn parse_headers(raw: Option<Vec<(String, String)>>) -> Result<CustomHeaders, ApiError> {
    CustomHeaders::parse(raw.unwrap_or_default())
        .map_err(|e| ApiError::invalid(e.code(), "headers", e.to_string()))
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
    // Type errors first (400), then rules in field order (422).
    let name = opt_string(&body, "name")?;
    let url = opt_string(&body, "url")?;
    let events = opt_string_array(&body, "events")?;
    let is_active = opt_bool(&body, "isActive")?;
    let rate_limit = rate_limit_field(&body)?;
    let headers = opt_string_map(&body, "headers")?;
    let new = NewWebhook {
        name: parse_name(name)?,
        url: parse_url(&state, url)?,
        events: parse_events(events)?,
        is_active: is_active.unwrap_or(true),
        rate_limit: parse_rate_limit(rate_limit)?.flatten(),
    };
    let headers = parse_headers(headers)?;
    let (webhook, secret) = state
        .store
        .create_webhook_with_headers(&caller.org, new, &headers)
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
                data.insert(k, Value::Object(headers.to_json()));
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
    let present = |f: &str| body.contains_key(f);
    let name = opt_string(&body, "name")?;
    let url = opt_string(&body, "url")?;
    let events = opt_string_array(&body, "events")?;
    let is_active = opt_bool(&body, "isActive")?;
    if present("isActive") && is_active.is_none() {
        return Err(ApiError::bad_json("`isActive` must be a boolean").with_field("isActive"));
    }
    let rate_limit = rate_limit_field(&body)?;
    let headers = opt_string_map(&body, "headers")?;
    let patch = WebhookPatch {
        name: if present("name") {
            Some(parse_name(name)?)
        } else {
            None
        },
        url: if present("url") {
            Some(parse_url(&state, url)?)
        } else {
            None
        },
        events: if present("events") {
            Some(parse_events(events)?)
        } else {
            None
        },
        is_active,
        rate_limit: parse_rate_limit(rate_limit)?,
        // `null` and `{}` both remove every header.
        headers: if present("headers") {
            Some(parse_headers(headers)?)
        } else {
            None
        },
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
