//! Webhooks: CRUD scoped to the organisation, pagination, secrets encrypted at rest and
//! rotated, and the subscriptions fan-out reads.

use std::collections::HashSet;

use base64::Engine;
use wf_core::events::EventType;
use wf_core::ids::WebhookId;
use wf_store::{Store, StoreError, WebhookPatch};

use crate::support::*;

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
    assert_eq!(sealed.len(), 6 + 12 + plain.len() + 16);

    let sub = s.subscription(&w.id).await.unwrap().unwrap();
    assert_eq!(sub.secret, secret);
    assert_eq!(sub.previous_secret, None);
    assert_eq!(sub.url, w.url);
    assert_eq!(sub.org_id, a);

    // Another WF_SECRET_KEY cannot read it: a clear, non-retryable error.
    let other = Store::connect(&db.url(), [7; 32], 1).await.unwrap();
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
