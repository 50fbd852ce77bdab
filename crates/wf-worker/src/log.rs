//! The delivery log writer: records go through a bounded channel to one task that writes
//! them to Postgres in batches. A slow or restarting Postgres delays the log, never the
//! deliveries: the writer retries a failed batch until it lands. The channel bound is the
//! only back-pressure, and only after [`CAPACITY`] records are waiting.

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, info, warn};
use wf_store::{AttemptRecord, NewDelivery, NewPayload, Store};
use wf_telemetry::metrics;

/// Records buffered before senders wait.
pub const CAPACITY: usize = 100_000;
/// Largest batch written in one round trip.
const MAX_BATCH: usize = 1_000;
/// How long a record may wait for companions before its batch is written.
const LINGER: Duration = Duration::from_millis(20);

/// One thing to log.
pub enum LogRecord {
    Payload(NewPayload),
    Delivery(NewDelivery),
    Attempt(Box<AttemptRecord>),
}

/// Sending half; cheap to clone.
#[derive(Clone)]
pub struct DeliveryLog {
    tx: mpsc::Sender<LogRecord>,
}

impl DeliveryLog {
    /// Starts the writer task. It ends after every sender is dropped and the backlog is
    /// written; await the returned handle to flush at shutdown.
    pub fn start(store: Store) -> (DeliveryLog, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let handle = tokio::spawn(writer(store, rx));
        (DeliveryLog { tx }, handle)
    }

    pub async fn record(&self, rec: LogRecord) {
        metrics().delivery_log_pending.inc();
        if self.tx.send(rec).await.is_err() {
            metrics().delivery_log_pending.dec();
            error!("delivery log writer has stopped; record lost");
        }
    }
}

async fn writer(store: Store, mut rx: mpsc::Receiver<LogRecord>) {
    let mut batch = Batch::default();
    loop {
        let Some(first) = rx.recv().await else { break };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => batch.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        flush(&store, &mut batch).await;
    }
    info!("delivery log flushed");
}

/// Records waiting for one round of writes.
#[derive(Default)]
struct Batch {
    payloads: Vec<NewPayload>,
    deliveries: Vec<NewDelivery>,
    attempts: Vec<AttemptRecord>,
}

impl Batch {
    fn push(&mut self, r: LogRecord) {
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
