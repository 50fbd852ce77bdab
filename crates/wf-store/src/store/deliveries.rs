//! The delivery log: what was sent where, every attempt, and where each delivery stands.
//!
//! Workers write it in batches (one statement per call, arrays bound with `UNNEST`), in
//! any order: an attempt may be recorded before its delivery's `pending` row, and a
//! redelivered message may record the same attempt twice. Both are harmless by design.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use wf_core::ids::{DeliveryId, EventId, OrgId, WebhookId};

use super::{clean_text, col, ms, page_limit, parse_col, parse_event, Store};
use crate::{
    cursor, Attempt, AttemptRecord, Delivery, DeliveryStatus, NewDelivery, Page, StoreError,
    UnsentDead,
};

/// Cap on stored error messages and response snippets: enough to debug, bounded so a
/// chatty endpoint cannot bloat the log.
const TEXT_CAP: usize = 1024;

macro_rules! delivery_cols {
    () => {
        "id, org_id, webhook_id, event_id, event, status, created_at, updated_at"
    };
}

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn status_col(row: &Row) -> Result<DeliveryStatus, StoreError> {
    parse_col(row, "status", |s| {
        DeliveryStatus::parse(s).ok_or_else(|| format!("unknown status `{s}`"))
    })
}

/// A delivery row without its attempts, plus its raw sort key for the cursor.
struct DeliveryRow {
    delivery: Delivery,
    raw_created_at: DateTime<Utc>,
}

fn delivery_from_row(row: &Row) -> Result<DeliveryRow, StoreError> {
    let raw_created_at: DateTime<Utc> = col(row, "created_at")?;
    Ok(DeliveryRow {
        delivery: Delivery {
            id: parse_col(row, "id", DeliveryId::parse)?,
            org_id: parse_col(row, "org_id", OrgId::parse)?,
            webhook_id: parse_col(row, "webhook_id", WebhookId::parse)?,
            event_id: parse_col(row, "event_id", EventId::parse)?,
            event: parse_col(row, "event", parse_event)?,
            status: status_col(row)?,
            attempts: Vec::new(),
            created_at: ms(raw_created_at),
            updated_at: ms(col(row, "updated_at")?),
        },
        raw_created_at,
    })
}

fn attempt_from_row(row: &Row) -> Result<Attempt, StoreError> {
    let attempt: i32 = col(row, "attempt")?;
    let status_code: Option<i32> = col(row, "status_code")?;
    let duration_ms: i32 = col(row, "duration_ms")?;
    let bad = |what: &str, v: i32| StoreError::decode(format_args!("{what} out of range: {v}"));
    Ok(Attempt {
        attempt: u32::try_from(attempt).map_err(|_| bad("attempt", attempt))?,
        at: ms(col(row, "at")?),
        status_code: status_code
            .map(|c| u16::try_from(c).map_err(|_| bad("status_code", c)))
            .transpose()?,
        error: col(row, "error")?,
        duration_ms: u32::try_from(duration_ms).map_err(|_| bad("duration_ms", duration_ms))?,
        response_snippet: col(row, "response_snippet")?,
    })
}

/// What a delivery's `last_error` says after an attempt: nothing once delivered, else the
/// transport error or the HTTP status.
fn last_error(r: &AttemptRecord) -> Option<String> {
    if r.new_status == DeliveryStatus::Delivered {
        return None;
    }
    r.error
        .as_deref()
        .map(|e| clean_text(e, TEXT_CAP))
        .or_else(|| r.status_code.map(|c| format!("HTTP {c}")))
}

impl Store {
    /// Logs deliveries as `pending` when an event is fanned out. Ids are derived from
    /// (org, event, webhook), so a re-fanned event inserts nothing new
    /// (`ON CONFLICT (id) DO NOTHING`), and a row an attempt already created is left alone.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn insert_deliveries(&self, rows: &[NewDelivery]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        // Sorted by id: concurrent batches then take row locks in the same order and
        // cannot deadlock each other.
        let mut sorted: Vec<&NewDelivery> = rows.iter().collect();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        sorted.dedup_by(|a, b| a.id == b.id);

