//! What the store tests share: a migrated database of their own and a store on it, and
//! builders for the rows they write.

use std::time::Duration;

use chrono::{DateTime, Utc};
use wf_core::events::EventType;
use wf_core::ids::{DeliveryId, EventId, OrgId, WebhookId};
use wf_store::{AttemptRecord, ChangeEvent, DeliveryStatus, NewDelivery, NewWebhook, Store};
use wf_testkit::Database;

/// The `WF_SECRET_KEY` of these tests.
pub const KEY: [u8; 32] = [42; 32];

/// A migrated database of the test's own and a store on it; both go with the value.
pub struct TestDb {
    pub store: Store,
    pub db: Database,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let db = Database::create().await;
        wf_store::migrate(&db.url()).await.expect("migrate");
        let store = Store::connect(&db.url(), KEY, 4).await.expect("connect");
        TestDb { store, db }
    }

    pub fn url(&self) -> String {
        self.db.url()
    }

    /// A plain connection, to look at the tables behind the store's back.
    pub async fn sql(&self) -> tokio_postgres::Client {
        self.db.connect().await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.store.close();
    }
}

pub fn org(s: &str) -> OrgId {
    OrgId::parse(s).unwrap()
}

/// A delivery of `event_id` to `w`, with the id the fan-out derives, created at `at`.
pub fn new_delivery(
    a: &OrgId,
    w: &WebhookId,
    event_id: &EventId,
    event: EventType,
    at: DateTime<Utc>,
) -> NewDelivery {
    NewDelivery {
        id: DeliveryId::derive(a, event_id, w),
        org_id: a.clone(),
        webhook_id: w.clone(),
        event_id: event_id.clone(),
        event,
        created_at: at,
    }
}

pub fn new_webhook(name: &str, events: &[&str], is_active: bool) -> NewWebhook {
    NewWebhook {
        name: name.into(),
        url: format!("https://example.com/hooks/{name}"),
        events: events.iter().map(|s| s.to_string()).collect(),
        is_active,
        rate_limit: None,
    }
}

/// Whether `t` has millisecond precision (the API's timestamps).
pub fn is_ms(t: DateTime<Utc>) -> bool {
    t.timestamp_subsec_micros().is_multiple_of(1000)
}

pub async fn next_change(feed: &mut wf_store::ChangeFeed) -> ChangeEvent {
    wf_testkit::within("a change event", Duration::from_secs(15), feed.next()).await
}

/// Attempt `n` of `d`, one second per attempt after its creation.
pub fn attempt(
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
        logged_at: Some(d.created_at),
    }
}

/// The `_pYYYYMMDD` suffix of the log partitions holding `t`'s day.
pub fn partition_suffix(t: DateTime<Utc>) -> String {
    format!("_p{}", t.format("%Y%m%d"))
}
