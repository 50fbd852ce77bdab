//! API keys: stored hashed, authenticated, revoked, scoped to their organisation.

use wf_core::ids::ApiKeyId;

use crate::support::*;

#[tokio::test]
async fn api_keys_are_hashed_authenticate_and_revoke() {
    let db = TestDb::new().await;
    let s = &db.store;
    let org_a = org("org_a");
    let (key, token) = s.create_api_key(&org_a, "ci").await.unwrap();
    assert!(
        token.starts_with("wf_live_") && token.len() == 40,
        "{token}"
    );
    assert!(token[8..].chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(key.org_id, org_a);
    assert_eq!(key.name, "ci");
    assert!(key.revoked_at.is_none());
    assert!(is_ms(key.created_at));

    assert_eq!(s.authenticate(&token).await.unwrap(), Some(key.clone()));
    assert_eq!(s.authenticate("wf_live_nope").await.unwrap(), None);
    assert_eq!(s.authenticate("").await.unwrap(), None);
    let unknown = format!("wf_live_{}", "A".repeat(32));
    assert_eq!(s.authenticate(&unknown).await.unwrap(), None);

    // Only the hash is stored: the token appears nowhere in the row.
    let c = db.sql().await;
    let row = c
        .query_one(
            "SELECT row_to_json(k)::text, key_hash FROM api_keys k WHERE id = $1",
            &[&key.id.as_str()],
        )
        .await
        .unwrap();
    let json: String = row.get(0);
    let hash: Vec<u8> = row.get(1);
    assert!(!json.contains(&token[8..]), "{json}");
    assert_eq!(hash.len(), 32);
    assert!(!hash
        .windows(8)
        .any(|w| token.as_bytes().windows(8).any(|t| t == w)));

    // Another organisation cannot revoke it.
    assert_eq!(
        s.revoke_api_key(Some(&org("org_b")), &key.id)
            .await
            .unwrap(),
        None
    );
    assert!(s.authenticate(&token).await.unwrap().is_some());

    let revoked = s
        .revoke_api_key(Some(&org_a), &key.id)
        .await
        .unwrap()
        .unwrap();
    assert!(revoked.revoked_at.is_some_and(is_ms));
    assert_eq!(s.authenticate(&token).await.unwrap(), None);
    assert_eq!(s.revoke_api_key(Some(&org_a), &key.id).await.unwrap(), None);
    assert_eq!(
        s.revoke_api_key(None, &ApiKeyId::generate()).await.unwrap(),
        None
    );

    // The operator path revokes without naming the organisation.
    let (key2, token2) = s.create_api_key(&org_a, "ops").await.unwrap();
    assert!(s.revoke_api_key(None, &key2.id).await.unwrap().is_some());
    assert_eq!(s.authenticate(&token2).await.unwrap(), None);
}