        let ids: Vec<&str> = sorted.iter().map(|r| r.id.as_str()).collect();
        let orgs: Vec<&str> = sorted.iter().map(|r| r.org_id.as_str()).collect();
        let webhooks: Vec<&str> = sorted.iter().map(|r| r.webhook_id.as_str()).collect();
        let events: Vec<&str> = sorted.iter().map(|r| r.event_id.as_str()).collect();
        let types: Vec<&str> = sorted.iter().map(|r| r.event.as_str()).collect();
        let created: Vec<DateTime<Utc>> = sorted.iter().map(|r| r.created_at).collect();

        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO deliveries (id, org_id, webhook_id, event_id, event, status, \
                 attempt_count, created_at, updated_at) \
                 SELECT d.id, d.org_id, d.webhook_id, d.event_id, d.event, 'pending', 0, \
                 date_trunc('milliseconds', d.created_at), date_trunc('milliseconds', d.created_at) \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::timestamptz[]) AS d(id, org_id, webhook_id, event_id, event, created_at) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .await?;
        client
            .execute(&stmt, &[&ids, &orgs, &webhooks, &events, &types, &created])
            .await?;
        Ok(())
    }

    /// Records finished attempts and moves each delivery to the status its latest attempt
    /// decided, in one statement.
    ///
    /// - An attempt already recorded (same delivery, same number) is ignored, so a worker
    ///   that crashed after writing but before acking can safely write again.
    /// - A delivery's status follows its highest attempt number: a late batch carrying an
    ///   older attempt does not roll it back.
    /// - A delivery row that does not exist yet is created from the record.
    ///
    /// Error texts and snippets are capped at 1 KiB and NUL-free.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn record_attempts(&self, rows: &[AttemptRecord]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        // One upsert per delivery (Postgres refuses to touch a row twice in one
        // statement): the highest attempt wins, the later one on a tie. BTreeMap keeps
        // them sorted by id, which keeps lock order consistent across workers.
        let mut latest: BTreeMap<&str, &AttemptRecord> = BTreeMap::new();
        for r in rows {
            latest
                .entry(r.delivery_id.as_str())
                .and_modify(|cur| {
                    if r.attempt >= cur.attempt {
                        *cur = r;
                    }
                })
                .or_insert(r);
        }
        let mut attempts: BTreeMap<(&str, u32), &AttemptRecord> = BTreeMap::new();
        for r in rows {
            attempts
                .entry((r.delivery_id.as_str(), r.attempt))
                .or_insert(r);
        }

        let d_ids: Vec<&str> = latest.keys().copied().collect();
        let d_orgs: Vec<&str> = latest.values().map(|r| r.org_id.as_str()).collect();
        let d_webhooks: Vec<&str> = latest.values().map(|r| r.webhook_id.as_str()).collect();
        let d_events: Vec<&str> = latest.values().map(|r| r.event_id.as_str()).collect();
        let d_types: Vec<&str> = latest.values().map(|r| r.event.as_str()).collect();
        let d_status: Vec<&str> = latest.values().map(|r| r.new_status.as_str()).collect();
        let d_count: Vec<i32> = latest.values().map(|r| to_i32(r.attempt)).collect();
        let d_error: Vec<Option<String>> = latest.values().map(|r| last_error(r)).collect();
        let d_at: Vec<DateTime<Utc>> = latest.values().map(|r| r.at).collect();

        let a_ids: Vec<&str> = attempts.keys().map(|(id, _)| *id).collect();
        let a_num: Vec<i32> = attempts.values().map(|r| to_i32(r.attempt)).collect();
        let a_at: Vec<DateTime<Utc>> = attempts.values().map(|r| r.at).collect();
        let a_code: Vec<Option<i32>> = attempts
            .values()
            .map(|r| r.status_code.map(i32::from))
            .collect();
        let a_error: Vec<Option<String>> = attempts
            .values()
            .map(|r| r.error.as_deref().map(|e| clean_text(e, TEXT_CAP)))
            .collect();
        let a_duration: Vec<i32> = attempts.values().map(|r| to_i32(r.duration_ms)).collect();
        let a_snippet: Vec<Option<String>> = attempts
            .values()
            .map(|r| {
                r.response_snippet
                    .as_deref()
                    .map(|s| clean_text(s, TEXT_CAP))
            })
            .collect();

        let client = self.conn().await?;
        // The deliveries upsert runs first (as a CTE) so the attempts' foreign key finds
        // its row; both are one statement, hence one implicit transaction.
        let stmt = client
            .prepare_cached(
                "WITH upserted AS (\
                   INSERT INTO deliveries (id, org_id, webhook_id, event_id, event, status, \
                   attempt_count, last_error, created_at, updated_at) \
                   SELECT u.id, u.org_id, u.webhook_id, u.event_id, u.event, u.status, \
                   u.attempt_count, u.last_error, date_trunc('milliseconds', u.at), \
                   date_trunc('milliseconds', u.at) \
                   FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                   $6::text[], $7::int[], $8::text[], $9::timestamptz[]) \
                   AS u(id, org_id, webhook_id, event_id, event, status, attempt_count, \
                   last_error, at) \
                   ON CONFLICT (id) DO UPDATE SET \
                   status = EXCLUDED.status, attempt_count = EXCLUDED.attempt_count, \
                   last_error = EXCLUDED.last_error, \
                   updated_at = GREATEST(deliveries.updated_at, EXCLUDED.updated_at) \
                   WHERE deliveries.attempt_count <= EXCLUDED.attempt_count \
                   RETURNING 1\
                 ) \
                 INSERT INTO delivery_attempts (delivery_id, attempt, at, status_code, error, \
                 duration_ms, response_snippet) \
                 SELECT a.delivery_id, a.attempt, date_trunc('milliseconds', a.at), a.status_code, \
                 a.error, a.duration_ms, a.response_snippet \
                 FROM UNNEST($10::text[], $11::int[], $12::timestamptz[], $13::int[], \
                 $14::text[], $15::int[], $16::text[]) \
                 AS a(delivery_id, attempt, at, status_code, error, duration_ms, response_snippet) \
                 ON CONFLICT (delivery_id, attempt) DO NOTHING",
            )
            .await?;
        client
            .execute(
                &stmt,
                &[
                    &d_ids,
                    &d_orgs,
                    &d_webhooks,
                    &d_events,
                    &d_types,
                    &d_status,
                    &d_count,
                    &d_error,
                    &d_at,
                    &a_ids,
                    &a_num,
                    &a_at,
                    &a_code,
                    &a_error,
                    &a_duration,
                    &a_snippet,
                ],
            )
            .await?;
        Ok(())
    }

    /// Marks deliveries `dead` that were given up without their next attempt being sent
    /// (no attempt row is written: nothing was sent). A delivery whose log already shows
    /// a later attempt is left alone, and a row that does not exist yet is created.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn record_unsent_dead(&self, rows: &[UnsentDead]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut latest: BTreeMap<&str, &UnsentDead> = BTreeMap::new();
        for r in rows {
            latest.insert(r.delivery_id.as_str(), r);
        }
        let ids: Vec<&str> = latest.keys().copied().collect();
        let orgs: Vec<&str> = latest.values().map(|r| r.org_id.as_str()).collect();
        let webhooks: Vec<&str> = latest.values().map(|r| r.webhook_id.as_str()).collect();
        let events: Vec<&str> = latest.values().map(|r| r.event_id.as_str()).collect();
        let types: Vec<&str> = latest.values().map(|r| r.event.as_str()).collect();
        let counts: Vec<i32> = latest.values().map(|r| to_i32(r.attempts)).collect();
        let errors: Vec<String> = latest
            .values()
            .map(|r| clean_text(&r.error, TEXT_CAP))
            .collect();
        let at: Vec<DateTime<Utc>> = latest.values().map(|r| r.at).collect();
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO deliveries (id, org_id, webhook_id, event_id, event, status, \
                 attempt_count, last_error, created_at, updated_at) \
                 SELECT u.id, u.org_id, u.webhook_id, u.event_id, u.event, 'dead', \
                 u.attempt_count, u.last_error, date_trunc('milliseconds', u.at), \
                 date_trunc('milliseconds', u.at) \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::int[], $7::text[], $8::timestamptz[]) \
                 AS u(id, org_id, webhook_id, event_id, event, attempt_count, last_error, at) \
                 ON CONFLICT (id) DO UPDATE SET status = 'dead', \
                 last_error = EXCLUDED.last_error, \
                 updated_at = GREATEST(deliveries.updated_at, EXCLUDED.updated_at) \
                 WHERE deliveries.attempt_count <= EXCLUDED.attempt_count",
            )
            .await?;
        client
            .execute(
                &stmt,
                &[
                    &ids, &orgs, &webhooks, &events, &types, &counts, &errors, &at,
                ],
            )
            .await?;
        Ok(())
    }

    /// The deliveries of one webhook of `org`, newest first, each with its attempts;
    /// optionally only those in `status`. Keyset-paginated on `(created_at, id)` like
    /// [`list_webhooks`](Store::list_webhooks).
    ///
    /// # Errors
    /// [`StoreError::InvalidCursor`] for a cursor this listing did not issue;
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn list_deliveries(
        &self,
        org: &OrgId,
        webhook: &WebhookId,
        status: Option<DeliveryStatus>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>, StoreError> {
        let before = cursor
            .map(|c| cursor::decode(c, DeliveryId::parse))
            .transpose()?;
        let limit = page_limit(limit);
        let status = status.map(DeliveryStatus::as_str);
        let client = self.conn().await?;
        let rows = match &before {
            None => {
                let stmt = client
                    .prepare_cached(concat!(
                        "SELECT ",
                        delivery_cols!(),
                        " FROM deliveries WHERE webhook_id = $1 AND org_id = $2 \
                         AND ($3::text IS NULL OR status = $3) \
                         ORDER BY created_at DESC, id DESC LIMIT $4"
                    ))
                    .await?;
                client
                    .query(
                        &stmt,
                        &[&webhook.as_str(), &org.as_str(), &status, &(limit + 1)],
                    )
                    .await?
            }
            Some((at, id)) => {
                let stmt = client
                    .prepare_cached(concat!(
                        "SELECT ",
                        delivery_cols!(),
                        " FROM deliveries WHERE webhook_id = $1 AND org_id = $2 \
                         AND ($3::text IS NULL OR status = $3) \
                         AND (created_at, id) < ($5, $6) \
                         ORDER BY created_at DESC, id DESC LIMIT $4"
                    ))
                    .await?;
                client
                    .query(
                        &stmt,
                        &[
                            &webhook.as_str(),
                            &org.as_str(),
                            &status,
                            &(limit + 1),
                            at,
                            &id.as_str(),
                        ],
                    )
                    .await?
            }
        };
        let mut rows = rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let keep = usize::try_from(limit).unwrap_or(usize::MAX);
        let has_more = rows.len() > keep;
        rows.truncate(keep);
        let next_cursor = match rows.last() {
            Some(last) if has_more => Some(cursor::encode(
                last.raw_created_at,
                last.delivery.id.as_str(),
            )),
            _ => None,
        };
        let mut items: Vec<Delivery> = rows.into_iter().map(|r| r.delivery).collect();
        self.attach_attempts(&client, &mut items).await?;
        Ok(Page { items, next_cursor })
    }

    /// One delivery of one webhook of `org`, with its attempts; `None` if it does not
    /// exist or is not that webhook's (or that organisation's).
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn get_delivery(
        &self,
        org: &OrgId,
        webhook: &WebhookId,
        id: &DeliveryId,
    ) -> Result<Option<Delivery>, StoreError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                delivery_cols!(),
                " FROM deliveries WHERE id = $1 AND webhook_id = $2 AND org_id = $3"
            ))
            .await?;
        let Some(row) = client
            .query_opt(&stmt, &[&id.as_str(), &webhook.as_str(), &org.as_str()])
            .await?
        else {
            return Ok(None);
        };
        let mut items = vec![delivery_from_row(&row)?.delivery];
        self.attach_attempts(&client, &mut items).await?;
        Ok(items.pop())
    }

    /// Fills in the attempts of `deliveries` with one query.
    async fn attach_attempts(
        &self,
        client: &deadpool_postgres::Object,
        deliveries: &mut [Delivery],
    ) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
        let stmt = client
            .prepare_cached(
                "SELECT delivery_id, attempt, at, status_code, error, duration_ms, response_snippet \
                 FROM delivery_attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt",
            )
            .await?;
        let rows = client.query(&stmt, &[&ids]).await?;
        let mut by_delivery: HashMap<String, Vec<Attempt>> = HashMap::new();
        for row in &rows {
            let id: String = col(row, "delivery_id")?;
            by_delivery
                .entry(id)
                .or_default()
                .push(attempt_from_row(row)?);
        }
        for d in deliveries {
            if let Some(a) = by_delivery.remove(d.id.as_str()) {
                d.attempts = a;
            }
        }
        Ok(())
    }

    /// Deletes deliveries (and, by cascade, their attempts) last updated before
    /// `older_than`: the retention policy. Works `batch` rows per statement and skips rows
    /// a worker holds locked, so it never blocks delivery for long. Returns how many were
    /// deleted.
    ///
    /// Deleting an old `pending` delivery is safe: a late attempt recreates the row.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn prune_deliveries(
        &self,
        older_than: DateTime<Utc>,
        batch: i64,
    ) -> Result<u64, StoreError> {
        // One status at a time, oldest first: each batch is then an ordered range scan of
        // the (status, updated_at) index that stops after `batch` rows, instead of a scan
        // over everything not yet old enough. Rows are deleted by primary key.
        const SQL: &str = "DELETE FROM deliveries WHERE id = ANY(ARRAY(\
             SELECT id FROM deliveries WHERE status = $3 AND updated_at < $1 \
             ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED))";
        let mut total = 0;
        for status in DeliveryStatus::ALL {
            total += self
                .delete_in_batches(SQL, older_than, batch, &[&status.as_str()])
                .await?;
        }
        Ok(total)
    }
}
