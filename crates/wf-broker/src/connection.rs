//! The one AMQP connection of a process, and keeping it alive.
//!
//! A background supervisor watches the connection and reconnects with exponential
//! backoff as soon as it drops, whether or not anybody is using it at that moment: a
//! process that only publishes on demand (the ingestor) must report itself ready again
//! without waiting for a request to arrive, or a readiness probe would keep it out of
//! rotation forever.
//!
//! The URL may list several nodes of a cluster, comma-separated. A process connects to one
//! (starting at a random one, so a fleet spreads over the nodes) and, when it loses it,
//! to the next one that answers: each attempt of the backoff tries the next node in the
//! list, so a dead node costs one failed attempt, not a whole backoff.

use crate::consumer::{Consumer, Incoming};
use crate::error::{amqp_code, code, redact_url, BrokerError};
use crate::fields::short;
use crate::publisher::Publisher;
use crate::settle::{Settler, WeakSettler};
use crate::topology::{self, Topology};
use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long one-off operations (declare, depth, get, purge, opening a publisher) wait for
/// a dropped connection to come back before failing with [`BrokerError::Unavailable`].
pub(crate) const OP_PATIENCE: Duration = Duration::from_secs(10);
/// How often the supervisor re-checks the connection when lapin reports nothing.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How long the supervisor waits after the broker refused a reconnection.
const REFUSED_RETRY: Duration = Duration::from_secs(30);
/// `frame_max` asked for when the URL does not set one. lapin keeps a send and a receive
/// buffer of 32 frames each, so RabbitMQ's default 128 KiB frames cost 8 MiB of resident
/// memory per connection (the largest single item in a heap profile of the worker).
/// 32 KiB frames hold a typical event in one frame; larger bodies are split, which AMQP
/// handles transparently. `?frame_max=…` in the URL overrides it.
pub const DEFAULT_FRAME_MAX: u32 = 32 * 1024;

/// How to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Connection name shown by `rabbitmqctl list_connections name` and the management UI,
    /// so an operator can tell which process a connection belongs to (and close it).
    pub name: String,
    /// How long [`Broker::connect_with`] keeps retrying an unreachable broker. Services
    /// usually start together with RabbitMQ, hence a generous default of 30 s.
    pub patience: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "wf".to_owned());
        ConnectOptions {
            name: format!("{exe} pid {}", std::process::id()),
            patience: Duration::from_secs(30),
        }
    }
}

/// A handle to the process's single RabbitMQ connection. Cheap to clone; every clone
/// shares the connection. Channels are opened per publisher, per consumer and per
/// one-off operation, as AMQP intends.
#[derive(Clone)]
pub struct Broker {
    shared: Arc<Shared>,
}

/// The nodes of `WF_AMQP_URL`, in the order given.
#[derive(Clone)]
struct Nodes {
    uris: Vec<AMQPUri>,
    /// Each node's URL with its password replaced by `***`.
    redacted: Vec<String>,
}

impl Nodes {
    /// Parses a comma-separated list of AMQP URLs (one is a list of one), asking for
    /// [`DEFAULT_FRAME_MAX`] unless a URL sets `frame_max`.
    fn parse(list: &str) -> Result<Nodes, BrokerError> {
        let mut uris = Vec::new();
        let mut redacted = Vec::new();
        for raw in list.split(',') {
            let raw = raw.trim();
            let shown = redact_url(raw);
            if raw.is_empty() {
                return Err(BrokerError::InvalidUrl {
                    url: redact_url(list),
                    detail: "an empty entry in the list of node URLs".to_owned(),
                });
            }
            let mut uri = raw
                .parse::<AMQPUri>()
                .map_err(|detail| BrokerError::InvalidUrl {
                    url: shown.clone(),
                    detail,
                })?;
            uri.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
            uris.push(uri);
            redacted.push(shown);
        }
        Ok(Nodes { uris, redacted })
    }

