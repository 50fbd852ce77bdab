//! `wf-ingestor`: the HTTP face of the system. It manages API keys and webhooks (docs/api.md),
//! takes events over HTTP and publishes them to `workflows.events` with publisher
//! confirms, answering `202` only once the broker has the event.
//!
//! The service is a library so tests can start the real thing in-process:
//! [`run`] takes its configuration, listeners and a shutdown token.
#![forbid(unsafe_code)]

pub mod api;
mod serve;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wf_broker::Publisher;
use wf_core::config::Config;
use wf_store::Store;

/// Everything a request handler needs, shared by all of them.
pub struct AppState {
    pub store: Store,
    pub publisher: Publisher,
    pub config: Arc<Config>,
    /// The per-API-key request budgets.
    pub rate_limits: Arc<api::limits::RateLimits>,
}

/// Pool size for the ingestor's Postgres connections: one request holds one connection
/// for a few milliseconds, so a small pool serves thousands of requests per second.
const DB_POOL_SIZE: usize = 16;

/// Runs the ingestor until `shutdown` is cancelled: applies migrations, declares the
/// topology, then serves the API on `listener` and `/metrics`, `/healthz`, `/readyz` on
/// `ops_listener`. In-flight requests finish before it returns.
///
/// # Errors
/// Start-up failures (Postgres or RabbitMQ unreachable, a migration or topology conflict),
/// with context naming what failed, and a listener without a local address.
pub async fn run(
    config: Config,
    listener: TcpListener,
    ops_listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    for w in config.warnings() {
        warn!("{w}");
    }
    let config = Arc::new(config);
    let wf_service::Backends {
        store,
        broker,
        publisher,
    } = wf_service::connect(&config, DB_POOL_SIZE).await?;

    let relay = tokio::spawn(wf_service::outbox::relay(
        store.clone(),
        publisher.clone(),
        shutdown.clone(),
    ));
    let rate_limits = Arc::new(api::limits::RateLimits::new(&config.api_limits));
    let evict = tokio::spawn(rate_limits.clone().evict_idle(shutdown.clone()));
    let state = Arc::new(AppState {
        store: store.clone(),
        publisher,
        config: config.clone(),
        rate_limits,
    });

    let ready: wf_telemetry::ReadinessCheck = {
        let store = store.clone();
        let broker = broker.clone();
        Arc::new(move || {
            let store = store.clone();
            let broker = broker.clone();
            Box::pin(async move {
                store.ping().await.map_err(|e| format!("postgres: {e}"))?;
                if !broker.is_connected() {
                    return Err("rabbitmq: not connected".to_owned());
                }
                Ok(())
            })
        })
    };
    let ops = tokio::spawn(wf_telemetry::serve_ops(
        ops_listener,
        ready,
        shutdown.clone(),
    ));

    info!(addr = %listener.local_addr()?, "ingestor listening");
    let app = api::router(state);
    serve::serve(listener, app, config.api_limits, shutdown.clone()).await;
    info!("ingestor drained, shutting down");
    shutdown.cancel();
    let _ = ops.await;
    let _ = relay.await;
    let _ = evict.await;
    broker.close().await;
    Ok(())
}
