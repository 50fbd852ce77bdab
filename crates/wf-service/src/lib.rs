//! What every service process (`wf-ingestor`, `wf-worker`) does the same way: connect to
//! its backends at start-up ([`connect`]) and emit system events through the outbox
//! ([`outbox`]).
#![forbid(unsafe_code)]

pub mod outbox;

use anyhow::Context;
use wf_broker::{Broker, Publisher, Topology};
use wf_core::config::Config;
use wf_store::Store;

/// A service's connections, ready to serve.
pub struct Backends {
    pub store: Store,
    pub broker: Broker,
    pub publisher: Publisher,
}

/// Applies the database migrations, connects to Postgres (a pool of `pool_size`) and
/// RabbitMQ, declares the RabbitMQ topology and opens a confirmed publisher, in that order.
///
/// # Errors
/// The first step that failed, with context naming it (`applying database migrations`,
/// `connecting to Postgres`, `connecting to RabbitMQ`, `declaring the RabbitMQ topology`,
/// `opening a publisher`).
pub async fn connect(config: &Config, pool_size: usize) -> anyhow::Result<Backends> {
    wf_store::migrate(&config.database_url)
        .await
        .context("applying database migrations")?;
    let store = Store::connect(&config.database_url, config.secret_key.clone(), pool_size)
        .await
        .context("connecting to Postgres")?;
    // The delivery log's days around now exist before anything is served or consumed
    // (the workers' maintenance keeps them ahead from then on).
    store
        .ensure_log_partitions_around(wf_core::time::now_ms())
        .await
        .context("creating the delivery log's partitions")?;
    let broker = Broker::connect(&config.amqp_url)
        .await
        .context("connecting to RabbitMQ")?;
    broker
        .declare_topology(&Topology::for_config(config))
        .await
        .context("declaring the RabbitMQ topology")?;
    let publisher = broker.publisher().await.context("opening a publisher")?;
    Ok(Backends {
        store,
        broker,
        publisher,
    })
}
