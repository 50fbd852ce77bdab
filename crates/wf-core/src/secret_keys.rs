//! The keys that encrypt webhook secrets at rest (`WF_SECRET_KEY`).
//!
//! `WF_SECRET_KEY` holds one key, or a comma-separated list of keys during a rotation,
//! newest first: every process decrypts with any key of the list and encrypts with the
//! first. Each key is the standard base64 (padded or not) of exactly 32 bytes.
//!
//! Key material never leaves this type by accident: its `Debug` shows only how many keys
//! there are, and parse errors name the position of the bad key, never its text.

use std::fmt;

use base64::Engine as _;

/// One or more distinct 32-byte keys; the first encrypts, all decrypt.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKeys {
    /// Never empty; no two equal.
    keys: Vec<[u8; 32]>,
}

impl SecretKeys {
    /// Just `key`.
    pub fn single(key: [u8; 32]) -> SecretKeys {
        SecretKeys { keys: vec![key] }
    }

    /// `keys` in order, the first one encrypting.
    ///
    /// # Errors
    /// A reason when the list is empty or holds the same key twice.
    pub fn new(keys: Vec<[u8; 32]>) -> Result<SecretKeys, String> {
        if keys.is_empty() {
            return Err("no key given".to_owned());
        }
        for (i, k) in keys.iter().enumerate() {
            if let Some(j) = keys[..i].iter().position(|earlier| earlier == k) {
                return Err(format!(
                    "keys {} and {} of {} are the same key (list each key once)",
                    j + 1,
                    i + 1,
                    keys.len()
                ));
            }
        }
        Ok(SecretKeys { keys })
    }

    /// Parses `WF_SECRET_KEY`: keys separated by commas, newest first. The error names the
    /// position of a bad key (`key 2 of 3: …`) and never contains the value or its bytes.
    ///
    /// # Errors
    /// A reason when an entry is empty, is not base64, does not decode to 32 bytes, or
    /// repeats an earlier key.
    pub fn parse(v: &str) -> Result<SecretKeys, String> {
        let parts: Vec<&str> = v.split(',').map(str::trim).collect();
        let n = parts.len();
        let mut keys = Vec::with_capacity(n);
        for (i, part) in parts.iter().enumerate() {
            let key = parse_one(part).map_err(|reason| {
                if n == 1 {
                    reason
                } else {
                    format!("key {} of {n}: {reason}", i + 1)
                }
            })?;
            keys.push(key);
        }
        SecretKeys::new(keys)
    }

    /// The key new values are encrypted with.
    pub fn primary(&self) -> &[u8; 32] {
        &self.keys[0]
    }

    /// Every key, the primary first.
    pub fn all(&self) -> &[[u8; 32]] {
        &self.keys
    }

    /// How many keys there are (at least 1).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: there is at least one key. (For symmetry with [`len`](Self::len).)
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl From<[u8; 32]> for SecretKeys {
    fn from(key: [u8; 32]) -> SecretKeys {
        SecretKeys::single(key)
    }
}

impl fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKeys(<redacted> x {})", self.keys.len())
    }
}

/// One key: standard base64 (padded or not) of exactly 32 bytes.
fn parse_one(v: &str) -> Result<[u8; 32], String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    if v.is_empty() {
        return Err("empty (expected the base64 of 32 random bytes, e.g. \
                    `openssl rand -base64 32`)"
            .to_owned());
    }
    let bytes = STANDARD
        .decode(v)
        .or_else(|_| STANDARD_NO_PAD.decode(v))
        .map_err(|_| {
            "not valid base64 (expected the base64 of 32 random bytes, e.g. \
             `openssl rand -base64 32`)"
                .to_owned()
        })?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "decodes to {} bytes, expected exactly 32 (e.g. `openssl rand -base64 32`)",
            bytes.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

    fn b64(k: [u8; 32]) -> String {
        STANDARD.encode(k)
    }

    #[test]
    fn lists_in_order() {
        let one = SecretKeys::parse(&b64([1; 32])).unwrap();
        assert_eq!(one.all(), &[[1; 32]]);
        let list = format!(
            " {} ,{}, {}",
            b64([2; 32]),
            STANDARD_NO_PAD.encode([1; 32]),
            b64([3; 32])
        );
        let keys = SecretKeys::parse(&list).unwrap();
        assert_eq!(keys.all(), &[[2; 32], [1; 32], [3; 32]]);
        assert_eq!(keys.primary(), &[2; 32]);
        assert_eq!((keys.len(), keys.is_empty()), (3, false));
        assert_eq!(SecretKeys::from([5; 32]), SecretKeys::single([5; 32]));
    }

    #[test]
    fn bad_entries_are_named_by_position_and_never_shown() {
        let (a, b) = (b64([1; 32]), b64([2; 32]));
        let short = STANDARD.encode([9u8; 16]);
        let cases = [
            (format!("{a},{short}"), "key 2 of 2: decodes to 16 bytes"),
            (format!("{a},{b},!!nope!!"), "key 3 of 3: not valid base64"),
            (format!("{a},,{b}"), "key 2 of 3: empty"),
            (format!("{a},"), "key 2 of 2: empty"),
            (format!(",{a}"), "key 1 of 2: empty"),
            (format!("{a},{b},{a}"), "keys 1 and 3 of 3 are the same key"),
            (
                format!("{a},{}", STANDARD_NO_PAD.encode([1; 32])),
                "keys 1 and 2 of 2 are the same key",
            ),
            (short.clone(), "decodes to 16 bytes"),
        ];
        for (value, want) in cases {
            let err = SecretKeys::parse(&value).unwrap_err();
            assert!(err.starts_with(want), "{value:?}: {err}");
            for part in value.split(',').filter(|p| p.len() > 4) {
                assert!(!err.contains(part.trim()), "{err}");
            }
        }
        assert!(SecretKeys::new(Vec::new()).is_err());
    }

    #[test]
    fn debug_hides_the_keys() {
        let keys = SecretKeys::new(vec![[7; 32], [8; 32]]).unwrap();
        let dbg = format!("{keys:?}");
        assert_eq!(dbg, "SecretKeys(<redacted> x 2)");
    }
}
