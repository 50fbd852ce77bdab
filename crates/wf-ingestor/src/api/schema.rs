//! The shapes of the API's bodies, as types the OpenAPI document is generated from.
//!
//! Responses that the ingestor alone builds are serialised from these very types, so the
//! document cannot describe something else. The Webhook object is built by
//! [`wf_core::views::WebhookView`] (the worker emits it in `webhook.*` events too); its
//! schema here is checked against that view by a test. Request bodies are parsed field by
//! field (for the API's two-pass errors, see [`super::json`]); their schemas describe what
//! that parsing accepts.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

// ---------------------------------------------------------------- errors

/// Every error of the API.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code; each response lists those it can carry.
    #[schema(example = "url_not_https")]
    pub code: &'static str,
    /// Human-readable explanation.
    #[schema(example = "URL must use https, not `http`")]
    pub message: String,
    /// The request field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "url")]
    pub field: Option<&'static str>,
}

// ---------------------------------------------------------------- webhooks

/// Why the system disabled a webhook.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum DisabledReason {
    /// Its endpoint answered `410 Gone`.
    Gone,
    /// No `2xx` for `WF_AUTO_DISABLE_AFTER`, with at least 10 failed attempts.
    Failing,
}

/// A webhook (never its secret). Built by `wf_core::views::WebhookView`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Webhook)]
#[allow(dead_code)]
pub struct WebhookSchema {
    #[schema(example = "whk_8f3a2c91d04b4e6f")]
    id: String,
    /// 1 to 100 characters.
    #[schema(example = "Slack Notifications")]
    name: String,
    #[schema(example = "https://your-server.com/webhooks/workflows")]
    url: String,
    /// Event types and category wildcards (`alert.*`).
    #[schema(example = json!(["alert.created", "alert.critical", "csv.uploaded"]))]
    events: Vec<String>,
    is_active: bool,
    /// `null` unless the system disabled the webhook; cleared when it is enabled again.
    disabled_reason: Option<DisabledReason>,
    /// Deliveries per second at most; `null`: no limit.
    #[schema(minimum = 1, maximum = 10000)]
    rate_limit: Option<u32>,
    /// Custom request headers: the names, each value masked as `********` (shown in
    /// clear only in the create response).
    #[schema(example = json!({"X-Api-Key": "********"}))]
    headers: BTreeMap<String, String>,
    #[schema(format = DateTime, example = "2026-05-19T12:00:00.000Z")]
    created_at: String,
    #[schema(format = DateTime, example = "2026-05-19T12:00:00.000Z")]
    updated_at: String,
}

/// The schema of the create response: `WebhookSchema`'s properties plus `secret`.
/// (`#[serde(flatten)]` would express it, but the response keeps the documented key
/// order, secret before `createdAt`, which a flatten cannot.)
pub fn created_webhook_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema, Type};
    use utoipa::openapi::RefOr;
    let secret = ObjectBuilder::new()
        .property(
            "secret",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "`whsec_` and the base64 of 24 random bytes: signs every delivery. Shown \
                     only here.",
                ))
                .examples([serde_json::json!("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]),
        )
        .required("secret");
    RefOr::T(Schema::AllOf(
        AllOfBuilder::new()
            .item(utoipa::openapi::Ref::from_schema_name("Webhook"))
            .item(secret)
            .description(Some(
                "A webhook just created: custom header values in clear, and its secret.",
            ))
            .build(),
    ))
}

/// `{"data": Webhook}`
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct WebhookData {
    data: WebhookSchema,
}

/// `{"data": Webhook + "secret"}`
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct CreatedWebhookData {
    #[schema(schema_with = created_webhook_schema)]
    data: Value,
}

/// One page of webhooks, oldest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct WebhookPage {
    data: Vec<WebhookSchema>,
    /// Pass back as `?cursor=` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

/// `POST /webhooks`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct CreateWebhook {
    /// 1 to 100 characters after trimming.
    #[schema(example = "Slack Notifications")]
    name: String,
    /// Absolute `https://` URL, at most 2048 characters, no user name or password, not a
    /// private or internal host.
    #[schema(example = "https://your-server.com/webhooks/workflows")]
    url: String,
    /// At least one event type or category wildcard (`alert.*`).
    #[schema(example = json!(["alert.created", "alert.critical", "csv.uploaded"]))]
    events: Vec<String>,
    /// Default `true`.
    is_active: Option<bool>,
    /// 1 to 10,000 deliveries per second; `null` or absent: no limit.
    #[schema(minimum = 1, maximum = 10000)]
    rate_limit: Option<u32>,
    /// At most 20 custom request headers sent with every delivery, 4 KiB in all. Names are
    /// HTTP tokens and not reserved (`Content-Type`, `Content-Length`, `Host`,
    /// `User-Agent`, `Transfer-Encoding`, `Connection`, `X-WorkFlows-*`, `webhook-*`);
    /// values are visible ASCII, spaces and tabs.
    #[schema(example = json!({"X-Api-Key": "gateway-key-123"}))]
    headers: Option<BTreeMap<String, String>>,
}

