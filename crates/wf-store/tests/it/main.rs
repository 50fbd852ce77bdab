//! wf-store against a real Postgres (`WF_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432`). Every test gets its own database
//! `wf_test_<random>`, created by `migrate()` and dropped when the test ends (also when it
//! panics).

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::distr::Alphanumeric;
use rand::Rng;
use wf_core::events::EventType;
use wf_core::ids::{ApiKeyId, DeliveryId, EventId, OrgId, WebhookId};
use wf_store::{
    listen_changes, migrate, AttemptRecord, ChangeEvent, DeliveryStatus, EventRecord, NewDelivery,
    NewWebhook, Store, StoreError, WebhookPatch,
};

const KEY: [u8; 32] = [42; 32];

fn server_url() -> String {
    std::env::var("WF_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database name no other test uses.
fn fresh_name() -> String {
    let suffix: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(16)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    format!("wf_test_{suffix}")
}

/// Drops its database when dropped, whatever happened in the test.
struct DbGuard {
    name: String,
    url: String,
}

impl DbGuard {
    fn new() -> DbGuard {
        let name = fresh_name();
        let url = format!("{}/{name}", server_url());
        DbGuard { name, url }
    }
}

impl Drop for DbGuard {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Best effort, on a thread of its own: Drop cannot await, and the test's runtime
        // may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let Ok(admin) = raw(&format!("{}/postgres", server_url())).await else {
                    return;
                };
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

/// A migrated database and a store on it.
struct TestDb {
    store: Store,
    guard: DbGuard,
}

impl TestDb {
    async fn new() -> TestDb {
        let guard = DbGuard::new();
        migrate(&guard.url).await.expect("migrate");
        let store = Store::connect(&guard.url, KEY, 4).await.expect("connect");
        TestDb { store, guard }
    }

    fn url(&self) -> &str {
        &self.guard.url
    }

    /// A plain connection, to look at the tables behind the store's back.
    async fn sql(&self) -> tokio_postgres::Client {
        raw(self.url()).await.expect("raw connection")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.store.close();
    }
}

async fn raw(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

fn org(s: &str) -> OrgId {
    OrgId::parse(s).unwrap()
}

fn new_webhook(name: &str, events: &[&str], is_active: bool) -> NewWebhook {
    NewWebhook {
        name: name.into(),
        url: format!("https://example.com/hooks/{name}"),
        events: events.iter().map(|s| s.to_string()).collect(),
        is_active,
        rate_limit: None,
    }
}

fn is_ms(t: DateTime<Utc>) -> bool {
    t.timestamp_subsec_micros().is_multiple_of(1000)
}

async fn next_change(feed: &mut wf_store::ChangeFeed) -> ChangeEvent {
    tokio::time::timeout(Duration::from_secs(15), feed.next())
        .await
        .expect("a change event within 15 s")
}

// ---------------------------------------------------------------------------------------
// migrations

#[tokio::test]
async fn migrate_creates_the_database_and_is_idempotent() {
    let db = DbGuard::new();
    migrate(&db.url).await.unwrap();
    migrate(&db.url).await.unwrap();
    let c = raw(&db.url).await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, migration_files(), "each migration applied once");
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
    let db = DbGuard::new();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { migrate(&url).await })
        })
        .collect();
    for r in runs {
        r.await.unwrap().unwrap();
    }
    let c = raw(&db.url).await.unwrap();
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

// ---------------------------------------------------------------------------------------
// API keys

