//! Finding deliveries: filters, stable cursors under concurrent writes, one delivery of
//! the organisation, and one event's deliveries across its webhooks.

use std::collections::HashSet;

use chrono::Duration;
use wf_core::events::EventType;
use wf_core::ids::{DeliveryId, EventId};
use wf_store::{DeliveryFilter, DeliveryStatus, NewDelivery, NewPayload};

use crate::support::*;

#[tokio::test]
async fn filters_combine() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = org("org_f");
    let (w, _) = s
        .create_webhook(&a, new_webhook("f", &["alert.*", "csv.*"], true))
        .await
        .unwrap();
    let base = wf_core::time::now_ms() - Duration::hours(1);
    let mut all = Vec::new();
    for i in 0..12 {
        let event = if i % 2 == 0 {
            EventType::AlertCreated
        } else {
            EventType::CsvUploaded
        };
        all.push(new_delivery(
            &a,
            &w.id,
            &EventId::generate(),
            event,
            base + Duration::minutes(i),
        ));
    }
    s.insert_deliveries(&all).await.unwrap();
    // Deliveries 0..4 delivered, the rest pending.
    let delivered: Vec<_> = all[..4]
        .iter()
        .map(|d| attempt(d, 1, Some(200), None, DeliveryStatus::Delivered))
        .collect();
    s.record_attempts(&delivered).await.unwrap();

    let ids = |f: DeliveryFilter| {
        let (s, a, w) = (s.clone(), a.clone(), w.id.clone());
        async move {
            s.find_deliveries(&a, &w, &f, 100, None)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|d| d.id)
                .collect::<Vec<_>>()
        }
    };
    let want = |idx: &[usize]| {
        idx.iter()
            .rev()
            .map(|&i| all[i].id.clone())
            .collect::<Vec<_>>()
    };

    assert_eq!(
        ids(DeliveryFilter::default()).await,
        want(&(0..12).collect::<Vec<_>>())
    );
    let alerts = DeliveryFilter {
        event: Some(EventType::AlertCreated),
        ..Default::default()
    };
    assert_eq!(ids(alerts).await, want(&[0, 2, 4, 6, 8, 10]));
    let window = DeliveryFilter {
        since: Some(base + Duration::minutes(3)),
        until: Some(base + Duration::minutes(7)),
        ..Default::default()
    };
    assert_eq!(
        ids(window).await,
        want(&[3, 4, 5, 6]),
        "since inclusive, until exclusive"
    );
    let together = DeliveryFilter {
        status: Some(DeliveryStatus::Delivered),
        event: Some(EventType::AlertCreated),
        since: Some(base + Duration::minutes(1)),
        until: None,
    };
    assert_eq!(ids(together).await, want(&[2]));
    let pending_csv_before_9 = DeliveryFilter {
        status: Some(DeliveryStatus::Pending),
        event: Some(EventType::CsvUploaded),
        since: None,
        until: Some(base + Duration::minutes(9)),
    };
    assert_eq!(ids(pending_csv_before_9).await, want(&[5, 7]));

    // Pages of a filtered listing.
    let f = DeliveryFilter {
        event: Some(EventType::CsvUploaded),
        ..Default::default()
    };
    let p1 = s.find_deliveries(&a, &w.id, &f, 4, None).await.unwrap();
    let p2 = s
        .find_deliveries(&a, &w.id, &f, 4, p1.next_cursor.as_deref())
        .await
        .unwrap();
    assert!(p2.next_cursor.is_none());
    let paged: Vec<_> = p1
        .items
        .iter()
        .chain(&p2.items)
        .map(|d| d.id.clone())
        .collect();
    assert_eq!(paged, want(&[1, 3, 5, 7, 9, 11]));
}

