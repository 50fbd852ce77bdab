//! The exchanges, queues and bindings of the RabbitMQ topology (docs/api.md), as data and
//! as declarations.

use crate::error::BrokerError;
use crate::names;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use std::collections::BTreeSet;
use std::time::Duration;
use wf_core::config::QueueType;

/// How many times a quorum work queue redelivers one message before dead-lettering it
/// (`x-delivery-limit`). The guard against a poison message that crashes every worker
/// that takes it: without it such a message would cycle forever. Generous, because a
/// graceful shutdown hands in-flight messages back, which counts as a redelivery too.
pub const DELIVERY_LIMIT: i64 = 20;

/// What to declare. Built from configuration (`WF_QUEUE_TYPE`, `WF_RETRY_SCHEDULE`,
/// `WF_QUORUM_GROUP_SIZE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// `x-queue-type` of every declared queue.
    pub queue_type: QueueType,
    /// The retry delays; one queue `workflows.retry.<delay>` per distinct delay.
    pub retry_delays: Vec<Duration>,
    /// Replicas of each quorum queue (`x-quorum-initial-group-size`; RabbitMQ takes all
    /// nodes when there are fewer). `None` leaves it to the broker (every node). Applies
    /// to queues declared from now on: an existing queue keeps its members.
    pub quorum_group_size: Option<u16>,
}

impl Topology {
    /// The topology a deployment's configuration asks for: its queue type, one retry
    /// queue per distinct delay of its schedule and its quorum queues' replicas. Every
    /// service and `wfctl` declares this.
    pub fn for_config(config: &wf_core::config::Config) -> Topology {
        Topology {
            queue_type: config.queue_type,
            retry_delays: config.retry_schedule.distinct_delays(),
            quorum_group_size: Some(config.quorum_group_size),
        }
    }
}

#[derive(Debug, PartialEq)]
struct QueueSpec {
    name: String,
    args: FieldTable,
}

struct ExchangeSpec {
    name: &'static str,
    kind: ExchangeKind,
}

struct BindingSpec {
    queue: String,
    exchange: &'static str,
    routing_key: &'static str,
}

fn exchanges() -> [ExchangeSpec; 3] {
    [
        ExchangeSpec {
            name: names::EVENTS_EXCHANGE,
            kind: ExchangeKind::Topic,
        },
        ExchangeSpec {
            name: names::DELIVERIES_EXCHANGE,
            kind: ExchangeKind::Direct,
        },
        ExchangeSpec {
            name: names::DEAD_EXCHANGE,
            kind: ExchangeKind::Fanout,
        },
    ]
}

fn bindings() -> [BindingSpec; 3] {
    [
        BindingSpec {
            queue: names::FANOUT_QUEUE.to_owned(),
            exchange: names::EVENTS_EXCHANGE,
            routing_key: "#",
        },
        BindingSpec {
            queue: names::DELIVERIES_QUEUE.to_owned(),
            exchange: names::DELIVERIES_EXCHANGE,
            routing_key: names::DELIVERY_ROUTING_KEY,
        },
        BindingSpec {
            queue: names::DEAD_QUEUE.to_owned(),
            exchange: names::DEAD_EXCHANGE,
            routing_key: "",
        },
    ]
}

fn string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes()))
}

/// Arguments every queue of the given type carries.
fn base_args(t: &Topology) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), string(t.queue_type.as_str()));
    if let (QueueType::Quorum, Some(n)) = (t.queue_type, t.quorum_group_size) {
        args.insert(GROUP_SIZE.into(), AMQPValue::LongLongInt(i64::from(n)));
    }
    args
}

/// The argument that sets a quorum queue's replicas.
const GROUP_SIZE: &str = "x-quorum-initial-group-size";

/// Dead-letter settings. On quorum queues dead-lettering is made at-least-once, which
/// RabbitMQ only honours together with `x-overflow: reject-publish` (without it the
/// strategy silently falls back to at-most-once, and a retry could be lost).
fn dead_letter(args: &mut FieldTable, queue_type: QueueType, exchange: &str, routing_key: &str) {
    args.insert("x-dead-letter-exchange".into(), string(exchange));
    args.insert("x-dead-letter-routing-key".into(), string(routing_key));
    if queue_type == QueueType::Quorum {
        args.insert("x-dead-letter-strategy".into(), string("at-least-once"));
        args.insert("x-overflow".into(), string("reject-publish"));
    }
}

