//! Opaque keyset-pagination cursors.
//!
//! A cursor is the sort key of the last row of a page, `(created_at, id)`, with
//! `created_at` at full database precision (microseconds) so that rows created in the same
//! millisecond are neither skipped nor repeated. It is base64url so callers treat it as
//! opaque and can put it in a query string unescaped. Keyset (rather than offset)
//! pagination stays fast on deep pages and stable while rows are inserted.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};

use crate::StoreError;

/// Longest cursor we accept; ours are well under 100 characters.
const MAX_LEN: usize = 512;

/// Encodes the sort key of the last row of a page.
pub(crate) fn encode(created_at: DateTime<Utc>, id: &str) -> String {
    B64.encode(format!("{}:{id}", created_at.timestamp_micros()))
}

/// Decodes a cursor, checking the id with `parse_id` (so a cursor of one listing is
/// refused by another).
///
/// # Errors
/// [`StoreError::InvalidCursor`] for anything [`encode`] could not have produced.
pub(crate) fn decode<T, E>(
    cursor: &str,
    parse_id: impl FnOnce(&str) -> Result<T, E>,
) -> Result<(DateTime<Utc>, T), StoreError> {
    if cursor.len() > MAX_LEN {
        return Err(StoreError::InvalidCursor);
    }
    let bytes = B64.decode(cursor).map_err(|_| StoreError::InvalidCursor)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| StoreError::InvalidCursor)?;
    let (micros, id) = text.split_once(':').ok_or(StoreError::InvalidCursor)?;
    let micros: i64 = micros.parse().map_err(|_| StoreError::InvalidCursor)?;
    let at = DateTime::from_timestamp_micros(micros).ok_or(StoreError::InvalidCursor)?;
    let id = parse_id(id).map_err(|_| StoreError::InvalidCursor)?;
    Ok((at, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wf_core::ids::{DeliveryId, WebhookId};

    #[test]
    fn round_trip_keeps_microseconds() {
        let at = DateTime::from_timestamp_micros(1_779_192_300_123_456).unwrap();
        let id = WebhookId::generate();
        let c = encode(at, id.as_str());
        let (at2, id2) = decode(&c, WebhookId::parse).unwrap();
        assert_eq!((at2, id2), (at, id));
    }

    #[test]
    fn refuses_garbage_and_foreign_cursors() {
        for bad in ["", "!!!", "bm90LWEtY3Vyc29y", &"A".repeat(600)] {
            assert!(matches!(
                decode(bad, WebhookId::parse),
                Err(StoreError::InvalidCursor)
            ));
        }
        let c = encode(Utc::now(), WebhookId::generate().as_str());
        assert!(matches!(
            decode(&c, DeliveryId::parse),
            Err(StoreError::InvalidCursor)
        ));
    }
}