    fn len(&self) -> usize {
        self.uris.len()
    }

    /// Where a process starts: a random node, so that a fleet spreads over the cluster.
    fn random_start(&self) -> usize {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as usize);
        (nanos ^ std::process::id() as usize) % self.len()
    }
}

struct Shared {
    redacted_url: String,
    /// Which node of the list the live connection goes to (for logs and tests).
    node: Arc<std::sync::atomic::AtomicUsize>,
    /// The live connection, `None` while reconnecting or after [`Broker::close`].
    state: watch::Sender<Option<Arc<Connection>>>,
    /// Pokes the supervisor when an operation noticed the connection is dead.
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    /// Channel used by [`Broker::get`]. A fetched message can only be settled on the
    /// channel it came from, so the channel must outlive the call; sharing one avoids
    /// opening a channel per message.
    get_channel: tokio::sync::Mutex<Option<Channel>>,
    /// The settling tasks of consumer channels, flushed by [`Broker::close`].
    settlers: Mutex<Vec<WeakSettler>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: stop the supervisor, which holds no handle itself.
        self.shutdown.cancel();
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("url", &self.shared.redacted_url)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Broker {
    /// Connects with [`ConnectOptions::default`] (retrying for up to 30 s).
    ///
    /// # Errors
    /// [`BrokerError::InvalidUrl`] for a malformed URL; [`BrokerError::Connect`] naming the
    /// URL (password redacted) when RabbitMQ stays unreachable for 30 s or refuses the
    /// credentials or vhost (those fail at once: waiting would not help).
    pub async fn connect(url: &str) -> Result<Broker, BrokerError> {
        Self::connect_with(url, ConnectOptions::default()).await
    }

    /// Connects, retrying with exponential backoff for up to `options.patience`, then
    /// keeps the connection alive in the background.
    ///
    /// # Errors
    /// As [`Broker::connect`].
    pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Broker, BrokerError> {
        let nodes = Nodes::parse(url)?;
        let redacted_url = nodes.redacted.join(",");
        let props = ConnectionProperties::default().with_connection_name(options.name.into());
        let started = Instant::now();
        let start = nodes.random_start();
        let (conn, at) = open_connection(&nodes, start, &props, Some(options.patience))
            .await
            .map_err(|(detail, retryable)| BrokerError::Connect {
                url: redacted_url.clone(),
                waited_secs: started.elapsed().as_secs(),
                detail,
                retryable,
            })?;
        info!(url = %nodes.redacted[at], "connected to RabbitMQ");

        let (state, _) = watch::channel(Some(Arc::new(conn)));
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let node = Arc::new(std::sync::atomic::AtomicUsize::new(at));
        tokio::spawn(supervise(Supervisor {
            nodes,
            node: node.clone(),
            props,
            state: state.clone(),
            wake: wake.clone(),
            shutdown: shutdown.clone(),
        }));
        Ok(Broker {
            shared: Arc::new(Shared {
                redacted_url,
                node,
                state,
                wake,
                shutdown,
                get_channel: tokio::sync::Mutex::new(None),
                settlers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Which node of the URL list the current (or last) connection goes to, counted from
    /// 0 in the order given.
    pub fn node(&self) -> usize {
        self.shared.node.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Declares the exchanges, queues and bindings of the topology (docs/api.md, "RabbitMQ
    /// topology"). Idempotent: declaring the same topology again is a no-op, so every
    /// service does it at start-up.
    ///
    /// # Errors
    /// [`BrokerError::TopologyConflict`] naming the queue (or exchange) when one exists
    /// with different arguments, e.g. a classic queue where a quorum queue is declared;
    /// [`BrokerError::Unavailable`] / [`BrokerError::Operation`] when the connection fails.
    pub async fn declare_topology(&self, t: &Topology) -> Result<(), BrokerError> {
        topology::declare(self, t).await
    }

    /// Opens a [`Publisher`] (a confirm-mode channel) for this connection.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] or [`BrokerError::Operation`] when no channel can be
    /// opened.
    pub async fn publisher(&self) -> Result<Publisher, BrokerError> {
        Publisher::open(self.clone()).await
    }

    /// Subscribes to `queue` with manual acks and a per-consumer prefetch of `prefetch`
    /// (never channel-global: `basic.qos global` on a quorum queue closes the connection).
    /// `tag` names the consumer in RabbitMQ's listings; it must be unique per channel,
    /// which it is since every consumer gets its own channel.
    ///
    /// # Errors
    /// [`BrokerError::NotFound`] when the queue does not exist, [`BrokerError::Unavailable`]
    /// or [`BrokerError::Operation`] when the connection fails. Later failures are handled
    /// inside [`Consumer::next`].
    pub async fn consume(
        &self,
        queue: &str,
        prefetch: u16,
        tag: &str,
    ) -> Result<Consumer, BrokerError> {
        Consumer::open(self.clone(), queue, prefetch, tag).await
    }

    /// The number of ready messages in `queue` (passive declare), for gauges, tests and
    /// `wfctl`. Unacknowledged messages are not counted.
    ///
    /// # Errors
    /// [`BrokerError::NotFound`] when the queue does not exist; connection errors as above.
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, BrokerError> {
        Ok(self.queue_counts(queue).await?.0)
    }

    /// The number of consumers of `queue` (passive declare). Every worker consumes
    /// `workflows.fanout` once, so for that queue this is the size of the worker fleet.
    ///
    /// # Errors
    /// As [`Broker::queue_depth`].
    pub async fn consumer_count(&self, queue: &str) -> Result<u32, BrokerError> {
        Ok(self.queue_counts(queue).await?.1)
    }

    /// (ready messages, consumers) of `queue`.
    async fn queue_counts(&self, queue: &str) -> Result<(u32, u32), BrokerError> {
        let name = short(queue).map_err(|detail| invalid_name(queue, detail))?;
        let channel = self.channel(OP_PATIENCE).await?;
        let result = channel
            .queue_declare(
                name,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|q| (q.message_count(), q.consumer_count()))
            .map_err(|e| BrokerError::on_object("queue.declare(passive)", "queue", queue, &e));
        close_quietly(&channel).await;
        result
    }

    /// Fetches one message from `queue` (`basic.get`) with manual ack, or `None` when the
    /// queue is empty. The message stays unacked until [`Incoming::ack`]/[`Incoming::nack`]
    /// or until the connection drops, when the broker requeues it.
    ///
    /// # Errors
    /// [`BrokerError::NotFound`] when the queue does not exist (this also closes the shared
    /// get channel, so messages fetched earlier and still unsettled are requeued and can no
    /// longer be acked); connection errors as above.
    pub async fn get(&self, queue: &str) -> Result<Option<Incoming>, BrokerError> {
        let name = short(queue).map_err(|detail| invalid_name(queue, detail))?;
        let channel = {
            let mut slot = self.shared.get_channel.lock().await;
            match slot.as_ref() {
                Some(c) if c.status().connected() => c.clone(),
                _ => {
                    let c = self.channel(OP_PATIENCE).await?;
                    *slot = Some(c.clone());
                    c
                }
            }
        };
        match channel
            .basic_get(name, BasicGetOptions { no_ack: false })
            .await
        {
            Ok(Some(msg)) => Ok(Some(Incoming::from_delivery(msg.delivery, channel))),
            Ok(None) => Ok(None),
            Err(e) => Err(BrokerError::on_object("basic.get", "queue", queue, &e)),
        }
    }

    /// Deletes every ready message of `queue` and returns how many there were.
    ///
    /// # Errors
    /// [`BrokerError::NotFound`] when the queue does not exist; connection errors as above.
    pub async fn purge(&self, queue: &str) -> Result<u32, BrokerError> {
        let name = short(queue).map_err(|detail| invalid_name(queue, detail))?;
        let channel = self.channel(OP_PATIENCE).await?;
        let result = channel
            .queue_purge(name, QueuePurgeOptions::default())
            .await
            .map_err(|e| BrokerError::on_object("queue.purge", "queue", queue, &e));
        close_quietly(&channel).await;
        result
    }

    /// An identity of the current connection (`None` while there is none): it changes
    /// when the connection is replaced after a loss.
    pub(crate) fn connection_id(&self) -> Option<usize> {
        self.shared
            .state
            .borrow()
            .as_ref()
            .map(|c| Arc::as_ptr(c) as usize)
    }

    /// Whether the connection is up right now (for `/readyz`): to any node of the list.
    /// False while the background supervisor is reconnecting (no node answers yet) and
    /// after [`Broker::close`].
    pub fn is_connected(&self) -> bool {
        self.shared
            .state
            .borrow()
            .as_ref()
            .is_some_and(|c| c.status().connected())
    }

    /// Closes the connection and stops reconnecting. Settle (ack/nack) in-flight
    /// deliveries first: once closed, the broker requeues whatever is unacked. Every
    /// clone of this broker, and every publisher and consumer made from it, is closed too.
    pub async fn close(&self) {
        // Acks the settling tasks are still holding go out before the connection closes;
        // otherwise the broker would redeliver messages that were handled.
        let settlers: Vec<Settler> = self
            .shared
            .settlers
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
            .iter()
            .filter_map(WeakSettler::upgrade)
            .collect();
        let flushes = futures::future::join_all(settlers.iter().map(Settler::flush));
        if tokio::time::timeout(Duration::from_secs(5), flushes)
            .await
            .is_err()
        {
            warn!("pending acks were not all sent within 5 s; the broker redelivers the rest");
        }
        self.shared.shutdown.cancel();
        self.shared.get_channel.lock().await.take();
        if let Some(conn) = self.shared.state.send_replace(None) {
            if conn.status().connected() {
                if let Err(e) = conn.close(200, "OK".into()).await {
                    debug!(error = %e, "closing the RabbitMQ connection");
                }
            }
        }
        info!(url = %self.shared.redacted_url, "RabbitMQ connection closed");
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }

    pub(crate) fn register_settler(&self, settler: &Settler) {
        if let Ok(mut all) = self.shared.settlers.lock() {
            all.retain(|s| s.upgrade().is_some());
            all.push(settler.downgrade());
        }
    }

    /// The AMQP URL (every node of the list) with passwords replaced by `***`, for logs
    /// and error messages.
    pub fn redacted_url(&self) -> &str {
        &self.shared.redacted_url
    }

    /// Waits for a live connection: for at most `patience`, or as long as it takes with
    /// `None` (consumers, which have nothing better to do).
    pub(crate) async fn connection(
        &self,
        patience: Option<Duration>,
    ) -> Result<Arc<Connection>, BrokerError> {
        let wait = async {
            let mut rx = self.shared.state.subscribe();
            loop {
                if self.is_closed() {
                    return Err(BrokerError::Closed);
                }
                let current = rx.borrow_and_update().clone();
                if let Some(conn) = current {
                    if conn.status().connected() {
                        return Ok(conn);
                    }
                    // Dead but not replaced yet: make sure the supervisor knows.
                    self.shared.wake.notify_one();
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return Err(BrokerError::Closed) },
                    () = self.shared.shutdown.cancelled() => return Err(BrokerError::Closed),
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        };
        match patience {
            None => wait.await,
            Some(patience) => tokio::time::timeout(patience, wait)
                .await
                .unwrap_or_else(|_| {
                    Err(BrokerError::Unavailable {
                        url: self.shared.redacted_url.clone(),
                    })
                }),
        }
    }

    /// Opens a channel, waiting up to `patience` for the connection to come back if it is
    /// down (a failed `channel.open` on a dead connection wakes the supervisor).
    pub(crate) async fn channel(&self, patience: Duration) -> Result<Channel, BrokerError> {
        let deadline = Instant::now() + patience;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let conn = self.connection(Some(remaining)).await?;
            match conn.create_channel().await {
                Ok(channel) => return Ok(channel),
                Err(e) if !conn.status().connected() && Instant::now() < deadline => {
                    debug!(error = %e, "connection dropped while opening a channel");
                    self.shared.wake.notify_one();
                }
                Err(e) => return Err(BrokerError::operation("channel.open", &e)),
            }
        }
    }
}

/// Closes a short-lived channel, ignoring failures (the channel may already be closed by
/// the error we are reporting).
pub(crate) async fn close_quietly(channel: &Channel) {
    if channel.status().connected() {
        if let Err(e) = channel.close(200, "OK".into()).await {
            debug!(error = %e, "closing a channel");
        }
    }
}

fn invalid_name(name: &str, detail: String) -> BrokerError {
    BrokerError::InvalidName {
        name: crate::fields::truncate(name, 64),
        detail,
    }
}

/// Everything the supervisor needs, deliberately without a handle to [`Shared`], so the
/// broker is dropped (and the supervisor stopped) when the last user handle goes.
struct Supervisor {
    nodes: Nodes,
    /// The node of the live connection (shared with the broker handles).
    node: Arc<std::sync::atomic::AtomicUsize>,
    props: ConnectionProperties,
    state: watch::Sender<Option<Arc<Connection>>>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
}

async fn supervise(s: Supervisor) {
    loop {
        let Some(conn) = s.state.borrow().clone() else {
            return; // closed
        };
        let mut events = conn.events_listener();
        let mut events_open = true;
        while conn.status().connected() {
            tokio::select! {
                () = s.shutdown.cancelled() => return,
                () = s.wake.notified() => {}
                event = events.next(), if events_open => match event {
                    Some(event) => debug!(?event, "RabbitMQ connection event"),
                    None => events_open = false,
                },
                () = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
        }
        drop(conn);
        if s.shutdown.is_cancelled() {
            return;
        }
        let lost = s.node.load(std::sync::atomic::Ordering::Relaxed);
        warn!(url = %s.nodes.redacted[lost], "RabbitMQ connection lost; reconnecting");
        s.state.send_replace(None);
        // The next node first: the one we lost may be the one that is down.
        let mut start = (lost + 1) % s.nodes.len();
        loop {
            let attempt = open_connection(&s.nodes, start, &s.props, None);
            let result = tokio::select! {
                () = s.shutdown.cancelled() => return,
                result = attempt => result,
            };
            match result {
                Ok((conn, at)) => {
                    // Publish it unless `close` ran meanwhile (`close` cancels before it
                    // empties the slot, and both go through the watch lock).
                    let mut unused = Some(Arc::new(conn));
                    s.state.send_if_modified(|slot| {
                        if s.shutdown.is_cancelled() {
                            return false;
                        }
                        *slot = unused.take();
                        true
                    });
                    if let Some(conn) = unused {
                        let _ = conn.close(200, "OK".into()).await;
                        return;
                    }
                    s.node.store(at, std::sync::atomic::Ordering::Relaxed);
                    info!(url = %s.nodes.redacted[at], "reconnected to RabbitMQ");
                    break;
                }
                Err((detail, _)) => {
                    // Only refusals end the backoff (e.g. the password was changed or the
                    // vhost deleted). Keep trying slowly: an operator may fix it.
                    warn!(url = %s.nodes.redacted.join(","), error = %detail, "RabbitMQ refused the reconnection; retrying in 30s");
                    start = (start + 1) % s.nodes.len();
                    tokio::select! {
                        () = s.shutdown.cancelled() => return,
                        () = tokio::time::sleep(REFUSED_RETRY) => {}
                    }
                }
            }
        }
    }
}

/// Connects with exponential backoff (200 ms doubling to 5 s, with jitter) for up to
/// `patience`, or forever with `None`, each attempt to the next node of the list from
/// `start` on. Refusals that waiting cannot fix (bad credentials, unknown vhost) end the
/// attempts at once. Returns the connection and its node, or the last error and whether
/// it was transient.
async fn open_connection(
    nodes: &Nodes,
    start: usize,
    props: &ConnectionProperties,
    patience: Option<Duration>,
) -> Result<(Connection, usize), (String, bool)> {
    let last_error: Arc<Mutex<Option<String>>> = Arc::default();
    let next = std::sync::atomic::AtomicUsize::new(start);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    let attempt = || async {
        let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % nodes.len();
        Connection::connect_uri(nodes.uris[at].clone(), props.clone())
            .await
            .map(|conn| (conn, at))
            .map_err(|e| (e, at))
    };
    let retrying = attempt
        .retry(backoff)
        .when(|(e, _)| is_transient(e))
        .notify(|(e, at), next| {
            if let Ok(mut last) = last_error.lock() {
                *last = Some(e.to_string());
            }
            warn!(url = %nodes.redacted[*at], error = %e, retry_in = ?next, "RabbitMQ node not reachable");
        });
    let result = match patience {
        None => retrying.await,
        Some(patience) => {
            match tokio::time::timeout(patience.max(Duration::from_millis(1)), retrying).await {
                Ok(result) => result,
                Err(_) => {
                    let last = last_error
                        .lock()
                        .ok()
                        .and_then(|l| l.clone())
                        .unwrap_or_else(|| "timed out".to_owned());
                    return Err((last, true));
                }
            }
        }
    };
    result.map_err(|(e, _)| (e.to_string(), is_transient(&e)))
}

/// Whether a failed connection attempt may succeed later. Protocol refusals (bad
/// credentials, missing vhost or permissions) do not fix themselves.
fn is_transient(e: &lapin::Error) -> bool {
    !matches!(amqp_code(e), Some(code::ACCESS_REFUSED | code::NOT_ALLOWED))
        && !matches!(
            e.kind(),
            lapin::ErrorKind::InvalidProtocolVersion(_)
                | lapin::ErrorKind::AuthProviderError(_)
                | lapin::ErrorKind::NoDefaultRuntime
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_nodes_parses_each_and_hides_passwords() {
        let nodes = Nodes::parse(
            "amqp://u:secret@a:5672/%2f, amqp://u:secret@b:5673/vh ,amqps://c/%2f?frame_max=65536",
        )
        .unwrap();
        assert_eq!(nodes.len(), 3);
        assert_eq!(
            nodes.redacted,
            [
                "amqp://u:***@a:5672/%2f",
                "amqp://u:***@b:5673/vh",
                "amqps://c/%2f?frame_max=65536"
            ]
        );
        assert_eq!(nodes.uris[1].authority.port, 5673);
        assert_eq!(nodes.uris[0].query.frame_max, Some(DEFAULT_FRAME_MAX));
        assert_eq!(nodes.uris[2].query.frame_max, Some(65_536));
        assert!(nodes.random_start() < 3);
        assert_eq!(Nodes::parse("amqp://one/%2f").unwrap().len(), 1);
    }

    #[test]
    fn a_bad_entry_is_named_without_its_password() {
        for (list, shown) in [
            ("amqp://a/%2f,,amqp://b/%2f", "amqp://a/%2f,,amqp://b/%2f"),
            ("amqp://a/%2f,http://u:pw@b/", "http://u:***@b/"),
        ] {
            match Nodes::parse(list) {
                Err(BrokerError::InvalidUrl { url, .. }) => {
                    assert_eq!(url, shown);
                    assert!(!url.contains("pw@"));
                }
                other => panic!("{list}: {:?}", other.map(|n| n.redacted)),
            }
        }
    }
}
