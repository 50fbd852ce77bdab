//! Per-webhook delivery health, kept by the delivery log's batched writes, and the
//! auto-disable check built on it.

use chrono::{DateTime, Duration, Utc};
use wf_core::events::EventType;
use wf_core::ids::{EventId, OrgId, WebhookId};
use wf_store::{AttemptRecord, DeliveryStatus, NewDelivery, Store, WebhookPatch};

use crate::support::*;

/// A delivery of a fresh event to `w`, created at `at`.
fn delivery(a: &OrgId, w: &WebhookId, at: DateTime<Utc>) -> NewDelivery {
    new_delivery(a, w, &EventId::generate(), EventType::AlertCreated, at)
}

/// Attempt `n` of `d` at `at`: a 2xx when `ok`, else a 503.
fn tried(d: &NewDelivery, n: u32, at: DateTime<Utc>, ok: bool) -> AttemptRecord {
    let status = if ok {
        DeliveryStatus::Delivered
    } else {
        DeliveryStatus::Failed
    };
    AttemptRecord {
        at,
        ..attempt(d, n, Some(if ok { 200 } else { 503 }), None, status)
    }
}

/// `n` failed first attempts of fresh deliveries to `w`, one second apart from `from`.
fn failures(a: &OrgId, w: &WebhookId, from: DateTime<Utc>, n: i64) -> Vec<AttemptRecord> {
    (0..n)
        .map(|i| {
            let at = from + Duration::seconds(i);
            tried(&delivery(a, w, at), 1, at, false)
        })
        .collect()
}

async fn webhook(s: &Store, a: &OrgId, name: &str) -> WebhookId {
    s.create_webhook(a, new_webhook(name, &["alert.*"], true))
        .await
        .unwrap()
        .0
        .id
}

#[tokio::test]
async fn attempts_keep_last_success_and_the_failing_streak() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = org("org_h");
    let w = webhook(s, &a, "w").await;
    let t0 = wf_core::time::now_ms() - Duration::hours(1);
    assert_eq!(s.webhook_health(&w).await.unwrap(), None);

    // Three failures in one batch, two in the next.
    s.record_attempts(&failures(&a, &w, t0, 3)).await.unwrap();
    s.record_attempts(&failures(&a, &w, t0 + Duration::seconds(10), 2))
        .await
        .unwrap();
    let h = s.webhook_health(&w).await.unwrap().unwrap();
    assert_eq!((h.failing_since, h.failures), (Some(t0), 5));
    assert_eq!(h.last_success_at, None);
    assert_eq!(h.last_failure_at, Some(t0 + Duration::seconds(11)));

    // The same attempts again (a redelivered batch) count nothing.
    let again = failures(&a, &w, t0 + Duration::seconds(20), 1);
    s.record_attempts(&again).await.unwrap();
    s.record_attempts(&again).await.unwrap();
    assert_eq!(s.webhook_health(&w).await.unwrap().unwrap().failures, 6);

    // A 2xx ends the streak; failures after it in the same batch start the next one.
    let ok_at = t0 + Duration::seconds(30);
    let mut batch = vec![tried(&delivery(&a, &w, ok_at), 1, ok_at, true)];
    batch.extend(failures(&a, &w, ok_at - Duration::seconds(5), 1)); // before the 2xx
    batch.extend(failures(&a, &w, ok_at + Duration::seconds(1), 2)); // after it
    s.record_attempts(&batch).await.unwrap();
    let h = s.webhook_health(&w).await.unwrap().unwrap();
    assert_eq!(h.last_success_at, Some(ok_at));
    assert_eq!(
        (h.failing_since, h.failures),
        (Some(ok_at + Duration::seconds(1)), 2)
    );

    // A failure older than the last 2xx, landing late, changes no count.
    s.record_attempts(&failures(&a, &w, ok_at - Duration::seconds(20), 1))
        .await
        .unwrap();
    let h = s.webhook_health(&w).await.unwrap().unwrap();
    assert_eq!(h.failures, 2);

    // A late, older 2xx does not end the newer streak.
    let old_ok = ok_at - Duration::seconds(2);
    s.record_attempts(&[tried(&delivery(&a, &w, old_ok), 1, old_ok, true)])
        .await
        .unwrap();
    let h = s.webhook_health(&w).await.unwrap().unwrap();
    assert_eq!((h.last_success_at, h.failures), (Some(ok_at), 2));

    // A newer 2xx alone: not failing any more.
    let ok2 = ok_at + Duration::seconds(60);
    s.record_attempts(&[tried(&delivery(&a, &w, ok2), 1, ok2, true)])
        .await
        .unwrap();
    let h = s.webhook_health(&w).await.unwrap().unwrap();
    assert_eq!(
        (h.last_success_at, h.failing_since, h.failures),
        (Some(ok2), None, 0)
    );
}