/// A work queue: dead-letters poison messages to `exchange`/`routing_key`; on quorum
/// queues after [`DELIVERY_LIMIT`] redeliveries.
fn work_queue(name: &str, t: &Topology, exchange: &str, routing_key: &str) -> QueueSpec {
    let mut args = base_args(t);
    dead_letter(&mut args, t.queue_type, exchange, routing_key);
    if t.queue_type == QueueType::Quorum {
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
    }
    QueueSpec {
        name: name.to_owned(),
        args,
    }
}

fn queues(t: &Topology) -> Vec<QueueSpec> {
    let qt = t.queue_type;
    let mut queues = vec![
        // A poison event lands with the invalid ones (dead-lettered through the default
        // exchange, straight into the queue named by the routing key).
        work_queue(names::FANOUT_QUEUE, t, "", names::INVALID_QUEUE),
        work_queue(
            names::DELIVERIES_QUEUE,
            t,
            names::DEAD_EXCHANGE,
            names::DELIVERY_ROUTING_KEY,
        ),
        QueueSpec {
            name: names::DEAD_QUEUE.to_owned(),
            args: base_args(t),
        },
        QueueSpec {
            name: names::INVALID_QUEUE.to_owned(),
            args: base_args(t),
        },
    ];
    let delays: BTreeSet<Duration> = t.retry_delays.iter().copied().collect();
    for delay in delays {
        let mut args = base_args(t);
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        // Must be an integer type: a string TTL is rejected with PRECONDITION_FAILED.
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        dead_letter(
            &mut args,
            qt,
            names::DELIVERIES_EXCHANGE,
            names::DELIVERY_ROUTING_KEY,
        );
        queues.push(QueueSpec {
            name: names::retry_queue(delay),
            args,
        });
    }
    queues
}

/// Declares everything, on channels of `broker` (a refused declaration closes its
/// channel). Stops at the first failure, except one: a quorum queue that already exists
/// with other replicas than [`Topology::quorum_group_size`] asks for (or none set) keeps
/// them, with a warning, since RabbitMQ cannot change the argument of an existing queue.
pub(crate) async fn declare(broker: &crate::Broker, t: &Topology) -> Result<(), BrokerError> {
    let patience = crate::connection::OP_PATIENCE;
    let mut channel = broker.channel(patience).await?;
    let result = declare_on(broker, &mut channel, t).await;
    crate::connection::close_quietly(&channel).await;
    result
}

