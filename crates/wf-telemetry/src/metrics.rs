//! The Prometheus metrics (README, "Metrics"; label values in docs/api.md), in one
//! private registry.
//!
//! No label ever carries a webhook, organisation, URL or raw request path: every label has a
//! small, bounded set of values (cardinality is what takes a Prometheus server down).

use std::sync::OnceLock;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Counter, Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use wf_core::duration::{format_duration, RetrySchedule};
use wf_core::events::EventType;

/// The fixed label values, for callers (so a typo cannot create a new series) and for
/// pre-initialising every series to 0.
pub mod labels {
    use wf_core::envelope::EventRejection;

    /// `wf_events_ingested_total{source}`.
    pub const SOURCES: [&str; 2] = ["http", "amqp"];
    /// `wf_deliveries_total{outcome}`.
    pub const OUTCOMES: [&str; 4] = ["delivered", "retried", "dead", "dropped"];
    /// `wf_delivery_attempts_total{result}`.
    pub const ATTEMPT_RESULTS: [&str; 8] = [
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "timeout",
        "connect_error",
        "tls_error",
        "blocked",
    ];
    /// `wf_subscription_cache_requests_total{result}`.
    pub const CACHE_RESULTS: [&str; 2] = ["hit", "miss"];
    /// `wf_endpoint_concurrency_limits{le}`: the upper bounds, powers of two, then `+Inf`.
    pub const LIMIT_BOUNDS: [&str; 12] = [
        "1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "1024", "+Inf",
    ];
    /// `wf_http_rate_limited_total{budget}`: the API's two per-key budgets.
    pub const RATE_BUDGETS: [&str; 2] = ["events", "management"];
    /// `wf_http_requests_total{route}` of a request that matched no route.
    pub const UNMATCHED_ROUTE: &str = "unmatched";

    /// Every `wf_events_rejected_total{reason}` value the event parser produces
    /// ([`EventRejection::reason`]).
    pub fn rejection_reasons() -> Vec<&'static str> {
        use EventRejection as R;
        [
            R::TooLarge,
            R::InvalidJson(String::new()),
            R::NotAnObject,
            R::MissingEvent,
            R::UnknownEvent(String::new()),
            R::MissingOrgId,
            R::InvalidOrgId,
            R::InvalidId,
            R::InvalidTimestamp,
            R::InvalidData,
        ]
        .iter()
        .map(EventRejection::reason)
        .collect()
    }

    /// The `result` label of an attempt that got an HTTP response with `status`.
    pub fn status_class(status: u16) -> &'static str {
        match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            // 1xx never ends a request; anything else is treated as a server error.
            _ => "5xx",
        }
    }
}

