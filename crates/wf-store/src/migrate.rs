//! Schema migrations, safe to run from every replica at once.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::StoreError;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Session advisory-lock key serialising migration runs ("wf_migra" in ASCII). Any
/// constant works as long as every version of the service uses the same one.
const MIGRATION_LOCK: i64 = 0x7766_5f6d_6967_7261;

/// Creates the database named in `database_url` if it does not exist, then applies every
/// pending migration of `migrations/`.
///
/// refinery takes no lock of its own, so two replicas starting together could both apply
/// the same migration; the run is therefore wrapped in `pg_advisory_lock` on the same
/// connection. The lock is session-level and dies with the connection, so a crashed
/// migrator cannot wedge the others.
///
/// # Errors
/// [`StoreError::InvalidConfig`] for an unusable URL, [`StoreError::Db`] when Postgres is
/// unreachable or refuses, [`StoreError::Migration`] when a migration fails (or the
/// database holds migrations this build does not know).
pub async fn migrate(database_url: &str) -> Result<(), StoreError> {
    let config = parse_config(database_url)?;
    let mut client = connect_creating(&config).await?;

    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let outcome = embedded::migrations::runner().run_async(&mut client).await;
    // Unlock even on failure; if this fails too the connection is broken and dropping it
    // releases the lock anyway.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let report = outcome?;
    for m in report.applied_migrations() {
        tracing::info!(version = m.version(), name = m.name(), "applied migration");
    }
    Ok(())
}

/// Parses a `postgres://` URL (or key=value string) and fills in what a service should
/// always have: a connect timeout and an application name visible in `pg_stat_activity`.
pub(crate) fn parse_config(database_url: &str) -> Result<Config, StoreError> {
    let mut config: Config = database_url
        .parse()
        // The URL may hold a password: never echo it.
        .map_err(|e: tokio_postgres::Error| {
            StoreError::InvalidConfig(format!("database URL: {e}"))
        })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        config.application_name("workflows");
    }
    Ok(config)
}

/// Opens a connection, driving it on a spawned task.
pub(crate) async fn connect(config: &Config) -> Result<Client, StoreError> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "migration connection ended");
        }
    });
    Ok(client)
}

/// Connects to the target database, creating it first when the server says it does not
/// exist. Another replica may create it at the same moment: "already exists" is success.
async fn connect_creating(config: &Config) -> Result<Client, StoreError> {
    match connect(config).await {
        Err(StoreError::Db(e)) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {}
        other => return other,
    }
    // Postgres defaults the database name to the user name.
    let name = config
        .get_dbname()
        .or(config.get_user())
        .ok_or_else(|| StoreError::InvalidConfig("no database name in the URL".into()))?
        .to_owned();
    let mut admin = config.clone();
    admin.dbname("postgres");
    let admin = connect(&admin).await?;
    let create = format!("CREATE DATABASE {}", quote_ident(&name));
    match admin.batch_execute(&create).await {
        Ok(()) => tracing::info!(database = %name, "created database"),
        Err(e)
            if e.code() == Some(&SqlState::DUPLICATE_DATABASE)
                // Two concurrent CREATE DATABASE can also collide on pg_database's unique
                // index before the friendlier check sees the other one.
                || e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {}
        Err(e) => return Err(e.into()),
    }
    drop(admin);
    connect(config).await
}

/// Quotes an SQL identifier (`CREATE DATABASE` takes no parameters).
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("wf"), "\"wf\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn bad_url_is_a_config_error() {
        assert!(matches!(
            parse_config("postgres://[::1"),
            Err(StoreError::InvalidConfig(_))
        ));
        let c = parse_config("postgres://postgres@127.0.0.1:5432/wf").unwrap();
        assert_eq!(c.get_dbname(), Some("wf"));
        assert_eq!(c.get_application_name(), Some("workflows"));
    }
}
