//! `wf-worker`: consumes events, fans them out to subscribed webhooks, and delivers each
//! one signed over HTTPS with durable retries and dead-lettering (README, "Retries, dead letters, replay"; docs/api.md).
//!
//! Stateless: everything it holds is also in RabbitMQ (work in progress, scheduled
//! retries) or Postgres (subscriptions, the delivery log), so any worker may die at any
//! instant and every delivery still happens at least once.
#![forbid(unsafe_code)]

pub mod cache;
pub mod client;
pub mod deliver;
pub mod endpoints;
pub mod fanout;
pub mod health;
pub mod log;
pub mod pool;
pub mod signed;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wf_broker::{names, Broker, Incoming};
use wf_core::config::Config;
use wf_store::Store;

use crate::cache::SubscriptionCache;
use crate::client::{ClientConfig, DeliveryClient};
use crate::deliver::{Deliverer, Fleet};
use crate::fanout::Fanout;
use crate::log::DeliveryLog;

/// Postgres connections per worker: the log writer, the subscription cache's loads and
/// the disable-on-410 path; the pool hands out the most recently used first.
const DB_POOL_SIZE: usize = 16;

/// Runs a worker until `shutdown` is cancelled, then drains: stops consuming, lets
/// in-flight deliveries finish within `WF_SHUTDOWN_GRACE`, hands back the rest (the
/// broker requeues unacked messages when the connection closes) and flushes the log.
///
/// # Errors
/// Start-up failures (Postgres or RabbitMQ unreachable, migration or topology conflict,
/// unreadable `WF_EXTRA_ROOT_CA`), with context naming what failed.
pub async fn run(
    config: Config,
    ops_listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    for w in config.warnings() {
        warn!("{w}");
    }
    let concurrency = config.worker_concurrency;
    wf_telemetry::metrics().init_retry_tiers(&config.retry_schedule);
    let client = DeliveryClient::new(ClientConfig {
        timeout: config.delivery_timeout,
        allowed: config.allowed_target_cidrs.clone(),
        extra_root_ca: config.extra_root_ca.clone(),
        user_agent: format!("WorkFlows-Webhooks/{}", wf_core::VERSION),
        max_idle_per_host: usize::from(concurrency).min(512),
        max_idle_total: config.worker_idle_connections as usize,
    })
    .context("building the delivery HTTP client")?;
    let wf_service::Backends {
        store,
        broker,
        publisher,
    } = wf_service::connect(&config, DB_POOL_SIZE).await?;

    let internal = CancellationToken::new();
    let cache = SubscriptionCache::new(store.clone());
    match wf_store::listen_changes(&config.database_url).await {
        Ok(feed) => {
            tokio::spawn(cache.clone().follow(feed, internal.clone()));
        }
        Err(e) => cache::warn_no_feed(&e),
    }
    let (log, log_writer) = DeliveryLog::start(store.clone());
    let pending_acks = log.pending_acks();
    tokio::spawn(wf_service::outbox::relay(
        store.clone(),
        publisher.clone(),
        internal.clone(),
    ));
    tokio::spawn(maintain_loop(
        store.clone(),
        config.delivery_log_retention,
        internal.clone(),
    ));

    tokio::spawn(health::auto_disable_loop(
        store.clone(),
        publisher.clone(),
        cache.clone(),
        config.auto_disable_after,
        internal.clone(),
    ));

    let fleet = Fleet::default();
    tokio::spawn(count_fleet(broker.clone(), fleet.clone(), internal.clone()));
    let deliverer = Arc::new(Deliverer {
        cache: cache.clone(),
        publisher: publisher.clone(),
        log: log.clone(),
        client,
        store: store.clone(),
        schedule: config.retry_schedule.clone(),
        allowed: config.allowed_target_cidrs.clone(),
        endpoints: endpoints::Endpoints::new(endpoints::Config {
            // No point holding an endpoint's deliveries back for longer than the first
            // retry would wait (it doubles after each failed probe, up to 5 minutes).
            open_for: config.retry_schedule.distinct_delays()[0]
                .clamp(Duration::from_secs(1), Duration::from_secs(30)),
            ..endpoints::Config::new(
                usize::from(concurrency),
                usize::from(config.endpoint_max_concurrency),
            )
        }),
        fleet,
        parking: Arc::new(tokio::sync::Semaphore::new(usize::from(concurrency))),
    });
    // On shutdown, deliveries that have not started are handed back rather than started
    // late (those in flight finish within the grace period).
    tokio::spawn({
        let endpoints = deliverer.endpoints.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            endpoints.close();
        }
    });
    let fanout = Arc::new(Fanout {
        cache,
        deliverer: deliverer.clone(),
        publisher,
        log,
    });

    let fanout_alive = Arc::new(AtomicBool::new(false));
    let deliver_alive = Arc::new(AtomicBool::new(false));
    let ready: wf_telemetry::ReadinessCheck = {
        let (store, broker) = (store.clone(), broker.clone());
        let (fa, da) = (fanout_alive.clone(), deliver_alive.clone());
        Arc::new(move || {
            let (store, broker) = (store.clone(), broker.clone());
            let (fa, da) = (fa.clone(), da.clone());
            Box::pin(async move {
                store.ping().await.map_err(|e| format!("postgres: {e}"))?;
                if !broker.is_connected() {
                    return Err("rabbitmq: not connected".to_owned());
                }
                if !fa.load(Ordering::Acquire) || !da.load(Ordering::Acquire) {
                    return Err("consumers not running".to_owned());
                }
                Ok(())
            })
        })
    };
    let ops = tokio::spawn(wf_telemetry::serve_ops(
        ops_listener,
        ready,
        internal.clone(),
    ));

    let grace = config.shutdown_grace;
    let prefetch = prefetch_for(concurrency);
    // Handlers are bounded by the prefetch, not by the worker's slots: a handler waiting
    // for its endpoint holds no slot, and the endpoints' dispatcher bounds what is in
    // flight to `WF_WORKER_CONCURRENCY`.
    let fanout_loop = consume_loop(
        broker.clone(),
        names::FANOUT_QUEUE,
        prefetch,
        usize::from(prefetch),
        fanout_alive,
        shutdown.clone(),
        grace,
        move |m| fanout.clone().handle(m),
    );
    let deliver_loop = consume_loop(
        broker.clone(),
        names::DELIVERIES_QUEUE,
        prefetch,
        usize::from(prefetch),
        deliver_alive,
        shutdown.clone(),
        grace,
        move |m| deliverer.clone().handle(m),
    );
    info!(concurrency, prefetch, "worker consuming");
    let (a, b) = tokio::join!(fanout_loop, deliver_loop);
    let result = a.and(b);

    // Every handler is done (or abandoned after the grace period): flush the log, then
    // send the acks that waited for it, before the connection closes.
    match tokio::time::timeout(Duration::from_secs(10), log_writer).await {
        Ok(_) => {}
        Err(_) => warn!("delivery log flush did not finish within 10 s"),
    }
    pending_acks.close();
    if tokio::time::timeout(Duration::from_secs(5), pending_acks.wait())
        .await
        .is_err()
    {
        warn!("acks of logged messages did not finish within 5 s; the broker will redeliver them");
    }
    internal.cancel();
    let _ = ops.await;
    broker.close().await;
    info!("worker stopped");
    result
}

