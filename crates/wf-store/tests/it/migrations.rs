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

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Fingerprints of the delivery log's rows (every column that existed before V6).
async fn log_fingerprints(c: &tokio_postgres::Client) -> [(i64, String); 3] {
    let mut out: Vec<(i64, String)> = Vec::new();
    for sql in [
        "SELECT count(*), md5(string_agg((id, org_id, webhook_id, event_id, event, status, \
         attempt_count, last_error, created_at, updated_at)::text, '|' ORDER BY id)) \
         FROM deliveries",
        "SELECT count(*), md5(string_agg((delivery_id, attempt, at, status_code, error, \
         duration_ms, response_snippet)::text, '|' ORDER BY delivery_id, attempt)) \
         FROM delivery_attempts",
        "SELECT count(*), md5(string_agg((org_id, event_id, body, event_ts_ms, created_at)::text, \
         '|' ORDER BY org_id, event_id)) FROM event_payloads",
    ] {
        let row = c.query_one(sql, &[]).await.unwrap();
        out.push((row.get(0), row.get(1)));
    }
    out.try_into().unwrap()
}

/// A database at V5 with a delivery log spread over five days is migrated to the
/// partitioned log: every row is there, unchanged, each on its day's partition, and the
/// store's queries find them.
#[tokio::test]
async fn the_delivery_log_moves_to_partitions_with_its_history() {
    use wf_core::ids::{DeliveryId, EventId, OrgId, WebhookId};
    use wf_store::{DeliveryFilter, DeliveryStatus};

    let db = Database::create().await;
    let mut c = db.connect().await;
    let report = embedded::migrations::runner()
        .set_target(refinery::Target::Version(5))
        .run_async(&mut c)
        .await
        .unwrap();
    assert_eq!(report.applied_migrations().len(), 5);
    // 120 deliveries an hour apart (five days), 40 events of three webhooks each, one to
    // three attempts each, one payload per event.
    c.batch_execute(
        "INSERT INTO organisations (id) VALUES ('org_m'); \
         INSERT INTO webhooks (id, org_id, name, url, events, secret_ciphertext, created_at, \
         updated_at) SELECT 'whk_m' || i, 'org_m', 'm' || i, 'https://example.com/' || i, \
         '{alert.*}', '\\x00', now(), now() FROM generate_series(0, 2) i; \
         INSERT INTO deliveries (id, org_id, webhook_id, event_id, event, status, \
         attempt_count, last_error, created_at, updated_at) \
         SELECT 'dlv_m' || lpad(i::text, 3, '0'), 'org_m', 'whk_m' || (i % 3), \
         'evt_m' || (i / 3), 'alert.created', \
         (ARRAY['pending','delivered','failed','dead'])[1 + (i / 3) % 4], 1 + i % 3, \
         CASE WHEN i % 2 = 0 THEN 'HTTP 500' END, \
         date_trunc('milliseconds', now() - i * interval '1 hour'), \
         date_trunc('milliseconds', now() - i * interval '1 hour' + interval '1 minute') \
         FROM generate_series(0, 119) i; \
         INSERT INTO delivery_attempts (delivery_id, attempt, at, status_code, error, \
         duration_ms, response_snippet) \
         SELECT d.id, n, d.created_at + n * interval '1 second', 500, NULL, 10 * n, 'oops' \
         FROM deliveries d, generate_series(1, 3) n WHERE n <= d.attempt_count; \
         INSERT INTO event_payloads (org_id, event_id, body, event_ts_ms, created_at) \
         SELECT org_id, event_id, '{\"e\":\"' || event_id || '\"}', 7, min(created_at) \
         FROM deliveries GROUP BY org_id, event_id",
    )
    .await
    .unwrap();
    let before = log_fingerprints(&c).await;
    assert_eq!(
        [before[0].0, before[1].0, before[2].0],
        [120, 240, 40],
        "the V5 log"
    );

    migrate(&db.url()).await.unwrap();
    assert_each_migration_applied_once(&c).await;
    assert_eq!(log_fingerprints(&c).await, before, "every row, unchanged");
    for table in ["deliveries", "delivery_attempts", "event_payloads"] {
        let kind: i8 = c
            .query_one(
                "SELECT relkind::\"char\" FROM pg_class WHERE oid = $1::text::regclass",
                &[&table],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(kind as u8, b'p', "{table} is partitioned");
        // Each row sits in the partition of its day.
        let misplaced: i64 = c
            .query_one(
                &format!(
                    "SELECT count(*) FROM {table} t WHERE tableoid::regclass::text <> \
                     '{table}_p' || to_char({} AT TIME ZONE 'UTC', 'YYYYMMDD')",
                    if table == "delivery_attempts" {
                        "delivery_created_at"
                    } else {
                        "created_at"
                    }
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(misplaced, 0, "{table}");
    }

    // Through the store: each webhook's 40 deliveries, newest first over the five days,
    // page by page, with their attempts; one delivery; one event; the replays' payloads.
    let s = Store::connect(&db.url(), KEY, 2).await.unwrap();
    let o = OrgId::parse("org_m").unwrap();
    for k in 0..3 {
        let w = WebhookId::parse(&format!("whk_m{k}")).unwrap();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = s
                .find_deliveries(&o, &w, &DeliveryFilter::default(), 7, cursor.as_deref())
                .await
                .unwrap();
            for d in &page.items {
                let i: usize = d.id.as_str()["dlv_m".len()..].parse().unwrap();
                assert_eq!(d.attempts.len(), 1 + i % 3, "{}", d.id);
                seen.push(i);
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let want: Vec<usize> = (0..120).filter(|i| i % 3 == k).collect();
        assert_eq!(seen, want, "whk_m{k}: all of them, newest first");
    }
    let oldest = DeliveryId::parse("dlv_m119").unwrap();
    let d = s.get_org_delivery(&o, &oldest).await.unwrap().unwrap();
    assert_eq!((d.attempts.len(), d.status), (3, DeliveryStatus::Dead));
    let ev = s
        .event_deliveries(&o, &EventId::parse("evt_m39").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.deliveries.len(), 3);
    assert_eq!(ev.timestamp.timestamp_millis(), 7);
    let dead = s
        .replay_items(&wf_store::ReplayFilter {
            org: Some(&o),
            status: Some(DeliveryStatus::Dead),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 30);
    assert!(dead.iter().all(|d| d.logged().is_some()), "payloads found");
    s.close();
}