#[tokio::test]
async fn api_keys_are_hashed_authenticate_and_revoke() {
    let db = TestDb::new().await;
    let s = &db.store;
    let org_a = org("org_a");
    let (key, token) = s.create_api_key(&org_a, "ci").await.unwrap();
    assert!(
        token.starts_with("wf_live_") && token.len() == 40,
        "{token}"
    );
    assert!(token[8..].chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(key.org_id, org_a);
    assert_eq!(key.name, "ci");
    assert!(key.revoked_at.is_none());
    assert!(is_ms(key.created_at));

    assert_eq!(s.authenticate(&token).await.unwrap(), Some(key.clone()));
    assert_eq!(s.authenticate("wf_live_nope").await.unwrap(), None);
    assert_eq!(s.authenticate("").await.unwrap(), None);
    let unknown = format!("wf_live_{}", "A".repeat(32));
    assert_eq!(s.authenticate(&unknown).await.unwrap(), None);

    // Only the hash is stored: the token appears nowhere in the row.
    let c = db.sql().await;
    let row = c
        .query_one(
            "SELECT row_to_json(k)::text, key_hash FROM api_keys k WHERE id = $1",
            &[&key.id.as_str()],
        )
        .await
        .unwrap();
    let json: String = row.get(0);
    let hash: Vec<u8> = row.get(1);
    assert!(!json.contains(&token[8..]), "{json}");
    assert_eq!(hash.len(), 32);
    assert!(!hash
        .windows(8)
        .any(|w| token.as_bytes().windows(8).any(|t| t == w)));

    // Another organisation cannot revoke it.
    assert_eq!(
        s.revoke_api_key(Some(&org("org_b")), &key.id)
            .await
            .unwrap(),
        None
    );
    assert!(s.authenticate(&token).await.unwrap().is_some());

    let revoked = s
        .revoke_api_key(Some(&org_a), &key.id)
        .await
        .unwrap()
        .unwrap();
    assert!(revoked.revoked_at.is_some_and(is_ms));
    assert_eq!(s.authenticate(&token).await.unwrap(), None);
    assert_eq!(s.revoke_api_key(Some(&org_a), &key.id).await.unwrap(), None);
    assert_eq!(
        s.revoke_api_key(None, &ApiKeyId::generate()).await.unwrap(),
        None
    );

    // The operator path revokes without naming the organisation.
    let (key2, token2) = s.create_api_key(&org_a, "ops").await.unwrap();
    assert!(s.revoke_api_key(None, &key2.id).await.unwrap().is_some());
    assert_eq!(s.authenticate(&token2).await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------
// webhooks

#[tokio::test]
async fn webhook_crud_is_scoped_to_the_organisation() {
    let db = TestDb::new().await;
    let s = &db.store;
    let (a, b) = (org("org_a"), org("org_b"));
    let (w, secret) = s
        .create_webhook(
            &a,
            new_webhook("one", &["alert.created", "billing.*"], true),
        )
        .await
        .unwrap();
    assert!(secret.expose().starts_with("whsec_"));
    assert!(w.id.as_str().starts_with("whk_"));
    assert_eq!(w.org_id, a);
    assert_eq!(w.events, vec!["alert.created", "billing.*"]);
    assert!(w.is_active && w.disabled_reason.is_none());
    assert!(is_ms(w.created_at) && w.created_at == w.updated_at);

    assert_eq!(s.get_webhook(&a, &w.id).await.unwrap(), Some(w.clone()));
    assert_eq!(s.get_webhook(&b, &w.id).await.unwrap(), None);
    assert_eq!(
        s.get_webhook(&a, &WebhookId::generate()).await.unwrap(),
        None
    );
    assert!(s
        .list_webhooks(&b, 20, None)
        .await
        .unwrap()
        .items
        .is_empty());

    // Update: other org sees nothing; an empty patch writes nothing.
    let patch = WebhookPatch {
        name: Some("renamed".into()),
        events: Some(vec!["csv.uploaded".into()]),
        ..Default::default()
    };
    assert_eq!(
        s.update_webhook(&b, &w.id, patch.clone()).await.unwrap(),
        None
    );
    let (before, after) = s.update_webhook(&a, &w.id, patch).await.unwrap().unwrap();
    assert_eq!(before, w);
    assert_eq!(after.name, "renamed");
    assert_eq!(after.events, vec!["csv.uploaded"]);
    assert_eq!(after.url, w.url);
    assert!(after.updated_at >= w.updated_at && is_ms(after.updated_at));
    let (same, same2) = s
        .update_webhook(&a, &w.id, WebhookPatch::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((same.clone(), same2), (after.clone(), after.clone()));

    // System disable, then a user re-enable clears the reason.
    let disabled = s
        .disable_webhook(&w.id, "endpoint answered 410 Gone")
        .await
        .unwrap()
        .unwrap();
    assert!(!disabled.is_active);
    assert_eq!(
        disabled.disabled_reason.as_deref(),
        Some("endpoint answered 410 Gone")
    );
    assert_eq!(s.disable_webhook(&w.id, "again").await.unwrap(), None);
    let (before, after) = s
        .update_webhook(
            &a,
            &w.id,
            WebhookPatch {
                is_active: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(!before.is_active && before.disabled_reason.is_some());
    assert!(after.is_active && after.disabled_reason.is_none());
    // A user disable records no reason.
    let (_, after) = s
        .update_webhook(
            &a,
            &w.id,
            WebhookPatch {
                is_active: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(!after.is_active && after.disabled_reason.is_none());

    // Delete: other org cannot; then gone.
    assert_eq!(s.delete_webhook(&b, &w.id).await.unwrap(), None);
    let deleted = s.delete_webhook(&a, &w.id).await.unwrap().unwrap();
    assert_eq!(deleted.id, w.id);
    assert_eq!(s.get_webhook(&a, &w.id).await.unwrap(), None);
    assert_eq!(s.delete_webhook(&a, &w.id).await.unwrap(), None);
    assert_eq!(s.rotate_secret(&a, &w.id).await.unwrap(), None);
    assert_eq!(s.disable_webhook(&w.id, "x").await.unwrap(), None);
}

#[tokio::test]
async fn webhook_pagination_walks_every_row_once() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = org("org_a");
    let mut created = Vec::new();
    for i in 0..25 {
        let (w, _) = s
            .create_webhook(&a, new_webhook(&format!("w{i}"), &["alert.*"], true))
            .await
            .unwrap();
        created.push(w.id);
    }
    // Noise in another organisation.
    s.create_webhook(&org("org_b"), new_webhook("other", &["alert.*"], true))
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = s.list_webhooks(&a, 10, cursor.as_deref()).await.unwrap();
        sizes.push(page.items.len());
        seen.extend(page.items.into_iter().map(|w| w.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(sizes, vec![10, 10, 5]);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 25);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>(),
        created.iter().collect::<HashSet<_>>()
    );

    // Exactly one full page: no dangling cursor, and the same order as page by page
    // (oldest first; webhooks created in the same millisecond by id).
    let page = s.list_webhooks(&a, 25, None).await.unwrap();
    assert!(page.next_cursor.is_none());
    assert!(page
        .items
        .windows(2)
        .all(|w| (w[0].created_at, &w[0].id) < (w[1].created_at, &w[1].id)));
    assert_eq!(
        page.items.into_iter().map(|w| w.id).collect::<Vec<_>>(),
        seen
    );
}

#[tokio::test]
async fn malformed_cursors_are_refused() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = org("org_a");
    let w = WebhookId::generate();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let foreign = b64.encode("1779192300000000:dlv_abc");
    for bad in ["garbage!", "", "bm9wZQ", foreign.as_str()] {
        let err = s.list_webhooks(&a, 10, Some(bad)).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidCursor), "{bad}: {err}");
        assert!(!err.is_retryable());
    }
    let webhook_cursor = b64.encode(format!("1779192300000000:{w}"));
    let err = s
        .list_deliveries(&a, &w, None, 10, Some(&webhook_cursor))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidCursor));
}

#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_need_the_right_key() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = org("org_a");
    let (w, secret) = s
        .create_webhook(&a, new_webhook("one", &["alert.created"], true))
        .await
        .unwrap();

    let c = db.sql().await;
    let row = c
        .query_one(
            "SELECT secret_ciphertext, row_to_json(w)::text FROM webhooks w WHERE id = $1",
            &[&w.id.as_str()],
        )
        .await
        .unwrap();
    let sealed: Vec<u8> = row.get(0);
    let json: String = row.get(1);
    let plain = secret.expose().as_bytes();
    assert!(!sealed.windows(plain.len()).any(|x| x == plain));
    assert!(!sealed
        .windows(8)
        .any(|x| plain[6..].windows(8).any(|p| p == x)));
    assert!(!json.contains(&secret.expose()[6..]));
    assert_eq!(sealed.len(), 12 + plain.len() + 16);

    let sub = s.subscription(&w.id).await.unwrap().unwrap();
    assert_eq!(sub.secret, secret);
    assert_eq!(sub.previous_secret, None);
    assert_eq!(sub.url, w.url);
    assert_eq!(sub.org_id, a);

    // Another WF_SECRET_KEY cannot read it: a clear, non-retryable error.
    let other = Store::connect(db.url(), [7; 32], 1).await.unwrap();
    let err = other.subscription(&w.id).await.unwrap_err();
    assert!(matches!(err, StoreError::Crypto), "{err}");
    assert!(!err.is_retryable());
    assert!(matches!(
        other.subscriptions(&a, EventType::AlertCreated).await,
        Err(StoreError::Crypto)
    ));
    // Management reads do not need the secret.
    assert!(other.get_webhook(&a, &w.id).await.unwrap().is_some());
    other.close();

    // A ciphertext moved onto another webhook's row does not open.
    let (w2, _) = s
        .create_webhook(&a, new_webhook("two", &["alert.created"], true))
        .await
        .unwrap();
    c.execute(
        "UPDATE webhooks SET secret_ciphertext = $1 WHERE id = $2",
        &[&sealed, &w2.id.as_str()],
    )
    .await
    .unwrap();
    assert!(matches!(
        s.subscription(&w2.id).await,
        Err(StoreError::Crypto)
    ));
}

#[tokio::test]
async fn rotation_keeps_the_previous_secret_for_a_day() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = org("org_a");
    let (w, first) = s
        .create_webhook(&a, new_webhook("one", &["alert.created"], true))
        .await
        .unwrap();

    assert_eq!(s.rotate_secret(&org("org_b"), &w.id).await.unwrap(), None);
    let second = s.rotate_secret(&a, &w.id).await.unwrap().unwrap();
    assert_ne!(second, first);
    let sub = s.subscription(&w.id).await.unwrap().unwrap();
    assert_eq!(sub.secret, second);
    assert_eq!(sub.previous_secret.as_ref(), Some(&first));

    let c = db.sql().await;
    let hours: f64 = c
        .query_one(
            "SELECT extract(epoch FROM previous_expires_at - now())::float8 / 3600 FROM webhooks WHERE id = $1",
            &[&w.id.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert!((23.9..=24.0).contains(&hours), "{hours}");

    // Rotating again replaces the previous one.
    let third = s.rotate_secret(&a, &w.id).await.unwrap().unwrap();
    let sub = s.subscription(&w.id).await.unwrap().unwrap();
    assert_eq!((sub.secret, sub.previous_secret), (third, Some(second)));

    // Once expired, the previous secret is no longer handed out.
    c.execute(
        "UPDATE webhooks SET previous_expires_at = now() - interval '1 second' WHERE id = $1",
        &[&w.id.as_str()],
    )
    .await
    .unwrap();
    let subs = s.subscriptions(&a, EventType::AlertCreated).await.unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].previous_secret, None);
}