#[tokio::test]
async fn check_disables_long_failing_webhooks_with_enough_failures_only() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = org("org_d");
    let now = wf_core::time::now_ms();
    let window = Duration::hours(1);
    let old = now - Duration::hours(2);

    // Failing for two hours with 10 failures: disabled.
    let failing = webhook(s, &a, "failing").await;
    s.record_attempts(&failures(&a, &failing, old, 10))
        .await
        .unwrap();
    // Failing for two hours with 9 failures: kept.
    let few = webhook(s, &a, "few").await;
    s.record_attempts(&failures(&a, &few, old, 9))
        .await
        .unwrap();
    // 10 failures, but a 2xx inside the window since: kept.
    let recovered = webhook(s, &a, "recovered").await;
    s.record_attempts(&failures(&a, &recovered, old, 10))
        .await
        .unwrap();
    let ok_at = now - Duration::minutes(30);
    s.record_attempts(&[tried(&delivery(&a, &recovered, ok_at), 1, ok_at, true)])
        .await
        .unwrap();
    s.record_attempts(&failures(&a, &recovered, ok_at + Duration::seconds(1), 12))
        .await
        .unwrap();
    // 10 failures, but all within the window: kept.
    let recent = webhook(s, &a, "recent").await;
    s.record_attempts(&failures(&a, &recent, now - Duration::minutes(10), 10))
        .await
        .unwrap();
    // Already disabled by its owner: left as it is.
    let off = webhook(s, &a, "off").await;
    s.record_attempts(&failures(&a, &off, old, 10))
        .await
        .unwrap();
    s.update_webhook(
        &a,
        &off,
        WebhookPatch {
            is_active: Some(false),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // A deleted webhook's health row is an orphan the check removes.
    let gone = webhook(s, &a, "gone").await;
    s.delete_webhook(&a, &gone).await.unwrap();
    s.record_attempts(&failures(&a, &gone, old, 10))
        .await
        .unwrap();

    let disabled = s.try_auto_disable(now - window, 10).await.unwrap().unwrap();
    assert_eq!(
        disabled.iter().map(|w| &w.id).collect::<Vec<_>>(),
        [&failing]
    );
    assert_eq!(disabled[0].disabled_reason.as_deref(), Some("failing"));
    assert!(!disabled[0].is_active);
    for keep in [&few, &recovered, &recent] {
        assert!(s.get_webhook(&a, keep).await.unwrap().unwrap().is_active);
    }
    let off_now = s.get_webhook(&a, &off).await.unwrap().unwrap();
    assert_eq!(off_now.disabled_reason, None);
    assert_eq!(s.webhook_health(&gone).await.unwrap(), None);
    // Nothing more to do the second time.
    assert!(s
        .try_auto_disable(now - window, 10)
        .await
        .unwrap()
        .unwrap()
        .is_empty());

    // Enabling it again clears the reason and forgets the streak.
    let (_, after) = s
        .update_webhook(
            &a,
            &failing,
            WebhookPatch {
                is_active: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(after.is_active && after.disabled_reason.is_none());
    assert_eq!(s.webhook_health(&failing).await.unwrap(), None);
    assert!(s
        .try_auto_disable(now - window, 10)
        .await
        .unwrap()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn one_check_at_a_time() {
    let db = TestDb::new().await;
    let c = db.sql().await;
    // Another process holds the lock: this one skips its turn.
    c.execute("SELECT pg_advisory_lock($1)", &[&0x7766_5f61_7574_6f64_i64])
        .await
        .unwrap();
    assert_eq!(
        db.store.try_auto_disable(Utc::now(), 10).await.unwrap(),
        None
    );
    c.execute(
        "SELECT pg_advisory_unlock($1)",
        &[&0x7766_5f61_7574_6f64_i64],
    )
    .await
    .unwrap();
    assert_eq!(
        db.store.try_auto_disable(Utc::now(), 10).await.unwrap(),
        Some(vec![])
    );
}
