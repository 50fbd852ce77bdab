//! The checks a subscriber runs, written from the public documentation rather than from
//! the signing code, so that a test of a signature checks the contract and not the code
//! against itself.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::Recorded;

/// The public docs' Python verification, transcribed: `"sha256=" + hex(hmac(secret, body))`
/// keyed with the whole `whsec_…` string, compared in full (the Node snippet's
/// `timingSafeEqual` also needs equal lengths).
pub fn seed_verify(body: &[u8], secret: &str, signature: &str) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    expected.len() == signature.len() && expected == signature
}

/// The Standard Webhooks verification of a received request: `v1,` + base64 of
/// HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the base64-decoded
/// part of the secret after `whsec_`; any of the space-separated signatures may match
/// (during a rotation there is one per secret).
pub fn standard_verify(r: &Recorded, secret: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let Ok(key) = b64.decode(secret.trim_start_matches("whsec_")) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(
        format!(
            "{}.{}.",
            r.header("webhook-id"),
            r.header("webhook-timestamp")
        )
        .as_bytes(),
    );
    mac.update(&r.body);
    let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    r.header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HMAC-SHA256 test vector (RFC 4231 case 2) in the `sha256=` form.
    #[test]
    fn seed_verify_matches_a_known_vector_and_nothing_else() {
        let sig = "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert!(seed_verify(b"what do ya want for nothing?", "Jefe", sig));
        assert!(!seed_verify(b"what do ya want for nothing!", "Jefe", sig));
        assert!(!seed_verify(
            b"what do ya want for nothing?",
            "Jefe",
            &sig[..70]
        ));
    }

    /// The Standard Webhooks specification's example (secret, id, timestamp, payload and
    /// signature as published), with a stale signature listed before it.
    #[test]
    fn standard_verify_matches_the_specification_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let mut r = Recorded {
            method: "POST".into(),
            path: "/".into(),
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from_static(br#"{"test": 2432232314}"#),
            at: std::time::Instant::now(),
        };
        let h = &mut r.headers;
        h.insert(
            "webhook-id",
            "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap(),
        );
        h.insert("webhook-timestamp", "1614265330".parse().unwrap());
        h.insert(
            "webhook-signature",
            "v1,bm90IHRoaXMgb25l v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
                .parse()
                .unwrap(),
        );
        assert!(standard_verify(&r, secret));
        r.headers
            .insert("webhook-timestamp", "1614265331".parse().unwrap());
        assert!(!standard_verify(&r, secret));
    }
}
