//! The records the store reads and writes. They carry no SQL; callers build API objects
//! and queue messages from them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use wf_core::events::EventType;
use wf_core::headers::CustomHeaders;
use wf_core::ids::{ApiKeyId, DeliveryId, EventId, OrgId, WebhookId};
use wf_core::signing::WebhookSecret;

/// One page of a keyset-paginated listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Opaque; pass it back to get the next page. `None` on the last page.
    pub next_cursor: Option<String>,
}

/// An API key's public record. The token itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    /// Every request authenticated with this key is scoped to this organisation.
    pub org_id: OrgId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Set once; a revoked key never authenticates again.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A webhook to create; the caller has already validated every field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    pub name: String,
    pub url: String,
    /// Event types and category wildcards (`alert.*`), de-duplicated.
    pub events: Vec<String>,
    pub is_active: bool,
    /// Deliveries per second at most, across the fleet; `None`: no limit.
    pub rate_limit: Option<u32>,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookPatch {
    pub name: Option<String>,
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `Some(true)` also clears `disabled_reason`: a user re-enabling a webhook the system
    /// disabled takes responsibility for it again.
    pub is_active: Option<bool>,
    /// `Some(None)` removes the rate limit.
    pub rate_limit: Option<Option<u32>>,
    /// Replaces every custom header; `Some` of an empty set removes them all.
    pub headers: Option<CustomHeaders>,
}

impl WebhookPatch {
    /// Whether the patch changes nothing (then no write, and `updated_at` stays).
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.url.is_none()
            && self.events.is_none()
            && self.is_active.is_none()
            && self.rate_limit.is_none()
            && self.headers.is_none()
    }
}

/// A webhook as the management API shows it (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: WebhookId,
    pub org_id: OrgId,
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub is_active: bool,
    /// Why the *system* disabled it (e.g. the endpoint answered 410 Gone); `None` when a
    /// user disabled it or it is active.
    pub disabled_reason: Option<String>,
    /// Deliveries per second at most, across the fleet; `None`: no limit.
    pub rate_limit: Option<u32>,
    /// The names of its custom request headers, in order (the values stay encrypted).
    pub header_names: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Webhook {
    /// The webhook as the API (and its `webhook.*` events) show it.
    pub fn view(&self) -> wf_core::views::WebhookView<'_> {
        wf_core::views::WebhookView {
            id: self.id.as_str(),
            name: &self.name,
            url: &self.url,
            events: &self.events,
            is_active: self.is_active,
            disabled_reason: self.disabled_reason.as_deref(),
            rate_limit: self.rate_limit,
            header_names: &self.header_names,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// What a worker needs to deliver to one active webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub webhook_id: WebhookId,
    pub org_id: OrgId,
    pub url: String,
    /// Signs every delivery.
    pub secret: WebhookSecret,
    /// The secret before the last rotation, only while it has not expired (24 h after the
    /// rotation): it adds a second Standard Webhooks signature so receivers can switch
    /// keys without dropping deliveries. The expiry is evaluated when the row is read, so a
    /// cache holding this value should be refreshed at least every few minutes.
    pub previous_secret: Option<WebhookSecret>,
    /// Deliveries per second at most, across the fleet; `None`: no limit.
    pub rate_limit: Option<u32>,
    /// Custom request headers, decrypted, sent with every delivery.
    pub headers: CustomHeaders,
}

/// Outcome of [`Store::record_event`](crate::Store::record_event).
#[derive(Debug, Clone, PartialEq)]
pub enum EventRecord {
    /// First time this (organisation, event id) was seen in the last 24 hours: publish it.
    New,
    /// Seen before: answer with the stored response. `published` is false when the first
    /// request never got its publish confirmed (it crashed or failed), in which case the
    /// caller should publish again — delivery is at least once.
    Existing {
        published: bool,
        response: serde_json::Value,
    },
}

/// A delivery to log as `pending` when an event is fanned out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub id: DeliveryId,
    pub org_id: OrgId,
    pub webhook_id: WebhookId,
    pub event_id: EventId,
    pub event: EventType,
    pub created_at: DateTime<Utc>,
}

