//! Typed, prefixed identifiers (`org_`, `whk_`, `evt_`, `dlv_`, `key_`).
//!
//! Ids we mint are the prefix plus 24 random lowercase alphanumerics (~124 bits).
//! Event and organisation ids may come from producers, so they are accepted more
//! liberally: 1..=128 characters of `[A-Za-z0-9_.:-]`.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 24;

fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..RANDOM_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

/// Error for a string that is not a valid id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id `{value}`")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal, strict = $strict:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind we mint starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_suffix()))
            }

            /// Parses an id, checking its shape.
            ///
            /// # Errors
            /// [`InvalidId`] when the string is empty, too long, has characters outside
            /// `[A-Za-z0-9_.:-]`, or (for ids only we mint) lacks the prefix.
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                let ok = !s.is_empty()
                    && s.len() <= 128
                    && s.chars().all(is_id_char)
                    && (!$strict || (s.starts_with($prefix) && s.len() > $prefix.len()));
                if ok {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(InvalidId { kind: $kind, value: s.to_owned() })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

typed_id!(
    /// An organisation. Producers name their organisations, so any well-formed id is accepted.
    OrgId, "org_", "organisation", strict = false
);
typed_id!(
    /// A webhook (subscription).
    WebhookId, "whk_", "webhook", strict = true
);
typed_id!(
    /// An event. Producers may supply their own (idempotency key), so any well-formed id is
    /// accepted; ids we mint start with `evt_`.
    EventId, "evt_", "event", strict = false
);
typed_id!(
    /// One delivery of one event to one webhook; the same on every attempt.
    DeliveryId, "dlv_", "delivery", strict = true
);
typed_id!(
    /// An API key (its public id, not the secret).
    ApiKeyId, "key_", "API key", strict = true
);

impl DeliveryId {
    /// The delivery id of `event` to `webhook` is derived from both, so that an event
    /// fanned out twice (a redelivery after a crash) yields the same delivery ids and the
    /// subscriber can deduplicate on `X-WorkFlows-Delivery`.
    pub fn derive(org: &OrgId, event: &EventId, webhook: &WebhookId) -> DeliveryId {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [org.as_str(), event.as_str(), webhook.as_str()] {
            h.update((part.len() as u32).to_be_bytes());
            h.update(part.as_bytes());
        }
        let digest = h.finalize();
        let suffix: String = digest
            .iter()
            .take(RANDOM_LEN)
            .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
            .collect();
        DeliveryId(format!("dlv_{suffix}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_have_prefix_and_parse_back() {
        let w = WebhookId::generate();
        assert!(w.as_str().starts_with("whk_"));
        assert_eq!(w.as_str().len(), 4 + RANDOM_LEN);
        assert_eq!(WebhookId::parse(w.as_str()).unwrap(), w);
        assert!(WebhookId::parse("dlv_abc").is_err());
        assert!(WebhookId::parse("whk_").is_err());
        assert!(WebhookId::parse("whk_a b").is_err());
    }

    #[test]
    fn producer_ids_are_liberal_but_bounded() {
        assert!(EventId::parse("evt_123").is_ok());
        assert!(EventId::parse("order-42:created").is_ok());
        assert!(EventId::parse("").is_err());
        assert!(EventId::parse(&"x".repeat(129)).is_err());
        assert!(EventId::parse("bad\"quote").is_err());
        assert!(OrgId::parse("org_abc123").is_ok());
    }

    #[test]
    fn derived_delivery_id_is_stable_and_distinct() {
        let o = OrgId::parse("org_a").unwrap();
        let e = EventId::parse("evt_1").unwrap();
        let w1 = WebhookId::parse("whk_1").unwrap();
        let w2 = WebhookId::parse("whk_2").unwrap();
        assert_eq!(
            DeliveryId::derive(&o, &e, &w1),
            DeliveryId::derive(&o, &e, &w1)
        );
        assert_ne!(
            DeliveryId::derive(&o, &e, &w1),
            DeliveryId::derive(&o, &e, &w2)
        );
        let d = DeliveryId::derive(&o, &e, &w1);
        assert!(DeliveryId::parse(d.as_str()).is_ok());
    }
}
