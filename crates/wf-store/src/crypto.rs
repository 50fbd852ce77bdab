//! Encryption of webhook secrets and custom header values at rest.
//!
//! A database dump alone must not let anyone forge signatures, so secrets are sealed with
//! ChaCha20-Poly1305 under `WF_SECRET_KEY`. The nonce is random per seal (a 96-bit random
//! nonce is safe for far more secrets than a deployment will ever have). The webhook id is
//! the associated data, so a ciphertext copied onto another webhook's row fails to open
//! instead of silently signing for it.
//!
//! `WF_SECRET_KEY` may list several keys during a rotation: values are sealed with the
//! first and opened with whichever key sealed them. Two stored formats:
//!
//! - **keyed** (written now): `0xFF 0x01 || key id (4 bytes) || nonce (12) || ciphertext ||
//!   tag (16)`. The key id is the first 4 bytes of SHA-256 over a fixed label and the key
//!   (it says which key to use and nothing about the key itself); the 6-byte header is
//!   part of the associated data, so it cannot be altered either.
//! - **legacy** (written before keys could rotate): `nonce (12) || ciphertext || tag (16)`,
//!   no key id. Opened by trying each key in turn.
//!
//! A legacy value whose random nonce happens to begin like a keyed one (1 in 65,536) fails
//! to open as keyed and is then opened as legacy, so the marker never has to be trusted.
//! A value is *current* when it is keyed and sealed with the first key: `wfctl rekey`
//! re-seals every other value (see [`SecretBox::reseal`]).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use wf_core::headers::CustomHeaders;
use wf_core::ids::WebhookId;
use wf_core::secret_keys::SecretKeys;
use wf_core::signing::WebhookSecret;

use crate::StoreError;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// The first bytes of a keyed value: a marker and the format version.
const KEYED_MARKER: [u8; 2] = [0xFF, 0x01];
const KEY_ID_LEN: usize = 4;
const HEADER_LEN: usize = KEYED_MARKER.len() + KEY_ID_LEN;

/// The id a keyed value carries for `key`: the first 4 bytes of
/// SHA-256(`"workflows secret key id\0"` || key).
pub(crate) fn key_id(key: &[u8; 32]) -> [u8; KEY_ID_LEN] {
    let digest = Sha256::new()
        .chain_update(b"workflows secret key id\0")
        .chain_update(key)
        .finalize();
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    id
}

/// The key id of `key` in hex, as `wfctl rekey` shows it: safe to print, it reveals
/// nothing about the key.
pub fn key_id_hex(key: &[u8; 32]) -> String {
    key_id(key).iter().map(|b| format!("{b:02x}")).collect()
}

/// Which column a value belongs to: each has its own associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sealed {
    /// `secret_ciphertext` and `previous_secret_ciphertext`: the webhook id.
    Secret,
    /// `headers_ciphertext`: the webhook id with a `:headers` suffix, so the value can be
    /// moved neither to another webhook nor into the secret column of the same one.
    Headers,
}

impl Sealed {
    fn aad(self, webhook: &WebhookId) -> Vec<u8> {
        match self {
            Sealed::Secret => webhook.as_str().as_bytes().to_vec(),
            Sealed::Headers => format!("{}:headers", webhook.as_str()).into_bytes(),
        }
    }
}

/// What [`SecretBox::reseal`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reseal {
    /// Keyed and sealed with the first key: nothing to do.
    Current,
    /// Opened with key number `from_key` (0-based in `WF_SECRET_KEY`; 0 for a legacy value
    /// of the first key) and sealed again with the first key.
    Resealed { value: Vec<u8>, from_key: usize },
    /// No key opens it.
    Undecryptable,
}

#[derive(Clone)]
struct SealingKey {
    id: [u8; KEY_ID_LEN],
    cipher: ChaCha20Poly1305,
}

/// The sealing keys, ready to use: the first seals, any opens.
#[derive(Clone)]
pub(crate) struct SecretBox {
    /// Never empty (a [`SecretKeys`] never is).
    keys: Vec<SealingKey>,
}

