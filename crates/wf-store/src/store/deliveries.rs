//! The delivery log: what was sent where, every attempt, and where each delivery stands.
//!
//! Workers write it in batches (one statement per call, arrays bound with `UNNEST`), in
//! any order: an attempt may be recorded before its delivery's `pending` row, and a
//! redelivered message may record the same attempt twice. Both are harmless by design.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use wf_core::ids::{DeliveryId, EventId, OrgId, WebhookId};

use super::{clean_text, col, ms, page_limit, parse_col, parse_event, Store};
use crate::{
    cursor, Attempt, AttemptRecord, Delivery, DeliveryFilter, DeliveryStatus, EventDeliveries,
    NewDelivery, Page, StoreError, UnsentDead,
};

/// The partition key a record of delivery `id` is written with (SQL expression over the
/// record's columns): the `created_at` of the delivery's existing row when there is one,
/// else the time the delivery was first logged, moved into the record's own UTC day when
/// it is older (the day it was logged in may be past retention and dropped: the row is
/// then logged again as of today) and never later than the record itself.
///
/// The existing row is looked for from a day before `logged` (a redelivered event fanned
/// out again gets a later `logged` than its first fan-out) up to the record's time, so on
/// one or two days' partitions: the lookup is pruned to them. Without `logged` (a job
/// that does not carry it) every day is looked at.
macro_rules! resolve_key {
    ($id:literal, $logged:literal, $at:literal) => {
        concat!(
            "COALESCE((SELECT x.created_at FROM deliveries x WHERE x.id = ",
            $id,
            " AND x.created_at >= COALESCE(",
            $logged,
            " - interval '1 day', '-infinity') AND x.created_at <= CASE WHEN ",
            $logged,
            " IS NULL THEN 'infinity' ELSE GREATEST(",
            $logged,
            ", ",
            $at,
            ") END ORDER BY x.created_at LIMIT 1), date_trunc('milliseconds', LEAST(GREATEST(COALESCE(",
            $logged,
            ", ",
            $at,
            "), date_trunc('day', ",
            $at,
            ", 'UTC')), ",
            $at,
            ")))"
        )
    };
}

/// [`Store::record_attempts`]'s statement.
///
/// The health merge (`webhook_health`, one row per webhook; docs in migration V5): a
/// batch's `2xx` newer than the start of the failing streak ends it (the failures after
/// that `2xx` in the same batch start the next one); failures newer than the last `2xx`
/// add to the streak; anything older (a batch that landed late) changes no count.
const RECORD_ATTEMPTS_SQL: &str = concat!(
    "WITH input AS (SELECT u.*, ",
    resolve_key!("u.id", "u.logged", "u.at"),
    " AS key \
   FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
   $6::text[], $7::int[], $8::text[], $9::timestamptz[], $19::timestamptz[]) \
   AS u(id, org_id, webhook_id, event_id, event, status, attempt_count, last_error, at, \
   logged)\
), upserted AS (\
   INSERT INTO deliveries (id, org_id, webhook_id, event_id, event, status, \
   attempt_count, last_error, created_at, updated_at) \
   SELECT i.id, i.org_id, i.webhook_id, i.event_id, i.event, i.status, \
   i.attempt_count, i.last_error, i.key, date_trunc('milliseconds', i.at) \
   FROM input i \
   ON CONFLICT (id, created_at) DO UPDATE SET \
   status = EXCLUDED.status, attempt_count = EXCLUDED.attempt_count, \
   last_error = EXCLUDED.last_error, \
   updated_at = GREATEST(deliveries.updated_at, EXCLUDED.updated_at) \
   WHERE deliveries.attempt_count <= EXCLUDED.attempt_count \
   RETURNING 1\
), attempted AS (\
   INSERT INTO delivery_attempts (delivery_id, attempt, delivery_created_at, at, \
   status_code, error, duration_ms, response_snippet) \
   SELECT a.delivery_id, a.attempt, i.key, date_trunc('milliseconds', a.at), \
   a.status_code, a.error, a.duration_ms, a.response_snippet \
   FROM UNNEST($10::text[], $11::int[], $12::timestamptz[], $13::int[], \
   $14::text[], $15::int[], $16::text[]) \
   AS a(delivery_id, attempt, at, status_code, error, duration_ms, response_snippet) \
   JOIN input i ON i.id = a.delivery_id \
   ON CONFLICT (delivery_id, attempt, delivery_created_at) DO NOTHING \
   RETURNING delivery_id, attempt\
), counted AS (\
   SELECT b.webhook_id, b.at, b.ok FROM attempted t \
   JOIN UNNEST($10::text[], $11::int[], $12::timestamptz[], $17::text[], $18::boolean[]) \
   AS b(delivery_id, attempt, at, webhook_id, ok) \
   ON b.delivery_id = t.delivery_id AND b.attempt = t.attempt\
), successes AS (\
   SELECT webhook_id, max(at) FILTER (WHERE ok) AS ok_at FROM counted GROUP BY webhook_id\
) \
INSERT INTO webhook_health AS h (webhook_id, last_success_at, failing_since, failures, \
last_failure_at) \
SELECT c.webhook_id, s.ok_at, \
min(c.at) FILTER (WHERE NOT c.ok AND (s.ok_at IS NULL OR c.at > s.ok_at)), \
count(*) FILTER (WHERE NOT c.ok AND (s.ok_at IS NULL OR c.at > s.ok_at)), \
max(c.at) FILTER (WHERE NOT c.ok) \
FROM counted c JOIN successes s ON s.webhook_id = c.webhook_id \
GROUP BY c.webhook_id, s.ok_at ORDER BY c.webhook_id \
ON CONFLICT (webhook_id) DO UPDATE SET \
last_success_at = GREATEST(h.last_success_at, EXCLUDED.last_success_at), \
failing_since = CASE \
   WHEN EXCLUDED.last_success_at >= COALESCE(h.failing_since, h.last_success_at, '-infinity') \
   THEN EXCLUDED.failing_since \
   WHEN EXCLUDED.failing_since > COALESCE(GREATEST(h.last_success_at, EXCLUDED.last_success_at), '-infinity') \
   THEN LEAST(h.failing_since, EXCLUDED.failing_since) \
   ELSE h.failing_since END, \
