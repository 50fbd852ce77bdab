//! The system-event outbox table: parked events are claimed under a lease by one relay at
//! a time, and not before they are due.

use std::time::Duration;

use wf_core::events::EventType;
use wf_core::ids::EventId;

use crate::support::*;

/// A claimed event is leased: a second relay does not get it until the lease is over,
/// and an event not yet due (its emitter is still publishing it) is not claimed at all.
#[tokio::test]
async fn claimed_events_are_leased_and_fresh_ones_wait_for_their_emitter() {
    let db = TestDb::new().await;
    let s = &db.store;
    let org = org("org_outbox");
    let park = |due_in| {
        let org = &org;
        async move {
            s.park_event(
                org,
                &EventId::generate(),
                EventType::WebhookCreated,
                "{}",
                "http",
                due_in,
            )
            .await
            .unwrap()
        }
    };
    let due = park(Duration::ZERO).await;
    park(Duration::from_secs(30)).await;

    let lease = Duration::from_secs(1);
    let first = s.claim_parked_events(10, lease).await.unwrap();
    assert_eq!(first.iter().map(|p| p.id).collect::<Vec<_>>(), vec![due]);
    assert_eq!(first[0].attempts, 1);
    assert!(s.claim_parked_events(10, lease).await.unwrap().is_empty());
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let again = s.claim_parked_events(10, lease).await.unwrap();
    assert_eq!(again.iter().map(|p| p.id).collect::<Vec<_>>(), vec![due]);
    assert_eq!(again[0].attempts, 2);

    s.unpark_event(due).await.unwrap();
    s.unpark_event(due).await.unwrap(); // already gone: not an error
    assert_eq!(s.parked_events().await.unwrap(), 1);
}
