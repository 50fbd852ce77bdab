//! Publishing events to `workflows.events`: producer events from `POST /events` and the
//! system's own (`webhook.created`, `api_key.deleted`, …), which go through the very same
//! pipeline as any other event.

use std::time::Instant;

use serde_json::{Map, Value};
use wf_broker::PublishError;
use wf_core::envelope::Event;
use wf_core::events::EventType;
use wf_core::ids::{EventId, OrgId};
use wf_telemetry::metrics;

use crate::AppState;

/// Publishes a validated event and waits for the broker's confirm.
///
/// # Errors
/// [`PublishError`] when the broker nacked, could not route, or the connection dropped.
pub async fn publish(state: &AppState, event: &Event) -> Result<(), PublishError> {
    let started = Instant::now();
    // The source header lets the fan-out tell HTTP-ingested events from ones producers
    // published straight to the exchange (the `source` label of wf_events_ingested_total).
    let res = wf_broker::routes::publish_event(&state.publisher, event, "http").await;
    metrics()
        .publish_confirm_seconds
        .observe(started.elapsed().as_secs_f64());
    res
}

/// Emits a system event for `org` through the outbox ([`wf_service::outbox::emit`]): when the
/// broker does not take it now, a relay publishes it later. It does not fail the
/// management action that caused it (that action is already committed).
pub async fn system_event(
    state: &AppState,
    org: &OrgId,
    event: EventType,
    data: Map<String, Value>,
) {
    let ev = Event {
        id: EventId::generate(),
        event,
        org_id: org.clone(),
        timestamp: wf_core::time::now_ms(),
        data,
    };
    wf_service::outbox::emit(&state.store, &state.publisher, &ev, "http").await;
}