failures = CASE \
   WHEN EXCLUDED.last_success_at >= COALESCE(h.failing_since, h.last_success_at, '-infinity') \
   THEN EXCLUDED.failures \
   WHEN EXCLUDED.failing_since > COALESCE(GREATEST(h.last_success_at, EXCLUDED.last_success_at), '-infinity') \
   THEN h.failures + EXCLUDED.failures \
   ELSE h.failures END, \
last_failure_at = GREATEST(h.last_failure_at, EXCLUDED.last_failure_at)"
);

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
                 d.at, d.at FROM (SELECT u.*, date_trunc('milliseconds', u.created_at) AS at \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::timestamptz[]) AS u(id, org_id, webhook_id, event_id, event, created_at)) d \
                 WHERE NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.id = d.id \
                 AND x.created_at >= d.at - interval '1 day' AND x.created_at <= d.at) \
                 ON CONFLICT (id, created_at) DO NOTHING",
            )
            .await?;
        let params: [&(dyn ToSql + Sync); 6] = [&ids, &orgs, &webhooks, &events, &types, &created];
        self.write_log(&client, &stmt, &params, created.iter().copied())
            .await
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
        let d_logged: Vec<Option<DateTime<Utc>>> = latest.values().map(|r| r.logged_at).collect();

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
        let a_webhook: Vec<&str> = attempts.values().map(|r| r.webhook_id.as_str()).collect();
        let a_ok: Vec<bool> = attempts
            .values()
            .map(|r| r.new_status == DeliveryStatus::Delivered)
            .collect();
        let a_snippet: Vec<Option<String>> = attempts
            .values()
            .map(|r| {
                r.response_snippet
                    .as_deref()
                    .map(|s| clean_text(s, TEXT_CAP))
            })
            .collect();

        let client = self.conn().await?;
        // One statement, hence one implicit transaction: the deliveries upsert, the
        // attempts insert (foreign keys are checked at the end of the statement, so the
        // order of the two does not matter), and each webhook's health from the attempts
        // that were new (a redelivered batch counts nothing twice). Health rows are
        // upserted in webhook id order, so concurrent batches lock them in the same order.
        let stmt = client.prepare_cached(RECORD_ATTEMPTS_SQL).await?;
        let params: [&(dyn ToSql + Sync); 19] = [
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
            &a_webhook,
            &a_ok,
            &d_logged,
        ];
        let days = d_at.iter().chain(d_logged.iter().flatten()).copied();
        self.write_log(&client, &stmt, &params, days).await
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
        let logged: Vec<Option<DateTime<Utc>>> = latest.values().map(|r| r.logged_at).collect();
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(concat!(
                "INSERT INTO deliveries (id, org_id, webhook_id, event_id, event, status, \
                     attempt_count, last_error, created_at, updated_at) \
                     SELECT u.id, u.org_id, u.webhook_id, u.event_id, u.event, 'dead', \
                     u.attempt_count, u.last_error, ",
                resolve_key!("u.id", "u.logged", "u.at"),
                ", date_trunc('milliseconds', u.at) \
                     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                     $6::int[], $7::text[], $8::timestamptz[], $9::timestamptz[]) \
                     AS u(id, org_id, webhook_id, event_id, event, attempt_count, last_error, at, \
                     logged) \
                     ON CONFLICT (id, created_at) DO UPDATE SET status = 'dead', \
                     last_error = EXCLUDED.last_error, \
                     updated_at = GREATEST(deliveries.updated_at, EXCLUDED.updated_at) \
                     WHERE deliveries.attempt_count <= EXCLUDED.attempt_count"
            ))
            .await?;
        let params: [&(dyn ToSql + Sync); 9] = [
            &ids, &orgs, &webhooks, &events, &types, &counts, &errors, &at, &logged,
        ];
        self.write_log(
            &client,
            &stmt,
            &params,
            at.iter().chain(logged.iter().flatten()).copied(),
        )
        .await
    }

    /// The deliveries of one webhook of `org`, newest first, each with its attempts;
    /// optionally only those in `status`. See [`find_deliveries`](Store::find_deliveries).
    ///
    /// # Errors
    /// As [`find_deliveries`](Store::find_deliveries).
    pub async fn list_deliveries(
        &self,
        org: &OrgId,
        webhook: &WebhookId,
        status: Option<DeliveryStatus>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>, StoreError> {
        let filter = DeliveryFilter {
            status,
            ..DeliveryFilter::default()
        };
        self.find_deliveries(org, webhook, &filter, limit, cursor)
            .await
    }

    /// The deliveries of one webhook of `org` that match `filter`, newest first, each with
    /// its attempts. Keyset-paginated on `(created_at, id)`, which never changes once a
    /// delivery is logged: a page never repeats or skips a delivery that existed when
    /// paging began, whatever is written meanwhile.
    ///
    /// The statement names only the filters given (one prepared statement per
    /// combination), so each is served by an index on `(webhook_id, …, created_at DESC,
    /// id DESC)`; `OR $n IS NULL` conditions would leave a generic plan scanning.
    ///
    /// # Errors
    /// [`StoreError::InvalidCursor`] for a cursor this listing did not issue;
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn find_deliveries(
        &self,
        org: &OrgId,
        webhook: &WebhookId,
        filter: &DeliveryFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>, StoreError> {
        let before = cursor
            .map(|c| cursor::decode(c, DeliveryId::parse))
            .transpose()?;
        let limit = page_limit(limit);
        let fetch = limit + 1;
        let status = filter.status.map(DeliveryStatus::as_str);
        let event = filter.event.map(|e| e.as_str());
        let cursor_id = before.as_ref().map(|(_, id)| id.as_str());
        let cursor_at = before.as_ref().map(|(at, _)| *at);
        let sql = find_deliveries_sql(filter, before.is_some());
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::with_capacity(9);
        let webhook_id = webhook.as_str();
        let org_id = org.as_str();
        params.push(&webhook_id);
        params.push(&org_id);
        params.push(&fetch);
        if let Some(s) = &status {
            params.push(s);
        }
        if let Some(e) = &event {
            params.push(e);
        }
        if let Some(t) = &filter.since {
            params.push(t);
        }
        if let Some(t) = &filter.until {
            params.push(t);
        }
        if let (Some(at), Some(id)) = (&cursor_at, &cursor_id) {
            params.push(at);
            params.push(id);
        }
        let client = self.conn().await?;
        let stmt = client.prepare_cached(&sql).await?;
        let rows = client.query(&stmt, &params).await?;
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

    /// One delivery of any existing webhook of `org`, with its attempts; `None` when there
    /// is none (another organisation's, or its webhook was deleted).
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn get_org_delivery(
        &self,
        org: &OrgId,
        id: &DeliveryId,
    ) -> Result<Option<Delivery>, StoreError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "SELECT d.id, d.org_id, d.webhook_id, d.event_id, d.event, d.status, \
                 d.created_at, d.updated_at FROM deliveries d \
                 JOIN webhooks w ON w.id = d.webhook_id AND w.org_id = d.org_id \
                 WHERE d.id = $1 AND d.org_id = $2",
            )
            .await?;
        let Some(row) = client
            .query_opt(&stmt, &[&id.as_str(), &org.as_str()])
            .await?
        else {
            return Ok(None);
        };
        let mut items = vec![delivery_from_row(&row)?.delivery];
        self.attach_attempts(&client, &mut items).await?;
        Ok(items.pop())
    }

    /// The event `event_id` of `org` with each of its deliveries to the organisation's
    /// existing webhooks, oldest first; `None` when there is no such delivery.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn event_deliveries(
        &self,
        org: &OrgId,
        event_id: &EventId,
    ) -> Result<Option<EventDeliveries>, StoreError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "SELECT d.id, d.org_id, d.webhook_id, d.event_id, d.event, d.status, \
                 d.created_at, d.updated_at FROM deliveries d \
                 JOIN webhooks w ON w.id = d.webhook_id AND w.org_id = d.org_id \
                 WHERE d.org_id = $1 AND d.event_id = $2 ORDER BY d.created_at, d.id",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&org.as_str(), &event_id.as_str()])
            .await?;
        let mut deliveries = rows
            .iter()
            .map(|r| delivery_from_row(r).map(|d| d.delivery))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = deliveries.first() else {
            return Ok(None);
        };
        let (event, first_at) = (first.event, first.created_at);
        let ts = client
            .prepare_cached(
                "SELECT event_ts_ms FROM event_payloads WHERE org_id = $1 AND event_id = $2 \
                 ORDER BY created_at LIMIT 1",
            )
            .await?;
        let ts_ms: Option<i64> = match client
            .query_opt(&ts, &[&org.as_str(), &event_id.as_str()])
            .await?
        {
            Some(row) => Some(col(&row, "event_ts_ms")?),
            None => None,
        };
        let timestamp = ts_ms
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or(first_at);
        self.attach_attempts(&client, &mut deliveries).await?;
        Ok(Some(EventDeliveries {
            event_id: event_id.clone(),
            event,
            timestamp,
            deliveries,
        }))
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
        // Attempts share their delivery's partition key: naming the keys confines the
        // lookup to the days the deliveries are on.
        let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
        let keys: Vec<DateTime<Utc>> = deliveries.iter().map(|d| d.created_at).collect();
        let stmt = client
            .prepare_cached(
                "SELECT delivery_id, delivery_created_at, attempt, at, status_code, error, \
                 duration_ms, response_snippet FROM delivery_attempts \
                 WHERE delivery_id = ANY($1) AND delivery_created_at = ANY($2) \
                 ORDER BY delivery_id, attempt",
            )
            .await?;
        let rows = client.query(&stmt, &[&ids, &keys]).await?;
        let mut by_delivery: HashMap<(String, DateTime<Utc>), Vec<Attempt>> = HashMap::new();
        for row in &rows {
            let id: String = col(row, "delivery_id")?;
            let key: DateTime<Utc> = col(row, "delivery_created_at")?;
            by_delivery
                .entry((id, key))
                .or_default()
                .push(attempt_from_row(row)?);
        }
        for d in deliveries {
            if let Some(a) = by_delivery.remove(&(d.id.as_str().to_owned(), d.created_at)) {
                d.attempts = a;
            }
        }
        Ok(())
    }
}

