//! The delivery log's daily partitions: created ahead of time, dropped whole by retention.
//!
//! `deliveries`, `delivery_attempts` and `event_payloads` are partitioned by range on the
//! delivery's creation time, one partition per UTC day named `<table>_pYYYYMMDD` (migration
//! V6). There is no DEFAULT partition. The invariant that keeps every insert working:
//! **the partitions of yesterday, today and the next [`AHEAD_DAYS`] days exist** whenever a
//! service runs. The migration creates them, every ingestor and worker creates them at
//! start-up before it serves or consumes ([`Store::ensure_log_partitions`]), and the log
//! maintenance (one worker at a time) creates them again every round, so the days ahead
//! are there long before they are written to. Should a write still find its day missing
//! (clocks days apart, or a service that ran past its days ahead with the maintenance
//! failing), the write creates that day and tries once more ([`Store::write_log`]): it
//! waits a moment rather than failing.

use chrono::{DateTime, Days, NaiveDate, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Statement;

use super::Store;
use crate::StoreError;

/// Days after today whose partitions exist in advance.
pub const AHEAD_DAYS: u64 = 7;

/// The partitioned tables of the delivery log, in the order their partitions are dropped.
const LOG_TABLES: [&str; 3] = ["delivery_attempts", "event_payloads", "deliveries"];

/// How long partition DDL waits for its table lock before giving up (it is retried on the
/// next round). Creating or dropping a partition locks the parent table exclusively for a
/// moment; a request stuck behind a long query would queue every later write behind it.
const DDL_LOCK_TIMEOUT: &str = "5s";

/// One day's partition of one log table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPartition {
    pub table: String,
    pub name: String,
    /// The UTC day it holds: `[day, day + 1)`.
    pub day: NaiveDate,
}

/// What a maintenance round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogMaintenance {
    /// Partitions created (days ahead that did not exist yet).
    pub created: u32,
    /// Partitions dropped by retention, by name.
    pub dropped: Vec<String>,
    /// Partitions retention would have dropped but could not (lock timeout); retried on
    /// the next round.
    pub drop_failures: u32,
    /// Expired idempotency records deleted.
    pub events_pruned: u64,
}

/// The UTC day of `t`.
pub(crate) fn day_of(t: DateTime<Utc>) -> NaiveDate {
    t.date_naive()
}

