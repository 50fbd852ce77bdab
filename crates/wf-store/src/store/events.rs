//! Event idempotency: the same (organisation, event id) within 24 hours is one event.

use chrono::{DateTime, Utc};
use wf_core::events::EventType;
use wf_core::ids::{EventId, OrgId};

use super::{col, Store};
use crate::{EventRecord, StoreError};

impl Store {
    /// Records the first sighting of an event id, or reports the earlier one.
    ///
    /// Returns [`EventRecord::New`] when the id was not seen in the last 24 hours (a row
    /// older than that is replaced: the idempotency window is over), else
    /// [`EventRecord::Existing`] with the stored response and whether its publish was
    /// confirmed. Concurrent calls with the same id get exactly one `New`.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn record_event(
        &self,
        org: &OrgId,
        id: &EventId,
        event: EventType,
        response: &serde_json::Value,
    ) -> Result<EventRecord, StoreError> {
        let client = self.conn().await?;
        // Two statements, not one: after a conflict with a row committed by a concurrent
        // request, only a new statement (new snapshot) can read that row.
        let upsert = client
            .prepare_cached(
                "INSERT INTO events (org_id, id, event, response, published, created_at) \
                 VALUES ($1, $2, $3, $4, false, date_trunc('milliseconds', now())) \
                 ON CONFLICT (org_id, id) DO UPDATE SET \
                 event = EXCLUDED.event, response = EXCLUDED.response, \
                 published = false, created_at = EXCLUDED.created_at \
                 WHERE events.created_at <= now() - interval '24 hours' \
                 RETURNING 1",
            )
            .await?;
        let select = client
            .prepare_cached("SELECT published, response FROM events WHERE org_id = $1 AND id = $2")
            .await?;
        // The row can only vanish between the two statements if it was pruned, which
        // takes rows the upsert would have replaced; a second round settles it.
        for _ in 0..3 {
            let inserted = client
                .query_opt(
                    &upsert,
                    &[&org.as_str(), &id.as_str(), &event.as_str(), response],
                )
                .await?;
            if inserted.is_some() {
                return Ok(EventRecord::New);
            }
            if let Some(row) = client
                .query_opt(&select, &[&org.as_str(), &id.as_str()])
                .await?
            {
                return Ok(EventRecord::Existing {
                    published: col(&row, "published")?,
                    response: col(&row, "response")?,
                });
            }
        }
        Err(StoreError::decode(format_args!(
            "event {id} of {org} neither inserted nor found"
        )))
    }

    /// Notes that the event's publish was confirmed by the broker, so a repeat of the
    /// request is answered from the record without publishing again. A missing row is not
    /// an error (it may have been pruned).
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn mark_event_published(&self, org: &OrgId, id: &EventId) -> Result<(), StoreError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached("UPDATE events SET published = true WHERE org_id = $1 AND id = $2")
            .await?;
        client
            .execute(&stmt, &[&org.as_str(), &id.as_str()])
            .await?;
        Ok(())
    }

    /// Deletes idempotency records created before `older_than` (anything past the 24-hour
    /// window is dead weight), `batch` rows per statement so no lock is held for long.
    /// Returns how many were deleted.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn prune_events(
        &self,
        older_than: DateTime<Utc>,
        batch: i64,
    ) -> Result<u64, StoreError> {
        self.delete_in_batches(
            // Oldest first along events_created_idx; deleted by ctid (a TID scan).
            "DELETE FROM events WHERE ctid = ANY(ARRAY(\
             SELECT ctid FROM events WHERE created_at < $1 \
             ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED))",
            older_than,
            batch,
            &[],
        )
        .await
    }
}