async fn declare_on(
    broker: &crate::Broker,
    channel: &mut Channel,
    t: &Topology,
) -> Result<(), BrokerError> {
    for ex in exchanges() {
        channel
            .exchange_declare(
                ex.name.into(),
                ex.kind,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| BrokerError::on_object("exchange.declare", "exchange", ex.name, &e))?;
    }
    for q in queues(t) {
        let name = crate::fields::short(&q.name).map_err(|detail| BrokerError::InvalidName {
            name: q.name.clone(),
            detail,
        })?;
        let declared = channel
            .queue_declare(
                name.clone(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                q.args.clone(),
            )
            .await
            .map_err(|e| BrokerError::on_object("queue.declare", "queue", &q.name, &e));
        match declared {
            Ok(_) => {}
            Err(BrokerError::TopologyConflict { detail, .. }) if detail.contains(GROUP_SIZE) => {
                // Only the replica count differs: the queue stays as it is.
                tracing::warn!(
                    queue = %q.name,
                    detail = %detail,
                    "existing quorum queue keeps its replicas; change them with \
                     `rabbitmq-queues grow`/`shrink` or `add_member`"
                );
                *channel = broker.channel(crate::connection::OP_PATIENCE).await?;
                channel
                    .queue_declare(
                        name,
                        QueueDeclareOptions {
                            durable: true,
                            passive: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| BrokerError::on_object("queue.declare", "queue", &q.name, &e))?;
            }
            Err(e) => return Err(e),
        }
    }
    for b in bindings() {
        channel
            .queue_bind(
                b.queue.as_str().into(),
                b.exchange.into(),
                b.routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| BrokerError::on_object("queue.bind", "queue", &b.queue, &e))?;
    }
    tracing::info!(
        queue_type = t.queue_type.as_str(),
        retry_queues = t.retry_delays.len(),
        "RabbitMQ topology declared"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(q: &'a QueueSpec, key: &str) -> Option<&'a AMQPValue> {
        q.args.inner().get(key)
    }

    fn topology(queue_type: QueueType) -> Topology {
        Topology {
            queue_type,
            retry_delays: vec![
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(5),
            ],
            quorum_group_size: Some(3),
        }
    }

    #[test]
    fn quorum_queues_ask_for_their_replicas_and_classic_ones_do_not() {
        for q in queues(&topology(QueueType::Quorum)) {
            assert_eq!(
                get(&q, GROUP_SIZE),
                Some(&AMQPValue::LongLongInt(3)),
                "{}",
                q.name
            );
        }
        for q in queues(&topology(QueueType::Classic)) {
            assert_eq!(get(&q, GROUP_SIZE), None, "{}", q.name);
        }
        let unset = Topology {
            quorum_group_size: None,
            ..topology(QueueType::Quorum)
        };
        for q in queues(&unset) {
            assert_eq!(get(&q, GROUP_SIZE), None, "{}", q.name);
        }
    }

    /// `WF_QUORUM_GROUP_SIZE` (by default one replica per `WF_AMQP_URL` node, at most 3)
    /// is what every quorum queue asks for.
    #[test]
    fn the_configured_replica_count_is_asked_for() {
        let size = |vars: &[(&str, &str)]| {
            let config = wf_core::config::Config::from_lookup(wf_core::config::Role::Worker, |k| {
                vars.iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| (*v).to_owned())
            })
            .unwrap();
            Topology::for_config(&config).quorum_group_size
        };
        assert_eq!(size(&[]), Some(1));
        let four = "amqp://a/%2f,amqp://b/%2f,amqp://c/%2f,amqp://d/%2f";
        assert_eq!(size(&[("WF_AMQP_URL", four)]), Some(3));
        assert_eq!(
            size(&[("WF_AMQP_URL", "amqp://a/%2f,amqp://b/%2f")]),
            Some(2)
        );
        let five = [("WF_AMQP_URL", four), ("WF_QUORUM_GROUP_SIZE", "5")];
        assert_eq!(size(&five), Some(5));
        let t = Topology {
            quorum_group_size: size(&five),
            ..topology(QueueType::Quorum)
        };
        for q in queues(&t) {
            assert_eq!(
                get(&q, GROUP_SIZE),
                Some(&AMQPValue::LongLongInt(5)),
                "{}",
                q.name
            );
        }
    }

    #[test]
    fn one_retry_queue_per_distinct_delay() {
        let qs = queues(&topology(QueueType::Quorum));
        let retry: Vec<&str> = qs
            .iter()
            .map(|q| q.name.as_str())
            .filter(|n| n.starts_with(names::RETRY_QUEUE_PREFIX))
            .collect();
        assert_eq!(retry, ["workflows.retry.5s", "workflows.retry.30s"]);
        let q = qs.iter().find(|q| q.name == "workflows.retry.30s").unwrap();
        assert_eq!(
            get(q, "x-message-ttl"),
            Some(&AMQPValue::LongLongInt(30_000))
        );
        assert_eq!(
            get(q, "x-dead-letter-exchange"),
            Some(&string(names::DELIVERIES_EXCHANGE))
        );
        assert_eq!(
            get(q, "x-dead-letter-strategy"),
            Some(&string("at-least-once"))
        );
        assert_eq!(get(q, "x-overflow"), Some(&string("reject-publish")));
    }

    #[test]
    fn quorum_work_queues_have_a_delivery_limit_and_classic_ones_do_not() {
        for (qt, limited) in [(QueueType::Quorum, true), (QueueType::Classic, false)] {
            let qs = queues(&topology(qt));
            for name in [names::FANOUT_QUEUE, names::DELIVERIES_QUEUE] {
                let q = qs.iter().find(|q| q.name == name).unwrap();
                assert_eq!(get(q, "x-queue-type"), Some(&string(qt.as_str())));
                assert_eq!(get(q, "x-delivery-limit").is_some(), limited, "{name}");
                assert_eq!(get(q, "x-dead-letter-strategy").is_some(), limited);
                assert!(get(q, "x-dead-letter-exchange").is_some());
            }
        }
    }

    #[test]
    fn poison_events_go_to_the_invalid_queue() {
        let qs = queues(&topology(QueueType::Quorum));
        let q = qs.iter().find(|q| q.name == names::FANOUT_QUEUE).unwrap();
        assert_eq!(get(q, "x-dead-letter-exchange"), Some(&string("")));
        assert_eq!(
            get(q, "x-dead-letter-routing-key"),
            Some(&string(names::INVALID_QUEUE))
        );
    }
}
