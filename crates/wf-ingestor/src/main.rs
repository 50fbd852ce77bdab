//! `wf-ingestor` binary: configuration from `WF_*` variables, then [`wf_ingestor::run`].
//!
//! `wf-ingestor openapi` prints the API's OpenAPI document instead (no configuration, no
//! connections): `cargo run -p wf-ingestor -- openapi > docs/openapi.json` regenerates the
//! committed copy.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio::net::TcpListener;
use wf_core::config::{Config, Role};

/// WorkFlows webhooks ingestor: the management API and event intake.
///
/// Serves /api/v1 on WF_HTTP_ADDR (API keys, webhooks, deliveries, events; publishes each
/// event with a publisher confirm) and /metrics, /healthz and /readyz on WF_METRICS_ADDR.
/// Applies pending migrations and declares the RabbitMQ topology at start-up; drains on
/// SIGTERM.
#[derive(Parser)]
#[command(name = "wf-ingestor", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the API's OpenAPI 3.1 document and exit (no configuration, no connections).
    Openapi,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Arguments first: `--help`, `--version` and an unknown argument (exit status 2) never
    // read the configuration or connect to anything.
    let matches = Cli::command()
        .after_help(wf_core::config::help(Role::Ingestor))
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some(Command::Openapi) = cli.command {
        print!("{}", wf_ingestor::api::openapi_json());
        return Ok(());
    }
    let config = Config::from_env(Role::Ingestor)?;
    wf_telemetry::init_tracing(&config.log, config.log_format)?;
    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding WF_HTTP_ADDR={}", config.http_addr))?;
    let ops = TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("binding WF_METRICS_ADDR={}", config.metrics_addr))?;
    let shutdown = wf_telemetry::cancel_on_shutdown_signal();
    let grace = config.shutdown_grace;
    let run = wf_ingestor::run(config, listener, ops, shutdown.clone());
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => r,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("shutdown grace period elapsed; exiting with requests still open");
            Ok(())
        }
    }
}
