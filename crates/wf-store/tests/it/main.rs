//! wf-store against a real Postgres (`WF_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432`). Every test gets a database of its own from
//! wf-testkit, dropped when the test ends (also when it panics).

mod deliveries;
mod events;
mod feed;
mod headers;
mod health;
mod keys;
mod lookups;
mod migrations;
mod outbox;
mod partitions;
mod rekey;
mod replay;
mod support;
mod webhooks;
