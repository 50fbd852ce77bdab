//! The producer side: events of a chosen size, published at a chosen rate straight to
//! `workflows.events` over AMQP (many confirms in flight) or through the ingestor's
//! `POST /api/v1/events` (many keep-alive connections).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use wf_broker::{OutgoingMessage, Publisher};
use wf_core::ids::EventId;

use super::http::HttpConn;

/// The event type every bench event has (each bench webhook subscribes to it).
pub const EVENT_TYPE: &str = "alert.created";
/// AMQP publishes in flight at once (their confirms are pipelined on one channel).
pub const MAX_AMQP_IN_FLIGHT: usize = 2000;
/// Concurrent `POST /api/v1/events` requests, one keep-alive connection each.
pub const HTTP_CONCURRENCY: usize = 64;

/// Builds the bench's events: `data` is `{"seq", "sentAtMicros", "pad"}`, the padding
/// sized so that the delivery body (`{"event","orgId","timestamp","data"}`) is about
/// `payload_bytes` long.
pub struct EventFactory {
    org: String,
    pad: String,
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl EventFactory {
    pub fn new(org: &str, payload_bytes: usize) -> EventFactory {
        let mut f = EventFactory {
            org: org.to_owned(),
            pad: String::new(),
        };
        // A typical seq (5 digits) and a full µs timestamp.
        let bare = f.delivery_body(10_000).len();
        f.pad = "x".repeat(payload_bytes.saturating_sub(bare));
        f
    }

    fn data(&self, seq: u64) -> Value {
        json!({"seq": seq, "sentAtMicros": now_micros(), "pad": self.pad})
    }

    fn timestamp() -> String {
        wf_core::time::format_ms(chrono::Utc::now())
    }

    /// What a subscriber receives for event `seq` (for sizing only).
    pub fn delivery_body(&self, seq: u64) -> Vec<u8> {
        let v = json!({"event": EVENT_TYPE, "orgId": self.org, "timestamp": Self::timestamp(), "data": self.data(seq)});
        serde_json::to_vec(&v).expect("serialising JSON cannot fail")
    }

    /// The AMQP message for `workflows.events` (docs/api.md, "Over AMQP"), with a fresh
    /// event id.
    pub fn amqp_body(&self, seq: u64) -> Vec<u8> {
        let v = json!({
            "id": EventId::generate(),
            "event": EVENT_TYPE,
            "orgId": self.org,
            "timestamp": Self::timestamp(),
            "data": self.data(seq),
        });
        serde_json::to_vec(&v).expect("serialising JSON cannot fail")
    }

    /// The body of `POST /api/v1/events` (the organisation comes from the API key).
    pub fn http_body(&self, seq: u64) -> Vec<u8> {
        let v = json!({
            "id": EventId::generate(),
            "event": EVENT_TYPE,
            "timestamp": Self::timestamp(),
            "data": self.data(seq),
        });
        serde_json::to_vec(&v).expect("serialising JSON cannot fail")
    }
}

/// How a publishing run went.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub published: u64,
    pub failed: u64,
    /// Publishes made again after a failure ([`Plan::persist`]).
    pub retried: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

/// How many events a run publishes, how fast, and what becomes of a failed publish.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Event `i` is published only while `i < limit`; raising it while the run goes on
    /// makes the stream longer (`wfctl chaos` keeps streaming until a fault is over).
    pub limit: Arc<AtomicU64>,
    /// Events per second; 0 publishes as fast as confirms come back.
    pub rate: f64,
    /// `Some(patience)`: a publish that failed is made again, with the same event (same
    /// id, so a retry of one whose confirm was lost fans out once), until it is confirmed
    /// or `patience` has passed since its first try, as a producer that must not lose
    /// events would. `None`: the failure is counted and the run moves on.
    pub persist: Option<Duration>,
    /// Events confirmed so far, readable while the run goes on.
    pub confirmed: Arc<AtomicU64>,
}

impl Plan {
    /// `n` events at `rate`, failures counted, not retried.
    pub fn fixed(n: u64, rate: f64) -> Plan {
        Plan {
            limit: Arc::new(AtomicU64::new(n)),
            rate,
            persist: None,
            confirmed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Claims the next event index, `None` once the limit is reached.
    fn claim(&self, next: &AtomicU64) -> Option<u64> {
        let i = next.fetch_add(1, Ordering::Relaxed);
        (i < self.limit.load(Ordering::Relaxed)).then_some(i)
    }
}

/// A pause between two tries of a persisted publish.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn record(&self, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(e);
            }
        }
    }

    fn report(&self, elapsed: Duration) -> LoadReport {
        LoadReport {
            published: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            first_error: self
                .first_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            elapsed,
        }
    }
}

/// Whether an attempt that failed may be tried again under [`Plan::persist`].
enum Failure {
    /// The service may take it later (broker or database away, 5xx, timeout).
    Transient(String),
    /// Trying again cannot help (the request itself was refused).
    Final(String),
}