/// `PATCH /webhooks/{id}`: any of the fields, with the rules of creation; absent fields
/// stay as they are.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct UpdateWebhook {
    name: Option<String>,
    url: Option<String>,
    events: Option<Vec<String>>,
    is_active: Option<bool>,
    /// 1 to 10,000 deliveries per second; `null` removes the limit.
    #[schema(minimum = 1, maximum = 10000)]
    rate_limit: Option<u32>,
    /// Replaces every custom header; `null` or `{}` removes them.
    headers: Option<BTreeMap<String, String>>,
}

/// `{"data": {"secret"}}`
#[derive(Serialize, ToSchema)]
pub struct SecretData {
    pub data: Secret,
}

/// A new secret, shown only in this response.
#[derive(Serialize, ToSchema)]
pub struct Secret {
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

// ---------------------------------------------------------------- deliveries

/// Where a delivery stands.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
    Dead,
}

impl From<wf_store::DeliveryStatus> for DeliveryStatus {
    fn from(s: wf_store::DeliveryStatus) -> Self {
        match s {
            wf_store::DeliveryStatus::Pending => DeliveryStatus::Pending,
            wf_store::DeliveryStatus::Delivered => DeliveryStatus::Delivered,
            wf_store::DeliveryStatus::Failed => DeliveryStatus::Failed,
            wf_store::DeliveryStatus::Dead => DeliveryStatus::Dead,
        }
    }
}

/// One event sent to one webhook; `id` is the `X-WorkFlows-Delivery` header.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    #[schema(example = "dlv_2c9e61ab03f14d7a")]
    pub id: String,
    #[schema(example = "evt_5d1f0b7c9a2e4f38")]
    pub event_id: String,
    #[schema(example = "whk_8f3a2c91d04b4e6f")]
    pub webhook_id: String,
    #[schema(example = "alert.created")]
    pub event: &'static str,
    pub status: DeliveryStatus,
    /// In order.
    pub attempts: Vec<Attempt>,
    #[schema(format = DateTime, example = "2026-05-19T12:05:00.120Z")]
    pub created_at: String,
    #[schema(format = DateTime, example = "2026-05-19T12:05:15.210Z")]
    pub updated_at: String,
}

/// One HTTP attempt.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    #[schema(minimum = 1)]
    pub attempt: u32,
    /// When it started.
    #[schema(format = DateTime, example = "2026-05-19T12:05:00.120Z")]
    pub at: String,
    /// `null` when no response arrived.
    pub status_code: Option<u16>,
    /// `null` for a plain HTTP status; otherwise starts with the kind of failure.
    pub error: Option<String>,
    pub duration_ms: u32,
}

/// `{"data": Delivery}`
#[derive(Serialize, ToSchema)]
pub struct DeliveryData {
    pub data: Delivery,
}

/// One page of deliveries, newest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    pub data: Vec<Delivery>,
    /// Pass back as `?cursor=` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// `{"data": {"id", "status": "pending"}}`
#[derive(Serialize, ToSchema)]
pub struct RetryData {
    pub data: Retried,
}

/// A delivery queued again.
#[derive(Serialize, ToSchema)]
pub struct Retried {
    pub id: String,
    /// Always `pending`.
    pub status: DeliveryStatus,
}

/// `POST /webhooks/{id}/replay`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ReplayRequest {
    /// Must be `dead`.
    #[schema(example = "dead")]
    status: String,
    /// Created at or after (RFC 3339).
    #[schema(format = DateTime)]
    since: Option<String>,
    /// Created before (RFC 3339); after `since`.
    #[schema(format = DateTime)]
    until: Option<String>,
}

