//! Re-queueing deliveries: their payloads (stored once per event at fan-out) and the
//! queries behind manual retries, replays of dead deliveries and `wfctl dlq`.

use chrono::{DateTime, Utc};
use wf_core::ids::{DeliveryId, EventId, OrgId, WebhookId};

use super::{col, parse_col, parse_event, Store};
use crate::{DeliveryStatus, StoreError};

/// A payload to keep, as fanned out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayload {
    pub org_id: OrgId,
    pub event_id: EventId,
    /// The exact body every delivery of the event sends (shared with them).
    pub body: std::sync::Arc<str>,
    pub event_ts_ms: i64,
    pub created_at: DateTime<Utc>,
}

/// Which deliveries to re-queue.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter<'a> {
    /// `None` only for operators (`wfctl`): every organisation.
    pub org: Option<&'a OrgId>,
    pub webhook: Option<&'a WebhookId>,
    pub delivery: Option<&'a DeliveryId>,
    pub status: Option<DeliveryStatus>,
    /// On the delivery's creation time (when its event was fanned out).
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only deliveries with an id greater than this (keyset paging through a replay).
    pub after: Option<&'a DeliveryId>,
    pub limit: i64,
}

/// Everything needed to rebuild a delivery job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayItem {
    pub delivery_id: DeliveryId,
    pub org_id: OrgId,
    pub webhook_id: WebhookId,
    pub event_id: EventId,
    pub event: wf_core::events::EventType,
    pub status: DeliveryStatus,
    /// Highest attempt made so far: the next one is numbered after it.
    pub attempt_count: u32,
    /// `None` when the payload was pruned (or its log record never landed).
    pub body: Option<String>,
    pub event_ts_ms: Option<i64>,
    pub last_error: Option<String>,
    /// When the delivery was logged: its partition key, carried by the re-queued job.
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ReplayItem {
    /// The delivery as the log knows it, to queue it again
    /// ([`wf_core::messages::DeliveryJob::requeued_from_log`]). `None` when the payload is
    /// gone (pruned, or its log record never landed).
    pub fn logged(&self) -> Option<wf_core::messages::LoggedDelivery<'_>> {
        Some(wf_core::messages::LoggedDelivery {
            delivery_id: &self.delivery_id,
            webhook_id: &self.webhook_id,
            org_id: &self.org_id,
            event_id: &self.event_id,
            event: self.event,
            event_ts_ms: self.event_ts_ms?,
            body: self.body.as_deref()?,
            attempts: self.attempt_count,
            logged_at_ms: self.created_at.timestamp_millis(),
        })
    }
}

impl Store {
    /// Keeps payloads; a payload already stored for (org, event) is left as it is (one
    /// stored in the day before `created_at`: an event fanned out again after a
    /// redelivery does not store its payload twice).
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn insert_payloads(&self, rows: &[NewPayload]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut sorted: Vec<&NewPayload> = rows.iter().collect();
        sorted.sort_by(|a, b| (&a.org_id, &a.event_id).cmp(&(&b.org_id, &b.event_id)));
        sorted.dedup_by(|a, b| a.org_id == b.org_id && a.event_id == b.event_id);
        let orgs: Vec<&str> = sorted.iter().map(|r| r.org_id.as_str()).collect();
        let events: Vec<&str> = sorted.iter().map(|r| r.event_id.as_str()).collect();
        let bodies: Vec<&str> = sorted.iter().map(|r| &*r.body).collect();
        let ts: Vec<i64> = sorted.iter().map(|r| r.event_ts_ms).collect();
        let created: Vec<DateTime<Utc>> = sorted.iter().map(|r| r.created_at).collect();
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO event_payloads (org_id, event_id, body, event_ts_ms, created_at) \
                 SELECT p.org_id, p.event_id, p.body, p.ts, p.at FROM (SELECT u.*, \
                 date_trunc('milliseconds', u.created_at) AS at FROM UNNEST($1::text[], \
                 $2::text[], $3::text[], $4::bigint[], $5::timestamptz[]) \
                 AS u(org_id, event_id, body, ts, created_at)) p \
                 WHERE NOT EXISTS (SELECT 1 FROM event_payloads x WHERE x.org_id = p.org_id \
                 AND x.event_id = p.event_id AND x.created_at >= p.at - interval '1 day' \
                 AND x.created_at <= p.at) \
                 ON CONFLICT (org_id, event_id, created_at) DO NOTHING",
            )
            .await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&orgs, &events, &bodies, &ts, &created];
        self.write_log(&client, &stmt, &params, created.iter().copied())
            .await
    }

    /// Deliveries matching `filter`, ordered by id, with their payloads.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`]; [`StoreError::Decode`] for a row that
    /// does not parse.
    pub async fn replay_items(&self, f: &ReplayFilter<'_>) -> Result<Vec<ReplayItem>, StoreError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "SELECT d.id, d.org_id, d.webhook_id, d.event_id, d.event, d.status, \
                 d.attempt_count, d.last_error, d.created_at, d.updated_at, p.body, \
                 p.event_ts_ms FROM deliveries d LEFT JOIN LATERAL (SELECT body, event_ts_ms \
                 FROM event_payloads WHERE org_id = d.org_id AND event_id = d.event_id \
                 ORDER BY created_at LIMIT 1) p ON true \
                 WHERE ($1::text IS NULL OR d.org_id = $1) \
                 AND ($2::text IS NULL OR d.webhook_id = $2) \
                 AND ($3::text IS NULL OR d.id = $3) \
                 AND ($4::text IS NULL OR d.status = $4) \
                 AND ($5::timestamptz IS NULL OR d.created_at >= $5) \
                 AND ($6::timestamptz IS NULL OR d.created_at < $6) \
                 AND ($7::text IS NULL OR d.id > $7) \
                 ORDER BY d.id LIMIT $8",
            )
            .await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &f.org.map(OrgId::as_str),
                    &f.webhook.map(WebhookId::as_str),
                    &f.delivery.map(DeliveryId::as_str),
                    &f.status.map(|s| s.as_str()),
                    &f.since,
                    &f.until,
                    &f.after.map(DeliveryId::as_str),
                    &f.limit.max(1),
                ],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let count: i32 = col(row, "attempt_count")?;
                Ok(ReplayItem {
                    delivery_id: parse_col(row, "id", DeliveryId::parse)?,
                    org_id: parse_col(row, "org_id", OrgId::parse)?,
                    webhook_id: parse_col(row, "webhook_id", WebhookId::parse)?,
                    event_id: parse_col(row, "event_id", EventId::parse)?,
                    event: parse_col(row, "event", parse_event)?,
                    status: parse_col(row, "status", |s| {
                        DeliveryStatus::parse(s).ok_or_else(|| format!("unknown status `{s}`"))
                    })?,
                    attempt_count: u32::try_from(count).unwrap_or(0),
                    body: col(row, "body")?,
                    event_ts_ms: col(row, "event_ts_ms")?,
                    last_error: col(row, "last_error")?,
                    created_at: col(row, "created_at")?,
                    updated_at: col(row, "updated_at")?,
                })
            })
            .collect()
    }

    /// Marks re-queued deliveries `pending` again (their next attempt updates them as
    /// usual), so a second replay does not pick them up twice.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn mark_requeued(&self, ids: &[DeliveryId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = ids.iter().map(DeliveryId::as_str).collect();
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE deliveries SET status = 'pending', \
                 updated_at = date_trunc('milliseconds', now()) WHERE id = ANY($1)",
            )
            .await?;
        client.execute(&stmt, &[&ids]).await?;
        Ok(())
    }
}
