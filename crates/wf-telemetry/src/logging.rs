//! Tracing subscriber set-up.

use std::io::IsTerminal as _;
use std::sync::Mutex;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;
use wf_core::config::LogFormat;

/// Whether a subscriber has been installed by [`init_tracing`]. A mutex rather than a
/// `OnceLock` so that a failed first attempt (bad filter) can be retried.
static INSTALLED: Mutex<bool> = Mutex::new(false);

/// Log targets capped whatever `WF_LOG` says, because payloads and secrets must never
/// reach the logs: lapin logs the whole body of every returned (unroutable) message at
/// WARN, and tokio-postgres logs every statement's parameters at DEBUG (event payloads,
/// subscribers' response bodies, encrypted secrets and header values, key hashes). Its
/// INFO (server notices) stays.
const ALWAYS_OFF: &[&str] = &["lapin::returned_messages=off", "tokio_postgres=info"];

/// Installs the global tracing subscriber: `filter` is an `EnvFilter` directive string
/// (`WF_LOG`, e.g. `info,wf_worker=debug`), output goes to stderr as text (ANSI colours only
/// on a terminal) or one JSON object per line.
///
/// Idempotent: after the first successful call, later calls only validate their filter and
/// return. Tests call it freely. If some other code already installed a global subscriber,
/// that one is kept and this is a no-op as well.
///
/// # Errors
/// When `filter` is not a valid filter directive string.
pub fn init_tracing(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let mut env_filter = EnvFilter::builder()
        .parse(filter)
        .with_context(|| format!("invalid WF_LOG=`{filter}`: not a tracing filter"))?;
    for d in ALWAYS_OFF {
        env_filter = env_filter.add_directive(d.parse().expect("static directive"));
    }

    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if *installed {
        return Ok(());
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    // `try_init` fails only when a global subscriber is already set: keep that one.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    *installed = true;
    Ok(())
}
