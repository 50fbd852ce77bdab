//! Webhook secrets and the two signature schemes a delivery carries.
//!
//! * `X-WorkFlows-Signature: sha256=<hex>`: HMAC-SHA256 of the raw body keyed with the
//!   whole secret string (`whsec_…`), exactly what the public docs' Node and Python
//!   snippets verify.
//! * Standard Webhooks (`webhook-signature: v1,<base64>`): HMAC-SHA256 of
//!   `{id}.{timestamp}.{body}` keyed with the base64-decoded part after `whsec_`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of every webhook secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A webhook signing secret: `whsec_` + base64 of 24 random bytes (32 characters).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// Error for a string that is not a webhook secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a webhook secret (expected whsec_ + base64)")]
pub struct InvalidSecret;

impl WebhookSecret {
    /// A fresh secret from the OS random generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        WebhookSecret(format!("{SECRET_PREFIX}{}", B64.encode(bytes)))
    }

    /// Parses a stored secret.
    ///
    /// # Errors
    /// [`InvalidSecret`] unless it is `whsec_` followed by valid, non-empty base64.
    pub fn parse(s: &str) -> Result<Self, InvalidSecret> {
        let rest = s.strip_prefix(SECRET_PREFIX).ok_or(InvalidSecret)?;
        match B64.decode(rest) {
            Ok(k) if !k.is_empty() => Ok(WebhookSecret(s.to_owned())),
            _ => Err(InvalidSecret),
        }
    }

    /// The whole secret string, as shown to the user once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The Standard Webhooks key: the base64-decoded part after `whsec_`.
    pub fn standard_key(&self) -> Vec<u8> {
        B64.decode(&self.0[SECRET_PREFIX.len()..])
            .expect("validated at construction")
    }

    /// `sha256=` + lowercase hex HMAC-SHA256 of `body`, keyed with the whole secret string.
    pub fn workflows_signature(&self, body: &[u8]) -> String {
        workflows_signature(self.0.as_bytes(), body)
    }

    /// `v1,` + base64 HMAC-SHA256 of `{msg_id}.{timestamp}.{body}` keyed with
    /// [`standard_key`](Self::standard_key).
    pub fn standard_signature(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        standard_signature(&self.standard_key(), msg_id, timestamp, body)
    }

    /// Whether `header` (an `X-WorkFlows-Signature` value) is `sha256=` + the hex HMAC of
    /// `body` under this secret. Compared in constant time; anything else in the header
    /// (other case, spaces, a second value) does not verify.
    pub fn verify_workflows_signature(&self, body: &[u8], header: &str) -> bool {
        let Some(hex_mac) = header.strip_prefix("sha256=") else {
            return false;
        };
        let Ok(mac) = hex::decode(hex_mac) else {
            return false;
        };
        let mut expected =
            HmacSha256::new_from_slice(self.0.as_bytes()).expect("HMAC takes any key length");
        expected.update(body);
        expected.verify_slice(&mac).is_ok()
    }

    /// Whether one of the space-separated `v1,<base64>` signatures of `header` (a
    /// `webhook-signature` value; during a secret rotation it holds one per secret) is the
    /// Standard Webhooks signature of `{msg_id}.{timestamp}.{body}` under this secret, with
    /// `msg_id` and `timestamp` as received in `webhook-id` and `webhook-timestamp`.
    /// Compared in constant time. The timestamp's age is not judged here.
    pub fn verify_standard_signature(
        &self,
        msg_id: &str,
        timestamp: &str,
        body: &[u8],
        header: &str,
    ) -> bool {
        let expected = standard_mac(&self.standard_key(), msg_id, timestamp, body);
        header.split(' ').any(|candidate| {
            candidate
                .strip_prefix("v1,")
                .and_then(|b64| B64.decode(b64).ok())
                .is_some_and(|mac| expected.clone().verify_slice(&mac).is_ok())
        })
    }
}