/// `{"data": {"queued", "skipped"}}`
#[derive(Serialize, ToSchema)]
pub struct ReplayData {
    pub data: Replayed,
}

/// What a replay re-queued.
#[derive(Serialize, ToSchema)]
pub struct Replayed {
    pub queued: usize,
    /// Deliveries whose payload is past retention.
    pub skipped: usize,
}

/// `POST /webhooks/{id}/test`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct TestSendRequest {
    /// An event type the webhook subscribes to; default: its first one (a wildcard
    /// standing for its category's first type).
    #[schema(example = "alert.created")]
    event: Option<String>,
}

/// `{"data": {"deliveryId", "eventId"}}`
#[derive(Serialize, ToSchema)]
pub struct TestSendData {
    pub data: TestSent,
}

/// The test event and its delivery, queued: follow it in the delivery log.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestSent {
    #[schema(example = "dlv_2c9e61ab03f14d7a")]
    pub delivery_id: String,
    #[schema(example = "evt_5d1f0b7c9a2e4f38")]
    pub event_id: String,
}

/// `{"data": {"id", "event", "timestamp", "deliveries"}}`
#[derive(Serialize, ToSchema)]
pub struct EventData {
    pub data: EventDeliveries,
}

/// An event and each of its deliveries to the organisation's webhooks.
#[derive(Serialize, ToSchema)]
pub struct EventDeliveries {
    pub id: String,
    #[schema(example = "alert.created")]
    pub event: &'static str,
    /// The event's timestamp (once its payload is past retention, when its first delivery
    /// was logged).
    #[schema(format = DateTime, example = "2026-05-19T12:05:00.000Z")]
    pub timestamp: String,
    /// Oldest first.
    pub deliveries: Vec<Delivery>,
}

// ---------------------------------------------------------------- events

/// `POST /events`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct IngestEvent {
    /// One of the event types.
    #[schema(example = "alert.created")]
    event: String,
    /// A JSON object; default `{}`.
    #[schema(value_type = Option<Object>, example = json!({"id": "alt_xyz789", "severity": "critical"}))]
    data: Option<Map<String, Value>>,
    /// The producer's id (1 to 128 of `A-Z a-z 0-9 _ . : -`): the same id within 24 h
    /// answers the first response and fans out once.
    #[schema(example = "evt_1234")]
    id: Option<String>,
    /// RFC 3339; default now.
    #[schema(format = DateTime)]
    timestamp: Option<String>,
}

/// `{"data": {"id", "event"}}`
#[derive(Serialize, ToSchema)]
pub struct AcceptedEventData {
    pub data: AcceptedEvent,
}

/// An event the broker has.
#[derive(Serialize, ToSchema)]
pub struct AcceptedEvent {
    #[schema(example = "evt_5d1f0b7c9a2e4f38")]
    pub id: String,
    #[schema(example = "alert.created")]
    pub event: &'static str,
}

/// `{"data": [EventType]}`
#[derive(Serialize, ToSchema)]
pub struct EventTypeList {
    pub data: Vec<EventTypeInfo>,
}

/// One event type of the catalog.
#[derive(Serialize, ToSchema)]
pub struct EventTypeInfo {
    #[schema(example = "alert.created")]
    pub name: &'static str,
    #[schema(example = "Alerts")]
    pub category: &'static str,
    #[schema(example = "A new alert was created")]
    pub description: &'static str,
    /// An example `data` object of this type (what a test send delivers).
    #[schema(value_type = Object)]
    pub example: Map<String, Value>,
}

// ---------------------------------------------------------------- API keys

/// `POST /api-keys`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct CreateApiKey {
    /// 1 to 100 characters after trimming.
    #[schema(example = "deploy")]
    name: String,
}

/// `{"data": API key + "key"}`
#[derive(Serialize, ToSchema)]
pub struct CreatedApiKeyData {
    pub data: CreatedApiKey,
}

/// An API key just created; `key` is shown only here.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiKey {
    #[schema(example = "key_8d2f6a")]
    pub id: String,
    pub name: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The token: `Authorization: Bearer <key>`.
    #[schema(example = "wf_live_…")]
    pub key: String,
}
