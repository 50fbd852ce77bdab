//! The delivery log's buffer, against the real Postgres.

use std::time::Duration;

use wf_core::ids::{EventId, OrgId};
use wf_store::{NewPayload, Store};
use wf_worker::log::{DeliveryLog, LogRecord, BUDGET_BYTES};

use wf_testkit::Database;

fn payload(i: usize, body: &str) -> LogRecord {
    LogRecord::Payload(NewPayload {
        org_id: OrgId::parse("org_logtest").unwrap(),
        event_id: EventId::parse(&format!("evt_{i}")).unwrap(),
        body: body.into(),
        event_ts_ms: 0,
        created_at: chrono::Utc::now(),
    })
}

/// While Postgres cannot take the log (here: a lock held on its table), the buffer fills
/// up to its byte budget and then recording waits, instead of the worker's heap growing
/// with the backlog; no receipt resolves while nothing is written. Once Postgres is back,
/// the waiting record and everything buffered land, every receipt resolves, and nothing
/// is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_applies_back_pressure_at_its_byte_budget_and_loses_nothing() {
    let db = Database::create().await;
    wf_store::migrate(&db.url()).await.unwrap();
    let store = Store::connect(&db.url(), [7; 32], 4).await.unwrap();
    let (log, writer) = DeliveryLog::start(store.clone());

    let locker = db.connect().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE event_payloads IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let waited_before = wf_telemetry::metrics().delivery_log_wait_seconds.get();
    // 64 KiB bodies: the 8 MiB budget holds about 127 of them.
    let body = "x".repeat(64 * 1024);
    let fits = BUDGET_BYTES / body.len();
    let total = fits + 50;
    let mut blocked = None;
    let mut receipts = Vec::new();
    for i in 0..total {
        let (log, rec) = (log.clone(), payload(i, &body));
        let mut task = tokio::spawn(async move { log.record(rec).await });
        match tokio::time::timeout(Duration::from_secs(1), &mut task).await {
            Ok(logged) => receipts.push(logged.unwrap()),
            Err(_) => {
                blocked = Some((i, task));
                break;
            }
        }
    }
    let (at, task) = blocked.expect("recording must wait once the budget is spent");
    assert!(
        (fits - 8..=fits).contains(&at),
        "recording waited after {at} records of 64 KiB; the budget holds {fits}"
    );
    let first = receipts.remove(0);
    let mut first = std::pin::pin!(first.written());
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut first)
            .await
            .is_err(),
        "a receipt resolved while its record could not be written"
    );

    locker.batch_execute("ROLLBACK").await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the waiting record goes through once Postgres writes again")
        .unwrap();
    receipts.push(waiting);
    // The wait is visible to operators (the record waited at least the 1 s above).
    let waited = wf_telemetry::metrics().delivery_log_wait_seconds.get() - waited_before;
    assert!(
        waited >= 0.9,
        "wf_delivery_log_wait_seconds_total grew by {waited}"
    );
    for i in at + 1..total {
        receipts.push(log.record(payload(i, &body)).await);
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        first.await;
        for r in receipts {
            r.written().await;
        }
    })
    .await
    .expect("every receipt resolves once Postgres writes again");
    drop(log);
    tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the writer flushes and stops")
        .unwrap();

    let rows: i64 = locker
        .query_one("SELECT count(*) FROM event_payloads", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, total as i64);
    store.close();
}
