//! The delivery log: listing and finding deliveries, one event's deliveries, manual
//! retries, replays of dead deliveries, and test sends.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use serde::Deserialize;
use wf_broker::routes;
use wf_core::envelope::Event;
use wf_core::events::{EventFilters, EventType};
use wf_core::examples::example_data;
use wf_core::ids::{DeliveryId, EventId, WebhookId};
use wf_core::messages::DeliveryJob;
use wf_core::requests::{self, ReplayWindow};
use wf_core::time::{format_ms, parse_rfc3339};
use wf_store::{
    Delivery, DeliveryFilter, DeliveryStatus, NewDelivery, NewPayload, ReplayFilter, ReplayItem,
    Webhook,
};

use super::auth::Caller;
use super::extract::{PathParams, QueryParams};
use super::json::{JsonObject, OptionalJsonObject};
use super::webhooks::{cursor_error, parse_limit};
use super::{schema, ApiError};
use crate::AppState;

/// The Delivery object (docs/api.md, "Delivery").
pub fn delivery_json(d: &Delivery) -> schema::Delivery {
    schema::Delivery {
        id: d.id.as_str().to_owned(),
        event_id: d.event_id.as_str().to_owned(),
        webhook_id: d.webhook_id.as_str().to_owned(),
        event: d.event.as_str(),
        status: d.status.into(),
        attempts: d
            .attempts
            .iter()
            .map(|a| schema::Attempt {
                attempt: a.attempt,
                at: format_ms(a.at),
                status_code: a.status_code,
                error: a.error.clone(),
                duration_ms: a.duration_ms,
            })
            .collect(),
        created_at: format_ms(d.created_at),
        updated_at: format_ms(d.updated_at),
    }
}

/// The query of `GET /webhooks/{id}/deliveries`: filters (all optional, combined) and
/// the page.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only deliveries in this status.
    #[param(value_type = Option<schema::DeliveryStatus>)]
    status: Option<String>,
    /// Only deliveries of this event type (exact, not a wildcard).
    #[param(example = "alert.created")]
    event: Option<String>,
    /// Only deliveries created at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Only deliveries created before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// 1 to 100, default 20.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// The previous page's `nextCursor`.
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

/// An RFC 3339 query parameter, when given (an empty value is not a time).
fn query_time(raw: Option<&str>, field: &'static str) -> Result<Option<DateTime<Utc>>, ApiError> {
    match raw {
        None => Ok(None),
        Some(s) => parse_rfc3339(s).map(Some).ok_or_else(|| {
            ApiError::invalid(
                "invalid_timestamp",
                field,
                format!("`{field}` must be an RFC 3339 timestamp, e.g. 2026-05-19T12:00:00Z"),
            )
        }),
    }
}

