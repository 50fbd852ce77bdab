//! `GET /event-types`: the catalog of the public docs, with an example `data` object of
//! each type (what a test send delivers).

use axum::Json;
use wf_core::events::EventType;
use wf_core::examples::example_data;

use super::schema;

/// The 30 event types, in the order of the docs. No authentication.
#[utoipa::path(
    get,
    path = "/event-types",
    tag = "events",
    operation_id = "listEventTypes",
    responses((status = 200, description = "Every event type", body = schema::EventTypeList))
)]
pub async fn list() -> Json<schema::EventTypeList> {
    Json(schema::EventTypeList {
        data: EventType::ALL
            .iter()
            .map(|e| schema::EventTypeInfo {
                name: e.as_str(),
                category: e.category().name(),
                description: e.description(),
                example: example_data(*e),
            })
            .collect(),
    })
}
