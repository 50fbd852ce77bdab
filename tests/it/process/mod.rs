//! The real binaries (`wf-ingestor`, `wf-worker`, `wfctl`) as child processes, configured
//! black-box with nothing but `PATH` and `WF_*` variables: a real SIGTERM mid-load,
//! `/metrics` of fresh processes after real deliveries, the command lines (`--help`,
//! `--version`, unknown arguments), start-up errors for bad configuration, readiness when
//! RabbitMQ goes away, `wfctl dlq` and `wfctl bench`, and secrets kept out of debug logs
//! and metrics.

mod backpressure;
mod bench;
mod cli;
mod config;
mod dlq;
mod metrics;
mod rekey;
mod secrets;
mod shutdown;
pub mod support;
