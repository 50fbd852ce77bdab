//! `GET /event-types`: the catalog of the public docs.

use axum::Json;
use serde_json::{json, Value};
use wf_core::events::EventType;

pub async fn list() -> Json<Value> {
    let data: Vec<Value> = EventType::ALL
        .iter()
        .map(|e| {
            json!({
                "name": e.as_str(),
                "category": e.category().name(),
                "description": e.description(),
            })
        })
        .collect();
    Json(json!({ "data": data }))
}
