//! Encryption of webhook secrets and custom header values at rest.
//!
//! A database dump alone must not let anyone forge signatures, so secrets are sealed with
//! ChaCha20-Poly1305 under `WF_SECRET_KEY`. The stored value is `nonce (12 bytes) ||
//! ciphertext || tag (16 bytes)`; the nonce is random per seal (a 96-bit random nonce is
//! safe for far more secrets than a deployment will ever have). The webhook id is the
//! associated data, so a ciphertext copied onto another webhook's row fails to open
//! instead of silently signing for it.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use wf_core::headers::CustomHeaders;
use wf_core::ids::WebhookId;
use wf_core::signing::WebhookSecret;

use crate::StoreError;

const NONCE_LEN: usize = 12;

/// The sealing key, ready to use.
#[derive(Clone)]
pub(crate) struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl SecretBox {
    pub(crate) fn new(key: [u8; 32]) -> SecretBox {
        SecretBox {
            cipher: ChaCha20Poly1305::new(&Key::from(key)),
        }
    }

    /// Seals `secret` for the row of `webhook`.
    pub(crate) fn seal(
        &self,
        webhook: &WebhookId,
        secret: &WebhookSecret,
    ) -> Result<Vec<u8>, StoreError> {
        self.seal_bytes(webhook.as_str().as_bytes(), secret.expose().as_bytes())
    }

    /// Opens a value [`seal`](Self::seal) produced for the same webhook.
    ///
    /// # Errors
    /// [`StoreError::Crypto`] when the value is truncated, was sealed under another key or
    /// for another webhook, or does not hold a webhook secret.
    pub(crate) fn open(
        &self,
        webhook: &WebhookId,
        sealed: &[u8],
    ) -> Result<WebhookSecret, StoreError> {
        let text = self
            .open_bytes(webhook.as_str().as_bytes(), sealed)
            .and_then(|plain| String::from_utf8(plain).ok());
        text.and_then(|t| WebhookSecret::parse(&t).ok())
            .ok_or_else(|| undecryptable(webhook, "secret"))
    }

    /// Seals the custom headers of `webhook`. The associated data is the webhook id with
    /// a `:headers` suffix, so the ciphertext can be moved neither to another webhook nor
    /// into the secret column of the same one.
    pub(crate) fn seal_headers(
        &self,
        webhook: &WebhookId,
        headers: &CustomHeaders,
    ) -> Result<Vec<u8>, StoreError> {
        self.seal_bytes(headers_aad(webhook).as_bytes(), &headers.to_bytes())
    }

    /// Opens what [`seal_headers`](Self::seal_headers) produced for the same webhook.
    ///
    /// # Errors
    /// [`StoreError::Crypto`] as for [`open`](Self::open).
    pub(crate) fn open_headers(
        &self,
        webhook: &WebhookId,
        sealed: &[u8],
    ) -> Result<CustomHeaders, StoreError> {
        self.open_bytes(headers_aad(webhook).as_bytes(), sealed)
            .and_then(|plain| CustomHeaders::from_bytes(&plain))
            .ok_or_else(|| undecryptable(webhook, "custom headers"))
    }

    fn seal_bytes(&self, aad: &[u8], msg: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        // ThreadRng is a CSPRNG seeded from the OS.
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg, aad })
            // Only fails for messages far beyond anything stored here.
            .map_err(|_| StoreError::Crypto)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open_bytes(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).ok()?;
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
    }
}

fn headers_aad(webhook: &WebhookId) -> String {
    format!("{}:headers", webhook.as_str())
}

fn undecryptable(webhook: &WebhookId, what: &str) -> StoreError {
    tracing::error!(
        webhook_id = %webhook,
        "webhook {what} cannot be decrypted: WF_SECRET_KEY differs from the key it was written with"
    );
    StoreError::Crypto
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let b = SecretBox::new([7; 32]);
        let w1 = WebhookId::generate();
        let w2 = WebhookId::generate();
        let s = WebhookSecret::generate();
        let sealed = b.seal(&w1, &s).unwrap();
        assert_eq!(sealed.len(), 12 + s.expose().len() + 16);
        assert!(!sealed
            .windows(s.expose().len())
            .any(|w| w == s.expose().as_bytes()));
        assert_eq!(b.open(&w1, &sealed).unwrap(), s);
        // Another row, another key, truncation: all refused.
        assert!(matches!(b.open(&w2, &sealed), Err(StoreError::Crypto)));
        assert!(matches!(
            SecretBox::new([8; 32]).open(&w1, &sealed),
            Err(StoreError::Crypto)
        ));
        assert!(matches!(b.open(&w1, &sealed[..5]), Err(StoreError::Crypto)));
        // Fresh nonce per seal.
        assert_ne!(b.seal(&w1, &s).unwrap(), sealed);
    }

    #[test]
    fn headers_round_trip_and_binding() {
        let b = SecretBox::new([7; 32]);
        let (w1, w2) = (WebhookId::generate(), WebhookId::generate());
        let h =
            CustomHeaders::parse([("X-Api-Key".to_owned(), "s3cr3t-value".to_owned())]).unwrap();
        let sealed = b.seal_headers(&w1, &h).unwrap();
        assert!(!sealed.windows(12).any(|w| w == b"s3cr3t-value"));
        assert_eq!(b.open_headers(&w1, &sealed).unwrap(), h);
        assert!(matches!(
            b.open_headers(&w2, &sealed),
            Err(StoreError::Crypto)
        ));
        // Not interchangeable with the secret column of the same webhook.
        assert!(matches!(b.open(&w1, &sealed), Err(StoreError::Crypto)));
        let secret = b.seal(&w1, &WebhookSecret::generate()).unwrap();
        assert!(matches!(
            b.open_headers(&w1, &secret),
            Err(StoreError::Crypto)
        ));
    }
}