/// Every metric the services export. Obtain the process-wide instance with [`metrics`].
pub struct Metrics {
    /// `wf_events_ingested_total{source,event}`: events accepted for fan-out.
    pub events_ingested: IntCounterVec,
    /// `wf_events_rejected_total{reason}`: events sent to `workflows.events.invalid` or
    /// refused at the HTTP edge.
    pub events_rejected: IntCounterVec,
    /// `wf_deliveries_total{outcome}`: final or intermediate outcome of a delivery.
    pub deliveries: IntCounterVec,
    /// `wf_delivery_attempts_total{result}`: every HTTP attempt, by result class.
    pub delivery_attempts: IntCounterVec,
    /// `wf_delivery_duration_seconds`: one HTTP attempt, connect to body read.
    pub delivery_duration: Histogram,
    /// `wf_event_to_delivery_seconds`: event timestamp to the 2xx, retries included.
    pub event_to_delivery: Histogram,
    /// `wf_deliveries_in_flight`: attempts currently running in this process.
    pub in_flight: IntGauge,
    /// `wf_subscription_cache_requests_total{result}`: subscription lookups at fan-out.
    pub subscription_cache: IntCounterVec,
    /// `wf_circuit_open_endpoints`: endpoints whose circuit breaker is open now.
    pub circuit_open_endpoints: IntGauge,
    /// `wf_publish_confirm_seconds`: publish to broker confirm.
    pub publish_confirm_seconds: Histogram,
    /// `wf_db_pool_wait_seconds`: time to get a Postgres connection from the pool.
    pub db_pool_wait_seconds: Histogram,
    /// `wf_http_requests_total{route,status}`: API requests; `route` is the matched path
    /// template (see [`track_http_requests`]).
    pub http_requests: IntCounterVec,
    /// `wf_delivery_log_pending`: delivery-log writes buffered, not yet in Postgres.
    pub delivery_log_pending: IntGauge,
    /// `wf_delivery_log_wait_seconds_total`: time spent waiting for room in the
    /// delivery-log buffer (Postgres behind by its whole budget).
    pub delivery_log_wait_seconds: Counter,
    /// `wf_retries_scheduled_total{tier}`: retries queued, by delay (`5s`, `30s`, `2m`, …).
    pub retries_scheduled: IntCounterVec,
    /// `wf_system_events_parked`: system events in the outbox, not yet confirmed by the
    /// broker (the same figure from every process: aggregate with `max`).
    pub system_events_parked: IntGauge,
    /// `wf_system_events_deferred_total`: system events the broker did not take when they
    /// were emitted, left parked for the relay.
    pub system_events_deferred: IntCounter,
    /// `wf_deliveries_deferred_total{reason}`: deliveries held back without being sent
    /// (endpoint `busy`, `rate_limited`, `circuit_open`) and parked in the broker.
    pub deliveries_deferred: IntCounterVec,
    /// `wf_deliveries_republished_total{reason}`: of those, jobs taken from
    /// `workflows.deliveries` and published again because they were held back once more.
    pub deliveries_republished: IntCounterVec,
    /// `wf_deliveries_waiting`: deliveries waiting in this worker for their endpoint.
    pub deliveries_waiting: IntGauge,
    /// `wf_delivery_wait_seconds`: how long a delivery waited in this worker for its
    /// endpoint before it was sent.
    pub delivery_wait_seconds: Histogram,
    /// `wf_delivery_held_seconds`: how long a delivery had been held back (parked in the
    /// broker, unsent), observed at every deferral and when it is finally sent.
    pub delivery_held_seconds: Histogram,
    /// `wf_endpoint_concurrency_limits{le}`: endpoints tracked by this worker whose
    /// adaptive concurrency limit is at most `le` (cumulative, like histogram buckets).
    pub endpoint_limits: IntGaugeVec,
    /// `wf_worker_fleet_size`: workers consuming events, as this worker sees it; each
    /// takes this share of every webhook's `rateLimit`.
    pub worker_fleet_size: IntGauge,
    /// `wf_delivery_connections_idle`: idle keep-alive connections to endpoints this
    /// worker keeps (at most `WF_WORKER_IDLE_CONNECTIONS`).
    pub delivery_connections_idle: IntGauge,
    /// `wf_delivery_connections_opened_total`: connections opened to endpoints (TCP and
    /// TLS handshakes begun); its rate against attempts shows how often one is reused.
    pub delivery_connections_opened: IntCounter,
    /// `wf_http_connections_open`: API connections open now (at most
    /// `WF_HTTP_MAX_CONNECTIONS`).
    pub http_connections_open: IntGauge,
    /// `wf_http_connections_refused_total`: API connections refused because
    /// `WF_HTTP_MAX_CONNECTIONS` were open.
    pub http_connections_refused: IntCounter,
    /// `wf_http_header_timeouts_total`: API connections closed because a request's headers
    /// did not arrive within `WF_HTTP_HEADER_TIMEOUT`.
    pub http_header_timeouts: IntCounter,
    /// `wf_http_rate_limited_total{budget}`: API requests answered `429` because their key
    /// spent its `events` or `management` budget.
    pub http_rate_limited: IntCounterVec,
}

/// Buckets for one HTTP attempt: reach past the 10 s default delivery timeout (the
/// timeout can be raised) so that slow endpoints do not all land in `+Inf`.
const DELIVERY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0,
];

/// Buckets for event-to-delivery: sub-second on the happy path, up to days through the
/// retry schedule (the default schedule adds up to about 55 hours).
const EVENT_TO_DELIVERY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 300.0, 1800.0,
    3600.0, 21600.0, 86400.0, 172800.0, 259200.0,
];

/// Buckets for how long a delivery was held back: seconds to a day (the default
/// schedule's span is about two days).
const HELD_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 43200.0, 86400.0,
];

/// Buckets for short internal waits (broker confirms, pool checkout).
const WAIT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static GLOBAL: OnceLock<(Registry, Metrics)> = OnceLock::new();

fn global() -> &'static (Registry, Metrics) {
    GLOBAL.get_or_init(|| {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry);
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");
        (registry, metrics)
    })
}

/// The process-wide metrics, registered (with the process collector) on first use.
pub fn metrics() -> &'static Metrics {
    &global().1
}