#[tokio::test]
async fn subscriptions_match_exact_and_wildcard_of_active_webhooks_only() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = org("org_a");
    let id = |r: (wf_store::Webhook, _)| r.0.id;
    let exact = id(s
        .create_webhook(&a, new_webhook("exact", &["alert.created"], true))
        .await
        .unwrap());
    let wildcard = id(s
        .create_webhook(&a, new_webhook("wild", &["alert.*"], true))
        .await
        .unwrap());
    let csv = id(s
        .create_webhook(
            &a,
            new_webhook("csv", &["csv.uploaded", "billing.trial_expired"], true),
        )
        .await
        .unwrap());
    let _inactive = s
        .create_webhook(&a, new_webhook("off", &["alert.created"], false))
        .await
        .unwrap();
    let _other_org = s
        .create_webhook(
            &org("org_b"),
            new_webhook("b", &["alert.created", "alert.*"], true),
        )
        .await
        .unwrap();
    // `data.*` must not match `data_x`-like prefixes; `db_connection.*` is its own prefix.
    let dbc = id(s
        .create_webhook(&a, new_webhook("dbc", &["db_connection.*"], true))
        .await
        .unwrap());

    // Sorted: webhooks created in the same millisecond come back in id order.
    let ids = |subs: Vec<wf_store::Subscription>| {
        let mut ids = subs.into_iter().map(|s| s.webhook_id).collect::<Vec<_>>();
        ids.sort();
        ids
    };
    let mut both = vec![exact.clone(), wildcard.clone()];
    both.sort();
    assert_eq!(
        ids(s.subscriptions(&a, EventType::AlertCreated).await.unwrap()),
        both
    );
    assert_eq!(
        ids(s.subscriptions(&a, EventType::AlertResolved).await.unwrap()),
        vec![wildcard.clone()]
    );
    assert_eq!(
        ids(s.subscriptions(&a, EventType::CsvUploaded).await.unwrap()),
        vec![csv.clone()]
    );
    assert_eq!(
        ids(s
            .subscriptions(&a, EventType::BillingTrialExpired)
            .await
            .unwrap()),
        vec![csv]
    );
    assert!(s
        .subscriptions(&a, EventType::BillingPaymentFailed)
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .subscriptions(&a, EventType::DataDbImport)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(s
            .subscriptions(&a, EventType::DbConnectionUpdated)
            .await
            .unwrap()),
        vec![dbc]
    );
    assert!(s
        .subscriptions(&org("org_c"), EventType::AlertCreated)
        .await
        .unwrap()
        .is_empty());

    // Disabled webhooks drop out, and `subscription` no longer finds them.
    s.disable_webhook(&exact, "410").await.unwrap().unwrap();
    assert_eq!(
        ids(s.subscriptions(&a, EventType::AlertCreated).await.unwrap()),
        vec![wildcard]
    );
    assert_eq!(s.subscription(&exact).await.unwrap(), None);
    assert_eq!(s.subscription(&WebhookId::generate()).await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------
// events

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_event_is_idempotent_for_a_day() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = org("org_a");
    let e = EventId::parse("evt_1").unwrap();
    let first = serde_json::json!({"data": {"id": "evt_1", "event": "alert.created"}});
    let second = serde_json::json!({"data": {"id": "evt_1", "event": "alert.resolved"}});

    assert_eq!(
        s.record_event(&a, &e, EventType::AlertCreated, &first)
            .await
            .unwrap(),
        EventRecord::New
    );
    assert_eq!(
        s.record_event(&a, &e, EventType::AlertResolved, &second)
            .await
            .unwrap(),
        EventRecord::Existing {
            published: false,
            response: first.clone()
        }
    );
    s.mark_event_published(&a, &e).await.unwrap();
    let again = s
        .record_event(&a, &e, EventType::AlertCreated, &second)
        .await
        .unwrap();
    assert_eq!(
        again,
        EventRecord::Existing {
            published: true,
            response: first.clone()
        }
    );
    // The stored response comes back with its keys in the original order.
    let EventRecord::Existing { response, .. } = again else {
        unreachable!()
    };
    assert_eq!(response.to_string(), first.to_string());

    // Same id, other organisation: another event.
    assert_eq!(
        s.record_event(&org("org_b"), &e, EventType::AlertCreated, &first)
            .await
            .unwrap(),
        EventRecord::New
    );
    s.mark_event_published(&org("org_c"), &e).await.unwrap(); // unknown: not an error

    // After 24 h the id may be reused.
    let c = db.sql().await;
    c.execute(
        "UPDATE events SET created_at = now() - interval '25 hours' WHERE org_id = 'org_a'",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        s.record_event(&a, &e, EventType::AlertResolved, &second)
            .await
            .unwrap(),
        EventRecord::New
    );
    assert_eq!(
        s.record_event(&a, &e, EventType::AlertResolved, &first)
            .await
            .unwrap(),
        EventRecord::Existing {
            published: false,
            response: second.clone()
        }
    );

    // Concurrent first sightings: exactly one is new.
    let e2 = EventId::parse("evt_concurrent").unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (s, a, e2, first) = (s.clone(), a.clone(), e2.clone(), first.clone());
            tokio::spawn(async move {
                s.record_event(&a, &e2, EventType::AlertCreated, &first)
                    .await
            })
        })
        .collect();
    let mut news = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() == EventRecord::New {
            news += 1;
        }
    }
    assert_eq!(news, 1);

    // Pruning removes what is past the window.
    assert_eq!(
        s.prune_events(Utc::now() - chrono::Duration::hours(24), 1)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.prune_events(Utc::now() + chrono::Duration::hours(1), 2)
            .await
            .unwrap(),
        3
    );
}

