//! The process shutdown signal.

use tokio::signal::unix::{signal, SignalKind};

/// Resolves when the process receives SIGTERM (Kubernetes, `make stop`) or SIGINT
/// (Ctrl-C). Callers then cancel their token and drain within `WF_SHUTDOWN_GRACE`.
///
/// If a handler cannot be installed (which only happens when the runtime has no signal
/// driver), that signal is logged and ignored rather than triggering a shutdown.
/// A token cancelled on the first SIGTERM or SIGINT: what a binary's `main` passes to its
/// service's `run`.
pub fn cancel_on_shutdown_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        cancel.cancel();
    });
    token
}

pub async fn shutdown_signal() {
    let wait = |kind: SignalKind, name: &'static str| async move {
        match signal(kind) {
            Ok(mut s) => {
                s.recv().await;
                name
            }
            Err(error) => {
                tracing::error!(%error, signal = name, "cannot install signal handler");
                std::future::pending().await
            }
        }
    };
    let name = tokio::select! {
        name = wait(SignalKind::terminate(), "SIGTERM") => name,
        name = wait(SignalKind::interrupt(), "SIGINT") => name,
    };
    tracing::info!(signal = name, "shutdown signal received");
}