/// `sha256=<hex>` of `body` under `key` (the whole secret string's bytes).
pub fn workflows_signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `v1,<base64>` Standard Webhooks signature under the raw `key`.
pub fn standard_signature(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = standard_mac(key, msg_id, &timestamp.to_string(), body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// The Standard Webhooks HMAC over `{msg_id}.{timestamp}.{body}`, not yet finalised.
fn standard_mac(key: &[u8], msg_id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors computed with the seed's Python snippet:
    //   "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    // and with the Standard Webhooks reference algorithm.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const BODY: &[u8] = br#"{"event":"alert.created","orgId":"org_abc123","timestamp":"2026-05-19T12:05:00.000Z","data":{"id":"alt_xyz789","title":"Low inventory: Raw Material A","severity":"critical"}}"#;

    #[test]
    fn generated_secret_shape() {
        let s = WebhookSecret::generate();
        assert!(s.expose().starts_with("whsec_"));
        assert_eq!(s.expose().len(), 6 + 32);
        assert_eq!(s.standard_key().len(), 24);
        assert_eq!(WebhookSecret::parse(s.expose()).unwrap(), s);
        assert!(WebhookSecret::parse("whsec_").is_err());
        assert!(WebhookSecret::parse("sk_abc").is_err());
        assert!(WebhookSecret::parse("whsec_!!!").is_err());
        assert_eq!(format!("{s:?}"), "WebhookSecret(<redacted>)");
    }

    #[test]
    fn workflows_signature_matches_seed_python() {
        let s = WebhookSecret::parse(SECRET).unwrap();
        let sig = s.workflows_signature(BODY);
        assert_eq!(sig, include_str!("../testdata/seed_python_sig.txt").trim());
        assert_eq!(sig.len(), 7 + 64);
    }

    #[test]
    fn standard_signature_matches_reference() {
        let s = WebhookSecret::parse(SECRET).unwrap();
        let sig = s.standard_signature("dlv_abc", 1_779_192_300, BODY);
        assert_eq!(sig, include_str!("../testdata/standard_sig.txt").trim());
    }

    #[test]
    fn workflows_signature_verification() {
        let s = WebhookSecret::parse(SECRET).unwrap();
        let good = include_str!("../testdata/seed_python_sig.txt").trim();
        assert!(s.verify_workflows_signature(BODY, good));
        let other = WebhookSecret::generate();
        assert!(!other.verify_workflows_signature(BODY, good));
        assert!(!s.verify_workflows_signature(b"{}", good));
        let upper = format!("sha256={}", good["sha256=".len()..].to_uppercase());
        // hex decoding takes either case; the MAC is the same bytes.
        assert!(s.verify_workflows_signature(BODY, &upper));
        for bad in [
            &good["sha256=".len()..],
            &good[..good.len() - 2],
            "sha256=",
            "sha256=zz",
            "",
            &format!("{good} "),
            &format!("sha1={}", &good["sha256=".len()..]),
        ] {
            assert!(!s.verify_workflows_signature(BODY, bad), "{bad:?}");
        }
    }

    #[test]
    fn standard_signature_verification() {
        let s = WebhookSecret::parse(SECRET).unwrap();
        let good = include_str!("../testdata/standard_sig.txt").trim();
        let ts = "1779192300";
        assert!(s.verify_standard_signature("dlv_abc", ts, BODY, good));
        // During a rotation: one signature per secret, either may be ours.
        let stale = WebhookSecret::generate().standard_signature("dlv_abc", 1_779_192_300, BODY);
        assert!(s.verify_standard_signature("dlv_abc", ts, BODY, &format!("{stale} {good}")));
        assert!(s.verify_standard_signature("dlv_abc", ts, BODY, &format!("{good} {stale}")));
        assert!(!s.verify_standard_signature("dlv_abc", ts, BODY, &stale));
        // Any part of what is signed changed.
        assert!(!s.verify_standard_signature("dlv_abd", ts, BODY, good));
        assert!(!s.verify_standard_signature("dlv_abc", "1779192301", BODY, good));
        assert!(!s.verify_standard_signature("dlv_abc", "+1779192300", BODY, good));
        assert!(!s.verify_standard_signature("dlv_abc", ts, b"{}", good));
        for bad in [
            "",
            "v1,",
            "v1,!!!",
            &good[3..],
            &format!("v2,{}", &good[3..]),
        ] {
            assert!(
                !s.verify_standard_signature("dlv_abc", ts, BODY, bad),
                "{bad:?}"
            );
        }
    }
}