// ---------------------------------------------------------------------------------------
// deliveries

fn attempt(
    d: &NewDelivery,
    n: u32,
    code: Option<u16>,
    error: Option<&str>,
    status: DeliveryStatus,
) -> AttemptRecord {
    AttemptRecord {
        delivery_id: d.id.clone(),
        org_id: d.org_id.clone(),
        webhook_id: d.webhook_id.clone(),
        event_id: d.event_id.clone(),
        event: d.event,
        attempt: n,
        at: d.created_at + chrono::Duration::seconds(i64::from(n)),
        status_code: code,
        error: error.map(Into::into),
        duration_ms: 10 * n,
        response_snippet: code.map(|c| format!("status {c}\0")),
        new_status: status,
    }
}

#[tokio::test]
async fn delivery_log_batches_upserts_and_lists() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = org("org_a");
    let (w, _) = s
        .create_webhook(&a, new_webhook("one", &["alert.*"], true))
        .await
        .unwrap();
    let base = Utc::now() - chrono::Duration::minutes(10);
    let mk = |i: i64| {
        let event_id = EventId::parse(&format!("evt_{i}")).unwrap();
        NewDelivery {
            id: DeliveryId::derive(&a, &event_id, &w.id),
            org_id: a.clone(),
            webhook_id: w.id.clone(),
            event_id,
            event: EventType::AlertCreated,
            created_at: base + chrono::Duration::seconds(i),
        }
    };
    let (d1, d2, d3, d4) = (mk(1), mk(2), mk(3), mk(4));
    s.insert_deliveries(&[d1.clone(), d2.clone(), d3.clone(), d1.clone()])
        .await
        .unwrap();
    s.insert_deliveries(std::slice::from_ref(&d2))
        .await
        .unwrap(); // re-fan-out: nothing new
    s.insert_deliveries(&[]).await.unwrap();

    use DeliveryStatus::*;
    s.record_attempts(&[
        attempt(&d1, 1, Some(500), None, Failed),
        attempt(&d1, 2, Some(200), None, Delivered),
        attempt(&d2, 1, None, Some("connection refused"), Failed),
        // d4 was never inserted: the attempt creates it.
        attempt(&d4, 1, Some(503), None, Failed),
    ])
    .await
    .unwrap();
    // A redelivered batch and a late, older attempt change nothing.
    s.record_attempts(&[
        attempt(&d1, 1, Some(500), None, Failed),
        attempt(&d2, 1, None, Some("connection refused"), Failed),
    ])
    .await
    .unwrap();
    // d4's pending insert arriving after its attempt leaves the attempt's status.
    s.insert_deliveries(std::slice::from_ref(&d4))
        .await
        .unwrap();
    s.record_attempts(&[]).await.unwrap();

    let all = s.list_deliveries(&a, &w.id, None, 20, None).await.unwrap();
    assert!(all.next_cursor.is_none());
    let order: Vec<_> = all.items.iter().map(|d| d.id.clone()).collect();
    assert_eq!(
        order,
        vec![d4.id.clone(), d3.id.clone(), d2.id.clone(), d1.id.clone()],
        "newest first"
    );
    let by_id = |id: &DeliveryId| all.items.iter().find(|d| &d.id == id).unwrap().clone();

    let got1 = by_id(&d1.id);
    assert_eq!(got1.status, Delivered);
    assert_eq!(
        got1.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(got1.attempts[0].status_code, Some(500));
    assert_eq!(got1.attempts[0].duration_ms, 10);
    assert_eq!(
        got1.attempts[0].response_snippet.as_deref(),
        Some("status 500\u{fffd}")
    );
    assert_eq!(got1.event_id, d1.event_id);
    assert_eq!(got1.event, EventType::AlertCreated);
    assert_eq!(
        got1.created_at,
        DateTime::from_timestamp_millis(d1.created_at.timestamp_millis()).unwrap()
    );
    assert!(is_ms(got1.updated_at) && got1.attempts.iter().all(|a| is_ms(a.at)));

    let got2 = by_id(&d2.id);
    assert_eq!(got2.status, Failed);
    assert_eq!(got2.attempts.len(), 1);
    assert_eq!(
        got2.attempts[0].error.as_deref(),
        Some("connection refused")
    );
    assert_eq!(got2.attempts[0].status_code, None);

    assert_eq!(by_id(&d3.id).status, Pending);
    assert!(by_id(&d3.id).attempts.is_empty());
    assert_eq!(by_id(&d4.id).status, Failed);

    // last_error / attempt_count behind the scenes.
    let c = db.sql().await;
    let row = c
        .query_one(
            "SELECT attempt_count, last_error FROM deliveries WHERE id = $1",
            &[&d4.id.as_str()],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, Option<String>>(1)),
        (1, Some("HTTP 503".into()))
    );

    // Status filter.
    let failed = s
        .list_deliveries(&a, &w.id, Some(Failed), 20, None)
        .await
        .unwrap();
    assert_eq!(
        failed
            .items
            .iter()
            .map(|d| d.id.clone())
            .collect::<Vec<_>>(),
        vec![d4.id.clone(), d2.id.clone()]
    );
    let delivered = s
        .list_deliveries(&a, &w.id, Some(Delivered), 20, None)
        .await
        .unwrap();
    assert_eq!(delivered.items.len(), 1);
    assert_eq!(delivered.items[0].id, d1.id);
    assert!(s
        .list_deliveries(&a, &w.id, Some(Dead), 20, None)
        .await
        .unwrap()
        .items
        .is_empty());

    // Going dead.
    s.record_attempts(&[attempt(&d2, 2, Some(500), None, Dead)])
        .await
        .unwrap();
    let dead = s
        .list_deliveries(&a, &w.id, Some(Dead), 20, None)
        .await
        .unwrap();
    assert_eq!(dead.items.len(), 1);
    assert_eq!(dead.items[0].attempts.len(), 2);

    // Pagination, newest first.
    let p1 = s.list_deliveries(&a, &w.id, None, 3, None).await.unwrap();
    assert_eq!(p1.items.len(), 3);
    let p2 = s
        .list_deliveries(&a, &w.id, None, 3, p1.next_cursor.as_deref())
        .await
        .unwrap();
    assert_eq!(p2.items.len(), 1);
    assert_eq!(p2.items[0].id, d1.id);
    assert!(p2.next_cursor.is_none());

    // get_delivery is scoped by organisation and webhook.
    assert_eq!(s.get_delivery(&a, &w.id, &d1.id).await.unwrap(), Some(got1));
    assert_eq!(
        s.get_delivery(&org("org_b"), &w.id, &d1.id).await.unwrap(),
        None
    );
    assert_eq!(
        s.get_delivery(&a, &WebhookId::generate(), &d1.id)
            .await
            .unwrap(),
        None
    );
    assert!(s
        .list_deliveries(&org("org_b"), &w.id, None, 20, None)
        .await
        .unwrap()
        .items
        .is_empty());

    // Deleting the webhook leaves the log (no FK), and recording against it still works.
    s.delete_webhook(&a, &w.id).await.unwrap().unwrap();
    s.record_attempts(&[attempt(&d3, 1, Some(200), None, Delivered)])
        .await
        .unwrap();

    // Retention: prune in small batches; attempts go with their delivery.
    assert_eq!(
        s.prune_deliveries(base - chrono::Duration::hours(1), 2)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.prune_deliveries(Utc::now() + chrono::Duration::hours(1), 2)
            .await
            .unwrap(),
        4
    );
    let left: i64 = c
        .query_one("SELECT count(*) FROM delivery_attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn large_batches_go_in_one_statement() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = org("org_a");
    let w = WebhookId::generate();
    let rows: Vec<NewDelivery> = (0..2000)
        .map(|i| {
            let event_id = EventId::parse(&format!("evt_{i}")).unwrap();
            NewDelivery {
                id: DeliveryId::derive(&a, &event_id, &w),
                org_id: a.clone(),
                webhook_id: w.clone(),
                event_id,
                event: EventType::UserJoined,
                created_at: Utc::now(),
            }
        })
        .collect();
    s.insert_deliveries(&rows).await.unwrap();
    let attempts: Vec<_> = rows
        .iter()
        .map(|d| attempt(d, 1, Some(200), None, DeliveryStatus::Delivered))
        .collect();
    s.record_attempts(&attempts).await.unwrap();
    let c = db.sql().await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM deliveries WHERE status = 'delivered'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2000);
}

