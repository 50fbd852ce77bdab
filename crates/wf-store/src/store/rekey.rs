//! Re-sealing every encrypted value of `webhooks` (the secret, the previous secret, the
//! custom headers) with the first key of `WF_SECRET_KEY`, so old keys can be removed.
//!
//! Batches in id order, each in one short transaction. A row is rewritten only by a
//! conditional update that names the exact ciphertexts it read: if a PATCH, a secret
//! rotation or another `wfctl rekey` changed any of them in between, the update matches
//! nothing and the row is read again, so a concurrent write is never replaced by a stale
//! value. Rows already current are not written at all, which makes a second run (or a
//! resumed one) cheap.

use std::collections::BTreeSet;

use deadpool_postgres::Transaction;
use tokio_postgres::Row;
use wf_core::ids::WebhookId;

use super::{col, parse_col, Store};
use crate::crypto::{Reseal, Sealed, SecretBox};
use crate::StoreError;

/// How often one row is read again after a concurrent change before it is left for the
/// next run (counted in [`RekeyCounts::contended`]).
const MAX_ATTEMPTS: usize = 5;

/// Whether [`Store::rekey`] writes or only looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RekeyMode {
    /// Re-seal every value that is not current.
    Apply,
    /// Count what would be re-sealed; write nothing.
    Check,
}

/// What a [`Store::rekey`] run found, in webhook rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RekeyCounts {
    /// Rows looked at.
    pub scanned: u64,
    /// Rows whose every value was already sealed with the first key.
    pub current: u64,
    /// Rows with a value under an old key or in the format without a key id: re-sealed
    /// with the first key ([`RekeyMode::Apply`]) or still to be ([`RekeyMode::Check`]).
    pub outdated: u64,
    /// Of the outdated rows, how many needed each key of `WF_SECRET_KEY` (by position,
    /// the first at index 0). A non-zero count past index 0 means that key cannot be
    /// removed yet.
    pub needing_key: Vec<u64>,
    /// Rows with a value that no listed key opens, never written. Their webhooks cannot
    /// deliver until the key they were sealed with is listed again (or the secret is
    /// rotated and the headers set again).
    pub undecryptable: Vec<WebhookId>,
    /// Rows deleted while being looked at.
    pub vanished: u64,
    /// Rows that kept changing under the run ([`MAX_ATTEMPTS`] times): left for the next.
    pub contended: u64,
}

impl RekeyCounts {
    /// Rows that still need a key other than the first (0 after a complete
    /// [`RekeyMode::Apply`] run; what [`RekeyMode::Check`] is for).
    pub fn needing_old_keys(&self) -> u64 {
        self.needing_key.iter().skip(1).sum()
    }

    /// True when nothing is left to do and nothing failed.
    pub fn is_clean(&self, mode: RekeyMode) -> bool {
        self.undecryptable.is_empty()
            && self.contended == 0
            && (mode == RekeyMode::Apply || self.outdated == 0)
    }
}

/// The sealed columns of one row.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Values {
    secret: Vec<u8>,
    previous: Option<Vec<u8>>,
    headers: Option<Vec<u8>>,
}

impl Values {
    fn from_row(row: &Row) -> Result<Values, StoreError> {
        Ok(Values {
            secret: col(row, "secret_ciphertext")?,
            previous: col(row, "previous_secret_ciphertext")?,
            headers: col(row, "headers_ciphertext")?,
        })
    }
}

enum Verdict {
    Current,
    /// The row with every value sealed with the first key, and the keys that opened them.
    Outdated {
        resealed: Values,
        keys: BTreeSet<usize>,
    },
    Undecryptable,
}

fn judge(secrets: &SecretBox, id: &WebhookId, v: &Values) -> Verdict {
    let mut keys = BTreeSet::new();
    let mut one = |what: Sealed, sealed: &[u8]| -> Option<Vec<u8>> {
        match secrets.reseal(what, id, sealed) {
            Reseal::Current => Some(sealed.to_vec()),
            Reseal::Resealed { value, from_key } => {
                keys.insert(from_key);
                Some(value)
            }
            Reseal::Undecryptable => None,
        }
    };
    let resealed = (|| {
        Some(Values {
            secret: one(Sealed::Secret, &v.secret)?,
            previous: match &v.previous {
                Some(p) => Some(one(Sealed::Secret, p)?),
                None => None,
            },
            headers: match &v.headers {
                Some(h) => Some(one(Sealed::Headers, h)?),
                None => None,
            },
        })
    })();
    match resealed {
        None => Verdict::Undecryptable,
        Some(_) if keys.is_empty() => Verdict::Current,
        Some(resealed) => Verdict::Outdated { resealed, keys },
    }
}

const SELECT_BATCH: &str = "SELECT id, secret_ciphertext, previous_secret_ciphertext, \
     headers_ciphertext FROM webhooks WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2";