/// `since` before `until`, when both are given.
fn check_range(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Result<(), ApiError> {
    match (since, until) {
        (Some(s), Some(u)) if s >= u => Err(ApiError::invalid(
            "invalid_time_range",
            "until",
            "`until` must be after `since`",
        )),
        _ => Ok(()),
    }
}

/// The webhook's deliveries, newest first, each with its attempts.
#[utoipa::path(
    get,
    path = "/webhooks/{id}/deliveries",
    tag = "deliveries",
    operation_id = "listDeliveries",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The webhook's id (`whk_…`)"),
        DeliveriesQuery
    ),
    responses(
        (status = 200, description = "One page, newest first", body = schema::DeliveryPage),
        (status = 400, description = "`invalid_query`: the query string cannot be read", body = schema::ErrorBody),
        (status = 404, description = "`not_found`: no such webhook in the organisation", body = schema::ErrorBody),
        (status = 422, description = "`invalid_status`, `unknown_event`, `invalid_timestamp` (`since`, `until`), `invalid_time_range`, `invalid_limit`, `invalid_cursor`", body = schema::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<DeliveriesQuery>,
) -> Result<Json<schema::DeliveryPage>, ApiError> {
    let webhook = own_webhook(&state, &caller, &id).await?.id;
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
    let event = match q.event.as_deref() {
        None => None,
        Some(e) => Some(EventType::parse(e).ok_or_else(|| {
            ApiError::invalid(
                "unknown_event",
                "event",
                format!("unknown event type `{e}`; see GET /api/v1/event-types"),
            )
        })?),
    };
    let since = query_time(q.since.as_deref(), "since")?;
    let until = query_time(q.until.as_deref(), "until")?;
    check_range(since, until)?;
    let limit = parse_limit(q.limit.as_deref())?;
    let filter = DeliveryFilter {
        status,
        event,
        since,
        until,
    };
    let page = state
        .store
        .find_deliveries(
            &caller.org,
            &webhook,
            &filter,
            limit,
            q.cursor.as_deref().filter(|c| !c.is_empty()),
        )
        .await
        .map_err(cursor_error)?;
    Ok(Json(schema::DeliveryPage {
        data: page.items.iter().map(delivery_json).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One delivery of any webhook of the organisation, with its attempts.
#[utoipa::path(
    get,
    path = "/deliveries/{deliveryId}",
    tag = "deliveries",
    operation_id = "getDelivery",
    security(("bearer" = [])),
    params(("deliveryId" = String, Path, description = "The delivery's id (`dlv_…`, the `X-WorkFlows-Delivery` header)")),
    responses(
        (status = 200, description = "The delivery", body = schema::DeliveryData),
        (status = 404, description = "`not_found`: no such delivery to a webhook of the organisation", body = schema::ErrorBody),
    )
)]
pub async fn get_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams(delivery_id): PathParams<String>,
) -> Result<Json<schema::DeliveryData>, ApiError> {
    let id =
        DeliveryId::parse(&delivery_id).map_err(|_| ApiError::not_found("delivery not found"))?;
    let d = state
        .store
        .get_org_delivery(&caller.org, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery not found"))?;
    Ok(Json(schema::DeliveryData {
        data: delivery_json(&d),
    }))
}

/// An event and each of its deliveries to the organisation's webhooks.
#[utoipa::path(
    get,
    path = "/events/{eventId}",
    tag = "deliveries",
    operation_id = "getEvent",
    security(("bearer" = [])),
    params(("eventId" = String, Path, description = "The event's id (`evt_…` or the producer's)")),
    responses(
        (status = 200, description = "The event and its deliveries, oldest first", body = schema::EventData),
        (status = 404, description = "`not_found`: the organisation has no delivery of this event", body = schema::ErrorBody),
    )
)]
pub async fn get_event(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams(event_id): PathParams<String>,
) -> Result<Json<schema::EventData>, ApiError> {
    let id = EventId::parse(&event_id).map_err(|_| ApiError::not_found("event not found"))?;
    let e = state
        .store
        .event_deliveries(&caller.org, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("event not found"))?;
    Ok(Json(schema::EventData {
        data: schema::EventDeliveries {
            id: e.event_id.as_str().to_owned(),
            event: e.event.as_str(),
            timestamp: format_ms(e.timestamp),
            deliveries: e.deliveries.iter().map(delivery_json).collect(),
        },
    }))
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

/// Re-queues one delivery now, whatever its status: the same id, the next attempt number,
/// the whole retry schedule again, signed afresh.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/deliveries/{deliveryId}/retry",
    tag = "deliveries",
    operation_id = "retryDelivery",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The webhook's id (`whk_…`)"),
        ("deliveryId" = String, Path, description = "The delivery's id (`dlv_…`)")
    ),
    responses(
        (status = 202, description = "Queued", body = schema::RetryData),
        (status = 404, description = "`not_found`: no such webhook, or no such delivery of it", body = schema::ErrorBody),
        (status = 409, description = "`webhook_inactive`: enable the webhook first", body = schema::ErrorBody),
        (status = 410, description = "`payload_expired`: the event payload is past `WF_DELIVERY_LOG_RETENTION`", body = schema::ErrorBody),
    )
)]
pub async fn retry(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams((id, delivery_id)): PathParams<(String, String)>,
) -> Result<(StatusCode, Json<schema::RetryData>), ApiError> {
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
        Json(schema::RetryData {
            data: schema::Retried {
                id: delivery.as_str().to_owned(),
                status: schema::DeliveryStatus::Pending,
            },
        }),
    ))
}

