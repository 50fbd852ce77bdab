//! Integration tests against the real RabbitMQ on 127.0.0.1:5672. Every test runs in its
//! own vhost (created and deleted around it), so tests run in parallel without seeing
//! each other and without touching anybody else's queues.

mod connection;
mod consume;
mod failover;
mod publish;
mod settle;
mod support;
mod topology;
