//! [`Store`]: the connection pool and every query of the system.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, QueueMode, RecyclingMethod, Runtime,
};
use tokio_postgres::types::FromSql;
use tokio_postgres::{NoTls, Row};

use wf_core::secret_keys::SecretKeys;

use crate::crypto::SecretBox;
use crate::migrate::parse_config;
use crate::StoreError;

mod deliveries;
mod events;
pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod outbox;
pub(crate) mod partitions;
pub(crate) mod rekey;
pub(crate) mod replay;
mod webhooks;

/// Largest page a listing returns, whatever the caller asks for.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Handle to the database: a connection pool plus the key that opens webhook secrets.
///
/// Cheap to clone (shared pool); every method checks out one connection for the duration
/// of the call. Statements are prepared once per connection and cached.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    secrets: Arc<SecretBox>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        let status = self.pool.status();
        f.debug_struct("Store")
            .field("pool_size", &status.size)
            .field("pool_available", &status.available)
            .field("pool_max_size", &status.max_size)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Builds the pool and checks that the database answers, so a wrong URL or a down
    /// server is a start-up error rather than the first request's.
    ///
    /// `secret_keys` is `WF_SECRET_KEY` (one key, or several during a rotation: the first
    /// seals, any opens): every replica of a deployment must be able to open what the
    /// others seal, so during a rotation every process lists both keys before any seals
    /// with the new one (README, "Rotating WF_SECRET_KEY"). `pool_size` is the
    /// maximum number of connections (at least 1).
    ///
    /// A caller waits at most 10 s for a free connection before getting a retryable
    /// [`StoreError::Pool`], instead of hanging when Postgres is saturated or gone.
    ///
    /// # Errors
    /// [`StoreError::InvalidConfig`] for an unusable URL; [`StoreError::Db`] or
    /// [`StoreError::Pool`] when the database cannot be reached.
    pub async fn connect(
        database_url: &str,
        secret_keys: impl Into<SecretKeys>,
        pool_size: usize,
    ) -> Result<Store, StoreError> {
        let mut config = parse_config(database_url)?;
        // Notice dead peers (a failed-over server, a dropped NAT entry) within a minute or
        // so instead of on the next write.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // Fast: trust `is_closed()`; a dead connection surfaces as a retryable
                // error on use, which costs less than a round trip on every checkout.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            // Most recently used first: a few connections do the work and the rest stay
            // idle. Each connection keeps buffers as large as the largest statement it
            // ever sent (the delivery log's batches); round-robin (the default) spread
            // that over the whole pool, and the worker's RSS crept up over a long run
            // until every connection had written a large batch.
            .queue_mode(QueueMode::Lifo)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::InvalidConfig(format!("connection pool: {e}")))?;
        let store = Store {
            pool,
            secrets: Arc::new(SecretBox::new(&secret_keys.into())),
        };
        store.ping().await?;
        Ok(store)
    }

    /// One round trip to the database, for `/readyz`.
    ///
    /// # Errors
    /// [`StoreError::Pool`] or [`StoreError::Db`] when the database is unreachable.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.conn().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Closes the pool: connections are dropped as they are returned, and further calls
    /// fail with a non-retryable [`StoreError::Pool`]. For orderly shutdown and tests.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Runs `sql`, a `DELETE … LIMIT $2` of rows older than `$1` (further parameters from
    /// `$3`: `extra`), until a round deletes fewer than `batch` rows; returns how many were
    /// deleted. Small batches keep each transaction (and its locks) short, so pruning
    /// never stalls the delivery log's writes.
    async fn delete_in_batches(
        &self,
        sql: &str,
        older_than: DateTime<Utc>,
        batch: i64,
        extra: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let batch = batch.max(1);
        let client = self.conn().await?;
        let stmt = client.prepare_cached(sql).await?;
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&older_than, &batch];
        params.extend_from_slice(extra);
        let mut total = 0;
        loop {
            let n = client.execute(&stmt, &params).await?;
            total += n;
            if n < batch.unsigned_abs() {
                return Ok(total);
            }
        }
    }

    /// Checks out a pooled connection; the wait is `wf_db_pool_wait_seconds`, which shows
    /// an undersized pool (or a slow database holding connections) before requests fail.
    async fn conn(&self) -> Result<Object, StoreError> {
        let started = std::time::Instant::now();
        let conn = self.pool.get().await;
        wf_telemetry::metrics()
            .db_pool_wait_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(conn?)
    }
}

/// Reads a column without panicking on a type or NULL mismatch.
fn col<'a, T: FromSql<'a>>(row: &'a Row, name: &str) -> Result<T, StoreError> {
    row.try_get(name)
        .map_err(|e| StoreError::decode(format_args!("column {name}: {e}")))
}

/// Parses a stored id or event type, turning a bad value into [`StoreError::Decode`].
fn parse_col<T, E: fmt::Display>(
    row: &Row,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, StoreError> {
    let raw: &str = col(row, name)?;
    parse(raw).map_err(|e| StoreError::decode(format_args!("column {name}: {e}")))
}

fn parse_event(s: &str) -> Result<wf_core::events::EventType, String> {
    wf_core::events::EventType::parse(s).ok_or_else(|| format!("unknown event type `{s}`"))
}

/// Times are shown with millisecond precision; stored ones already are, this makes sure.
fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

fn page_limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, MAX_PAGE_SIZE))
}

/// Caps free text from the outside world (error messages, response bodies) at `max`
/// bytes on a character boundary, and replaces NUL, which Postgres text cannot hold (it
/// would fail the whole batch).
fn clean_text(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].replace('\0', "\u{fffd}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_caps_on_char_boundary_and_drops_nul() {
        assert_eq!(clean_text("héllo", 2), "h");
        assert_eq!(clean_text("héllo", 3), "hé");
        assert_eq!(clean_text("a\0b", 10), "a\u{fffd}b");
        assert_eq!(clean_text("", 10), "");
    }

    #[test]
    fn ms_truncates() {
        let t = DateTime::from_timestamp_micros(1_779_192_300_123_456).unwrap();
        assert_eq!(ms(t).timestamp_micros(), 1_779_192_300_123_000);
    }

    #[test]
    fn limits_are_clamped() {
        assert_eq!(page_limit(0), 1);
        assert_eq!(page_limit(20), 20);
        assert_eq!(page_limit(u32::MAX), 1000);
    }
}
