//! Integration tests of `wf-worker` (one test binary, see ARCHITECTURE.md).
//!
//! `client`: the delivery HTTP client against a real HTTPS server on loopback.

mod client;
mod https_server;