/// Messages a consumer may hold unacked for `concurrency` slots. A message stays unacked
/// after its handler is done until the log has written its outcome (one batch: up to
/// 20 ms of linger plus the write), so each slot gets one more message than it works on.
/// Twice the concurrency delivered as fast as four times on the loopback bench (where the
/// log wait is longest relative to a delivery), and it leaves fewer unstarted messages
/// sitting in a worker whose slots are all busy with slow endpoints, where another
/// worker could take them. A stalled log stops consumption at twice the concurrency.
fn prefetch_for(concurrency: u16) -> u16 {
    concurrency.saturating_mul(2)
}

/// Consumes `queue` until `shutdown`, running `handle` for each message on its own task,
/// at most `max_in_flight` at once. On shutdown: cancel the consumer, then wait up to
/// `grace` for the handlers.
#[allow(clippy::too_many_arguments)]
async fn consume_loop<F, Fut>(
    broker: Broker,
    queue: &'static str,
    prefetch: u16,
    max_in_flight: usize,
    alive: Arc<AtomicBool>,
    shutdown: CancellationToken,
    grace: Duration,
    handle: F,
) -> anyhow::Result<()>
where
    F: Fn(Incoming) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tag = format!("wf-worker-{}-{}", queue, std::process::id());
    let mut consumer = broker
        .consume(queue, prefetch, &tag)
        .await
        .with_context(|| format!("consuming {queue}"))?;
    alive.store(true, Ordering::Release);
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut tasks = JoinSet::new();
    loop {
        // Reap finished handlers so the set holds only what is in flight.
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = consumer.next() => m,
        };
        let Some(msg) = msg else { break };
        // Boxed: a handler's future is ~5 KiB (the HTTP client's futures live inside it),
        // and tokio moves a task's future and its stages by value; a profile showed those
        // copies as most of the worker's memmove.
        let fut = Box::pin(handle(msg));
        tasks.spawn(async move {
            fut.await;
            drop(permit);
        });
    }
    alive.store(false, Ordering::Release);
    consumer.cancel().await;
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        // Handlers still running are abandoned: their messages were never acked, so the
        // broker hands them to another worker (at least once), and the delivery log can
        // flush without waiting for them.
        warn!(
            queue,
            in_flight = tasks.len(),
            "grace period over; unfinished messages go back to the queue"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    } else {
        info!(queue, "drained");
    }
    Ok(())
}

