//! Replay and retention: dead deliveries rebuilt into jobs, re-queued, and pruned with
//! their payloads.

use chrono::{DateTime, Utc};
use wf_core::events::EventType;
use wf_core::ids::{DeliveryId, EventId};
use wf_store::{DeliveryStatus, NewDelivery};

use crate::support::*;

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

    // Retention of 7 days drops the old delivery's day (its attempts and its payload
    // with it), and keeps the new one.
    let m = s
        .try_maintain_log(Utc::now(), chrono::Duration::days(7))
        .await
        .unwrap()
        .expect("no other maintainer holds the lock");
    assert_eq!(m.dropped.len(), 3, "{m:?}");
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