const SELECT_ONE: &str = "SELECT id, secret_ciphertext, previous_secret_ciphertext, \
     headers_ciphertext FROM webhooks WHERE id = $1";

/// Writes the re-sealed values only if the row still holds exactly the values they were
/// made from.
const SWAP: &str = "UPDATE webhooks SET secret_ciphertext = $2, \
     previous_secret_ciphertext = $3, headers_ciphertext = $4 \
     WHERE id = $1 AND secret_ciphertext = $5 \
     AND previous_secret_ciphertext IS NOT DISTINCT FROM $6 \
     AND headers_ciphertext IS NOT DISTINCT FROM $7 RETURNING id";

impl Store {
    /// Re-seals (or, with [`RekeyMode::Check`], counts) every encrypted value of every
    /// webhook that is not sealed with the first key of `WF_SECRET_KEY`, `batch_size` rows
    /// at a time; `progress` sees the running counts after each batch.
    ///
    /// Safe to run while the services write and to run twice at once; stopping it half way
    /// loses nothing (a new run skips what is current). Values no key opens are counted in
    /// [`RekeyCounts::undecryptable`], never skipped silently, never written.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`]; the counts so far are lost, a new run
    /// resumes the work.
    pub async fn rekey(
        &self,
        batch_size: u32,
        mode: RekeyMode,
        mut progress: impl FnMut(&RekeyCounts),
    ) -> Result<RekeyCounts, StoreError> {
        let mut counts = RekeyCounts {
            needing_key: vec![0; self.secrets.key_count()],
            ..RekeyCounts::default()
        };
        let mut after: Option<WebhookId> = None;
        loop {
            match self
                .rekey_batch(after.as_ref(), batch_size, mode, &mut counts)
                .await?
            {
                Some(last) => {
                    after = Some(last);
                    progress(&counts);
                }
                None => return Ok(counts),
            }
        }
    }

    /// One batch of [`rekey`](Self::rekey): the rows after `after` in id order; returns the
    /// last id looked at, `None` when there were no more rows.
    async fn rekey_batch(
        &self,
        after: Option<&WebhookId>,
        batch_size: u32,
        mode: RekeyMode,
        counts: &mut RekeyCounts,
    ) -> Result<Option<WebhookId>, StoreError> {
        let limit = i64::from(batch_size.max(1));
        let mut client = self.conn().await?;
        // One transaction per batch: the change-feed trigger's notifications of a batch
        // fold into one per organisation, and row locks last only as long as the batch.
        let tx = client.transaction().await?;
        let select = tx.prepare_cached(SELECT_BATCH).await?;
        let rows = tx
            .query(&select, &[&after.map(WebhookId::as_str), &limit])
            .await?;
        let mut last = None;
        for row in &rows {
            let id = parse_col(row, "id", WebhookId::parse)?;
            counts.scanned += 1;
            self.rekey_row(&tx, &id, Values::from_row(row)?, mode, counts)
                .await?;
            last = Some(id);
        }
        tx.commit().await?;
        Ok(last)
    }

    async fn rekey_row(
        &self,
        tx: &Transaction<'_>,
        id: &WebhookId,
        mut values: Values,
        mode: RekeyMode,
        counts: &mut RekeyCounts,
    ) -> Result<(), StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let (resealed, keys) = match judge(&self.secrets, id, &values) {
                Verdict::Current => {
                    counts.current += 1;
                    return Ok(());
                }
                Verdict::Undecryptable => {
                    tracing::error!(
                        webhook_id = %id,
                        "rekey: a value of this webhook opens with no key in WF_SECRET_KEY"
                    );
                    counts.undecryptable.push(id.clone());
                    return Ok(());
                }
                Verdict::Outdated { resealed, keys } => (resealed, keys),
            };
            if mode == RekeyMode::Apply {
                let swap = tx.prepare_cached(SWAP).await?;
                let swapped = tx
                    .query_opt(
                        &swap,
                        &[
                            &id.as_str(),
                            &resealed.secret,
                            &resealed.previous,
                            &resealed.headers,
                            &values.secret,
                            &values.previous,
                            &values.headers,
                        ],
                    )
                    .await?;
                if swapped.is_none() {
                    // Changed (or deleted) since it was read: judge what is there now.
                    let again = tx.prepare_cached(SELECT_ONE).await?;
                    match tx.query_opt(&again, &[&id.as_str()]).await? {
                        Some(row) => {
                            values = Values::from_row(&row)?;
                            continue;
                        }
                        None => {
                            counts.vanished += 1;
                            return Ok(());
                        }
                    }
                }
            }
            counts.outdated += 1;
            for k in keys {
                if let Some(n) = counts.needing_key.get_mut(k) {
                    *n += 1;
                }
            }
            return Ok(());
        }
        tracing::warn!(webhook_id = %id, "rekey: this webhook kept changing; run rekey again");
        counts.contended += 1;
        Ok(())
    }
}
