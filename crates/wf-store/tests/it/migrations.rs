//! Migrations: they create the database, run once however many processes start at once,
//! and an unreachable server is an error worth retrying.

use wf_store::{migrate, Store, StoreError};
use wf_testkit::Database;

use crate::support::*;

#[tokio::test]
async fn migrate_creates_the_database_and_is_idempotent() {
    let db = Database::reserve();
    migrate(&db.url()).await.unwrap();
    migrate(&db.url()).await.unwrap();
    let c = db.connect().await;
    assert_each_migration_applied_once(&c).await;
    for table in [
        "organisations",
        "api_keys",
        "webhooks",
        "events",
        "deliveries",
        "delivery_attempts",
        "event_payloads",
    ] {
        let exists: bool = c
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .unwrap()
            .get(0);
        assert!(exists, "{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_on_a_fresh_database() {
    let db = Database::reserve();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url();
            tokio::spawn(async move { migrate(&url).await })
        })
        .collect();
    for r in runs {
        r.await.unwrap().unwrap();
    }
    let c = db.connect().await;
    assert_each_migration_applied_once(&c).await;
}

/// The schema history has one row per migration of the repository.
async fn assert_each_migration_applied_once(c: &tokio_postgres::Client) {
    let n: i64 = c
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, migration_files(), "each migration applied once");
}

/// How many migrations the repository has (`migrations/V*.sql`).
fn migration_files() -> i64 {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
    std::fs::read_dir(dir)
        .expect("migrations directory")
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with('V') && name.ends_with(".sql")
        })
        .count() as i64
}

#[tokio::test]
async fn unreachable_database_is_a_retryable_error() {
    let err = Store::connect("postgres://postgres@127.0.0.1:1/wf", KEY, 1)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let err = Store::connect("postgres://[::1", KEY, 1).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidConfig(_)));
    assert!(!err.is_retryable());
}
