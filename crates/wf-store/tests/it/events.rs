//! Events: the 24-hour idempotency record behind `POST /events`, and its pruning.

use chrono::Utc;
use wf_core::events::EventType;
use wf_core::ids::EventId;
use wf_store::EventRecord;

use crate::support::*;

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