// ---------------------------------------------------------------------------------------
// change feed

#[tokio::test]
async fn change_feed_reports_webhook_changes_and_resyncs_after_reconnect() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = org("org_a");
    let mut feed = listen_changes(db.url()).await.unwrap();

    let (w, _) = s
        .create_webhook(&a, new_webhook("one", &["alert.*"], true))
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut feed).await,
        ChangeEvent::WebhookChanged(a.clone())
    );
    s.rotate_secret(&a, &w.id).await.unwrap().unwrap();
    assert_eq!(
        next_change(&mut feed).await,
        ChangeEvent::WebhookChanged(a.clone())
    );

    // Kill the listening connection: the feed reconnects and asks for a resync.
    let c = db.sql().await;
    let killed: i64 = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'wf-change-feed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    assert_eq!(next_change(&mut feed).await, ChangeEvent::Resync);

    // And it keeps working afterwards.
    let b = org("org_b");
    s.create_webhook(&b, new_webhook("two", &["alert.*"], true))
        .await
        .unwrap();
    assert_eq!(next_change(&mut feed).await, ChangeEvent::WebhookChanged(b));
    s.delete_webhook(&a, &w.id).await.unwrap().unwrap();
    assert_eq!(next_change(&mut feed).await, ChangeEvent::WebhookChanged(a));
}

