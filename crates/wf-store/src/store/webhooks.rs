//! Webhooks (management side) and subscriptions (worker side).

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use wf_core::events::EventType;
use wf_core::headers::CustomHeaders;
use wf_core::ids::{OrgId, WebhookId};
use wf_core::signing::WebhookSecret;

use super::keys::ensure_org_on;
use super::{col, ms, page_limit, parse_col, Store};
use crate::{cursor, NewWebhook, Page, StoreError, Subscription, Webhook, WebhookPatch};

/// The columns [`webhook_from_row`] reads, in one place so every statement agrees.
macro_rules! webhook_cols {
    () => {
        "id, org_id, name, url, events, is_active, disabled_reason, rate_limit, header_names, \
         created_at, updated_at"
    };
}

/// [`webhook_cols`] qualified with the table alias `w`, for statements that join.
macro_rules! webhook_cols_w {
    () => {
        "w.id, w.org_id, w.name, w.url, w.events, w.is_active, w.disabled_reason, \
         w.rate_limit, w.header_names, w.created_at, w.updated_at"
    };
}
pub(crate) use webhook_cols_w;

/// The columns [`Store::subscription_from_row`] reads. The previous secret is returned only
/// while it is valid, so no caller can sign with an expired one.
macro_rules! subscription_cols {
    () => {
        "id, org_id, url, rate_limit, secret_ciphertext, headers_ciphertext, \
         CASE WHEN previous_expires_at > now() THEN previous_secret_ciphertext END \
         AS previous_secret_ciphertext"
    };
}

pub(super) fn webhook_from_row(row: &Row) -> Result<Webhook, StoreError> {
    Ok(Webhook {
        id: parse_col(row, "id", WebhookId::parse)?,
        org_id: parse_col(row, "org_id", OrgId::parse)?,
        name: col(row, "name")?,
        url: col(row, "url")?,
        events: col(row, "events")?,
        is_active: col(row, "is_active")?,
        disabled_reason: col(row, "disabled_reason")?,
        rate_limit: rate_limit_col(row)?,
        header_names: col(row, "header_names")?,
        created_at: ms(col(row, "created_at")?),
        updated_at: ms(col(row, "updated_at")?),
    })
}

fn rate_limit_col(row: &Row) -> Result<Option<u32>, StoreError> {
    let v: Option<i32> = col(row, "rate_limit")?;
    v.map(|n| {
        u32::try_from(n)
            .map_err(|_| StoreError::decode(format_args!("rate_limit out of range: {n}")))
    })
    .transpose()
}