/// The statement of [`Store::find_deliveries`] for the filters present in `f` (and a
/// cursor or not). Parameters: `$1` webhook, `$2` organisation, `$3` the row limit, then
/// status, event, since, until, cursor time, cursor id, numbered in that order when
/// present.
fn find_deliveries_sql(f: &DeliveryFilter, cursor: bool) -> String {
    let mut sql = String::from(concat!(
        "SELECT ",
        delivery_cols!(),
        " FROM deliveries WHERE webhook_id = $1 AND org_id = $2"
    ));
    let mut n = 3;
    let mut next = || {
        n += 1;
        n
    };
    if f.status.is_some() {
        sql.push_str(&format!(" AND status = ${}", next()));
    }
    if f.event.is_some() {
        sql.push_str(&format!(" AND event = ${}", next()));
    }
    if f.since.is_some() {
        sql.push_str(&format!(" AND created_at >= ${}", next()));
    }
    if f.until.is_some() {
        sql.push_str(&format!(" AND created_at < ${}", next()));
    }
    if cursor {
        let (at, id) = (next(), next());
        // The plain bound on the partition key lets the days after the cursor be pruned
        // (the row comparison alone does not).
        sql.push_str(&format!(
            " AND created_at <= ${at} AND (created_at, id) < (${at}, ${id})"
        ));
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT $3");
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use wf_core::events::EventType;

    /// Every combination of filters, with and without a cursor, and the lookups of one
    /// delivery and one event, are served by an index: with sequential scans priced out,
    /// no plan still scans `deliveries`.
    #[tokio::test]
    async fn lookups_use_indexes() {
        let db = wf_testkit::Database::create().await;
        crate::migrate(&db.url()).await.expect("migrate");
        let c = db.connect().await;
        // A log of some size and spread (50 organisations of 10 webhooks, 30 types, 4
        // statuses), with statistics, so the planner's choices are those of production.
        c.batch_execute(
            "INSERT INTO deliveries (id, org_id, webhook_id, event_id, event, status, \
             attempt_count, created_at, updated_at) \
             SELECT 'dlv_' || i, 'org_' || (i % 50), 'whk_' || (i % 500), 'evt_' || (i / 3), \
             'alert.t' || (i % 30), (ARRAY['pending','delivered','failed','dead'])[1 + i % 4], \
             1, now() - i * interval '1 second', now() \
             FROM generate_series(1, 50000) AS i; \
             ANALYZE deliveries; \
             SET enable_seqscan = off",
        )
        .await
        .unwrap();
        let t = Utc::now();
        let since = t - chrono::Duration::hours(2);
        let (w, o, status, event, id) = ("whk_7", "org_7", "failed", "alert.t7", "dlv_7");
        let limit: i64 = 21;
        let mut checked = 0;
        for bits in 0..16u8 {
            let f = DeliveryFilter {
                status: (bits & 1 != 0).then_some(DeliveryStatus::Failed),
                event: (bits & 2 != 0).then_some(EventType::AlertCreated),
                since: (bits & 4 != 0).then_some(t),
                until: (bits & 8 != 0).then_some(t),
            };
            for cursor in [false, true] {
                let sql = find_deliveries_sql(&f, cursor);
                let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    vec![&w, &o, &limit];
                if f.status.is_some() {
                    params.push(&status);
                }
                if f.event.is_some() {
                    params.push(&event);
                }
                if f.since.is_some() {
                    params.push(&since);
                }
                if f.until.is_some() {
                    params.push(&t);
                }
                if cursor {
                    params.push(&t);
                    params.push(&id);
                }
                // The most selective filter given is an index condition, not a filter
                // applied to every row of the webhook.
                let mut wanted: Vec<&str> = match (f.status.is_some(), f.event.is_some()) {
                    (true, true) => vec!["status = ", "event = "],
                    (true, false) => vec!["status = "],
                    (false, true) => vec!["event = "],
                    (false, false) => vec!["webhook_id = "],
                };
                // A closed time window (since, and until or a cursor) on the webhook's index
                // is selective too, and the planner may prefer it.
                if f.since.is_some() && (f.until.is_some() || cursor) {
                    wanted.push("created_at >= ");
                }
                assert_indexed(&c, &sql, &params, &wanted).await;
                checked += 1;
            }
        }
        assert_eq!(checked, 32);
        for (sql, wanted) in [
            (
                "SELECT d.id FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                 AND w.org_id = d.org_id WHERE d.id = $1 AND d.org_id = $2",
                "(id = ",
            ),
            (
                "SELECT d.id FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                 AND w.org_id = d.org_id WHERE d.org_id = $2 AND d.event_id = $1 \
                 ORDER BY d.created_at, d.id",
                "event_id = ",
            ),
        ] {
            assert_indexed(&c, sql, &[&id, &o], &[wanted]).await;
        }
    }

    /// `sql` does not scan `deliveries`, and one of its index conditions names one of
    /// `wanted`.
    async fn assert_indexed(
        c: &tokio_postgres::Client,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        wanted: &[&str],
    ) {
        let plan: Vec<String> = c
            .query(&format!("EXPLAIN {sql}"), params)
            .await
            .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"))
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            !plan.contains("Seq Scan on deliveries"),
            "{sql}\nscans deliveries:\n{plan}"
        );
        let conds: Vec<&str> = plan
            .lines()
            .filter(|l| l.trim_start().starts_with("Index Cond:"))
            .collect();
        assert!(
            conds.iter().any(|l| wanted.iter().any(|w| l.contains(w))),
            "{sql}\nno index condition on any of {wanted:?}:\n{plan}"
        );
    }
}
