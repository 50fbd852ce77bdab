//! API keys: `POST /api-keys` (the key is shown once) and `DELETE /api-keys/{id}`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};
use wf_core::events::EventType;
use wf_core::ids::ApiKeyId;
use wf_core::requests;
use wf_core::time::format_ms;
use wf_store::ApiKey;

use super::auth::Caller;
use super::emit::system_event;
use super::extract::PathParams;
use super::json::JsonObject;
use super::{schema, ApiError};
use crate::AppState;

fn key_json(k: &ApiKey) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(k.id));
    m.insert("name".into(), json!(k.name));
    m.insert("createdAt".into(), json!(format_ms(k.created_at)));
    m
}

/// A new API key of the caller's organisation; the key is shown only here. Emits
/// `api_key.created`.
#[utoipa::path(
    post,
    path = "/api-keys",
    tag = "api-keys",
    operation_id = "createApiKey",
    security(("bearer" = [])),
    request_body(content = schema::CreateApiKey, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `key` is shown only here", body = schema::CreatedApiKeyData),
        (status = 400, description = "`invalid_json`, `invalid_body`", body = schema::ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 1 MiB", body = schema::ErrorBody),
        (status = 422, description = "`name_required`, `name_too_long`", body = schema::ErrorBody),
    )
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<schema::CreatedApiKeyData>), ApiError> {
    let name = requests::api_key_create(&body)?;
    let (key, token) = state.store.create_api_key(&caller.org, &name).await?;
    let public = key_json(&key);
    system_event(
        &state,
        &caller.org,
        EventType::ApiKeyCreated,
        public.clone(),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(schema::CreatedApiKeyData {
            data: schema::CreatedApiKey {
                id: key.id.as_str().to_owned(),
                name: key.name.clone(),
                created_at: format_ms(key.created_at),
                key: token,
            },
        }),
    ))
}

/// Revokes an API key: it is refused from then on. Emits `api_key.deleted`.
#[utoipa::path(
    delete,
    path = "/api-keys/{id}",
    tag = "api-keys",
    operation_id = "revokeApiKey",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The key's id (`key_…`)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "`not_found`: no such key in the organisation, or already revoked", body = schema::ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    let id = ApiKeyId::parse(&id).map_err(|_| ApiError::not_found("API key not found"))?;
    let key = state
        .store
        .revoke_api_key(Some(&caller.org), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key not found"))?;
    system_event(
        &state,
        &caller.org,
        EventType::ApiKeyDeleted,
        key_json(&key),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
