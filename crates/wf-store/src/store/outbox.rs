//! The system-event outbox: events parked until the broker confirmed them (V3 migration).

use std::time::Duration;

use wf_core::events::EventType;
use wf_core::ids::{EventId, OrgId};

use super::{col, Store};
use crate::StoreError;

/// A parked event as a relay publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParkedEvent {
    /// The outbox row, for [`Store::unpark_event`].
    pub id: i64,
    pub org_id: String,
    pub event_id: String,
    /// The event type: the routing key.
    pub event: String,
    /// The wire JSON, published as is.
    pub body: String,
    /// The `x-wf-source` header.
    pub source: String,
    /// Relay tries including this one.
    pub attempts: i32,
}

/// A duration as the float seconds of `make_interval(secs => …)`.
fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Store {
    /// Parks an event before it is published. A relay publishes it once `due_in` has
    /// passed unless [`Store::unpark_event`] removed it first. Returns the row id.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn park_event(
        &self,
        org: &OrgId,
        event_id: &EventId,
        event: EventType,
        body: &str,
        source: &str,
        due_in: Duration,
    ) -> Result<i64, StoreError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO event_outbox (org_id, event_id, event, body, source, next_attempt_at) \
                 VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6::float8)) RETURNING id",
            )
            .await?;
        let row = client
            .query_one(
                &stmt,
                &[
                    &org.as_str(),
                    &event_id.as_str(),
                    &event.as_str(),
                    &body,
                    &source,
                    &secs(due_in),
                ],
            )
            .await?;
        col(&row, "id")
    }

    /// Removes a parked event: the broker confirmed it. A missing row is not an error
    /// (another relay got there first).
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn unpark_event(&self, id: i64) -> Result<(), StoreError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached("DELETE FROM event_outbox WHERE id = $1")
            .await?;
        client.execute(&stmt, &[&id]).await?;
        Ok(())
    }

    /// Makes parked events due again after `due_in` (zero: now): the broker refused them,
    /// so they should not wait out a relay's whole lease or the emitter's window.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn reschedule_parked(&self, ids: &[i64], due_in: Duration) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE event_outbox SET next_attempt_at = now() + make_interval(secs => $2::float8) \
                 WHERE id = ANY($1)",
            )
            .await?;
        client.execute(&stmt, &[&ids, &secs(due_in)]).await?;
        Ok(())
    }

    /// Claims up to `limit` due events, oldest first, for one relay: each becomes due
    /// again only after `lease`, so another relay does not publish it meanwhile, and one
    /// whose relay died is picked up after the lease.
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn claim_parked_events(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<ParkedEvent>, StoreError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE event_outbox SET attempts = attempts + 1, \
                 next_attempt_at = now() + make_interval(secs => $2::float8) \
                 WHERE id IN (SELECT id FROM event_outbox WHERE next_attempt_at <= now() \
                 ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) \
                 RETURNING id, org_id, event_id, event, body, source, attempts",
            )
            .await?;
        let rows = client.query(&stmt, &[&limit, &secs(lease)]).await?;
        let mut parked = rows
            .iter()
            .map(|r| {
                Ok(ParkedEvent {
                    id: col(r, "id")?,
                    org_id: col(r, "org_id")?,
                    event_id: col(r, "event_id")?,
                    event: col(r, "event")?,
                    body: col(r, "body")?,
                    source: col(r, "source")?,
                    attempts: col(r, "attempts")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // RETURNING has no order; publish in the order they were parked.
        parked.sort_by_key(|p| p.id);
        Ok(parked)
    }

    /// How many events are parked (due or not).
    ///
    /// # Errors
    /// [`StoreError::Pool`] / [`StoreError::Db`].
    pub async fn parked_events(&self) -> Result<i64, StoreError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached("SELECT count(*) AS n FROM event_outbox")
            .await?;
        col(&client.query_one(&stmt, &[]).await?, "n")
    }
}
