//! Rotating `WF_SECRET_KEY`: rows sealed with an old key (or in the format without a key
//! id) are re-sealed with the first key, after which the old key can go; rows no key opens
//! are reported and left alone; a change made while the rekey runs is never undone.

use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use wf_core::config::SecretKeys;
use wf_core::headers::CustomHeaders;
use wf_core::ids::WebhookId;
use wf_store::{RekeyCounts, RekeyMode, Store, StoreError, Subscription};
use wf_testkit::eventually;

use crate::support::{new_webhook, org, TestDb, KEY};

/// The new key; `KEY` (the test store's) is the old one.
const NEW: [u8; 32] = [43; 32];
/// A key that is never listed.
const STRANGER: [u8; 32] = [44; 32];

fn headers(pairs: &[(&str, &str)]) -> CustomHeaders {
    CustomHeaders::parse(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string()))).unwrap()
}

async fn store_with(db: &TestDb, keys: &[[u8; 32]]) -> Store {
    Store::connect(&db.url(), SecretKeys::new(keys.to_vec()).unwrap(), 2)
        .await
        .unwrap()
}

/// `nonce || ciphertext || tag` with no key id: how values were sealed before keys could
/// rotate.
fn legacy_seal(key: [u8; 32], aad: &str, msg: &[u8]) -> Vec<u8> {
    let nonce = [5u8; 12];
    let sealed = ChaCha20Poly1305::new(&Key::from(key))
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg,
                aad: aad.as_bytes(),
            },
        )
        .unwrap();
    [&nonce[..], &sealed].concat()
}

type Sealed = (Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>);

