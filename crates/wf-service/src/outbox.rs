//! System events (`webhook.created`, `webhook.disabled`, `api_key.deleted`, …) through an
//! outbox, so that a broker outage delays them instead of losing them.
//!
//! [`emit`] parks the event in Postgres (`event_outbox`), publishes it with a confirm and
//! removes it. When the publish fails, the event stays parked and is due at once; a
//! [`relay`] runs in every service and publishes due events until the broker confirms
//! them. A relay claims events under a lease, so two relays do not publish the same event
//! at once, and one that dies mid-way leaves its events to the next after the lease.
//! An event may be published twice (a crash between the confirm and the removal): it keeps
//! its id, and delivery ids derive from it, so subscribers still see one delivery id per
//! webhook (at least once, as everywhere).
//!
//! What is not covered: an event whose management action committed but that could not
//! even be parked (Postgres failed between the two statements) is lost; [`emit`] logs it
//! and counts it in `wf_events_rejected_total{reason="publish_failed"}`.
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use wf_broker::routes::publish_event_wire;
use wf_broker::Publisher;
use wf_core::envelope::Event;
use wf_store::{ParkedEvent, Store};
use wf_telemetry::metrics;

/// How long an emitter has to publish its event itself before a relay may.
pub const EMIT_WINDOW: Duration = Duration::from_secs(30);
/// How often a relay looks for due events.
pub const RELAY_EVERY: Duration = Duration::from_secs(2);
/// How long a relay holds the events it claimed before another relay may try them.
pub const LEASE: Duration = Duration::from_secs(30);
/// When a relay tries again after the broker refused an event.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Events a relay claims per round.
const BATCH: i64 = 100;

/// What became of an emitted event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emitted {
    /// The broker confirmed it.
    Published,
    /// The broker did not take it; it is parked and a relay publishes it.
    Parked,
    /// It could not even be parked (Postgres unavailable): lost, logged and counted in
    /// `wf_events_rejected_total{reason="publish_failed"}`. The management action that
    /// caused it stands: it was committed before.
    Lost,
}

/// Emits a system event published with `x-wf-source: source`. Never fails the caller:
/// every outcome is handled (and a lost event reported) here.
pub async fn emit(store: &Store, publisher: &Publisher, event: &Event, source: &str) -> Emitted {
    let body = String::from_utf8(event.to_wire()).expect("JSON is UTF-8");
    let parked = store
        .park_event(
            &event.org_id,
            &event.id,
            event.event,
            &body,
            source,
            EMIT_WINDOW,
        )
        .await;
    let id = match parked {
        Ok(id) => id,
        Err(e) => {
            metrics()
                .events_rejected
                .with_label_values(&["publish_failed"])
                .inc();
            error!(error = %e, event = event.event.as_str(), event_id = %event.id, "could not emit system event: the outbox is unavailable");
            return Emitted::Lost;
        }
    };
    let published = publish_event_wire(
        publisher,
        event.event.as_str(),
        event.id.as_str(),
        body.as_bytes(),
        source,
    )
    .await;
    match published {
        Ok(()) => {
            confirmed(event.event.as_str(), source);
            if let Err(e) = store.unpark_event(id).await {
                warn!(error = %e, event_id = %event.id, "system event published but still parked; a relay will publish it again");
            }
            Emitted::Published
        }
        Err(e) => {
            metrics().system_events_deferred.inc();
            warn!(error = %e, event = event.event.as_str(), event_id = %event.id, "could not publish system event; parked for the relay");
            if let Err(e) = store.reschedule_parked(&[id], Duration::ZERO).await {
                warn!(error = %e, event_id = %event.id, "could not mark the parked event due; the relay takes it in {EMIT_WINDOW:?}");
            }
            Emitted::Parked
        }
    }
}

/// Counts a confirmed event: the ingestor's (`source` `http`) are ingested events.
fn confirmed(event: &str, source: &str) {
    if source == "http" {
        metrics()
            .events_ingested
            .with_label_values(&["http", event])
            .inc();
    }
}

/// Publishes parked events that are due, every [`RELAY_EVERY`], until `stop`.
pub async fn relay(store: Store, publisher: Publisher, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RELAY_EVERY) => {}
        }
        relay_once(&store, &publisher).await;
    }
}

/// One relay round: claims due events and publishes them in the order they were parked,
/// stopping at the first the broker refuses; that one and the rest are tried again after
/// [`RETRY_AFTER`]. Returns how many were published. Also refreshes
/// `wf_system_events_parked`.
pub async fn relay_once(store: &Store, publisher: &Publisher) -> usize {
    let parked = match store.claim_parked_events(BATCH, LEASE).await {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "could not read the system-event outbox; will retry");
            return 0;
        }
    };
    let mut published = 0;
    for (i, p) in parked.iter().enumerate() {
        if let Err(e) = publish_parked(store, publisher, p).await {
            warn!(error = %e, event = %p.event, event_id = %p.event_id, attempts = p.attempts,
                "parked system event still not published; retrying in {RETRY_AFTER:?}");
            let rest: Vec<i64> = parked[i..].iter().map(|p| p.id).collect();
            if let Err(e) = store.reschedule_parked(&rest, RETRY_AFTER).await {
                warn!(error = %e, "could not reschedule parked events; they wait for their lease");
            }
            break;
        }
        published += 1;
    }
    if let Ok(n) = store.parked_events().await {
        metrics().system_events_parked.set(n);
    }
    published
}

async fn publish_parked(
    store: &Store,
    publisher: &Publisher,
    p: &ParkedEvent,
) -> Result<(), wf_broker::PublishError> {
    publish_event_wire(
        publisher,
        &p.event,
        &p.event_id,
        p.body.as_bytes(),
        &p.source,
    )
    .await?;
    confirmed(&p.event, &p.source);
    info!(event = %p.event, event_id = %p.event_id, attempts = p.attempts, "published a parked system event");
    if let Err(e) = store.unpark_event(p.id).await {
        warn!(error = %e, event_id = %p.event_id, "parked system event published but not removed; it will be published again");
    }
    Ok(())
}
