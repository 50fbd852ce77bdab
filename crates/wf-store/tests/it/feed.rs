//! The `LISTEN wf_webhooks` change feed: what it reports, and the resync it asks for when
//! it lost notifications.

use std::time::Duration;

use wf_store::{listen_changes, ChangeEvent};

use crate::support::*;

#[tokio::test]
async fn change_feed_reports_webhook_changes_and_resyncs_after_reconnect() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = org("org_a");
    let mut feed = listen_changes(&db.url()).await.unwrap();

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
    let mut feed = listen_changes(&db.url()).await.unwrap();
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
