//! The delivery log: batched inserts and attempt upserts, listing, filters, pagination,
//! retention.

use chrono::{DateTime, Utc};
use wf_core::events::EventType;
use wf_core::ids::{DeliveryId, EventId, WebhookId};
use wf_store::{DeliveryStatus, NewDelivery};

use crate::support::*;

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
        new_delivery(
            &a,
            &w.id,
            &event_id,
            EventType::AlertCreated,
            base + chrono::Duration::seconds(i),
        )
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

    // Retention keeps today's and yesterday's days whatever it is; the attempts stay
    // with their deliveries.
    let attempts = || async {
        c.query_one("SELECT count(*) FROM delivery_attempts", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let before = attempts().await;
    assert!(before > 0);
    let m = s
        .try_maintain_log(Utc::now(), chrono::Duration::hours(1))
        .await
        .unwrap()
        .expect("no other maintainer holds the lock");
    assert!(
        m.dropped
            .iter()
            .all(|p| !p.ends_with(&partition_suffix(base))),
        "{m:?}"
    );
    assert_eq!(attempts().await, before);
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
            new_delivery(&a, &w, &event_id, EventType::UserJoined, Utc::now())
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
