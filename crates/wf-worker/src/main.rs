//! `wf-worker` binary: configuration from `WF_*` variables, then [`wf_worker::run`].
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{CommandFactory, Parser};
use tokio::net::TcpListener;
use wf_core::config::{Config, Role};

/// WorkFlows webhooks worker: delivers events to the webhooks subscribed to them.
///
/// Consumes the RabbitMQ queues workflows.fanout and workflows.deliveries: fans each event
/// out, signs and POSTs it to every subscribed endpoint, schedules retries, dead-letters.
/// Serves /metrics, /healthz and /readyz on WF_METRICS_ADDR. Applies pending migrations
/// and declares the RabbitMQ topology at start-up; drains on SIGTERM. Stateless: run as
/// many as you like.
#[derive(Parser)]
#[command(name = "wf-worker", version, verbatim_doc_comment)]
struct Cli {}

/// jemalloc instead of glibc malloc: the delivery path allocates and frees many small,
/// short-lived buffers from several threads, where glibc spent ~18% of the worker's CPU
/// in a profile and its per-thread arenas let RSS creep over long runs;
/// jemalloc returns dirty pages on a decay timer, so RSS follows the load back down.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Arguments first: `--help`, `--version` and an unknown argument (exit status 2) never
    // read the configuration or connect to anything.
    Cli::command()
        .after_help(wf_core::config::help(Role::Worker))
        .get_matches();
    let config = Config::from_env(Role::Worker)?;
    wf_telemetry::init_tracing(&config.log, config.log_format)?;
    let ops = TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("binding WF_METRICS_ADDR={}", config.metrics_addr))?;
    let shutdown = wf_telemetry::cancel_on_shutdown_signal();
    wf_worker::run(config, ops, shutdown).await
}