/// How often a worker counts the fleet (the consumers of `workflows.fanout`), which splits
/// every webhook's `rateLimit` between the workers.
const COUNT_FLEET_EVERY: Duration = Duration::from_secs(5);

/// Keeps `fleet` up to date until `stop`. A count that fails keeps the last one.
async fn count_fleet(broker: Broker, fleet: Fleet, stop: CancellationToken) {
    loop {
        match broker.consumer_count(names::FANOUT_QUEUE).await {
            Ok(n) => fleet.set(n),
            Err(e) => warn!(error = %e, "could not count the workers; keeping the last count"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(COUNT_FLEET_EVERY) => {}
        }
    }
}

/// How often a worker tries to maintain the delivery log (one worker at a time does it).
const MAINTAIN_EVERY: Duration = Duration::from_secs(600);

/// Keeps the delivery log's partitions: creates the days ahead and applies
/// `WF_DELIVERY_LOG_RETENTION` by dropping whole days (deliveries, attempts and payloads),
/// from one worker at a time (advisory lock). The first round runs at once: start-up has
/// created the days ahead already, this one applies retention.
async fn maintain_loop(store: Store, retention: Duration, stop: CancellationToken) {
    let Ok(retention) = chrono::Duration::from_std(retention) else {
        warn!("WF_DELIVERY_LOG_RETENTION is out of range; the delivery log is not maintained");
        return;
    };
    loop {
        match store.try_maintain_log(chrono::Utc::now(), retention).await {
            Ok(Some(m)) => {
                if m.created > 0 || !m.dropped.is_empty() || m.events_pruned > 0 {
                    info!(
                        created = m.created,
                        dropped = ?m.dropped,
                        idempotency_records_pruned = m.events_pruned,
                        "maintained the delivery log"
                    );
                }
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "maintaining the delivery log failed; will retry"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(MAINTAIN_EVERY) => {}
        }
    }
}