#[tokio::test]
async fn cursors_are_stable_while_deliveries_are_written() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = org("org_c");
    let (w, _) = s
        .create_webhook(&a, new_webhook("c", &["alert.*"], true))
        .await
        .unwrap();
    let base = wf_core::time::now_ms() - Duration::hours(2);
    // 40 deliveries over 20 distinct milliseconds: pairs share a creation time.
    let before: Vec<NewDelivery> = (0..40)
        .map(|i| {
            new_delivery(
                &a,
                &w.id,
                &EventId::generate(),
                EventType::AlertCreated,
                base + Duration::milliseconds(i / 2),
            )
        })
        .collect();
    s.insert_deliveries(&before).await.unwrap();
    let existing: HashSet<DeliveryId> = before.iter().map(|d| d.id.clone()).collect();

    let mut seen: Vec<DeliveryId> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut round = 0;
    loop {
        let page = s
            .find_deliveries(&a, &w.id, &DeliveryFilter::default(), 7, cursor.as_deref())
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|d| d.id.clone()));
        // Between pages: new deliveries at the same instants as existing ones (so on both
        // sides of the cursor and on it), newer ones, attempts that move existing rows to
        // another status, and attempts that create rows.
        round += 1;
        let mut more = Vec::new();
        for k in 0..5 {
            let at = match k {
                0 => base + Duration::milliseconds(round % 20),
                1 => base + Duration::milliseconds(19 - round % 20),
                2 => wf_core::time::now_ms(),
                _ => base - Duration::milliseconds(round),
            };
            more.push(new_delivery(
                &a,
                &w.id,
                &EventId::generate(),
                EventType::AlertCreated,
                at,
            ));
        }
        s.insert_deliveries(&more).await.unwrap();
        let fresh = new_delivery(
            &a,
            &w.id,
            &EventId::generate(),
            EventType::AlertCreated,
            base + Duration::milliseconds(10),
        );
        let moved = &before[(round as usize * 3) % 40];
        s.record_attempts(&[
            attempt(moved, 1, Some(500), None, DeliveryStatus::Failed),
            attempt(&fresh, 1, Some(200), None, DeliveryStatus::Delivered),
        ])
        .await
        .unwrap();
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let old_seen: Vec<&DeliveryId> = seen.iter().filter(|id| existing.contains(id)).collect();
    let unique: HashSet<&DeliveryId> = old_seen.iter().copied().collect();
    assert_eq!(unique.len(), old_seen.len(), "a delivery came twice");
    assert_eq!(unique.len(), existing.len(), "a delivery was skipped");
    // And the whole listing is in order, newest first.
    assert!(round > 5);
}

#[tokio::test]
async fn one_delivery_and_one_event_across_the_organisation() {
    let db = TestDb::new().await;
    let s = &db.store;
    let (a, b) = (org("org_e1"), org("org_e2"));
    let (w1, _) = s
        .create_webhook(&a, new_webhook("one", &["alert.*"], true))
        .await
        .unwrap();
    let (w2, _) = s
        .create_webhook(&a, new_webhook("two", &["alert.*"], true))
        .await
        .unwrap();
    let (wb, _) = s
        .create_webhook(&b, new_webhook("other", &["alert.*"], true))
        .await
        .unwrap();
    let ev = EventId::parse("evt_shared_1").unwrap();
    let t = wf_core::time::now_ms() - Duration::minutes(5);
    let d1 = new_delivery(&a, &w1.id, &ev, EventType::AlertCreated, t);
    let d2 = new_delivery(
        &a,
        &w2.id,
        &ev,
        EventType::AlertCreated,
        t + Duration::seconds(1),
    );
    // The same event id in another organisation is another event.
    let db_ = new_delivery(&b, &wb.id, &ev, EventType::AlertCreated, t);
    s.insert_deliveries(&[d1.clone(), d2.clone(), db_.clone()])
        .await
        .unwrap();
    s.record_attempts(&[attempt(&d1, 1, Some(200), None, DeliveryStatus::Delivered)])
        .await
        .unwrap();

    let got = s.get_org_delivery(&a, &d1.id).await.unwrap().unwrap();
    assert_eq!(
        (got.webhook_id.clone(), got.attempts.len()),
        (w1.id.clone(), 1)
    );
    assert_eq!(s.get_org_delivery(&b, &d1.id).await.unwrap(), None);
    assert_eq!(
        s.get_org_delivery(&a, &DeliveryId::generate())
            .await
            .unwrap(),
        None
    );

    // Timestamp from the stored payload when there is one, else the first delivery.
    let e = s.event_deliveries(&a, &ev).await.unwrap().unwrap();
    assert_eq!(e.event, EventType::AlertCreated);
    assert_eq!(
        e.deliveries
            .iter()
            .map(|d| d.id.clone())
            .collect::<Vec<_>>(),
        [d1.id.clone(), d2.id.clone()]
    );
    assert_eq!(e.timestamp, t);
    assert_eq!(e.deliveries[0].attempts.len(), 1);
    let event_ts = t - Duration::seconds(30);
    s.insert_payloads(&[NewPayload {
        org_id: a.clone(),
        event_id: ev.clone(),
        body: "{}".into(),
        event_ts_ms: event_ts.timestamp_millis(),
        created_at: t,
    }])
    .await
    .unwrap();
    assert_eq!(
        s.event_deliveries(&a, &ev)
            .await
            .unwrap()
            .unwrap()
            .timestamp,
        event_ts
    );
    let other = s.event_deliveries(&b, &ev).await.unwrap().unwrap();
    assert_eq!(other.deliveries.len(), 1);
    assert_eq!(
        s.event_deliveries(&a, &EventId::generate()).await.unwrap(),
        None
    );

    // A deleted webhook's deliveries are no longer the organisation's to see.
    s.delete_webhook(&a, &w2.id).await.unwrap();
    assert_eq!(s.get_org_delivery(&a, &d2.id).await.unwrap(), None);
    assert_eq!(
        s.event_deliveries(&a, &ev)
            .await
            .unwrap()
            .unwrap()
            .deliveries
            .len(),
        1
    );
}