/// The day a partition name stands for: `<table>_pYYYYMMDD`.
fn partition_day(table: &str, name: &str) -> Option<NaiveDate> {
    let digits = name.strip_prefix(table)?.strip_prefix("_p")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

/// Whether `e` is Postgres refusing a row because no partition holds its key.
fn is_missing_partition(e: &StoreError) -> bool {
    let StoreError::Db(e) = e else {
        return false;
    };
    e.code() == Some(&SqlState::CHECK_VIOLATION)
        && e.as_db_error()
            .is_some_and(|d| d.message().starts_with("no partition of relation"))
}

/// The last day retention keeps nothing of: every partition of that day or before is
/// dropped. A day goes once all of it is older than `retention`; today and yesterday are
/// always kept (a write from a worker whose clock is a little behind still finds its day).
pub fn last_expired_day(now: DateTime<Utc>, retention: chrono::Duration) -> NaiveDate {
    let today = day_of(now);
    let before_yesterday = today - Days::new(2);
    // A day ending at or before `now - retention` is wholly older than the retention.
    let cutoff = now - retention;
    let last_whole = day_of(cutoff) - Days::new(1);
    last_whole.min(before_yesterday)
}

impl Store {
    /// Creates the missing daily partitions of the three log tables for every day from
    /// `from` to `to` (inclusive); returns how many tables it created. Idempotent and safe
    /// to run from many processes at once (the SQL function serialises callers with a
    /// transaction advisory lock and skips days that exist).
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`], including a lock timeout when a
    /// long-running query holds the parent table (it is safe to call again).
    pub async fn ensure_log_partitions(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<u32, StoreError> {
        if to < from {
            return Ok(0);
        }
        let mut client = self.conn().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'"))
            .await?;
        let n: i32 = tx
            .query_one("SELECT wf_log_partitions_ensure($1, $2)", &[&from, &to])
            .await?
            .get(0);
        tx.commit().await?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    /// [`ensure_log_partitions`](Store::ensure_log_partitions) for the days every write
    /// may need around `now`: yesterday, today and [`AHEAD_DAYS`] ahead.
    ///
    /// # Errors
    /// As [`ensure_log_partitions`](Store::ensure_log_partitions).
    pub async fn ensure_log_partitions_around(
        &self,
        now: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let today = day_of(now);
        self.ensure_log_partitions(today - Days::new(1), today + Days::new(AHEAD_DAYS))
            .await
    }

    /// Every daily partition of the log tables, by table then day. Partitions not named
    /// by the `<table>_pYYYYMMDD` convention (made by hand) are not listed, hence never
    /// dropped.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn log_partitions(&self) -> Result<Vec<LogPartition>, StoreError> {
        let client = self.conn().await?;
        let rows = client
            .query(
                "SELECT p.relname AS parent, c.relname AS name FROM pg_inherits i \
                 JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
                 WHERE i.inhparent = ANY(ARRAY['deliveries'::regclass, \
                 'delivery_attempts'::regclass, 'event_payloads'::regclass])",
                &[],
            )
            .await?;
        let mut out: Vec<LogPartition> = rows
            .iter()
            .filter_map(|r| {
                let table: String = r.get("parent");
                let name: String = r.get("name");
                let day = partition_day(&table, &name)?;
                Some(LogPartition { table, name, day })
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Drops every log partition of `last_day` or before (retention). A partition whose
    /// lock cannot be had within a few seconds is left for the next round. Returns the
    /// names dropped and how many could not be.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`] other than a lock timeout.
    pub async fn drop_log_partitions(
        &self,
        last_day: NaiveDate,
    ) -> Result<(Vec<String>, u32), StoreError> {
        let mut expired: Vec<LogPartition> = self
            .log_partitions()
            .await?
            .into_iter()
            .filter(|p| p.day <= last_day)
            .collect();
        // Oldest day first; within a day, attempts and payloads before their deliveries.
        let rank = |t: &str| LOG_TABLES.iter().position(|x| *x == t).unwrap_or(0);
        expired.sort_by_key(|p| (p.day, rank(&p.table)));
        let mut dropped = Vec::new();
        let mut failed = 0;
        let mut client = self.conn().await?;
        for p in expired {
            let tx = client.transaction().await?;
            tx.batch_execute(&format!("SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'"))
                .await?;
            let sql = format!(
                "DROP TABLE IF EXISTS {}",
                crate::migrate::quote_ident(&p.name)
            );
            match tx.batch_execute(&sql).await {
                Ok(()) => {
                    tx.commit().await?;
                    dropped.push(p.name);
                }
                Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                    tracing::warn!(partition = %p.name, "dropping a delivery-log partition timed out waiting for its lock; will retry");
                    failed += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok((dropped, failed))
    }

    /// One maintenance round of the delivery log, if no other process is running one (a
    /// session advisory lock; `None` when another holds it): creates the partitions
    /// ahead, drops the days past `retention`, and deletes idempotency records older
    /// than 24 hours.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn try_maintain_log(
        &self,
        now: DateTime<Utc>,
        retention: chrono::Duration,
    ) -> Result<Option<LogMaintenance>, StoreError> {
        // A session lock on one pooled connection; the work runs on other connections.
        const MAINTENANCE_LOCK: i64 = 0x7766_5f70_7275_6e65; // "wf_prune"
        let lock_conn = self.conn().await?;
        let got: bool = lock_conn
            .query_one("SELECT pg_try_advisory_lock($1)", &[&MAINTENANCE_LOCK])
            .await?
            .get(0);
        if !got {
            return Ok(None);
        }
        let result = async {
            let created = self.ensure_log_partitions_around(now).await?;
            let (dropped, drop_failures) = self
                .drop_log_partitions(last_expired_day(now, retention))
                .await?;
            // Idempotency records matter for 24 h whatever the log retention is.
            let events_pruned = self
                .prune_events(now - chrono::Duration::hours(24), 1_000)
                .await?;
            Ok::<_, StoreError>(LogMaintenance {
                created,
                dropped,
                drop_failures,
                events_pruned,
            })
        }
        .await;
        let _ = lock_conn
            .execute("SELECT pg_advisory_unlock($1)", &[&MAINTENANCE_LOCK])
            .await;
        result.map(Some)
    }

    /// Runs one write of the delivery log. Should Postgres find no partition for a row
    /// (see the module docs: it should not happen), creates the days `times` fall on
    /// (each, not the range between) and runs it once more.
    pub(crate) async fn write_log(
        &self,
        client: &deadpool_postgres::Object,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
        times: impl Iterator<Item = DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        match client.execute(stmt, params).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = StoreError::from(e);
                if !is_missing_partition(&e) {
                    return Err(e);
                }
                let days: std::collections::BTreeSet<NaiveDate> = times.map(day_of).collect();
                if days.is_empty() {
                    return Err(e);
                }
                for day in days {
                    let n = self.ensure_log_partitions(day, day).await?;
                    if n > 0 {
                        tracing::warn!(%day, "a delivery-log write found no partition for its day; created it");
                    }
                }
                client.execute(stmt, params).await?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn partition_names_parse() {
        assert_eq!(
            partition_day("deliveries", "deliveries_p20261129"),
            Some(day("2026-11-29"))
        );
        assert_eq!(
            partition_day("delivery_attempts", "delivery_attempts_p20260101"),
            Some(day("2026-01-01"))
        );
        for bad in [
            "deliveries_p2026112",
            "deliveries_p20261340",
            "deliveries_old",
            "deliveries_p2026112x",
            "event_payloads_p20261129",
        ] {
            assert_eq!(partition_day("deliveries", bad), None, "{bad}");
        }
    }

    #[test]
    fn retention_drops_whole_days_and_keeps_yesterday() {
        let now = at("2026-11-29T10:00:00Z");
        let h = chrono::Duration::hours;
        // 7 days: 2026-11-22T10:00 is the cutoff; the 21st is wholly older, the 22nd is not.
        assert_eq!(last_expired_day(now, h(7 * 24)), day("2026-11-21"));
        // Exactly at midnight, the day before the cutoff has just ended.
        assert_eq!(
            last_expired_day(at("2026-11-29T00:00:00Z"), h(24)),
            day("2026-11-27")
        );
        // Short retentions never reach yesterday or today.
        assert_eq!(last_expired_day(now, h(1)), day("2026-11-27"));
        assert_eq!(last_expired_day(now, h(24)), day("2026-11-27"));
        // 36 hours: the 27th ends after the cutoff (27th, 22:00), so it stays.
        assert_eq!(last_expired_day(now, h(36)), day("2026-11-26"));
    }
}
