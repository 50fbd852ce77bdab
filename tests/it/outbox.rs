//! The system-event outbox (`wf_service::outbox`) against the real Postgres and RabbitMQ: an event
//! the broker takes is published and leaves nothing behind; one it refuses stays parked,
//! and the relay publishes it once the broker takes events again.

use std::time::Duration;

use serde_json::Map;
use wf_broker::{names, Broker, Topology};
use wf_core::config::QueueType;
use wf_core::envelope::Event;
use wf_core::events::EventType;
use wf_core::ids::{EventId, OrgId};
use wf_service::outbox::{emit, relay_once, Emitted};
use wf_store::Store;

use wf_testkit::{Database, Vhost};

use crate::harness::refuse_events;

fn topology() -> Topology {
    Topology {
        queue_type: QueueType::Quorum,
        retry_delays: vec![Duration::from_secs(5)],
        quorum_group_size: None,
    }
}

fn event() -> Event {
    Event {
        id: EventId::generate(),
        event: EventType::WebhookDisabled,
        org_id: OrgId::parse("org_outbox").unwrap(),
        timestamp: wf_core::time::now_ms(),
        data: Map::new(),
    }
}

struct Setup {
    store: Store,
    broker: Broker,
    vhost: Vhost,
    _db: Database,
}

async fn setup() -> Setup {
    let db = Database::create().await;
    wf_store::migrate(&db.url()).await.unwrap();
    let store = Store::connect(&db.url(), [7; 32], 4).await.unwrap();
    let vhost = Vhost::create();
    let broker = Broker::connect(&vhost.url()).await.unwrap();
    broker.declare_topology(&topology()).await.unwrap();
    Setup {
        store,
        broker,
        vhost,
        _db: db,
    }
}

/// The message on `workflows.fanout`, if any: its message id and body.
async fn fanned_out(broker: &Broker) -> Option<(String, Vec<u8>)> {
    let m = broker.get(names::FANOUT_QUEUE).await.unwrap()?;
    let out = (m.message_id.clone().unwrap_or_default(), m.body.clone());
    m.ack().await.unwrap();
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_broker_takes_is_published_and_not_left_parked() {
    let s = setup().await;
    let publisher = s.broker.publisher().await.unwrap();
    let ev = event();

    let emitted = emit(&s.store, &publisher, &ev, "system").await;
    assert_eq!(emitted, Emitted::Published);
    let (id, body) = fanned_out(&s.broker).await.expect("published");
    assert_eq!(id, ev.id.as_str());
    assert_eq!(body, ev.to_wire());
    assert_eq!(s.store.parked_events().await.unwrap(), 0);
    // Nothing for a relay to do.
    assert_eq!(relay_once(&s.store, &publisher).await, 0);
    assert!(fanned_out(&s.broker).await.is_none());
    s.broker.close().await;
}

/// Postgres unavailable (here: the pool closed): the event cannot even be parked. `emit`
/// says so (`Lost`), counts it as `publish_failed`, and publishes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_cannot_be_parked_is_reported_lost_and_not_published() {
    let s = setup().await;
    let publisher = s.broker.publisher().await.unwrap();
    let failed = || {
        wf_telemetry::metrics()
            .events_rejected
            .with_label_values(&["publish_failed"])
            .get()
    };
    let before = failed();
    s.store.close();
    assert_eq!(
        emit(&s.store, &publisher, &event(), "system").await,
        Emitted::Lost
    );
    assert!(failed() > before);
    assert!(fanned_out(&s.broker).await.is_none());
    s.broker.close().await;
}

/// `workflows.fanout` unbound from `workflows.events`: every event publish is unroutable
/// (mandatory), as when the topology is gone. The event stays parked; once the binding is
/// back the relay publishes it, the same id and bytes, and removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_broker_refuses_is_parked_and_the_relay_publishes_it_later() {
    let s = setup().await;
    let publisher = s.broker.publisher().await.unwrap();
    let conn = refuse_events(&s.vhost).await;

    let deferred_before = wf_telemetry::metrics().system_events_deferred.get();
    let ev = event();
    let emitted = emit(&s.store, &publisher, &ev, "system").await;
    assert_eq!(emitted, Emitted::Parked);
    assert_eq!(s.store.parked_events().await.unwrap(), 1);
    assert!(wf_telemetry::metrics().system_events_deferred.get() > deferred_before);

    s.broker.declare_topology(&topology()).await.unwrap();
    assert!(fanned_out(&s.broker).await.is_none());
    assert_eq!(relay_once(&s.store, &publisher).await, 1);
    let (id, body) = fanned_out(&s.broker).await.expect("relayed");
    assert_eq!(id, ev.id.as_str());
    assert_eq!(body, ev.to_wire());
    assert_eq!(s.store.parked_events().await.unwrap(), 0);
    let _ = conn.close(200, "done".into()).await;
    s.broker.close().await;
}
