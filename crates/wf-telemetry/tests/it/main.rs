//! Integration tests of wf-telemetry: the ops endpoints over real TCP, the metric names
//! dashboards and alerts rely on, the HTTP-request middleware and tracing initialisation.

use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wf_core::config::LogFormat;
use wf_core::duration::RetrySchedule;
use wf_telemetry::{metrics, serve_ops, ReadinessCheck};
use wf_testkit::http::Response;
use wf_testkit::prometheus::CONTRACT_METRICS;

/// `GET path` on `addr`, read to its end.
async fn get(addr: SocketAddr, path: &str) -> Response {
    wf_testkit::http::get(addr, path)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
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
    assert_eq!(r.text(), "ok");
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
    assert_eq!((r.status, r.text().as_str()), (200, "ready"));

    healthy.store(false, Ordering::SeqCst);
    let r = get(ops.addr, "/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "postgres: connection refused");

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
    let body = r.text();
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    let operator_metrics = [
        "wf_publish_confirm_seconds",
        "wf_db_pool_wait_seconds",
        "wf_delivery_log_pending",
        "wf_delivery_log_wait_seconds_total",
        "wf_retries_scheduled_total",
    ];
    for name in CONTRACT_METRICS
        .map(|(name, _)| name)
        .into_iter()
        .chain(operator_metrics)
    {
        assert!(body.contains(&format!("# HELP {name} ")), "missing {name}");
        assert!(body.contains(&format!("# TYPE {name} ")), "missing {name}");
    }
    for (name, kind) in CONTRACT_METRICS {
        assert!(
            body.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is not a {kind}"
        );
    }
    // Vectors without a fixed label set have no series yet, but the fixed ones do.
    assert!(body.contains("wf_deliveries_total{outcome=\"dead\"} 0"));
    assert!(body.contains("wf_events_rejected_total{reason=\"unknown_event\"} 0"));
    assert!(body.contains("wf_retries_scheduled_total{tier=\"2m\"} 0"));
    assert!(body.contains("wf_delivery_attempts_total{result=\"connect_error\"} 0"));
    assert!(body.contains("wf_delivery_duration_seconds_bucket{le=\"60\"}"));
    assert!(body.contains("wf_event_to_delivery_seconds_bucket{le=\"86400\"}"));
    assert!(
        body.contains("process_cpu_seconds_total"),
        "no process metrics"
    );
    assert!(body.contains("process_resident_memory_bytes"));
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
