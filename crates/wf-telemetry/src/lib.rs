//! Observability and process plumbing shared by `wf-ingestor`, `wf-worker` and `wfctl`:
//! tracing initialisation, the Prometheus metrics of the README's "Metrics" section,
//! the ops endpoints `/metrics`, `/healthz` and `/readyz`, and the shutdown signal.
//!
//! Metrics live in one process-wide private registry ([`metrics`], [`render`]) so that any
//! module can count without threading a handle through every call, and so that the process
//! collector is registered exactly once.
#![forbid(unsafe_code)]

mod logging;
mod metrics;
mod ops;
mod shutdown;

pub use logging::init_tracing;
pub use metrics::{labels, metric_names, metrics, render, track_http_requests, Metrics};
pub use ops::{serve_ops, ReadinessCheck};
pub use shutdown::{cancel_on_shutdown_signal, shutdown_signal};
