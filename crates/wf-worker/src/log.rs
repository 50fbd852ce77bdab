//! The delivery log writer: records go through a channel to one task that writes them to
//! Postgres in batches. A slow or restarting Postgres delays the log, not the deliveries:
//! the writer retries a failed batch until it lands. What is buffered is bounded in bytes
//! ([`BUDGET_BYTES`]), not in records: a payload record carries the whole event body, and a
//! record bound sized for small records let a Postgres that fell behind for a few seconds
//! grow the worker by tens of MiB (issue 5). Once the budget is spent, recording waits for
//! the writer: the log applies back-pressure to the deliveries instead of growing the heap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tracing::{error, info, warn};
use wf_store::{AttemptRecord, NewDelivery, NewPayload, Store};
use wf_telemetry::metrics;

/// Estimated bytes of records buffered before senders wait: about a second of log at
/// full speed on the development machine, enough to ride out a slow Postgres commit.
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
}

impl LogRecord {
    /// Approximate heap and inline bytes the record holds while buffered (capacities, not
    /// lengths: that is what the allocator holds).
    fn cost(&self) -> usize {
        const FIXED: usize = 128;
        let bytes = match self {
            LogRecord::Payload(p) => {
                p.body.capacity() + p.org_id.as_str().len() + p.event_id.as_str().len()
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
        };
        // Never more than the whole budget, so one huge record cannot wait forever.
        (FIXED + bytes).min(BUDGET_BYTES)
    }
}

/// Sending half; cheap to clone.
#[derive(Clone)]
pub struct DeliveryLog {
    tx: mpsc::UnboundedSender<(LogRecord, u32)>,
    budget: Arc<Semaphore>,
}

impl DeliveryLog {
    /// Starts the writer task. It ends after every sender is dropped and the backlog is
    /// written; await the returned handle to flush at shutdown.
    pub fn start(store: Store) -> (DeliveryLog, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(BUDGET_BYTES));
        let handle = tokio::spawn(writer(store, rx, budget.clone()));
        (DeliveryLog { tx, budget }, handle)
    }

    /// Buffers one record, first waiting until the bytes already buffered leave room.
    pub async fn record(&self, rec: LogRecord) {
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
                return;
            }
        }
        metrics().delivery_log_pending.inc();
        if self.tx.send((rec, cost)).is_err() {
            metrics().delivery_log_pending.dec();
            self.budget.add_permits(cost as usize);
            error!("delivery log writer has stopped; record lost");
        }
    }
}

async fn writer(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<(LogRecord, u32)>,
    budget: Arc<Semaphore>,
) {
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
    }
    info!("delivery log flushed");
}

/// Records waiting for one round of writes.
#[derive(Default)]
struct Batch {
    payloads: Vec<NewPayload>,
    deliveries: Vec<NewDelivery>,
    attempts: Vec<AttemptRecord>,
    /// Budget bytes held by the records in this batch.
    cost: usize,
}

impl Batch {
    fn push(&mut self, (r, cost): (LogRecord, u32)) {
        self.cost += cost as usize;
        match r {
            LogRecord::Payload(x) => self.payloads.push(x),
            LogRecord::Delivery(x) => self.deliveries.push(x),
            LogRecord::Attempt(x) => self.attempts.push(*x),
        }
    }

    fn len(&self) -> usize {
        self.payloads.len() + self.deliveries.len() + self.attempts.len()
    }

    fn clear(&mut self) {
        self.payloads.clear();
        self.deliveries.clear();
        self.attempts.clear();
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