impl SecretBox {
    pub(crate) fn new(keys: &SecretKeys) -> SecretBox {
        SecretBox {
            keys: keys
                .all()
                .iter()
                .map(|k| SealingKey {
                    id: key_id(k),
                    cipher: ChaCha20Poly1305::new(&Key::from(*k)),
                })
                .collect(),
        }
    }

    /// How many keys there are.
    pub(crate) fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Seals `secret` for the row of `webhook`.
    pub(crate) fn seal(
        &self,
        webhook: &WebhookId,
        secret: &WebhookSecret,
    ) -> Result<Vec<u8>, StoreError> {
        self.seal_bytes(&Sealed::Secret.aad(webhook), secret.expose().as_bytes())
    }

    /// Opens a value [`seal`](Self::seal) produced for the same webhook, with any key.
    ///
    /// # Errors
    /// [`StoreError::Crypto`] when the value is truncated, was sealed under a key not in
    /// the list or for another webhook, or does not hold a webhook secret.
    pub(crate) fn open(
        &self,
        webhook: &WebhookId,
        sealed: &[u8],
    ) -> Result<WebhookSecret, StoreError> {
        let text = self
            .open_any(&Sealed::Secret.aad(webhook), sealed)
            .and_then(|(plain, _)| String::from_utf8(plain).ok());
        text.and_then(|t| WebhookSecret::parse(&t).ok())
            .ok_or_else(|| undecryptable(webhook, "secret"))
    }

    /// Seals the custom headers of `webhook`.
    pub(crate) fn seal_headers(
        &self,
        webhook: &WebhookId,
        headers: &CustomHeaders,
    ) -> Result<Vec<u8>, StoreError> {
        self.seal_bytes(&Sealed::Headers.aad(webhook), &headers.to_bytes())
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
        self.open_any(&Sealed::Headers.aad(webhook), sealed)
            .and_then(|(plain, _)| CustomHeaders::from_bytes(&plain))
            .ok_or_else(|| undecryptable(webhook, "custom headers"))
    }

    /// For a rotation: whether `sealed` (a `what` value of `webhook`) is current, and if
    /// not, the same plaintext sealed with the first key. The plaintext is carried over
    /// byte for byte, never parsed.
    pub(crate) fn reseal(&self, what: Sealed, webhook: &WebhookId, sealed: &[u8]) -> Reseal {
        let aad = what.aad(webhook);
        match self.open_any(&aad, sealed) {
            None => Reseal::Undecryptable,
            Some((
                _,
                Opened {
                    key: 0,
                    keyed: true,
                },
            )) => Reseal::Current,
            Some((plain, opened)) => match self.seal_bytes(&aad, &plain) {
                Ok(value) => Reseal::Resealed {
                    value,
                    from_key: opened.key,
                },
                // Sealing fails only for messages far beyond anything stored here.
                Err(_) => Reseal::Undecryptable,
            },
        }
    }

    fn seal_bytes(&self, aad: &[u8], msg: &[u8]) -> Result<Vec<u8>, StoreError> {
        let key = &self.keys[0];
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + msg.len() + TAG_LEN);
        out.extend_from_slice(&KEYED_MARKER);
        out.extend_from_slice(&key.id);
        let mut nonce = [0u8; NONCE_LEN];
        // ThreadRng is a CSPRNG seeded from the OS.
        rand::rng().fill_bytes(&mut nonce);
        let full_aad = [&out[..HEADER_LEN], aad].concat();
        let sealed = key
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg,
                    aad: &full_aad,
                },
            )
            // Only fails for messages far beyond anything stored here.
            .map_err(|_| StoreError::Crypto)?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext and which key (and format) opened it.
    fn open_any(&self, aad: &[u8], sealed: &[u8]) -> Option<(Vec<u8>, Opened)> {
        if sealed.len() >= HEADER_LEN + NONCE_LEN + TAG_LEN && sealed[..2] == KEYED_MARKER {
            let (header, rest) = sealed.split_at(HEADER_LEN);
            let full_aad = [header, aad].concat();
            // Ids are 4 bytes: two keys of the list may share one, so try each that matches.
            for (i, key) in self.keys.iter().enumerate() {
                if header[KEYED_MARKER.len()..] == key.id {
                    if let Some(plain) = decrypt(&key.cipher, &full_aad, rest) {
                        return Some((
                            plain,
                            Opened {
                                key: i,
                                keyed: true,
                            },
                        ));
                    }
                }
            }
        }
        self.keys.iter().enumerate().find_map(|(i, key)| {
            decrypt(&key.cipher, aad, sealed).map(|plain| {
                (
                    plain,
                    Opened {
                        key: i,
                        keyed: false,
                    },
                )
            })
        })
    }
}

