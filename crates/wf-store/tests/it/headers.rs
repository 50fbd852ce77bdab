//! Custom request headers: names in clear, values sealed under `WF_SECRET_KEY`, decrypted
//! only into the worker's subscription.

use wf_core::events::EventType;
use wf_core::headers::CustomHeaders;
use wf_store::WebhookPatch;

use crate::support::*;

fn headers(pairs: &[(&str, &str)]) -> CustomHeaders {
    CustomHeaders::parse(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string()))).unwrap()
}

#[tokio::test]
async fn values_are_encrypted_at_rest_and_decrypted_for_delivery_only() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = org("org_h");
    let h = headers(&[
        ("X-Api-Key", "plaintext-credential-1"),
        ("X-Tenant", "acme"),
    ]);
    let (w, _) = s
        .create_webhook_with_headers(&a, new_webhook("h", &["alert.*"], true), &h)
        .await
        .unwrap();
    assert_eq!(w.header_names, ["X-Api-Key", "X-Tenant"]);
    assert_eq!(
        s.get_webhook(&a, &w.id)
            .await
            .unwrap()
            .unwrap()
            .header_names,
        ["X-Api-Key", "X-Tenant"]
    );
    let sub = s.subscription(&w.id).await.unwrap().unwrap();
    assert_eq!(sub.headers, h);
    let subs = s.subscriptions(&a, EventType::AlertCreated).await.unwrap();
    assert_eq!(subs[0].headers, h);

    // No column of any table holds a value in clear.
    let c = db.sql().await;
    let dump: String = c
        .query_one("SELECT string_agg(t::text, ' ') FROM webhooks t", &[])
        .await
        .unwrap()
        .get(0);
    assert!(dump.contains("X-Api-Key"), "names are kept in clear");
    let hex_of = |v: &str| v.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for value in ["plaintext-credential-1", "acme"] {
        assert!(!dump.contains(value), "{value} in clear");
        assert!(!dump.contains(&hex_of(value)), "{value} in clear (bytea)");
    }

    // Replaced, then cleared.
    let (_, after) = s
        .update_webhook(
            &a,
            &w.id,
            WebhookPatch {
                headers: Some(headers(&[("X-Other", "v2")])),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.header_names, ["X-Other"]);
    assert_eq!(
        s.subscription(&w.id).await.unwrap().unwrap().headers,
        headers(&[("X-Other", "v2")])
    );
    // A patch of something else leaves them.
    let (_, after) = s
        .update_webhook(
            &a,
            &w.id,
            WebhookPatch {
                name: Some("renamed".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.header_names, ["X-Other"]);
    let (_, after) = s
        .update_webhook(
            &a,
            &w.id,
            WebhookPatch {
                headers: Some(CustomHeaders::default()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(after.header_names.is_empty());
    assert!(s
        .subscription(&w.id)
        .await
        .unwrap()
        .unwrap()
        .headers
        .is_empty());
    let sealed: Option<Vec<u8>> = c
        .query_one(
            "SELECT headers_ciphertext FROM webhooks WHERE id = $1",
            &[&w.id.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sealed, None);
}

#[tokio::test]
async fn another_key_cannot_read_them() {
    let db = TestDb::new().await;
    let a = org("org_k");
    let (w, _) = db
        .store
        .create_webhook_with_headers(
            &a,
            new_webhook("k", &["alert.*"], true),
            &headers(&[("X-Api-Key", "v")]),
        )
        .await
        .unwrap();
    let other = wf_store::Store::connect(&db.url(), [7; 32], 1)
        .await
        .unwrap();
    assert!(matches!(
        other.subscription(&w.id).await,
        Err(wf_store::StoreError::Crypto)
    ));
    other.close();
}
