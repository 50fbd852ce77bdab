//! RabbitMQ for the WorkFlows webhook system: one reconnecting AMQP connection, the
//! topology (docs/api.md, "RabbitMQ topology"), a publisher with pipelined publisher
//! confirms, consumers that survive a dropped connection, and the routes every message
//! takes.
//!
//! This is the only crate that knows lapin. Everything above it speaks in terms of
//! [`Broker`], [`Publisher`], [`Consumer`], [`Incoming`] and the functions of [`routes`],
//! so the AMQP client can be upgraded or replaced here without touching the services.
//!
//! The guarantees the rest of the system builds on:
//! - [`Publisher::publish`] resolves only once the broker has confirmed the message (it is
//!   durably enqueued), and reports a nack or an unroutable `mandatory` message as an
//!   error. Concurrent publishes share one confirm-mode channel and are pipelined.
//! - A [`Consumer`] re-subscribes by itself after the connection or channel drops; what
//!   was in flight on the old channel is redelivered by the broker, and settling it on
//!   the old channel fails with an error instead of pretending to succeed.
//! - [`Broker::declare_topology`] is idempotent and explains a conflicting, pre-existing
//!   queue instead of surfacing a bare `PRECONDITION_FAILED`.
//! - [`routes`] is the one place that knows which exchange or queue a job or an event
//!   goes to next and which `x-wf-*` headers it carries.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod connection;
mod consumer;
mod error;
mod fields;
mod publisher;
pub mod routes;
mod settle;
mod topology;

pub use connection::{Broker, ConnectOptions, DEFAULT_FRAME_MAX};
pub use consumer::{Consumer, Incoming};
pub use error::{BrokerError, PublishError};
pub use fields::HeaderValue;
pub use publisher::{OutgoingMessage, Publisher};
pub use topology::{Topology, DELIVERY_LIMIT};

/// The names of the topology (docs/api.md, "RabbitMQ topology"). They are part of the product: operators, dashboards and
/// upstream publishers refer to them, so they never change without a migration plan.
pub mod names {
    use std::time::Duration;

    /// Topic exchange upstream services publish events to; routing key = event type.
    pub const EVENTS_EXCHANGE: &str = "workflows.events";
    /// Queue of events waiting to be fanned out, bound to [`EVENTS_EXCHANGE`] with `#`.
    pub const FANOUT_QUEUE: &str = "workflows.fanout";
    /// Direct exchange for delivery jobs (first attempts and expired retries).
    pub const DELIVERIES_EXCHANGE: &str = "workflows.deliveries";
    /// Queue of delivery jobs, bound to [`DELIVERIES_EXCHANGE`] with [`DELIVERY_ROUTING_KEY`].
    pub const DELIVERIES_QUEUE: &str = "workflows.deliveries";
    /// Routing key of delivery jobs on [`DELIVERIES_EXCHANGE`].
    pub const DELIVERY_ROUTING_KEY: &str = "delivery";
    /// Fanout exchange for deliveries that exhausted the retry schedule.
    pub const DEAD_EXCHANGE: &str = "workflows.dead";
    /// Queue behind [`DEAD_EXCHANGE`], listed and replayed by `wfctl dlq`.
    pub const DEAD_QUEUE: &str = "workflows.deliveries.dead";
    /// Queue of rejected events; published to through the default exchange.
    pub const INVALID_QUEUE: &str = "workflows.events.invalid";
    /// Prefix of the per-delay retry queues.
    pub const RETRY_QUEUE_PREFIX: &str = "workflows.retry.";

    /// The retry queue for one delay, e.g. `workflows.retry.30s`. One queue per delay,
    /// because RabbitMQ only expires messages at the head of a queue (a short delay
    /// behind a long one would wait for the long one).
    pub fn retry_queue(delay: Duration) -> String {
        format!(
            "{RETRY_QUEUE_PREFIX}{}",
            wf_core::duration::format_duration(delay)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::names;
    use std::time::Duration;

    #[test]
    fn retry_queue_names_follow_the_duration_format() {
        assert_eq!(
            names::retry_queue(Duration::from_secs(5)),
            "workflows.retry.5s"
        );
        assert_eq!(
            names::retry_queue(Duration::from_secs(120)),
            "workflows.retry.2m"
        );
        assert_eq!(
            names::retry_queue(Duration::from_millis(300)),
            "workflows.retry.300ms"
        );
        let day = Duration::from_secs(86_400);
        assert_eq!(
            names::retry_queue(day),
            format!(
                "workflows.retry.{}",
                wf_core::duration::format_duration(day)
            )
        );
    }
}
