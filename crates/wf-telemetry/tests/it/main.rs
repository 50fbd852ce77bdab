//! Integration tests of wf-telemetry: the ops endpoints over real TCP, the metric names of
//! SPEC §7, the HTTP-request middleware and tracing initialisation.

use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wf_core::config::LogFormat;
use wf_core::duration::RetrySchedule;
use wf_telemetry::{metrics, serve_ops, ReadinessCheck};

/// A response as the tiny client below parsed it.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 GET over a fresh connection (`Connection: close`, read to EOF).
async fn get(addr: SocketAddr, path: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .expect("read");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header terminator");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut reply = Reply {
        status,
        headers,
        body: body.to_owned(),
    };
    if reply
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        reply.body = dechunk(&reply.body);
    }
    reply
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        s = &rest[size + 2..];
    }
}

struct Ops {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start_ops(ready: ReadinessCheck) -> Ops {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_ops(listener, ready, shutdown.clone()));
    Ops {
        addr,
        shutdown,
        task,
    }
}

fn always_ready() -> ReadinessCheck {
    Arc::new(|| async { Ok(()) }.boxed())
}

#[tokio::test]
async fn healthz_says_ok() {
    let ops = start_ops(always_ready()).await;
    let r = get(ops.addr, "/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "ok");
}

#[tokio::test]
async fn readyz_follows_the_check_and_reports_the_reason() {
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let ready: ReadinessCheck = Arc::new(move || {
        let ok = flag.load(Ordering::SeqCst);
        async move {
            if ok {
                Ok(())
            } else {
                Err("postgres: connection refused".to_owned())
            }
        }
        .boxed()
    });
    let ops = start_ops(ready).await;

    let r = get(ops.addr, "/readyz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ready"));

    healthy.store(false, Ordering::SeqCst);
    let r = get(ops.addr, "/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "postgres: connection refused");

    // Liveness does not depend on readiness.
    assert_eq!(get(ops.addr, "/healthz").await.status, 200);

    healthy.store(true, Ordering::SeqCst);
    assert_eq!(get(ops.addr, "/readyz").await.status, 200);
}

#[tokio::test]
async fn metrics_exports_every_spec_name_and_process_metrics() {
    // `wf_retries_scheduled_total` has series once the worker names its tiers (and
    // `wf_http_requests_total` after the first API request, tested below).
    let schedule = RetrySchedule::parse("5s,30s,2m").unwrap();
    metrics().init_retry_tiers(&schedule);
    let ops = start_ops(always_ready()).await;
    let r = get(ops.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    for name in [
        // SPEC §7
        "wf_events_ingested_total",
        "wf_events_rejected_total",
        "wf_deliveries_total",
        "wf_delivery_attempts_total",
        "wf_delivery_duration_seconds",
        "wf_event_to_delivery_seconds",
        "wf_deliveries_in_flight",
        "wf_subscription_cache_requests_total",
        "wf_circuit_open_endpoints",
        // operator metrics
        "wf_publish_confirm_seconds",
        "wf_db_pool_wait_seconds",
        "wf_delivery_log_pending",
        "wf_delivery_log_wait_seconds_total",
        "wf_retries_scheduled_total",
    ] {
        assert!(
            r.body.contains(&format!("# HELP {name} ")),
            "missing {name}"
        );
        assert!(
            r.body.contains(&format!("# TYPE {name} ")),
            "missing {name}"
        );
    }
    // Vectors without a fixed label set have no series yet, but the fixed ones do.
    assert!(r.body.contains("wf_deliveries_total{outcome=\"dead\"} 0"));
    assert!(r
        .body
        .contains("wf_events_rejected_total{reason=\"unknown_event\"} 0"));
    assert!(r.body.contains("wf_retries_scheduled_total{tier=\"2m\"} 0"));
    assert!(r
        .body
        .contains("wf_delivery_attempts_total{result=\"connect_error\"} 0"));
    assert!(r
        .body
        .contains("wf_delivery_duration_seconds_bucket{le=\"60\"}"));
    assert!(r
        .body
        .contains("wf_event_to_delivery_seconds_bucket{le=\"86400\"}"));
    assert!(
        r.body.contains("process_cpu_seconds_total"),
        "no process metrics"
    );
    assert!(r.body.contains("process_resident_memory_bytes"));
}

#[tokio::test]
async fn unknown_ops_path_is_404() {
    let ops = start_ops(always_ready()).await;
    assert_eq!(get(ops.addr, "/nope").await.status, 404);
}

#[tokio::test]
async fn serve_ops_returns_on_shutdown() {
    let ops = start_ops(always_ready()).await;
    assert_eq!(get(ops.addr, "/healthz").await.status, 200);
    ops.shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), ops.task)
        .await
        .expect("serve_ops ends after cancellation")
        .expect("task did not panic");
    result.expect("clean shutdown");
    assert!(
        TcpStream::connect(ops.addr).await.is_err(),
        "still listening"
    );
}

#[tokio::test]
async fn http_requests_are_counted_by_route_template() {
    use axum::routing::get as route_get;
    let app = axum::Router::new()
        .route("/things/{id}", route_get(|| async { "thing" }))
        .layer(axum::middleware::from_fn(wf_telemetry::track_http_requests));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );

    assert_eq!(get(addr, "/things/thg_12345").await.status, 200);
    assert_eq!(get(addr, "/things/thg_67890").await.status, 200);
    assert_eq!(get(addr, "/missing/thg_12345").await.status, 404);

    let text = wf_telemetry::render();
    let line = |route: &str, status: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("wf_http_requests_total{")
                    && l.contains(&format!("route=\"{route}\""))
                    && l.contains(&format!("status=\"{status}\""))
            })
            .map(str::to_owned)
    };
    let ok = line("/things/{id}", "200").expect("templated route counted");
    assert!(ok.ends_with(" 2"), "{ok}");
    assert!(
        line("unmatched", "404").is_some(),
        "unmatched route counted"
    );
    assert!(!text.contains("thg_12345"), "raw path leaked into a label");

    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[test]
fn init_tracing_is_idempotent_and_validates_the_filter() {
    wf_telemetry::init_tracing("info", LogFormat::Text).unwrap();
    wf_telemetry::init_tracing("debug", LogFormat::Json).unwrap();
    wf_telemetry::init_tracing("wf_worker=debug,info", LogFormat::Text).unwrap();
    let err = wf_telemetry::init_tracing("wf_worker=loud", LogFormat::Text).unwrap_err();
    assert!(err.to_string().contains("WF_LOG"), "{err}");
    tracing::info!("logging works after repeated init");
}
