//! `wf-ingestor` binary: configuration from `WF_*` variables, then [`wf_ingestor::run`].
//!
//! `wf-ingestor openapi` prints the API's OpenAPI document instead (no configuration, no
//! connections): `cargo run -p wf-ingestor -- openapi > docs/openapi.json` regenerates the
//! committed copy.
#![forbid(unsafe_code)]

use anyhow::Context;
use tokio::net::TcpListener;
use wf_core::config::{Config, Role};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("openapi") => {
            print!("{}", wf_ingestor::api::openapi_json());
            return Ok(());
        }
        Some(other) => anyhow::bail!(
            "unknown argument `{other}`: wf-ingestor takes no arguments (configuration is \
             WF_* variables), or `openapi` to print the OpenAPI document"
        ),
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
