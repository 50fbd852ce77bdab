//! End-to-end tests: the real ingestor and worker, in-process or as child processes,
//! against the real Postgres and RabbitMQ of this machine, delivering to a real HTTPS
//! receiver on loopback.

mod amqp;
mod api;
mod auto_disable;
mod backpressure;
mod custom_headers;
mod dead_letters;
mod deploy;
mod finding;
mod harness;
mod hostile;
mod invalid;
mod log;
mod metrics;
mod openapi;
mod outbox;
mod pipeline;
mod process;
mod retries;
mod test_send;
mod webhook_rules;
