//! The broker's own publish→consume ceiling, measured in the same run: a temporary queue
//! of the same type in the bench vhost, N persistent messages of the same size published
//! with pipelined confirms while one consumer (manual acks, prefetch 256) drains it.
//!
//! Two routes are measured: straight to the queue through the default exchange (the
//! plain ceiling), and through a topic exchange with the events' routing key, which is
//! how every event reaches `workflows.fanout` (`workflows.events` is a topic exchange).
//! Topic routing costs RabbitMQ noticeably more per message, so the second ceiling is the
//! broker's limit for the path the pipeline actually uses.
//!
//! Publishing and consuming go through `wf_broker` exactly as the services do; only the
//! declaration and deletion of the temporary queue and exchange, which `wf_broker` has no
//! API for (it declares just the product's topology), use lapin directly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use wf_broker::Broker;

use crate::harness::load;

/// Prefetch of the ceiling's consumer.
const PREFETCH: u16 = 256;

/// How the ceiling's messages reach its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Default exchange, routing key = queue name.
    Direct,
    /// A durable topic exchange bound with the events' routing key, like `workflows.events`.
    Topic,
}

/// What the ceiling run measured.
pub struct Ceiling {
    pub messages: u64,
    pub elapsed: Duration,
    pub publish_failures: u64,
}

impl Ceiling {
    pub fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub async fn measure(
    amqp_url: &str,
    queue_type: &str,
    route: Route,
    n: u64,
    body: Vec<u8>,
    timeout: Duration,
) -> anyhow::Result<Ceiling> {
    let queue = format!("wf_bench.ceiling.{}", std::process::id());
    let exchange = format!("wf_bench.ceiling.{}.topic", std::process::id());
    let conn = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ for the ceiling run")?;
    let channel = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(queue_type.as_bytes())),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .with_context(|| format!("declaring the ceiling queue {queue}"))?;
    let target = match route {
        Route::Direct => Target {
            exchange: "",
            routing_key: &queue,
        },
        Route::Topic => {
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("declaring the ceiling exchange {exchange}"))?;
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    load::EVENT_TYPE.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("binding the ceiling queue to {exchange}"))?;
            Target {
                exchange: &exchange,
                routing_key: load::EVENT_TYPE,
            }
        }
    };

    // `run` bounds its own wait for the consumer; this bounds publishing too.
    let result = tokio::time::timeout(timeout * 2, run(amqp_url, &queue, target, n, body, timeout))
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "the ceiling run did not finish within {:?}",
                timeout * 2
            ))
        });

    let deleted = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    if route == Route::Topic {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "OK".into()).await;
    let ceiling = result?;
    deleted.with_context(|| format!("deleting the ceiling queue {queue}"))?;
    Ok(ceiling)
}

/// Where the ceiling publishes.
#[derive(Clone, Copy)]
struct Target<'a> {
    exchange: &'a str,
    routing_key: &'a str,
}

async fn run(
    amqp_url: &str,
    queue: &str,
    target: Target<'_>,
    n: u64,
    body: Vec<u8>,
    timeout: Duration,
) -> anyhow::Result<Ceiling> {
    let broker = Broker::connect(amqp_url).await?;
    let publisher = broker.publisher().await?;
    let mut consumer = broker.consume(queue, PREFETCH, "wf-bench-ceiling").await?;
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();

    let acked_by_consumer = acked.clone();
    let consuming = tokio::spawn(async move {
        let mut received = 0;
        while received < n {
            let Some(msg) = consumer.next().await else {
                break;
            };
            received += 1;
            let acked = acked_by_consumer.clone();
            tokio::spawn(async move {
                if msg.ack().await.is_ok() {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        consumer.cancel().await;
    });

    let routing_key: Arc<str> = Arc::from(target.routing_key);
    let exchange: Arc<str> = Arc::from(target.exchange);
    let published = load::publish_amqp(
        &publisher,
        exchange,
        routing_key,
        &load::Plan::fixed(n, 0.0),
        |_| body.clone(),
    )
    .await;

    let deadline = start + timeout;
    let mut done = false;
    while Instant::now() < deadline {
        if acked.load(Ordering::Relaxed) >= published.published {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    consuming.abort();
    broker.close().await;
    anyhow::ensure!(
        done,
        "the ceiling run timed out after {timeout:?}: {} of {} messages consumed",
        acked.load(Ordering::Relaxed),
        published.published
    );
    Ok(Ceiling {
        messages: published.published,
        elapsed,
        publish_failures: published.failed,
    })
}
