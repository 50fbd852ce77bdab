//! Organisations and API keys.

use deadpool_postgres::GenericClient;
use rand::distr::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio_postgres::Row;
use wf_core::ids::{ApiKeyId, OrgId};

use super::{col, ms, parse_col, Store};
use crate::{ApiKey, StoreError};

/// Every token starts with this, so leaked keys are recognisable (secret scanners) and a
/// malformed header is refused without a query.
pub const API_KEY_PREFIX: &str = "wf_live_";
const TOKEN_RANDOM_LEN: usize = 32;

/// A fresh token: the prefix and 32 random alphanumerics (~190 bits).
fn new_token() -> String {
    let random: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(TOKEN_RANDOM_LEN)
        .map(char::from)
        .collect();
    format!("{API_KEY_PREFIX}{random}")
}

/// Whether `token` has the shape [`new_token`] produces.
fn looks_like_token(token: &str) -> bool {
    token.strip_prefix(API_KEY_PREFIX).is_some_and(|rest| {
        rest.len() == TOKEN_RANDOM_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// What is stored instead of the token. A fast unsalted hash is the right tool here: the
/// token is high-entropy random (no dictionary to attack), and a deterministic hash is
/// what makes authentication a single indexed lookup.
fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn api_key_from_row(row: &Row) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: parse_col(row, "id", ApiKeyId::parse)?,
        org_id: parse_col(row, "org_id", OrgId::parse)?,
        name: col(row, "name")?,
        created_at: ms(col(row, "created_at")?),
        revoked_at: col::<Option<_>>(row, "revoked_at")?.map(ms),
    })
}

pub(super) async fn ensure_org_on(
    client: &impl GenericClient,
    org: &OrgId,
) -> Result<(), StoreError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO organisations (id, created_at) \
             VALUES ($1, date_trunc('milliseconds', now())) ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    client.execute(&stmt, &[&org.as_str()]).await?;
    Ok(())
}

impl Store {
    /// Makes sure the organisation exists (idempotent). Organisations are implicit: they
    /// come into being with their first API key or webhook.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn ensure_org(&self, org: &OrgId) -> Result<(), StoreError> {
        let client = self.conn().await?;
        ensure_org_on(&client, org).await
    }

    /// Creates an API key for `org` (creating the organisation if needed) and returns it
    /// with the plaintext token, which is not stored and cannot be shown again.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn create_api_key(
        &self,
        org: &OrgId,
        name: &str,
    ) -> Result<(ApiKey, String), StoreError> {
        let id = ApiKeyId::generate();
        let token = new_token();
        let client = self.conn().await?;
        ensure_org_on(&client, org).await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO api_keys (id, org_id, name, key_hash, created_at) \
                 VALUES ($1, $2, $3, $4, date_trunc('milliseconds', now())) \
                 RETURNING id, org_id, name, created_at, revoked_at",
            )
            .await?;
        let row = client
            .query_one(
                &stmt,
                &[&id.as_str(), &org.as_str(), &name, &hash_token(&token)],
            )
            .await?;
        Ok((api_key_from_row(&row)?, token))
    }

    /// Revokes a key. With `org`, only a key of that organisation (the API path); without,
    /// any key (the operator CLI).
    ///
    /// Returns the revoked key, or `None` when it is unknown, already revoked, or belongs
    /// to another organisation — one answer for all three, so the API leaks nothing.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn revoke_api_key(
        &self,
        org: Option<&OrgId>,
        id: &ApiKeyId,
    ) -> Result<Option<ApiKey>, StoreError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE api_keys SET revoked_at = date_trunc('milliseconds', now()) \
                 WHERE id = $1 AND revoked_at IS NULL AND ($2::text IS NULL OR org_id = $2) \
                 RETURNING id, org_id, name, created_at, revoked_at",
            )
            .await?;
        let row = client
            .query_opt(&stmt, &[&id.as_str(), &org.map(OrgId::as_str)])
            .await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    /// The active key a bearer token belongs to, or `None` when the token is malformed,
    /// unknown or revoked. One lookup on the unique hash index; a malformed token costs no
    /// query at all.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn authenticate(&self, token: &str) -> Result<Option<ApiKey>, StoreError> {
        if !looks_like_token(token) {
            return Ok(None);
        }
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, org_id, name, created_at, revoked_at FROM api_keys \
                 WHERE key_hash = $1 AND revoked_at IS NULL",
            )
            .await?;
        let row = client.query_opt(&stmt, &[&hash_token(token)]).await?;
        row.as_ref().map(api_key_from_row).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        let t = new_token();
        assert!(t.starts_with("wf_live_"));
        assert_eq!(t.len(), 8 + 32);
        assert!(looks_like_token(&t));
        assert_ne!(new_token(), t);
        assert!(!looks_like_token("wf_live_short"));
        assert!(!looks_like_token(&format!("wf_test_{}", &t[8..])));
        assert!(!looks_like_token(&format!("{}!", &t[..t.len() - 1])));
        assert_eq!(hash_token(&t).len(), 32);
    }
}