/// Which key opened a value, and whether it was in the keyed format.
#[derive(Clone, Copy, Debug)]
struct Opened {
    key: usize,
    keyed: bool,
}

/// `nonce || ciphertext || tag` opened with `cipher`.
fn decrypt(cipher: &ChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_from(nonce).ok()?;
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

fn undecryptable(webhook: &WebhookId, what: &str) -> StoreError {
    tracing::error!(
        webhook_id = %webhook,
        "webhook {what} cannot be decrypted: no key in WF_SECRET_KEY opens it (it was \
         written with a key that is no longer listed, or the value is damaged)"
    );
    StoreError::Crypto
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn keys(list: &[[u8; 32]]) -> SecretBox {
        SecretBox::new(&SecretKeys::new(list.to_vec()).unwrap())
    }

    /// A value in the legacy format (no key id), as stored before keys could rotate.
    fn legacy_seal(key: [u8; 32], aad: &[u8], msg: &[u8]) -> Vec<u8> {
        let nonce = [3u8; NONCE_LEN];
        let sealed = ChaCha20Poly1305::new(&Key::from(key))
            .encrypt(&Nonce::from(nonce), Payload { msg, aad })
            .unwrap();
        [&nonce[..], &sealed].concat()
    }

    #[test]
    fn round_trip_and_binding() {
        let b = keys(&[[7; 32]]);
        let w1 = WebhookId::generate();
        let w2 = WebhookId::generate();
        let s = WebhookSecret::generate();
        let sealed = b.seal(&w1, &s).unwrap();
        assert_eq!(sealed.len(), 6 + 12 + s.expose().len() + 16);
        assert_eq!(sealed[..2], KEYED_MARKER);
        assert_eq!(sealed[2..6], key_id(&[7; 32]));
        assert!(!sealed
            .windows(s.expose().len())
            .any(|w| w == s.expose().as_bytes()));
        assert_eq!(b.open(&w1, &sealed).unwrap(), s);
        // Another row, another key, truncation: all refused.
        assert!(matches!(b.open(&w2, &sealed), Err(StoreError::Crypto)));
        assert!(matches!(
            keys(&[[8; 32]]).open(&w1, &sealed),
            Err(StoreError::Crypto)
        ));
        for len in [0, 5, 6, 20, sealed.len() - 1] {
            assert!(matches!(
                b.open(&w1, &sealed[..len]),
                Err(StoreError::Crypto)
            ));
        }
        // The header is authenticated: another key id (even of a listed key) is refused.
        let mut moved = sealed.clone();
        moved[2..6].copy_from_slice(&key_id(&[8; 32]));
        assert!(matches!(
            keys(&[[7; 32], [8; 32]]).open(&w1, &moved),
            Err(StoreError::Crypto)
        ));
        // Fresh nonce per seal.
        assert_ne!(b.seal(&w1, &s).unwrap(), sealed);
    }

    #[test]
    fn headers_round_trip_and_binding() {
        let b = keys(&[[7; 32]]);
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

    #[test]
    fn any_listed_key_opens_the_first_seals() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let w = WebhookId::generate();
        let s = WebhookSecret::generate();
        let under_a = keys(&[a]).seal(&w, &s).unwrap();
        let rotating = keys(&[b, a]);
        assert_eq!(rotating.open(&w, &under_a).unwrap(), s);
        let under_b = rotating.seal(&w, &s).unwrap();
        assert_eq!(under_b[2..6], key_id(&b));
        assert_eq!(keys(&[b]).open(&w, &under_b).unwrap(), s);
        assert!(keys(&[a]).open(&w, &under_b).is_err());
        assert_ne!(key_id(&a), key_id(&b));
        assert_eq!(key_id_hex(&a).len(), 8);
    }

    #[test]
    fn legacy_values_open_with_any_listed_key() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let w = WebhookId::generate();
        let s = WebhookSecret::generate();
        let legacy = legacy_seal(a, w.as_str().as_bytes(), s.expose().as_bytes());
        assert_eq!(keys(&[a]).open(&w, &legacy).unwrap(), s);
        assert_eq!(keys(&[b, a]).open(&w, &legacy).unwrap(), s);
        assert!(keys(&[b]).open(&w, &legacy).is_err());
        // A legacy nonce that happens to begin like a keyed value still opens.
        let mut aad_nonce = [0u8; NONCE_LEN];
        aad_nonce[..2].copy_from_slice(&KEYED_MARKER);
        aad_nonce[2..6].copy_from_slice(&key_id(&a));
        let sealed = ChaCha20Poly1305::new(&Key::from(a))
            .encrypt(
                &Nonce::from(aad_nonce),
                Payload {
                    msg: s.expose().as_bytes(),
                    aad: w.as_str().as_bytes(),
                },
            )
            .unwrap();
        let lookalike = [&aad_nonce[..], &sealed].concat();
        assert_eq!(keys(&[a]).open(&w, &lookalike).unwrap(), s);
        // ... and is not taken for current.
        assert!(matches!(
            keys(&[a]).reseal(Sealed::Secret, &w, &lookalike),
            Reseal::Resealed { from_key: 0, .. }
        ));
    }

    #[test]
    fn reseal_moves_values_to_the_first_key() {
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let w = WebhookId::generate();
        let h = CustomHeaders::parse([("X-Token".to_owned(), "t0k3n".to_owned())]).unwrap();
        let old = keys(&[a]);
        let rotating = keys(&[b, a]);
        let new = keys(&[b]);

        let sealed = old.seal_headers(&w, &h).unwrap();
        let Reseal::Resealed { value, from_key } = rotating.reseal(Sealed::Headers, &w, &sealed)
        else {
            panic!("not resealed");
        };
        assert_eq!(from_key, 1);
        assert_eq!(new.open_headers(&w, &value).unwrap(), h);
        assert_eq!(
            rotating.reseal(Sealed::Headers, &w, &value),
            Reseal::Current
        );
        // The wrong column's associated data does not open it.
        assert_eq!(
            rotating.reseal(Sealed::Secret, &w, &value),
            Reseal::Undecryptable
        );
        // A legacy value under the first key is resealed too (it has no key id).
        let legacy = legacy_seal(b, w.as_str().as_bytes(), b"whsec_x");
        assert!(matches!(
            rotating.reseal(Sealed::Secret, &w, &legacy),
            Reseal::Resealed { from_key: 0, .. }
        ));
        // Under a key that is not listed: reported, never current.
        let stranger = keys(&[c]).seal_headers(&w, &h).unwrap();
        assert_eq!(
            rotating.reseal(Sealed::Headers, &w, &stranger),
            Reseal::Undecryptable
        );
    }

    proptest! {
        #[test]
        fn round_trip_through_a_rotation(
            old in any::<[u8; 32]>(),
            new in any::<[u8; 32]>(),
            msg in proptest::collection::vec(any::<u8>(), 0..300),
            legacy in any::<bool>(),
        ) {
            prop_assume!(old != new);
            let w = WebhookId::generate();
            let aad = Sealed::Secret.aad(&w);
            let sealed = if legacy {
                legacy_seal(old, &aad, &msg)
            } else {
                keys(&[old]).seal_bytes(&aad, &msg).unwrap()
            };
            let rotating = keys(&[new, old]);
            let (plain, opened) = rotating.open_any(&aad, &sealed).unwrap();
            prop_assert_eq!(&plain, &msg);
            prop_assert_eq!(opened.key, 1);
            let Reseal::Resealed { value, from_key } = rotating.reseal(Sealed::Secret, &w, &sealed)
            else {
                return Err(TestCaseError::fail("not resealed"));
            };
            prop_assert_eq!(from_key, 1);
            let (plain, opened) = keys(&[new]).open_any(&aad, &value).unwrap();
            prop_assert_eq!(plain, msg);
            prop_assert!(opened.keyed && opened.key == 0);
            prop_assert!(keys(&[old]).open_any(&aad, &value).is_none());
        }
    }
}
