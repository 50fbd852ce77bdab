//! Auto-disabling webhooks that keep failing, from the per-webhook health the delivery
//! log keeps ([`Store::record_attempts`] upserts it in the same statement as the
//! attempts), so neither the check nor the hot path ever scans the delivery log.

use chrono::{DateTime, Utc};
use wf_core::ids::WebhookId;

use super::webhooks::webhook_cols_w;
use super::{col, Store};
use crate::{StoreError, Webhook, WebhookHealth};

/// The reason recorded on a webhook the check disables.
pub const FAILING: &str = "failing";

impl Store {
    /// Disables every active webhook whose failing streak started at or before `cutoff`
    /// (no `2xx` since) with at least `min_failures` failed attempts in it, recording the
    /// reason [`FAILING`], and returns them. Also drops the health rows of deleted
    /// webhooks. Runs only if no other process is running it (an advisory lock, as the
    /// retention pruning does): `None` when another holds it.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn try_auto_disable(
        &self,
        cutoff: DateTime<Utc>,
        min_failures: u32,
    ) -> Result<Option<Vec<Webhook>>, StoreError> {
        const LOCK: i64 = 0x7766_5f61_7574_6f64; // "wf_autod"
        let client = self.conn().await?;
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK])
            .await?
            .get(0);
        if !got {
            return Ok(None);
        }
        let result = async {
            let disable = client
                .prepare_cached(concat!(
                    "UPDATE webhooks w SET is_active = false, disabled_reason = $3, \
                     updated_at = date_trunc('milliseconds', now()) \
                     FROM webhook_health h \
                     WHERE h.webhook_id = w.id AND w.is_active \
                     AND h.failing_since <= $1 AND h.failures >= $2 \
                     RETURNING ",
                    webhook_cols_w!()
                ))
                .await?;
            let min = i32::try_from(min_failures).unwrap_or(i32::MAX);
            let rows = client.query(&disable, &[&cutoff, &min, &FAILING]).await?;
            let orphans = client
                .prepare_cached(
                    "DELETE FROM webhook_health h WHERE NOT EXISTS \
                     (SELECT 1 FROM webhooks w WHERE w.id = h.webhook_id)",
                )
                .await?;
            client.execute(&orphans, &[]).await?;
            rows.iter()
                .map(super::webhooks::webhook_from_row)
                .collect::<Result<Vec<_>, _>>()
        }
        .await;
        let _ = client
            .execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
            .await;
        result.map(Some)
    }

    /// The delivery health of a webhook; `None` before its first logged attempt (and
    /// after it was enabled again).
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn webhook_health(
        &self,
        id: &WebhookId,
    ) -> Result<Option<WebhookHealth>, StoreError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "SELECT last_success_at, failing_since, failures, last_failure_at \
                 FROM webhook_health WHERE webhook_id = $1",
            )
            .await?;
        let Some(row) = client.query_opt(&stmt, &[&id.as_str()]).await? else {
            return Ok(None);
        };
        let failures: i32 = col(&row, "failures")?;
        Ok(Some(WebhookHealth {
            last_success_at: col(&row, "last_success_at")?,
            failing_since: col(&row, "failing_since")?,
            failures: u32::try_from(failures).unwrap_or(0),
            last_failure_at: col(&row, "last_failure_at")?,
        }))
    }
}
