//! Postgres persistence for the WorkFlows webhook system — the only crate that knows SQL.
//!
//! Postgres is the system of record for organisations, API keys, webhooks, event
//! idempotency and the delivery log (work in progress lives in RabbitMQ). This crate
//! owns:
//!
//! - [`migrate`]: creates the database if needed and applies `migrations/` under an
//!   advisory lock, so every replica can run it at start-up;
//! - [`Store`]: a pooled handle with one method per query the services need, returning
//!   plain records ([`Webhook`], [`Delivery`], …) with times truncated to milliseconds;
//! - [`listen_changes`]: a [`ChangeFeed`] of which organisations' webhooks changed, for
//!   the workers' subscription caches;
//! - the delivery log's daily partitions ([`Store::ensure_log_partitions`],
//!   [`Store::try_maintain_log`]): created ahead of time, dropped whole by retention.
//!
//! Security properties kept here: API keys are stored only as SHA-256 hashes; webhook
//! secrets are encrypted at rest with ChaCha20-Poly1305 under `WF_SECRET_KEY`; every
//! management query is scoped by organisation, answering `None` for another
//! organisation's rows exactly as for missing ones.
//!
//! Errors are one [`StoreError`], whose [`is_retryable`](StoreError::is_retryable) tells
//! a caller whether to back off and retry or to report.
#![forbid(unsafe_code)]

mod crypto;
mod cursor;
mod error;
mod feed;
mod migrate;
mod store;
mod types;

pub use crypto::key_id_hex;
pub use error::StoreError;
pub use feed::{listen_changes, ChangeEvent, ChangeFeed, CHANNEL};
pub use migrate::migrate;
pub use store::health::FAILING;
pub use store::keys::API_KEY_PREFIX;
pub use store::outbox::ParkedEvent;
pub use store::partitions::{last_expired_day, LogMaintenance, LogPartition, AHEAD_DAYS};
pub use store::rekey::{RekeyCounts, RekeyMode};
pub use store::replay::{NewPayload, ReplayFilter, ReplayItem};
pub use store::{Store, MAX_PAGE_SIZE};
pub use types::{
    ApiKey, Attempt, AttemptRecord, Delivery, DeliveryFilter, DeliveryStatus, EventDeliveries,
    EventRecord, NewDelivery, NewWebhook, Page, Subscription, UnknownStatus, UnsentDead, Webhook,
    WebhookHealth, WebhookPatch,
};
