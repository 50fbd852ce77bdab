//! End-to-end tests: the real ingestor and worker, in-process or as child processes,
//! against the real Postgres and RabbitMQ of this machine, delivering to a real HTTPS
//! receiver on loopback.

mod amqp;
mod api;
mod backpressure;
mod dead_letters;
mod deploy;
mod harness;
mod invalid;
mod log;
mod metrics;
mod outbox;
mod pipeline;
mod process;
mod retries;
mod webhook_rules;
