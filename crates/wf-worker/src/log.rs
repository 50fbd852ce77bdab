//! The delivery log writer: records go through a channel to one task that writes them to
//! Postgres in batches. A slow or restarting Postgres delays the log, not the deliveries:
//! the writer retries a failed batch until it lands. What is buffered is bounded in bytes
//! ([`BUDGET_BYTES`]), not in records: a payload record carries the whole event body, and a
//! record bound sized for small records let a Postgres that fell behind for a few seconds
//! grow the worker by tens of MiB. Once the budget is spent, recording waits for
//! the writer: the log applies back-pressure to the deliveries instead of growing the heap.
//!
//! Every record comes with a [`Logged`] receipt that resolves once its batch is committed.
//! The consumers ack a message only after the receipts of everything it logged
//! ([`DeliveryLog::ack_when_logged`]): a worker killed with records still buffered has its
//! messages redelivered and the attempts made (and logged) again, so no outcome the
//! broker forgot is missing from the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};
use wf_broker::Incoming;
use wf_store::{AttemptRecord, NewDelivery, NewPayload, Store, UnsentDead};
use wf_telemetry::metrics;

/// Estimated bytes of records buffered before senders wait: about a second of log at
/// full speed on a 2-core machine (BENCHMARKS.md), enough to ride out a slow Postgres
/// commit.
pub const BUDGET_BYTES: usize = 8 << 20;
/// Largest batch written in one round trip, in records and in budget bytes. The bytes
/// bound matters as much: each pooled Postgres connection keeps buffers as large as the
/// largest statement it ever encoded (a 1,000-payload batch left ~6 MiB per connection).
const MAX_BATCH: usize = 1_000;
const MAX_BATCH_BYTES: usize = 256 << 10;
/// How long a record may wait for companions before its batch is written.
const LINGER: Duration = Duration::from_millis(20);

/// One thing to log.
pub enum LogRecord {
    Payload(NewPayload),
    Delivery(NewDelivery),
    Attempt(Box<AttemptRecord>),
    /// A delivery given up unsent (`endpoint_unavailable`).
    Unsent(Box<UnsentDead>),
}

impl LogRecord {
    /// Approximate heap and inline bytes the record holds while buffered (capacities, not
    /// lengths: that is what the allocator holds).
    fn cost(&self) -> usize {
        const FIXED: usize = 128;
        let bytes = match self {
            LogRecord::Payload(p) => {
                // Shared with the deliveries, but held alive by the log while buffered.
                p.body.len() + p.org_id.as_str().len() + p.event_id.as_str().len()
            }
            LogRecord::Delivery(d) => {
                d.id.as_str().len()
                    + d.org_id.as_str().len()
                    + d.webhook_id.as_str().len()
                    + d.event_id.as_str().len()
            }
            LogRecord::Attempt(a) => {
                a.delivery_id.as_str().len()
                    + a.org_id.as_str().len()
                    + a.webhook_id.as_str().len()
                    + a.event_id.as_str().len()
                    + a.error.as_ref().map_or(0, String::capacity)
                    + a.response_snippet.as_ref().map_or(0, String::capacity)
                    + std::mem::size_of::<AttemptRecord>()
            }
            LogRecord::Unsent(u) => u.error.capacity() + std::mem::size_of::<UnsentDead>(),
        };
        // Never more than the whole budget, so one huge record cannot wait forever.
        (FIXED + bytes).min(BUDGET_BYTES)
    }
}

/// What the writer task receives: a record, its budget bytes, and who waits for it.
type Queued = (LogRecord, u32, oneshot::Sender<()>);

/// Resolves once a record is in Postgres. It also resolves when the record never will
/// be: Postgres refused its batch for what it is (logged and dropped, see [`flush`]) or
/// the writer is gone; waiting longer would only redeliver the message to the same fate.
#[must_use = "a message must not be acked before what it logged is durable"]
pub struct Logged(Option<oneshot::Receiver<()>>);

impl Logged {
    /// A receipt for nothing: there was nothing to log.
    pub fn nothing() -> Logged {
        Logged(None)
    }

    /// Waits until the record is written.
    pub async fn written(self) {
        if let Some(rx) = self.0 {
            let _ = rx.await;
        }
    }
}

/// Sending half; cheap to clone.
#[derive(Clone)]
pub struct DeliveryLog {
    tx: mpsc::UnboundedSender<Queued>,
    budget: Arc<Semaphore>,
    acks: TaskTracker,
}

