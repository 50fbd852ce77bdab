//! API keys: `POST /api-keys` (the key is shown once) and `DELETE /api-keys/{id}`.

use std::sync::Arc;

use axum::extract::{Path, State};
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
use super::json::JsonObject;
use super::ApiError;
use crate::AppState;

fn key_json(k: &ApiKey) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(k.id));
    m.insert("name".into(), json!(k.name));
    m.insert("createdAt".into(), json!(format_ms(k.created_at)));
    m
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let mut data = public;
    data.insert("key".into(), json!(token));
    Ok((StatusCode::CREATED, Json(json!({ "data": data }))))
}

pub async fn revoke(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
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
