//! `wf-worker` binary: configuration from `WF_*` variables, then [`wf_worker::run`].
#![forbid(unsafe_code)]

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wf_core::config::{Config, Role};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env(Role::Worker)?;
    wf_telemetry::init_tracing(&config.log, config.log_format)?;
    let ops = TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("binding WF_METRICS_ADDR={}", config.metrics_addr))?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wf_telemetry::shutdown_signal().await;
        tracing::info!("shutdown signal received; draining");
        signal.cancel();
    });
    wf_worker::run(config, ops, shutdown).await
}