impl DeliveryLog {
    /// Starts the writer task. It ends after every sender is dropped and the backlog is
    /// written; await the returned handle to flush at shutdown.
    pub fn start(store: Store) -> (DeliveryLog, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(BUDGET_BYTES));
        let handle = tokio::spawn(writer(store, rx, budget.clone()));
        let acks = TaskTracker::new();
        (DeliveryLog { tx, budget, acks }, handle)
    }

    /// The tasks [`DeliveryLog::ack_when_logged`] started. At shutdown, wait for them
    /// (`close()` then `wait()`) after the writer has flushed and before the broker
    /// connection closes, so their acks go out.
    pub fn pending_acks(&self) -> TaskTracker {
        self.acks.clone()
    }

    /// Acks `msg` once every receipt in `logged` has resolved, on a small task of its own:
    /// the caller's slot is free for the next message meanwhile. If the ack cannot be
    /// sent (the channel is gone) the broker redelivers the message: at least once.
    pub fn ack_when_logged(&self, msg: Incoming, logged: Vec<Logged>) {
        self.acks.spawn(async move {
            for l in logged {
                l.written().await;
            }
            if let Err(e) = msg.ack().await {
                warn!(error = %e, "could not ack a message after logging it; the broker will redeliver it");
            }
        });
    }

    /// Buffers one record, first waiting until the bytes already buffered leave room.
    /// The receipt resolves once the record is written.
    pub async fn record(&self, rec: LogRecord) -> Logged {
        let cost = u32::try_from(rec.cost()).unwrap_or(u32::MAX);
        let permit = match self.budget.try_acquire_many(cost) {
            Ok(permit) => Ok(permit),
            Err(_) => {
                let started = Instant::now();
                let permit = self.budget.acquire_many(cost).await;
                metrics()
                    .delivery_log_wait_seconds
                    .inc_by(started.elapsed().as_secs_f64());
                permit
            }
        };
        match permit {
            // Given back by the writer once the record is written (or dropped).
            Ok(permit) => permit.forget(),
            Err(_) => {
                error!("delivery log budget closed; record lost");
                return Logged::nothing();
            }
        }
        metrics().delivery_log_pending.inc();
        let (done, logged) = oneshot::channel();
        if self.tx.send((rec, cost, done)).is_err() {
            metrics().delivery_log_pending.dec();
            self.budget.add_permits(cost as usize);
            error!("delivery log writer has stopped; record lost");
            return Logged::nothing();
        }
        Logged(Some(logged))
    }
}

async fn writer(store: Store, mut rx: mpsc::UnboundedReceiver<Queued>, budget: Arc<Semaphore>) {
    let mut batch = Batch::default();
    loop {
        let Some(first) = rx.recv().await else { break };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH && batch.cost < MAX_BATCH_BYTES {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => batch.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        flush(&store, &mut batch).await;
        budget.add_permits(std::mem::take(&mut batch.cost));
        for done in batch.waiting.drain(..) {
            let _ = done.send(());
        }
    }
    info!("delivery log flushed");
}

/// Records waiting for one round of writes.
#[derive(Default)]
struct Batch {
    payloads: Vec<NewPayload>,
    deliveries: Vec<NewDelivery>,
    attempts: Vec<AttemptRecord>,
    unsent: Vec<UnsentDead>,
    /// Budget bytes held by the records in this batch.
    cost: usize,
    /// The receipts of this batch's records, resolved once it is written.
    waiting: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn push(&mut self, (r, cost, done): Queued) {
        self.cost += cost as usize;
        self.waiting.push(done);
        match r {
            LogRecord::Payload(x) => self.payloads.push(x),
            LogRecord::Delivery(x) => self.deliveries.push(x),
            LogRecord::Attempt(x) => self.attempts.push(*x),
            LogRecord::Unsent(x) => self.unsent.push(*x),
        }
    }

    fn len(&self) -> usize {
        self.payloads.len() + self.deliveries.len() + self.attempts.len() + self.unsent.len()
    }

    fn clear(&mut self) {
        self.payloads.clear();
        self.deliveries.clear();
        self.attempts.clear();
        self.unsent.clear();
    }

    /// Writes what is left, in dependency order; what was written is removed, so a retry
    /// after a failure does not write it again.
    async fn write(&mut self, store: &Store) -> Result<(), wf_store::StoreError> {
        if !self.payloads.is_empty() {
            store.insert_payloads(&self.payloads).await?;
            self.payloads.clear();
        }
        if !self.deliveries.is_empty() {
            store.insert_deliveries(&self.deliveries).await?;
            self.deliveries.clear();
        }
        if !self.attempts.is_empty() {
            store.record_attempts(&self.attempts).await?;
            self.attempts.clear();
        }
        if !self.unsent.is_empty() {
            store.record_unsent_dead(&self.unsent).await?;
            self.unsent.clear();
        }
        Ok(())
    }
}

async fn flush(store: &Store, batch: &mut Batch) {
    let n = batch.len();
    let mut backoff = Duration::from_millis(100);
    loop {
        match batch.write(store).await {
            Ok(()) => {
                metrics().delivery_log_pending.sub(n as i64);
                return;
            }
            Err(e) if !e.is_retryable() => {
                // A batch Postgres refuses for what it is (not for being unavailable)
                // would block the log forever; drop it loudly instead.
                error!(error = %e, records = n, "delivery log batch rejected; dropping it");
                metrics().delivery_log_pending.sub(n as i64);
                batch.clear();
                return;
            }
            Err(e) => {
                warn!(error = %e, records = n, "delivery log write failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
