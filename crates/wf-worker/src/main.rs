//! `wf-worker` binary: configuration from `WF_*` variables, then [`wf_worker::run`].
#![forbid(unsafe_code)]

use anyhow::Context;
use tokio::net::TcpListener;
use wf_core::config::{Config, Role};

/// jemalloc instead of glibc malloc: the delivery path allocates and frees many small,
/// short-lived buffers from several threads, where glibc spent ~18% of the worker's CPU
/// in a profile and its per-thread arenas let RSS creep over long runs;
/// jemalloc returns dirty pages on a decay timer, so RSS follows the load back down.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env(Role::Worker)?;
    wf_telemetry::init_tracing(&config.log, config.log_format)?;
    let ops = TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("binding WF_METRICS_ADDR={}", config.metrics_addr))?;
    let shutdown = wf_telemetry::cancel_on_shutdown_signal();
    wf_worker::run(config, ops, shutdown).await
}