#[tokio::test]
async fn change_feed_folds_overflow_and_odd_payloads_into_resync() {
    let db = TestDb::new().await;
    let mut feed = listen_changes(db.url()).await.unwrap();
    let c = db.sql().await;

    c.batch_execute("SELECT pg_notify('wf_webhooks', 'not an org id!')")
        .await
        .unwrap();
    assert_eq!(next_change(&mut feed).await, ChangeEvent::Resync);
    c.batch_execute("SELECT pg_notify('other_channel', 'org_x')")
        .await
        .unwrap();

    // 1500 distinct notifications while nobody reads: what does not fit the buffer is
    // dropped and reported as one Resync after the buffered ones, in order.
    c.batch_execute("SELECT pg_notify('wf_webhooks', 'org_' || i) FROM generate_series(1, 1500) i")
        .await
        .unwrap();
    // Nobody reads for a moment, so the feed takes all 1500 off its socket meanwhile.
    // (Reading at once raced the feed under load: it could keep up, never overflow, and
    // the Resync below never came.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut changed = 0;
    while let ChangeEvent::WebhookChanged(o) = next_change(&mut feed).await {
        changed += 1;
        assert_eq!(o.as_str(), format!("org_{changed}"));
    }
    assert!((1..1500).contains(&changed), "{changed}");

    // Back to normal afterwards (notifications read after the Resync may still come first).
    c.batch_execute("SELECT pg_notify('wf_webhooks', 'org_after')")
        .await
        .unwrap();
    loop {
        if next_change(&mut feed).await == ChangeEvent::WebhookChanged(org("org_after")) {
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------
// replay and retention

#[tokio::test]
async fn replay_items_rebuild_jobs_and_pruning_applies_retention() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = org("org_r");
    let (w, _) = s
        .create_webhook(&a, new_webhook("r", &["alert.*"], true))
        .await
        .unwrap();
    let old = Utc::now() - chrono::Duration::days(10);
    let mk = |n: u32, created_at: DateTime<Utc>| NewDelivery {
        id: DeliveryId::parse(&format!("dlv_r{n}")).unwrap(),
        org_id: a.clone(),
        webhook_id: w.id.clone(),
        event_id: EventId::parse(&format!("evt_r{n}")).unwrap(),
        event: EventType::AlertCreated,
        created_at,
    };
    let (d_old, d_new) = (mk(1, old), mk(2, Utc::now()));
    s.insert_payloads(&[
        wf_store::NewPayload {
            org_id: a.clone(),
            event_id: d_old.event_id.clone(),
            body: "{\"old\":1}".into(),
            event_ts_ms: 1,
            created_at: old,
        },
        wf_store::NewPayload {
            org_id: a.clone(),
            event_id: d_new.event_id.clone(),
            body: "{\"new\":2}".into(),
            event_ts_ms: 2,
            created_at: Utc::now(),
        },
    ])
    .await
    .unwrap();
    s.insert_deliveries(&[d_old.clone(), d_new.clone()])
        .await
        .unwrap();
    s.record_attempts(&[
        attempt(&d_old, 1, Some(500), None, DeliveryStatus::Dead),
        attempt(&d_new, 1, Some(500), None, DeliveryStatus::Failed),
        attempt(&d_new, 2, Some(503), None, DeliveryStatus::Dead),
    ])
    .await
    .unwrap();

    // Dead deliveries of the webhook, with what it takes to send them again.
    let dead = s
        .replay_items(&wf_store::ReplayFilter {
            org: Some(&a),
            webhook: Some(&w.id),
            status: Some(DeliveryStatus::Dead),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 2);
    let job = wf_core::messages::DeliveryJob::requeued_from_log(
        dead[1].logged().expect("payload present"),
    );
    let j = job.v1();
    assert_eq!(j.delivery_id, d_new.id);
    assert_eq!(
        (j.attempt, j.retry_base),
        (3, 2),
        "numbered after the last attempt"
    );
    assert_eq!(&*j.body, "{\"new\":2}");
    // Another organisation sees nothing; a time window filters on creation.
    let other = org("org_other");
    let none = s
        .replay_items(&wf_store::ReplayFilter {
            org: Some(&other),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    let recent = s
        .replay_items(&wf_store::ReplayFilter {
            webhook: Some(&w.id),
            since: Some(Utc::now() - chrono::Duration::days(1)),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recent.len(), 1);

    // Re-queued: pending, so a second replay does not pick it up.
    s.mark_requeued(std::slice::from_ref(&d_new.id))
        .await
        .unwrap();
    let still_dead = s
        .replay_items(&wf_store::ReplayFilter {
            webhook: Some(&w.id),
            status: Some(DeliveryStatus::Dead),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(still_dead.len(), 1);

    // Retention of 7 days removes the old delivery, its attempts and its payload, and
    // keeps the new one.
    let pruned = s
        .try_prune_all(Utc::now() - chrono::Duration::days(7), 1)
        .await
        .unwrap()
        .expect("no other pruner holds the lock");
    assert!(pruned >= 2, "{pruned}");
    let sql = db.sql().await;
    let count = |q: &'static str| {
        let sql = &sql;
        async move { sql.query_one(q, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM deliveries").await, 1);
    assert_eq!(count("SELECT count(*) FROM event_payloads").await, 1);
    assert_eq!(
        count("SELECT count(*) FROM delivery_attempts WHERE delivery_id = 'dlv_r1'").await,
        0
    );
    // Without its payload a delivery can be listed but not rebuilt.
    let orphan = wf_store::ReplayItem {
        body: None,
        ..still_dead[0].clone()
    };
    assert!(orphan.logged().is_none());
}
