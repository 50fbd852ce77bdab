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
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
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
            first_error: self
                .first_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            elapsed,
        }
    }
}

/// When message `i` of a run started at `start` is due at `rate` per second (0: now).
fn due(start: Instant, i: u64, rate: f64) -> Option<tokio::time::Instant> {
    (rate > 0.0).then(|| (start + Duration::from_secs_f64(i as f64 / rate)).into())
}

/// Publishes `n` messages made by `body(i)` to `exchange`/`routing_key` at `rate`, with
/// up to [`MAX_AMQP_IN_FLIGHT`] unconfirmed at once; returns when every one was
/// confirmed or failed.
pub async fn publish_amqp(
    publisher: &Publisher,
    exchange: Arc<str>,
    routing_key: Arc<str>,
    n: u64,
    rate: f64,
    body: impl Fn(u64) -> Vec<u8>,
) -> LoadReport {
    let slots = Arc::new(Semaphore::new(MAX_AMQP_IN_FLIGHT));
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    for i in 0..n {
        if let Some(at) = due(start, i, rate) {
            tokio::time::sleep_until(at).await;
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let body = body(i);
        let publisher = publisher.clone();
        let tally = tally.clone();
        let (exchange, routing_key) = (exchange.clone(), routing_key.clone());
        tokio::spawn(async move {
            let result = publisher
                .publish(OutgoingMessage {
                    exchange: &exchange,
                    routing_key: &routing_key,
                    body: &body,
                    message_id: None,
                    headers: Vec::new(),
                    mandatory: false,
                })
                .await
                .map_err(|e| e.to_string());
            tally.record(result);
            drop(permit);
        });
    }
    let all = u32::try_from(MAX_AMQP_IN_FLIGHT).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    tally.report(start.elapsed())
}

/// Sends `n` events through the ingestor's API at `rate` over [`HTTP_CONCURRENCY`]
/// keep-alive connections; each counts once the API answered 202 (the broker confirmed).
pub async fn publish_http(
    api: SocketAddr,
    token: Arc<str>,
    factory: Arc<EventFactory>,
    first_seq: u64,
    n: u64,
    rate: f64,
) -> LoadReport {
    let next = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(HTTP_CONCURRENCY);
    for _ in 0..HTTP_CONCURRENCY {
        let (next, tally, token, factory) =
            (next.clone(), tally.clone(), token.clone(), factory.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::new(api);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                if let Some(at) = due(start, i, rate) {
                    tokio::time::sleep_until(at).await;
                }
                let body = Bytes::from(factory.http_body(first_seq + i));
                let result = match conn
                    .request(
                        hyper::Method::POST,
                        "/api/v1/events",
                        Some(&token),
                        Some(body),
                    )
                    .await
                {
                    Ok((202, _)) => Ok(()),
                    Ok((status, body)) => Err(format!(
                        "POST /api/v1/events answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    )),
                    Err(e) => Err(format!("POST /api/v1/events: {e:#}")),
                };
                tally.record(result);
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
