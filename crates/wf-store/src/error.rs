//! The one error type of the store, classified by what a caller should do about it.

use std::error::Error as _;
use std::fmt;

/// Everything a store operation can fail with.
///
/// Callers mostly need one decision — retry later, or give up and report — so
/// [`StoreError::is_retryable`] answers it; the variants say why.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No pooled connection could be had (pool exhausted until the wait timeout, or a new
    /// connection could not be opened). Transient by nature.
    #[error("database connection pool: {0}")]
    Pool(#[source] deadpool_postgres::PoolError),

    /// Postgres (or the connection to it) reported an error.
    #[error("database error: {}", PgDisplay(.0))]
    Db(#[source] tokio_postgres::Error),

    /// A pagination cursor that this store did not issue, or issued for another listing.
    #[error("invalid pagination cursor")]
    InvalidCursor,

    /// A webhook secret could not be decrypted: almost always a `WF_SECRET_KEY` that
    /// differs from the one the secret was written with.
    /// The failing webhook is logged where it happens.
    #[error(
        "a webhook secret cannot be decrypted (is WF_SECRET_KEY the key it was written with?)"
    )]
    Crypto,

    /// Applying the schema migrations failed.
    #[error("database migration failed: {0}")]
    Migration(#[source] refinery::Error),

    /// The database URL could not be used.
    #[error("invalid database configuration: {0}")]
    InvalidConfig(String),

    /// A row held a value this version cannot interpret (an unknown event type, an id of
    /// the wrong shape, an out-of-range number). Retrying will not help.
    #[error("unexpected data in the database: {0}")]
    Decode(String),
}

impl StoreError {
    /// Whether the same call may succeed if retried later.
    ///
    /// Pool exhaustion, lost connections, serialization failures/deadlocks, resource
    /// exhaustion and operator intervention (e.g. a restarting server) are transient.
    /// Constraint violations, bad SQL, bad cursors, crypto and decode failures are not:
    /// retrying them would loop forever.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Pool(e) => match e {
                deadpool_postgres::PoolError::Backend(db) => pg_retryable(db),
                deadpool_postgres::PoolError::Timeout(_) => true,
                // A hook failure is a connection that could not be set up; a closed pool
                // or a missing runtime is a programming error.
                deadpool_postgres::PoolError::PostCreateHook(_) => true,
                deadpool_postgres::PoolError::Closed
                | deadpool_postgres::PoolError::NoRuntimeSpecified => false,
            },
            StoreError::Db(e) => pg_retryable(e),
            StoreError::InvalidCursor
            | StoreError::Crypto
            | StoreError::Migration(_)
            | StoreError::InvalidConfig(_)
            | StoreError::Decode(_) => false,
        }
    }

    pub(crate) fn decode(what: impl fmt::Display) -> StoreError {
        StoreError::Decode(what.to_string())
    }
}

fn pg_retryable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        // No SQLSTATE: I/O, closed connection, timeout — the connection's fault. (Bad
        // configuration is reported as `InvalidConfig` before any query runs.)
        None => true,
        Some(code) => {
            let class = code.code().get(..2).unwrap_or("");
            // 08 connection exception, 40 transaction rollback (serialization failure,
            // deadlock), 53 insufficient resources, 57 operator intervention (admin
            // shutdown, cannot connect now), 58 system error.
            matches!(class, "08" | "40" | "53" | "57" | "58")
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Db(e)
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            // Keep the Postgres error itself so it is classified and shown precisely.
            deadpool_postgres::PoolError::Backend(db) => StoreError::Db(db),
            other => StoreError::Pool(other),
        }
    }
}

impl From<refinery::Error> for StoreError {
    fn from(e: refinery::Error) -> Self {
        StoreError::Migration(e)
    }
}

/// tokio-postgres' own `Display` says only "db error"; the useful part (the server's
/// message, or the I/O error) is its source. Log lines use `%error`, so show both.
struct PgDisplay<'a>(&'a tokio_postgres::Error);

impl fmt::Display for PgDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(db) = self.0.as_db_error() {
            write!(
                f,
                "{} ({}): {}",
                db.severity(),
                db.code().code(),
                db.message()
            )?;
            if let Some(detail) = db.detail() {
                write!(f, " — {detail}")?;
            }
            Ok(())
        } else {
            match self.0.source() {
                Some(cause) => write!(f, "{}: {cause}", self.0),
                None => write!(f, "{}", self.0),
            }
        }
    }
}