fn webhooks_page(rows: &[Row], limit: i64) -> Result<Page<Webhook>, StoreError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let has_more = rows.len() > limit;
    let rows = &rows[..rows.len().min(limit)];
    let items = rows
        .iter()
        .map(webhook_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = match rows.last() {
        Some(last) if has_more => {
            // The raw timestamp (µs), not the truncated one shown: the keyset must match
            // the stored value exactly.
            let at: DateTime<Utc> = col(last, "created_at")?;
            let id: &str = col(last, "id")?;
            Some(cursor::encode(at, id))
        }
        _ => None,
    };
    Ok(Page { items, next_cursor })
}

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl Store {
    /// Creates a webhook with a fresh secret, returned here once (it is stored encrypted
    /// and only ever decrypted for signing). Creates the organisation if needed.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn create_webhook(
        &self,
        org: &OrgId,
        new: NewWebhook,
    ) -> Result<(Webhook, WebhookSecret), StoreError> {
        self.create_webhook_with_headers(org, new, &CustomHeaders::default())
            .await
    }

    /// [`create_webhook`](Store::create_webhook) with custom request headers, whose values
    /// are stored encrypted like the secret.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn create_webhook_with_headers(
        &self,
        org: &OrgId,
        new: NewWebhook,
        headers: &CustomHeaders,
    ) -> Result<(Webhook, WebhookSecret), StoreError> {
        let id = WebhookId::generate();
        let secret = WebhookSecret::generate();
        let sealed = self.secrets.seal(&id, &secret)?;
        let (header_names, sealed_headers) = self.sealed_headers(&id, headers)?;
        let client = self.conn().await?;
        ensure_org_on(&client, org).await?;
        let stmt = client
            .prepare_cached(concat!(
                "INSERT INTO webhooks (id, org_id, name, url, events, is_active, secret_ciphertext, \
                 rate_limit, header_names, headers_ciphertext, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                 date_trunc('milliseconds', now()), date_trunc('milliseconds', now())) \
                 RETURNING ",
                webhook_cols!()
            ))
            .await?;
        let row = client
            .query_one(
                &stmt,
                &[
                    &id.as_str(),
                    &org.as_str(),
                    &new.name,
                    &new.url,
                    &new.events,
                    &new.is_active,
                    &sealed,
                    &new.rate_limit.map(to_i32),
                    &header_names,
                    &sealed_headers,
                ],
            )
            .await?;
        Ok((webhook_from_row(&row)?, secret))
    }

    /// One webhook of `org`; `None` if it does not exist or belongs to another
    /// organisation (the API answers 404 for both).
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn get_webhook(
        &self,
        org: &OrgId,
        id: &WebhookId,
    ) -> Result<Option<Webhook>, StoreError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                webhook_cols!(),
                " FROM webhooks WHERE id = $1 AND org_id = $2"
            ))
            .await?;
        let row = client
            .query_opt(&stmt, &[&id.as_str(), &org.as_str()])
            .await?;
        row.as_ref().map(webhook_from_row).transpose()
    }

    /// The webhooks of `org`, oldest first, `limit` (1..=1000) at a time.
    ///
    /// Keyset pagination on `(created_at, id)`: `cursor` is the `next_cursor` of the
    /// previous page; a page never repeats or skips a row that existed throughout.
    ///
    /// # Errors
    /// [`StoreError::InvalidCursor`] for a cursor this listing did not issue;
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn list_webhooks(
        &self,
        org: &OrgId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Webhook>, StoreError> {
        let after = cursor
            .map(|c| cursor::decode(c, WebhookId::parse))
            .transpose()?;
        let limit = page_limit(limit);
        let client = self.conn().await?;
        let rows = match &after {
            None => {
                let stmt = client
                    .prepare_cached(concat!(
                        "SELECT ",
                        webhook_cols!(),
                        " FROM webhooks WHERE org_id = $1 ORDER BY created_at, id LIMIT $2"
                    ))
                    .await?;
                client.query(&stmt, &[&org.as_str(), &(limit + 1)]).await?
            }
            Some((at, id)) => {
                let stmt = client
                    .prepare_cached(concat!(
                        "SELECT ",
                        webhook_cols!(),
                        " FROM webhooks WHERE org_id = $1 AND (created_at, id) > ($3, $4) \
                         ORDER BY created_at, id LIMIT $2"
                    ))
                    .await?;
                client
                    .query(&stmt, &[&org.as_str(), &(limit + 1), at, &id.as_str()])
                    .await?
            }
        };
        webhooks_page(&rows, limit)
    }

    /// Applies `patch` to a webhook of `org` and returns it before and after, so the
    /// caller can tell which lifecycle events to emit (`webhook.enabled`/`disabled`).
    /// Setting `is_active` to true clears `disabled_reason`. An empty patch writes nothing.
    ///
    /// `None` when the webhook does not exist or belongs to another organisation.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn update_webhook(
        &self,
        org: &OrgId,
        id: &WebhookId,
        patch: WebhookPatch,
    ) -> Result<Option<(Webhook, Webhook)>, StoreError> {
        if patch.is_empty() {
            return Ok(self.get_webhook(org, id).await?.map(|w| (w.clone(), w)));
        }
        let mut client = self.conn().await?;
        // Lock the row so "before" is exactly the state this update replaced, even with a
        // concurrent PATCH or a system disable.
        let tx = client.transaction().await?;
        let select = tx
            .prepare_cached(concat!(
                "SELECT ",
                webhook_cols!(),
                " FROM webhooks WHERE id = $1 AND org_id = $2 FOR UPDATE"
            ))
            .await?;
        let Some(before) = tx
            .query_opt(&select, &[&id.as_str(), &org.as_str()])
            .await?
        else {
            return Ok(None);
        };
        let headers = patch
            .headers
            .as_ref()
            .map(|h| self.sealed_headers(id, h))
            .transpose()?;
        let update = tx
            .prepare_cached(concat!(
                "UPDATE webhooks SET \
                 name = COALESCE($2::text, name), \
                 url = COALESCE($3::text, url), \
                 events = COALESCE($4::text[], events), \
                 is_active = COALESCE($5::boolean, is_active), \
                 disabled_reason = CASE WHEN $5::boolean THEN NULL ELSE disabled_reason END, \
                 rate_limit = CASE WHEN $6::boolean THEN $7::int ELSE rate_limit END, \
                 header_names = CASE WHEN $8::boolean THEN $9::text[] ELSE header_names END, \
                 headers_ciphertext = CASE WHEN $8::boolean THEN $10::bytea \
                 ELSE headers_ciphertext END, \
                 updated_at = date_trunc('milliseconds', now()) \
                 WHERE id = $1 RETURNING ",
                webhook_cols!()
            ))
            .await?;
        let after = tx
            .query_one(
                &update,
                &[
                    &id.as_str(),
                    &patch.name,
                    &patch.url,
                    &patch.events,
                    &patch.is_active,
                    &patch.rate_limit.is_some(),
                    &patch.rate_limit.flatten().map(to_i32),
                    &headers.is_some(),
                    &headers.as_ref().map(|(names, _)| names),
                    &headers.as_ref().and_then(|(_, sealed)| sealed.as_ref()),
                ],
            )
            .await?;
        let pair = (webhook_from_row(&before)?, webhook_from_row(&after)?);
        if !pair.0.is_active && pair.1.is_active {
            // Enabled again: its failing streak is forgiven, so the auto-disable check
            // gives it a whole window before it can disable it again.
            let forget = tx
                .prepare_cached("DELETE FROM webhook_health WHERE webhook_id = $1")
                .await?;
            tx.execute(&forget, &[&id.as_str()]).await?;
        }
        tx.commit().await?;
        Ok(Some(pair))
    }

    /// Deletes a webhook of `org` and returns what it was. Its delivery log rows stay
    /// (there is no foreign key, see the migration) but are unreachable through the API
    /// and age out with [`prune_deliveries`](Store::prune_deliveries); workers drop its
    /// queued deliveries because [`subscription`](Store::subscription) no longer finds it.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn delete_webhook(
        &self,
        org: &OrgId,
        id: &WebhookId,
    ) -> Result<Option<Webhook>, StoreError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(concat!(
                "DELETE FROM webhooks WHERE id = $1 AND org_id = $2 RETURNING ",
                webhook_cols!()
            ))
            .await?;
        let row = client
            .query_opt(&stmt, &[&id.as_str(), &org.as_str()])
            .await?;
        if row.is_some() {
            // A log batch landing later may recreate it; the auto-disable check removes
            // such orphans.
            let forget = client
                .prepare_cached("DELETE FROM webhook_health WHERE webhook_id = $1")
                .await?;
            client.execute(&forget, &[&id.as_str()]).await?;
        }
        row.as_ref().map(webhook_from_row).transpose()
    }

    /// Replaces the secret of a webhook of `org` and returns the new one. The old secret
    /// becomes `previous_secret` for 24 hours, so receivers verifying Standard Webhooks
    /// signatures can roll over; a second rotation within that window replaces it.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn rotate_secret(
        &self,
        org: &OrgId,
        id: &WebhookId,
    ) -> Result<Option<WebhookSecret>, StoreError> {
        let secret = WebhookSecret::generate();
        let sealed = self.secrets.seal(id, &secret)?;
        let client = self.conn().await?;
        // SET expressions read the row as it was, so the old secret moves over intact.
        // 24 hours of overlap is the documented contract (docs/api.md, "Signatures").
        let stmt = client
            .prepare_cached(
                "UPDATE webhooks SET \
                 previous_secret_ciphertext = secret_ciphertext, \
                 previous_expires_at = now() + interval '24 hours', \
                 secret_ciphertext = $3, \
                 updated_at = date_trunc('milliseconds', now()) \
                 WHERE id = $1 AND org_id = $2 RETURNING id",
            )
            .await?;
        let row = client
            .query_opt(&stmt, &[&id.as_str(), &org.as_str(), &sealed])
            .await?;
        Ok(row.map(|_| secret))
    }

    /// Disables a webhook on the system's initiative (e.g. its endpoint answered 410 Gone),
    /// recording why. Returns the webhook after the change, or `None` if it is missing or
    /// already inactive — so only one of several concurrent workers emits
    /// `webhook.disabled`.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn disable_webhook(
        &self,
        id: &WebhookId,
        reason: &str,
    ) -> Result<Option<Webhook>, StoreError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(concat!(
                "UPDATE webhooks SET is_active = false, disabled_reason = $2, \
                 updated_at = date_trunc('milliseconds', now()) \
                 WHERE id = $1 AND is_active RETURNING ",
                webhook_cols!()
            ))
            .await?;
        let row = client.query_opt(&stmt, &[&id.as_str(), &reason]).await?;
        row.as_ref().map(webhook_from_row).transpose()
    }

    /// The active webhooks of `org` subscribed to `event`, exactly (`alert.created`) or by
    /// category wildcard (`alert.*`), with their decrypted secrets, oldest first.
    ///
    /// The match is done in SQL with array overlap (`events && ARRAY[event, prefix.*]`),
    /// which is exactly [`wf_core::events::EventFilters::matches`] for validated filters.
    ///
    /// # Errors
    /// [`StoreError::Crypto`] when a secret cannot be decrypted (wrong `WF_SECRET_KEY`);
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn subscriptions(
        &self,
        org: &OrgId,
        event: EventType,
    ) -> Result<Vec<Subscription>, StoreError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                subscription_cols!(),
                " FROM webhooks WHERE org_id = $1 AND is_active \
                 AND events && ARRAY[$2::text, $3::text] ORDER BY created_at, id"
            ))
            .await?;
        let wildcard = format!("{}.*", event.prefix());
        let rows = client
            .query(&stmt, &[&org.as_str(), &event.as_str(), &wildcard])
            .await?;
        rows.iter().map(|r| self.subscription_from_row(r)).collect()
    }

    /// One active webhook, for a worker about to deliver to it; `None` when it was deleted
    /// or disabled meanwhile (the delivery is then dropped).
    ///
    /// # Errors
    /// [`StoreError::Crypto`] when its secret cannot be decrypted;
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn subscription(&self, id: &WebhookId) -> Result<Option<Subscription>, StoreError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                subscription_cols!(),
                " FROM webhooks WHERE id = $1 AND is_active"
            ))
            .await?;
        let row = client.query_opt(&stmt, &[&id.as_str()]).await?;
        row.as_ref()
            .map(|r| self.subscription_from_row(r))
            .transpose()
    }

    /// The names (in clear) and the sealed values of `headers`; `None` for no headers.
    fn sealed_headers(
        &self,
        id: &WebhookId,
        headers: &CustomHeaders,
    ) -> Result<(Vec<String>, Option<Vec<u8>>), StoreError> {
        let names = headers.names().map(str::to_owned).collect();
        let sealed = if headers.is_empty() {
            None
        } else {
            Some(self.secrets.seal_headers(id, headers)?)
        };
        Ok((names, sealed))
    }

    fn subscription_from_row(&self, row: &Row) -> Result<Subscription, StoreError> {
        let webhook_id = parse_col(row, "id", WebhookId::parse)?;
        let secret = self
            .secrets
            .open(&webhook_id, col(row, "secret_ciphertext")?)?;
        let previous_secret = col::<Option<&[u8]>>(row, "previous_secret_ciphertext")?
            .map(|sealed| self.secrets.open(&webhook_id, sealed))
            .transpose()?;
        let headers = col::<Option<&[u8]>>(row, "headers_ciphertext")?
            .map(|sealed| self.secrets.open_headers(&webhook_id, sealed))
            .transpose()?
            .unwrap_or_default();
        Ok(Subscription {
            headers,
            rate_limit: rate_limit_col(row)?,
            org_id: parse_col(row, "org_id", OrgId::parse)?,
            url: col(row, "url")?,
            webhook_id,
            secret,
            previous_secret,
        })
    }
}
