//! The kit against what it stands in front of: the receiver over real TLS, a database on
//! the real Postgres, a vhost on the real RabbitMQ. A kit that quietly did nothing would
//! make every test built on it pass for the wrong reason.

mod isolation;
mod receiver;
