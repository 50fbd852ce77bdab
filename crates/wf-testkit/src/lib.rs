//! What the workspace's tests share, so that every crate isolates, polls and receives the
//! same way (a dev-dependency only; nothing here ships).
//!
//! - [`Database`]: a Postgres database of its own per test, dropped with the value.
//! - [`Vhost`]: a RabbitMQ vhost of its own per test (queues, exchanges and connections
//!   included), deleted with the value.
//! - [`Receiver`]: an HTTPS subscriber on loopback that records every request and answers
//!   what the test planned, with a fresh certificate the worker can be told to trust.
//! - [`eventually`] / [`within`]: waiting for asynchronous state with a deadline, never a
//!   bare sleep.
//! - [`unique`], the [`http`] client for plain-HTTP ports, [`prometheus`] scrapes, and the
//!   [`signature`] checks a subscriber would run.
//!
//! Tests talk to the real Postgres (`WF_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432`) and RabbitMQ (`127.0.0.1:5672`, guest/guest, and
//! its `rabbitmqctl`) of the machine; `make services` starts both.

pub mod http;
pub mod prometheus;
pub mod signature;

mod poll;
mod postgres;
mod rabbitmq;
mod receiver;

pub use poll::{eventually, within, Check};
pub use postgres::{pg_server_url, Database};
pub use rabbitmq::{rabbitmqctl, Vhost, AMQP_SERVER_URL};
pub use receiver::{Receiver, Recorded, Reply};

/// `prefix` followed by `_` and 12 random lowercase letters: a name no other test (or run)
/// uses, valid as a Postgres database, a vhost, an organisation id or a file name.
pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let suffix: String = (0..12)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect();
    format!("{prefix}_{suffix}")
}