async fn sealed(db: &TestDb, id: &WebhookId) -> Sealed {
    let row = db
        .sql()
        .await
        .query_one(
            "SELECT secret_ciphertext, previous_secret_ciphertext, headers_ciphertext \
             FROM webhooks WHERE id = $1",
            &[&id.as_str()],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

async fn rekey(store: &Store, batch: u32, mode: RekeyMode) -> RekeyCounts {
    let mut batches = 0;
    let counts = store.rekey(batch, mode, |_| batches += 1).await.unwrap();
    assert!(batches >= 1 || counts.scanned == 0);
    counts
}

#[tokio::test]
async fn rekey_moves_every_value_to_the_first_key() {
    let db = TestDb::new().await;
    let a = org("org_rk");
    let old = &db.store;
    let h = headers(&[("X-Api-Key", "k-123"), ("X-Tenant", "t")]);
    // With headers; without; rotated (a previous secret) and with headers; legacy format.
    let (w1, _) = old
        .create_webhook_with_headers(&a, new_webhook("one", &["alert.*"], true), &h)
        .await
        .unwrap();
    let (w2, _) = old
        .create_webhook(&a, new_webhook("two", &["alert.*"], true))
        .await
        .unwrap();
    let (w3, _) = old
        .create_webhook_with_headers(&a, new_webhook("three", &["alert.*"], true), &h)
        .await
        .unwrap();
    old.rotate_secret(&a, &w3.id).await.unwrap().unwrap();
    let (w4, s4) = old
        .create_webhook(&a, new_webhook("four", &["alert.*"], true))
        .await
        .unwrap();
    db.sql()
        .await
        .execute(
            "UPDATE webhooks SET secret_ciphertext = $2, headers_ciphertext = $3 WHERE id = $1",
            &[
                &w4.id.as_str(),
                &legacy_seal(KEY, w4.id.as_str(), s4.expose().as_bytes()),
                &legacy_seal(KEY, &format!("{}:headers", w4.id), &h.to_bytes()),
            ],
        )
        .await
        .unwrap();
    let ids = [&w1.id, &w2.id, &w3.id, &w4.id];
    let mut before: Vec<Subscription> = Vec::new();
    for id in ids {
        before.push(old.subscription(id).await.unwrap().unwrap());
    }
    assert_eq!(before[3].secret, s4);
    assert_eq!(before[3].headers, h);
    assert!(before[2].previous_secret.is_some());

    let rotating = store_with(&db, &[NEW, KEY]).await;
    let only_new = store_with(&db, &[NEW]).await;
    // Both keys open everything; the new key alone opens nothing yet.
    for (id, want) in ids.iter().zip(&before) {
        assert_eq!(&rotating.subscription(id).await.unwrap().unwrap(), want);
        assert!(matches!(
            only_new.subscription(id).await,
            Err(StoreError::Crypto)
        ));
    }

    let check = rekey(&rotating, 10, RekeyMode::Check).await;
    assert_eq!(
        (check.scanned, check.current, check.outdated),
        (4, 0, 4),
        "{check:?}"
    );
    assert_eq!(check.needing_key, [0, 4]);
    assert_eq!(check.needing_old_keys(), 4);
    assert!(!check.is_clean(RekeyMode::Check));
    // A check writes nothing.
    assert!(only_new.subscription(&w1.id).await.is_err());

    // Batches of 3: the second batch resumes after the first.
    let done = rekey(&rotating, 3, RekeyMode::Apply).await;
    assert_eq!(
        (done.scanned, done.current, done.outdated, done.vanished),
        (4, 0, 4, 0),
        "{done:?}"
    );
    assert_eq!(done.needing_key, [0, 4]);
    assert!(done.undecryptable.is_empty() && done.is_clean(RekeyMode::Apply));

    for (id, want) in ids.iter().zip(&before) {
        assert_eq!(&only_new.subscription(id).await.unwrap().unwrap(), want);
        assert!(matches!(
            old.subscription(id).await,
            Err(StoreError::Crypto)
        ));
    }

    // Again: nothing left, nothing written.
    let snapshot = sealed(&db, &w1.id).await;
    let again = rekey(&rotating, 3, RekeyMode::Apply).await;
    assert_eq!((again.scanned, again.current, again.outdated), (4, 4, 0));
    assert_eq!(sealed(&db, &w1.id).await, snapshot);
    let check = rekey(&only_new, 100, RekeyMode::Check).await;
    assert!(check.is_clean(RekeyMode::Check), "{check:?}");
    assert_eq!((check.current, check.needing_old_keys()), (4, 0));

    // A webhook created or changed by a process that lists both keys is sealed with the
    // first: already current.
    let (w5, _) = rotating
        .create_webhook_with_headers(&a, new_webhook("five", &["alert.*"], true), &h)
        .await
        .unwrap();
    rotating.rotate_secret(&a, &w5.id).await.unwrap().unwrap();
    assert!(only_new.subscription(&w5.id).await.unwrap().is_some());

    for s in [rotating, only_new] {
        s.close();
    }
}

#[tokio::test]
async fn rows_no_key_opens_are_reported_and_left_alone() {
    let db = TestDb::new().await;
    let a = org("org_rk_bad");
    let (good, _) = db
        .store
        .create_webhook(&a, new_webhook("good", &["alert.*"], true))
        .await
        .unwrap();
    let stranger = store_with(&db, &[STRANGER]).await;
    let (lost, _) = stranger
        .create_webhook(&a, new_webhook("lost", &["alert.*"], true))
        .await
        .unwrap();
    // Secret under a listed key but headers under an unknown one: still reported.
    let (half, _) = db
        .store
        .create_webhook(&a, new_webhook("half", &["alert.*"], true))
        .await
        .unwrap();
    db.sql()
        .await
        .execute(
            "UPDATE webhooks SET headers_ciphertext = $2 WHERE id = $1",
            &[
                &half.id.as_str(),
                &legacy_seal(STRANGER, &format!("{}:headers", half.id), b"x"),
            ],
        )
        .await
        .unwrap();
    let lost_before = sealed(&db, &lost.id).await;
    let half_before = sealed(&db, &half.id).await;

    let rotating = store_with(&db, &[NEW, KEY]).await;
    let check = rekey(&rotating, 2, RekeyMode::Check).await;
    let sorted = |mut ids: Vec<WebhookId>| {
        ids.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        ids
    };
    let want = sorted(vec![lost.id.clone(), half.id.clone()]);
    assert_eq!(sorted(check.undecryptable.clone()), want, "{check:?}");
    assert_eq!((check.scanned, check.outdated), (3, 1), "{check:?}");

    let done = rekey(&rotating, 2, RekeyMode::Apply).await;
    assert_eq!(sorted(done.undecryptable.clone()), want, "{done:?}");
    assert_eq!(
        (done.scanned, done.outdated, done.current),
        (3, 1, 0),
        "{done:?}"
    );
    assert!(!done.is_clean(RekeyMode::Apply));
    // Left exactly as they were; the good row moved to the new key.
    assert_eq!(sealed(&db, &lost.id).await, lost_before);
    assert_eq!(sealed(&db, &half.id).await, half_before);
    let only_new = store_with(&db, &[NEW]).await;
    assert!(only_new.subscription(&good.id).await.unwrap().is_some());
    for s in [rotating, only_new, stranger] {
        s.close();
    }
}

/// A secret rotation that commits while the rekey holds a stale copy of the row: the
/// rekey's write finds the row changed, reads it again, and keeps the rotation.
#[tokio::test]
async fn a_concurrent_rotation_is_never_overwritten() {
    let db = TestDb::new().await;
    let a = org("org_rk_race");
    let (w, _) = db
        .store
        .create_webhook_with_headers(
            &a,
            new_webhook("race", &["alert.*"], true),
            &headers(&[("X-K", "v")]),
        )
        .await
        .unwrap();
    let rotating = store_with(&db, &[NEW, KEY]).await;
    // What a rotation by a process listing both keys writes, captured, then undone.
    let stale = sealed(&db, &w.id).await;
    let new_secret = rotating.rotate_secret(&a, &w.id).await.unwrap().unwrap();
    let rotated = sealed(&db, &w.id).await;
    let mut sql = db.sql().await;
    let put = "UPDATE webhooks SET secret_ciphertext = $2, previous_secret_ciphertext = $3, \
               headers_ciphertext = $4 WHERE id = $1";
    sql.execute(put, &[&w.id.as_str(), &stale.0, &stale.1, &stale.2])
        .await
        .unwrap();

    // Hold the row, let the rekey read the stale copy and wait on the lock, then commit
    // the rotation.
    let tx = sql.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM webhooks WHERE id = $1 FOR UPDATE",
        &[&w.id.as_str()],
    )
    .await
    .unwrap();
    let rekeying = {
        let rotating = rotating.clone();
        tokio::spawn(async move { rotating.rekey(100, RekeyMode::Apply, |_| {}).await })
    };
    let probe = db.sql().await;
    let dbname: String = probe
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    eventually(
        "the rekey waits on the row lock",
        Duration::from_secs(30),
        || {
            let probe = &probe;
            let dbname = dbname.clone();
            async move {
                let n: i64 = probe
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                     AND wait_event_type = 'Lock' AND query LIKE 'UPDATE webhooks SET secret%'",
                        &[&dbname],
                    )
                    .await
                    .unwrap()
                    .get(0);
                n == 1
            }
        },
    )
    .await;
    tx.execute(put, &[&w.id.as_str(), &rotated.0, &rotated.1, &rotated.2])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let counts = rekeying.await.unwrap().unwrap();
    assert_eq!(
        (counts.scanned, counts.outdated, counts.contended),
        (1, 1, 0),
        "{counts:?}"
    );

    // The rotation survived (secret and previous secret), all under the new key now.
    let only_new = store_with(&db, &[NEW]).await;
    let sub = only_new.subscription(&w.id).await.unwrap().unwrap();
    assert_eq!(sub.secret, new_secret);
    assert!(sub.previous_secret.is_some());
    assert_eq!(
        sealed(&db, &w.id).await.0,
        rotated.0,
        "the rotated secret kept"
    );
    for s in [rotating, only_new] {
        s.close();
    }
}