/// After one try of a publish that started at `first`: `Some(outcome)` when the publish is
/// settled (recorded here), `None` when it should be tried again (after a pause, taken
/// here) under [`Plan::persist`].
async fn settle(
    plan: &Plan,
    tally: &Tally,
    first: Instant,
    tried: Result<(), Failure>,
) -> Option<()> {
    let result = match tried {
        Ok(()) => Ok(()),
        Err(Failure::Final(e)) => Err(e),
        Err(Failure::Transient(e)) => match plan.persist {
            Some(patience) if first.elapsed() < patience => {
                tally.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RETRY_PAUSE).await;
                return None;
            }
            _ => Err(e),
        },
    };
    if result.is_ok() {
        plan.confirmed.fetch_add(1, Ordering::Relaxed);
    }
    tally.record(result);
    Some(())
}

/// When message `i` of a run started at `start` is due at `rate` per second (0: now).
fn due(start: Instant, i: u64, rate: f64) -> Option<tokio::time::Instant> {
    (rate > 0.0).then(|| (start + Duration::from_secs_f64(i as f64 / rate)).into())
}

/// Publishes the messages made by `body(i)` to `exchange`/`routing_key` as `plan` says,
/// with up to [`MAX_AMQP_IN_FLIGHT`] unconfirmed at once; returns when every one was
/// confirmed or failed.
pub async fn publish_amqp(
    publisher: &Publisher,
    exchange: Arc<str>,
    routing_key: Arc<str>,
    plan: &Plan,
    body: impl Fn(u64) -> Vec<u8>,
) -> LoadReport {
    let slots = Arc::new(Semaphore::new(MAX_AMQP_IN_FLIGHT));
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let next = AtomicU64::new(0);
    while let Some(i) = plan.claim(&next) {
        if let Some(at) = due(start, i, plan.rate) {
            tokio::time::sleep_until(at).await;
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let body = body(i);
        let publisher = publisher.clone();
        let (tally, plan) = (tally.clone(), plan.clone());
        let (exchange, routing_key) = (exchange.clone(), routing_key.clone());
        tokio::spawn(async move {
            let first = Instant::now();
            loop {
                let tried = publisher
                    .publish(OutgoingMessage {
                        exchange: &exchange,
                        routing_key: &routing_key,
                        body: &body,
                        message_id: None,
                        headers: Vec::new(),
                        mandatory: false,
                    })
                    .await
                    .map_err(|e| Failure::Transient(e.to_string()));
                if settle(&plan, &tally, first, tried).await.is_some() {
                    break;
                }
            }
            drop(permit);
        });
    }
    let all = u32::try_from(MAX_AMQP_IN_FLIGHT).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    tally.report(start.elapsed())
}

/// Sends events through the ingestors' API as `plan` says, over [`HTTP_CONCURRENCY`]
/// keep-alive connections spread over `apis`; each counts once an API answered 202 (the
/// broker confirmed).
pub async fn publish_http(
    apis: &[SocketAddr],
    token: Arc<str>,
    factory: Arc<EventFactory>,
    first_seq: u64,
    plan: &Plan,
) -> LoadReport {
    let next = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(HTTP_CONCURRENCY);
    for c in 0..HTTP_CONCURRENCY {
        let Some(&api) = apis.get(c % apis.len().max(1)) else {
            break;
        };
        let (next, tally, token, factory, plan) = (
            next.clone(),
            tally.clone(),
            token.clone(),
            factory.clone(),
            plan.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::new(api);
            while let Some(i) = plan.claim(&next) {
                if let Some(at) = due(start, i, plan.rate) {
                    tokio::time::sleep_until(at).await;
                }
                let body = Bytes::from(factory.http_body(first_seq + i));
                let first = Instant::now();
                loop {
                    let tried = match conn
                        .request(
                            hyper::Method::POST,
                            "/api/v1/events",
                            Some(&token),
                            Some(body.clone()),
                        )
                        .await
                    {
                        Ok((202, _)) => Ok(()),
                        Ok((status, body)) => {
                            let e = format!(
                                "POST /api/v1/events answered {status}: {}",
                                String::from_utf8_lossy(&body)
                            );
                            if status >= 500 || status == 429 {
                                Err(Failure::Transient(e))
                            } else {
                                Err(Failure::Final(e))
                            }
                        }
                        Err(e) => Err(Failure::Transient(format!("POST /api/v1/events: {e:#}"))),
                    };
                    if settle(&plan, &tally, first, tried).await.is_some() {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    tally.report(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_body_has_about_the_requested_size() {
        for size in [256, 1024, 4096] {
            let f = EventFactory::new("org_wf_bench", size);
            let len = f.delivery_body(12_345).len();
            assert!(len.abs_diff(size) <= 2, "{size}: {len}");
            let event = wf_core::envelope::Event::from_amqp(&f.amqp_body(1), None).unwrap();
            assert_eq!(event.event.as_str(), EVENT_TYPE);
            assert!(event.payload().len().abs_diff(size) <= 8);
        }
        // Too small to pad: no padding, still valid.
        let f = EventFactory::new("org_wf_bench", 10);
        assert!(f.delivery_body(1).len() > 10);
    }

    #[test]
    fn schedule() {
        let start = Instant::now();
        assert!(due(start, 5, 0.0).is_none());
        let at = due(start, 500, 1000.0).unwrap();
        assert_eq!(
            at.into_std().duration_since(start),
            Duration::from_millis(500)
        );
    }
}