/// Every metric family name the services can export, whether or not it has a series yet
/// (a labelled metric shows up in [`render`] only after its first use). Dashboards and
/// alert rules are checked against this list.
pub fn metric_names() -> Vec<String> {
    use prometheus::core::Collector;
    let mut names: Vec<String> = global()
        .0
        .gather()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    let m = metrics();
    let collectors: [&dyn Collector; 3] =
        [&m.events_ingested, &m.http_requests, &m.retries_scheduled];
    for c in collectors {
        names.extend(c.desc().iter().map(|d| d.fq_name.clone()));
    }
    let process = prometheus::process_collector::ProcessCollector::for_self();
    names.extend(process.desc().iter().map(|d| d.fq_name.clone()));
    names.sort();
    names.dedup();
    names
}

/// The registry in the Prometheus text exposition format (version 0.0.4).
pub fn render() -> String {
    let families = global().0.gather();
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for well-formed families; show the error if it did.
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        return format!("# error encoding metrics: {e}\n");
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registers once");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> Counter {
    let c = Counter::new(name, help).expect("valid metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registers once");
    c
}

fn int_counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registers once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registers once");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid metric definition");
    r.register(Box::new(h.clone()))
        .expect("metric registers once");
    h
}

impl Metrics {
    fn register(r: &Registry) -> Metrics {
        let m = Metrics {
            events_ingested: counter_vec(
                r,
                "wf_events_ingested_total",
                "Events accepted for fan-out, by intake (http: POST /api/v1/events, amqp: \
                 published to the workflows.events exchange) and event type.",
                &["source", "event"],
            ),
            events_rejected: counter_vec(
                r,
                "wf_events_rejected_total",
                "Events refused and never delivered (sent to workflows.events.invalid or \
                 answered with an error), by reason such as invalid_json or unknown_event.",
                &["reason"],
            ),
            deliveries: counter_vec(
                r,
                "wf_deliveries_total",
                "Delivery outcomes: delivered (2xx), retried (failed, queued for a later \
                 retry), dead (last retry failed, dead-lettered), dropped (webhook deleted \
                 or disabled before it was sent).",
                &["outcome"],
            ),
            delivery_attempts: counter_vec(
                r,
                "wf_delivery_attempts_total",
                "Outbound HTTP delivery attempts by result: status class of the response, \
                 or timeout, connect_error, tls_error, blocked (address refused by the \
                 private-address policy).",
                &["result"],
            ),
            delivery_duration: histogram(
                r,
                "wf_delivery_duration_seconds",
                "Duration of one delivery attempt, from connect to the end of the response \
                 body (bounded by WF_DELIVERY_TIMEOUT).",
                DELIVERY_BUCKETS,
            ),
            event_to_delivery: histogram(
                r,
                "wf_event_to_delivery_seconds",
                "Time from the event's timestamp to the subscriber's 2xx, retries included: \
                 the end-to-end latency a subscriber sees.",
                EVENT_TO_DELIVERY_BUCKETS,
            ),
            in_flight: gauge(
                r,
                "wf_deliveries_in_flight",
                "Delivery attempts currently in flight in this process (at most \
                 WF_WORKER_CONCURRENCY).",
            ),
            subscription_cache: counter_vec(
                r,
                "wf_subscription_cache_requests_total",
                "Subscription lookups during fan-out, by whether the in-memory cache \
                 answered (hit) or Postgres was queried (miss).",
                &["result"],
            ),
            circuit_open_endpoints: gauge(
                r,
                "wf_circuit_open_endpoints",
                "Endpoints whose circuit breaker is open: their deliveries go straight to \
                 the retry schedule.",
            ),
            publish_confirm_seconds: histogram(
                r,
                "wf_publish_confirm_seconds",
                "Time from publishing a message to RabbitMQ to receiving its publisher \
                 confirm.",
                WAIT_BUCKETS,
            ),
            db_pool_wait_seconds: histogram(
                r,
                "wf_db_pool_wait_seconds",
                "Time spent waiting for a Postgres connection from the pool; growth means \
                 the pool is too small or queries are slow.",
                WAIT_BUCKETS,
            ),
            http_requests: counter_vec(
                r,
                "wf_http_requests_total",
                "API requests by matched route template (never the raw path) and response \
                 status code.",
                &["route", "status"],
            ),
            delivery_log_pending: gauge(
                r,
                "wf_delivery_log_pending",
                "Delivery-log records buffered in this process and not yet written to \
                 Postgres.",
            ),
            delivery_log_wait_seconds: counter(
                r,
                "wf_delivery_log_wait_seconds_total",
                "Seconds deliveries spent waiting for room in the delivery-log buffer, which \
                 is full when Postgres is behind by 8 MiB of records; any growth means the \
                 log is throttling delivery.",
            ),
            retries_scheduled: counter_vec(
                r,
                "wf_retries_scheduled_total",
                "Retries queued, by delay tier of WF_RETRY_SCHEDULE (5s, 30s, 2m, ...).",
                &["tier"],
            ),
            system_events_parked: gauge(
                r,
                "wf_system_events_parked",
                "System events (webhook.created, webhook.disabled, ...) parked in the outbox, \
                 not yet confirmed by the broker; the same figure from every process.",
            ),
            system_events_deferred: int_counter(
                r,
                "wf_system_events_deferred_total",
                "System events the broker did not take when emitted, left parked for the \
                 outbox relay to publish.",
            ),
            deliveries_deferred: counter_vec(
                r,
                "wf_deliveries_deferred_total",
                "Deliveries held back without being sent and parked in the broker, keeping \
                 their attempt number, by reason: busy (endpoint at its concurrency limit \
                 with a long line), rate_limited (webhook rateLimit or the endpoint's \
                 Retry-After), circuit_open.",
                &["reason"],
            ),
            deliveries_republished: counter_vec(
                r,
                "wf_deliveries_republished_total",
                "Delivery jobs taken from workflows.deliveries and published again because \
                 their endpoint still could not take them (a subset of \
                 wf_deliveries_deferred_total): the broker churn a backlog causes.",
                &["reason"],
            ),
            deliveries_waiting: gauge(
                r,
                "wf_deliveries_waiting",
                "Deliveries waiting in this worker for their endpoint (its concurrency limit, \
                 rate limit or a worker slot), unacked in the broker meanwhile.",
            ),
            delivery_wait_seconds: histogram(
                r,
                "wf_delivery_wait_seconds",
                "Time a delivery waited in this worker for its endpoint before it was sent.",
                WAIT_BUCKETS,
            ),
            delivery_held_seconds: histogram(
                r,
                "wf_delivery_held_seconds",
                "How long a delivery had been held back unsent (endpoint busy, rate limited \
                 or circuit open), observed at each deferral and when it is finally sent.",
                HELD_BUCKETS,
            ),
            endpoint_limits: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "wf_endpoint_concurrency_limits",
                        "Endpoints tracked by this worker whose adaptive concurrency limit is \
                         at most le (cumulative); le=\"+Inf\" is every tracked endpoint.",
                    ),
                    &["le"],
                )
                .expect("valid metric definition");
                r.register(Box::new(g.clone()))
                    .expect("metric registers once");
                g
            },
            worker_fleet_size: gauge(
                r,
                "wf_worker_fleet_size",
                "Workers consuming events as this worker last counted them; each sends its \
                 share (1/size) of every webhook's rateLimit.",
            ),
            delivery_connections_idle: gauge(
                r,
                "wf_delivery_connections_idle",
                "Idle keep-alive connections to endpoints kept by this worker (at most \
                 WF_WORKER_IDLE_CONNECTIONS; the least recently used closes first).",
            ),
            delivery_connections_opened: int_counter(
                r,
                "wf_delivery_connections_opened_total",
                "Connections opened to endpoints (TCP connect and TLS handshake begun).",
            ),
            http_connections_open: gauge(
                r,
                "wf_http_connections_open",
                "API connections open now (at most WF_HTTP_MAX_CONNECTIONS).",
            ),
            http_connections_refused: int_counter(
                r,
                "wf_http_connections_refused_total",
                "API connections answered 503 and closed because WF_HTTP_MAX_CONNECTIONS \
                 connections were open.",
            ),
            http_header_timeouts: int_counter(
                r,
                "wf_http_header_timeouts_total",
                "API connections closed because a request's headers did not arrive within \
                 WF_HTTP_HEADER_TIMEOUT (slow clients, idle keep-alive connections).",
            ),
            http_rate_limited: counter_vec(
                r,
                "wf_http_rate_limited_total",
                "API requests answered 429 because their API key spent its budget: events \
                 (POST /api/v1/events, WF_API_RATE_LIMIT_EVENTS) or management (every other \
                 route, WF_API_RATE_LIMIT_MANAGEMENT).",
                &["budget"],
            ),
        };
        for budget in labels::RATE_BUDGETS {
            m.http_rate_limited.with_label_values(&[budget]);
        }
        for reason in wf_core::lifecycle::HoldReason::ALL {
            m.deliveries_deferred.with_label_values(&[reason.as_str()]);
            m.deliveries_republished
                .with_label_values(&[reason.as_str()]);
        }
        for le in labels::LIMIT_BOUNDS {
            m.endpoint_limits.with_label_values(&[le]);
        }
        for source in labels::SOURCES {
            for event in EventType::ALL {
                m.events_ingested
                    .with_label_values(&[source, event.as_str()]);
            }
        }
        for reason in labels::rejection_reasons() {
            m.events_rejected.with_label_values(&[reason]);
        }
        for outcome in labels::OUTCOMES {
            m.deliveries.with_label_values(&[outcome]);
        }
        for result in labels::ATTEMPT_RESULTS {
            m.delivery_attempts.with_label_values(&[result]);
        }
        for result in labels::CACHE_RESULTS {
            m.subscription_cache.with_label_values(&[result]);
        }
        m
    }

    /// Moves one endpoint in `wf_endpoint_concurrency_limits` from limit `from` to limit
    /// `to` (`None`: not tracked).
    pub fn endpoint_limit_changed(&self, from: Option<usize>, to: Option<usize>) {
        let bound = |i: usize| -> usize {
            if i + 1 == labels::LIMIT_BOUNDS.len() {
                usize::MAX
            } else {
                1 << i
            }
        };
        for (i, le) in labels::LIMIT_BOUNDS.iter().enumerate() {
            let b = bound(i);
            let was = from.is_some_and(|v| v <= b);
            let now = to.is_some_and(|v| v <= b);
            if was != now {
                let g = self.endpoint_limits.with_label_values(&[le]);
                if now {
                    g.inc();
                } else {
                    g.dec();
                }
            }
        }
    }

    /// Creates the `wf_retries_scheduled_total{tier}` series of every delay in `schedule`
    /// at 0, so dashboards see them before the first retry. Call once at worker start.
    pub fn init_retry_tiers(&self, schedule: &RetrySchedule) {
        for delay in schedule.distinct_delays() {
            self.retries_scheduled
                .with_label_values(&[format_duration(delay).as_str()]);
        }
    }
}

