//! Both signature schemes, for any body and any secret, against an HMAC-SHA256 written
//! here from RFC 2104 (only the SHA-256 primitive is shared with the crate): what a
//! subscriber following the public docs or the Standard Webhooks spec computes is exactly
//! the header the worker sends.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use wf_core::signing::WebhookSecret;

/// HMAC-SHA256 (RFC 2104): H((K' ^ opad) || H((K' ^ ipad) || m)), K' the key hashed when
/// longer than the 64-byte block, then zero-padded to it.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Verifies `X-WorkFlows-Signature` as the docs' snippets do: HMAC of the raw body keyed
/// with the whole `whsec_` string, lowercase hex after `sha256=`.
fn verify_workflows(header: &str, secret: &str, body: &[u8]) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    hex_sig.len() == 64
        && hex_sig
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && hex::decode(hex_sig).ok().as_deref() == Some(&hmac_sha256(secret.as_bytes(), body)[..])
}

/// Verifies `webhook-signature` as the Standard Webhooks spec does: HMAC of
/// `{id}.{timestamp}.{body}` keyed with the base64-decoded part after `whsec_`.
fn verify_standard(header: &str, secret: &str, id: &str, ts: i64, body: &[u8]) -> bool {
    let key = B64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(body);
    header
        .strip_prefix("v1,")
        .and_then(|s| B64.decode(s).ok())
        .as_deref()
        == Some(&hmac_sha256(&key, &signed)[..])
}

/// Any secret the store can hold: `whsec_` and the base64 of 1..=100 random bytes (keys
/// longer than the HMAC block included), or one minted by the crate.
fn secret() -> impl Strategy<Value = WebhookSecret> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 1..=100).prop_map(|k| {
            WebhookSecret::parse(&format!("whsec_{}", B64.encode(k))).expect("valid secret")
        }),
        Just(()).prop_map(|()| WebhookSecret::generate()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn workflows_signature_verifies(secret in secret(), body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let header = secret.workflows_signature(&body);
        prop_assert!(verify_workflows(&header, secret.expose(), &body), "{}", header);
    }

    #[test]
    fn standard_signature_verifies(
        secret in secret(),
        id in "[a-z_0-9]{1,40}",
        ts in any::<i64>(),
        body in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let header = secret.standard_signature(&id, ts, &body);
        prop_assert!(verify_standard(&header, secret.expose(), &id, ts, &body), "{}", header);
        prop_assert_eq!(secret.standard_key(), B64.decode(&secret.expose()[6..]).unwrap());
    }

    /// The verifiers can fail: a changed body, id or timestamp, or another secret, does
    /// not verify.
    #[test]
    fn signatures_bind_body_and_secret(
        secret in secret(),
        other in secret(),
        body in prop::collection::vec(any::<u8>(), 1..512),
        flip in any::<prop::sample::Index>(),
        ts in any::<i64>(),
    ) {
        let mut tampered = body.clone();
        tampered[flip.index(body.len())] ^= 0x01;
        let wf = secret.workflows_signature(&body);
        prop_assert!(!verify_workflows(&wf, secret.expose(), &tampered));
        let std_sig = secret.standard_signature("dlv_x", ts, &body);
        prop_assert!(!verify_standard(&std_sig, secret.expose(), "dlv_x", ts, &tampered));
        prop_assert!(!verify_standard(&std_sig, secret.expose(), "dlv_y", ts, &body));
        prop_assert!(!verify_standard(&std_sig, secret.expose(), "dlv_x", ts.wrapping_add(1), &body));
        if other.expose() != secret.expose() {
            prop_assert!(!verify_workflows(&wf, other.expose(), &body));
        }
    }
}

/// The hand-written HMAC agrees with RFC 4231's test vectors, so it is a fair judge.
#[test]
fn hmac_matches_rfc4231() {
    // Test case 2: key "Jefe".
    assert_eq!(
        hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // Test case 6: a 131-byte key, longer than the block.
    assert_eq!(
        hex::encode(hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}