/// A delivery given up without its next attempt being sent: its endpoint stayed
/// unavailable (busy, rate limited, circuit open) for longer than the retry schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsentDead {
    pub delivery_id: DeliveryId,
    /// The delivery's identity again, so the row can be created if its `pending` record
    /// has not landed yet.
    pub org_id: OrgId,
    pub webhook_id: WebhookId,
    pub event_id: EventId,
    pub event: EventType,
    /// Attempts actually sent before it was given up.
    pub attempts: u32,
    /// Why: stored as the delivery's `last_error`.
    pub error: String,
    pub at: DateTime<Utc>,
    /// As [`AttemptRecord::logged_at`].
    pub logged_at: Option<DateTime<Utc>>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Logged, no attempt finished yet.
    Pending,
    /// An attempt got a 2xx.
    Delivered,
    /// The last attempt failed and a retry is scheduled.
    Failed,
    /// The last retry failed; the message is in the dead-letter queue.
    Dead,
}

impl DeliveryStatus {
    /// Every status, for query-parameter help texts.
    pub const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
        DeliveryStatus::Dead,
    ];

    /// The wire and column value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Dead => "dead",
        }
    }

    /// Parses the exact wire value; anything else is `None`.
    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a string that is not a delivery status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown delivery status `{0}` (expected pending, delivered, failed or dead)")]
pub struct UnknownStatus(pub String);

impl FromStr for DeliveryStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeliveryStatus::parse(s).ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// The outcome of one HTTP attempt, as a worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub delivery_id: DeliveryId,
    /// The delivery's identity again, so the row can be created if the worker's
    /// `insert_deliveries` has not landed yet (batches may be written in any order).
    pub org_id: OrgId,
    pub webhook_id: WebhookId,
    pub event_id: EventId,
    pub event: EventType,
    /// 1, 2, … — must keep increasing across retries of one delivery: an attempt number
    /// already recorded is ignored, and the delivery's status follows the highest one.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u32,
    /// The start of the response body, for debugging (stored capped at 1 KiB).
    pub response_snippet: Option<String>,
    /// The delivery's status after this attempt.
    pub new_status: DeliveryStatus,
    /// When the delivery was first logged (its job's `logged_at_ms`): the partition key,
    /// so the record goes straight to its delivery's day. `None` for a job that does not
    /// carry it: the delivery is then looked up by id on every day kept.
    pub logged_at: Option<DateTime<Utc>>,
}

/// A delivery with its attempts, as the management API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub org_id: OrgId,
    pub webhook_id: WebhookId,
    pub event_id: EventId,
    pub event: EventType,
    pub status: DeliveryStatus,
    /// In attempt order (1, 2, …).
    pub attempts: Vec<Attempt>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One recorded HTTP attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u32,
    pub response_snippet: Option<String>,
}

/// Which deliveries of one webhook to list; `None` fields do not filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub event: Option<EventType>,
    /// Created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Created before this time.
    pub until: Option<DateTime<Utc>>,
}

/// One event as the delivery log knows it, with its deliveries to an organisation's
/// webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDeliveries {
    pub event_id: EventId,
    pub event: EventType,
    /// The event's own timestamp (from its stored payload), or, once the payload is gone,
    /// when its first delivery was logged.
    pub timestamp: DateTime<Utc>,
    /// Oldest first.
    pub deliveries: Vec<Delivery>,
}

/// A webhook's delivery health, as the delivery log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHealth {
    pub last_success_at: Option<DateTime<Utc>>,
    /// The first failed attempt after the last success; `None` when not failing.
    pub failing_since: Option<DateTime<Utc>>,
    /// Failed attempts since `failing_since`.
    pub failures: u32,
    pub last_failure_at: Option<DateTime<Utc>>,
}