/// Axum middleware counting `wf_http_requests_total{route,status}`. Add it with
/// `Router::layer(axum::middleware::from_fn(track_http_requests))`; `route` is the matched
/// path template (`/api/v1/webhooks/{id}`), or `unmatched` for a 404 from no route, so ids
/// in paths never become label values.
pub async fn track_http_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let response = next.run(req).await;
    let route = route.as_deref().unwrap_or(labels::UNMATCHED_ROUTE);
    metrics()
        .http_requests
        .with_label_values(&[route, response.status().as_str()])
        .inc();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(labels::status_class(204), "2xx");
        assert_eq!(labels::status_class(301), "3xx");
        assert_eq!(labels::status_class(410), "4xx");
        assert_eq!(labels::status_class(503), "5xx");
    }

    #[test]
    fn fixed_label_values_start_at_zero() {
        let text = render();
        for reason in labels::rejection_reasons() {
            assert!(
                text.contains(&format!(
                    "wf_events_rejected_total{{reason=\"{reason}\"}} 0"
                )),
                "{reason}"
            );
        }
        for outcome in labels::OUTCOMES {
            assert!(
                text.contains(&format!("wf_deliveries_total{{outcome=\"{outcome}\"}} 0")),
                "{outcome}"
            );
        }
        for result in labels::ATTEMPT_RESULTS {
            assert!(
                text.contains(&format!(
                    "wf_delivery_attempts_total{{result=\"{result}\"}}"
                )),
                "{result}"
            );
        }
        assert!(text.contains("wf_subscription_cache_requests_total{result=\"hit\"}"));
        assert!(text.contains("wf_events_ingested_total{event=\"alert.created\",source=\"amqp\"}"));
    }

    #[test]
    fn retry_tiers_are_created() {
        let schedule = RetrySchedule::parse("5s,30s,2m,5s").unwrap();
        metrics().init_retry_tiers(&schedule);
        let text = render();
        for tier in ["5s", "30s", "2m"] {
            assert!(
                text.contains(&format!("wf_retries_scheduled_total{{tier=\"{tier}\"}}")),
                "{tier}"
            );
        }
    }

    #[test]
    fn histograms_reach_past_the_delivery_timeout() {
        assert!(DELIVERY_BUCKETS.iter().any(|b| *b > 10.0));
        assert!(EVENT_TO_DELIVERY_BUCKETS.contains(&86400.0));
        for b in [DELIVERY_BUCKETS, EVENT_TO_DELIVERY_BUCKETS, WAIT_BUCKETS] {
            assert!(b.windows(2).all(|w| w[0] < w[1]), "buckets must increase");
        }
    }
}
