//! Integration tests of `wf-worker` (one test binary, see ARCHITECTURE.md).
//!
//! `client`: the delivery HTTP client against a real HTTPS receiver on loopback
//! (wf-testkit's).

mod client;