/// Re-queues the webhook's dead deliveries created in the window, like a retry of each, up
/// to 100,000 per call.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/replay",
    tag = "deliveries",
    operation_id = "replayDeliveries",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The webhook's id (`whk_…`)")),
    request_body(content = schema::ReplayRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued", body = schema::ReplayData),
        (status = 400, description = "`invalid_json`, `invalid_body`", body = schema::ErrorBody),
        (status = 404, description = "`not_found`: no such webhook in the organisation", body = schema::ErrorBody),
        (status = 409, description = "`webhook_inactive`: enable the webhook first", body = schema::ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 1 MiB", body = schema::ErrorBody),
        (status = 422, description = "`status_required`, `invalid_status` (only `dead`), `invalid_timestamp`, `invalid_time_range`", body = schema::ErrorBody),
    )
)]
pub async fn replay(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<schema::ReplayData>), ApiError> {
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
        Json(schema::ReplayData {
            data: schema::Replayed { queued, skipped },
        }),
    ))
}

/// Sends an example event of one type to this webhook only, through the normal pipeline:
/// a delivery job on `workflows.deliveries`, signed like any other, logged (pending) first
/// so it shows in the delivery log and can be retried.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/test",
    tag = "deliveries",
    operation_id = "testWebhook",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The webhook's id (`whk_…`)")),
    request_body(content = Option<schema::TestSendRequest>, content_type = "application/json", description = "Optional; an empty body sends the webhook's first event type"),
    responses(
        (status = 202, description = "Queued: follow `deliveryId` in the delivery log", body = schema::TestSendData),
        (status = 400, description = "`invalid_json`, `invalid_body`", body = schema::ErrorBody),
        (status = 404, description = "`not_found`: no such webhook in the organisation", body = schema::ErrorBody),
        (status = 409, description = "`webhook_inactive`: enable the webhook first", body = schema::ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 1 MiB", body = schema::ErrorBody),
        (status = 422, description = "`unknown_event`: not an event type; `event_not_subscribed`: a type the webhook does not subscribe to", body = schema::ErrorBody),
    )
)]
pub async fn test_send(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    OptionalJsonObject(body): OptionalJsonObject,
) -> Result<(StatusCode, Json<schema::TestSendData>), ApiError> {
    let asked = requests::test_send(&body)?;
    let webhook = own_webhook(&state, &caller, &id).await?;
    let filters = EventFilters::parse(&webhook.events)
        .map_err(|e| ApiError::internal("stored webhook events do not parse", e))?;
    let event = match asked {
        Some(name) => {
            let event = EventType::parse(&name).ok_or_else(|| {
                ApiError::invalid(
                    "unknown_event",
                    "event",
                    format!("unknown event type `{name}`; see GET /api/v1/event-types"),
                )
            })?;
            if !filters.matches(event) {
                return Err(ApiError::invalid(
                    "event_not_subscribed",
                    "event",
                    format!(
                        "the webhook does not subscribe to `{name}` (it subscribes to {})",
                        webhook.events.join(", ")
                    ),
                ));
            }
            event
        }
        None => filters
            .first_type()
            .ok_or_else(|| ApiError::internal("webhook without events", webhook.id.as_str()))?,
    };
    if !webhook.is_active {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "webhook_inactive",
            "the webhook is inactive; enable it before sending a test",
        ));
    }
    let ev = Event {
        id: EventId::generate(),
        event,
        org_id: caller.org.clone(),
        timestamp: wf_core::time::now_ms(),
        data: example_data(event),
    };
    let body: Arc<str> = String::from_utf8(ev.payload())
        .map_err(|e| ApiError::internal("payload is not UTF-8", e))?
        .into();
    let now = wf_core::time::now_ms();
    let job = DeliveryJob::first(&ev, &webhook.id, body.clone(), now.timestamp_millis());
    let j = job.v1();
    // Logged before it is queued, so a worker's attempt always finds its payload and the
    // delivery is in the log (pending) even before the attempt.
    state
        .store
        .insert_payloads(&[NewPayload {
            org_id: caller.org.clone(),
            event_id: ev.id.clone(),
            body,
            event_ts_ms: j.event_ts_ms,
            created_at: now,
        }])
        .await?;
    state
        .store
        .insert_deliveries(&[NewDelivery {
            id: j.delivery_id.clone(),
            org_id: caller.org.clone(),
            webhook_id: webhook.id.clone(),
            event_id: ev.id.clone(),
            event,
            created_at: now,
        }])
        .await?;
    routes::queue_delivery(&state.publisher, &job)
        .await
        .map_err(|e| ApiError::unavailable("event broker unavailable", e))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(schema::TestSendData {
            data: schema::TestSent {
                delivery_id: j.delivery_id.as_str().to_owned(),
                event_id: ev.id.as_str().to_owned(),
            },
        }),
    ))
}
