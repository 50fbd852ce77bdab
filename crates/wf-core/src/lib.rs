//! Pure domain of the WorkFlows outbound-webhook system: the event catalog, the payload
//! envelope, typed ids, signing, the URL/IP policy, durations and retry schedules, the
//! configuration, the API's request bodies and their rules, the versioned queue-message
//! types, and what follows a delivery attempt.
//!
//! Nothing here does I/O. Every fallible function fails only by returning a parse error,
//! so the rest of the system can build on values that are valid by construction.
#![forbid(unsafe_code)]

pub mod config;
pub mod duration;
pub mod envelope;
pub mod events;
pub mod examples;
pub mod headers;
pub mod ids;
pub mod lifecycle;
pub mod messages;
pub mod requests;
pub mod secret_keys;
pub mod signing;
pub mod time;
pub mod url_policy;
pub mod views;

/// Product version, sent in `User-Agent: WorkFlows-Webhooks/<version>`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
