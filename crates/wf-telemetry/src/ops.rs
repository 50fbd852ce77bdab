//! The ops endpoints every service exposes on its metrics port.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Checks that the process can do its work (Postgres and RabbitMQ reachable); `Err`
/// carries the reason shown in the `/readyz` response body.
pub type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A readiness check slower than this counts as failed: a probe must answer, and a
/// dependency that takes this long is not usable anyway.
const READINESS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct OpsState {
    ready: ReadinessCheck,
    shutdown: CancellationToken,
}

/// Serves, until `shutdown` is cancelled (then gracefully: in-flight requests finish):
///
/// - `GET /metrics`: the registry in Prometheus text format (`text/plain; version=0.0.4`);
/// - `GET /healthz`: `200 ok` while the process runs;
/// - `GET /readyz`: `200 ready` when `ready` succeeds, else `503` with its reason (also
///   `503` once shutdown has begun, or when the check takes over 5 s).
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve_ops(
    listener: TcpListener,
    ready: ReadinessCheck,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz_handler))
        .with_state(OpsState {
            ready,
            shutdown: shutdown.clone(),
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn metrics_handler() -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        crate::render(),
    )
        .into_response()
}

async fn readyz_handler(State(state): State<OpsState>) -> Response {
    let outcome = if state.shutdown.is_cancelled() {
        Err("shutting down".to_owned())
    } else {
        match tokio::time::timeout(READINESS_TIMEOUT, (state.ready)()).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "readiness check timed out after {}s",
                READINESS_TIMEOUT.as_secs()
            )),
        }
    };
    match outcome {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
        }
    }
}
