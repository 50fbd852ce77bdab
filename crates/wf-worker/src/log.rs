//! The delivery log writer: records go through a bounded channel to one task that writes
//! them to Postgres in batches. A slow or restarting Postgres delays the log, never the
//! deliveries: the writer retries a failed batch until it lands. The channel bound is the
//! only back-pressure, and only after [`CAPACITY`] records are waiting.

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, info, warn};
use wf_store::{AttemptRecord, NewDelivery, Store};
use wf_telemetry::metrics;

/// Records buffered before senders wait.
pub const CAPACITY: usize = 100_000;
/// Largest batch written in one round trip.
const MAX_BATCH: usize = 1_000;
/// How long a record may wait for companions before its batch is written.
const LINGER: Duration = Duration::from_millis(20);

/// One thing to log.
pub enum LogRecord {
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
    let mut deliveries = Vec::new();
    let mut attempts = Vec::new();
    loop {
        let Some(first) = rx.recv().await else { break };
        push(first, &mut deliveries, &mut attempts);
        let deadline = tokio::time::Instant::now() + LINGER;
        while deliveries.len() + attempts.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => push(r, &mut deliveries, &mut attempts),
                Ok(None) | Err(_) => break,
            }
        }
        flush(&store, &mut deliveries, &mut attempts).await;
    }
    info!("delivery log flushed");
}

fn push(r: LogRecord, d: &mut Vec<NewDelivery>, a: &mut Vec<AttemptRecord>) {
    match r {
        LogRecord::Delivery(x) => d.push(x),
        LogRecord::Attempt(x) => a.push(*x),
    }
}

async fn flush(store: &Store, d: &mut Vec<NewDelivery>, a: &mut Vec<AttemptRecord>) {
    let n = d.len() + a.len();
    let mut backoff = Duration::from_millis(100);
    loop {
        let res = async {
            if !d.is_empty() {
                store.insert_deliveries(d).await?;
                d.clear();
            }
            if !a.is_empty() {
                store.record_attempts(a).await?;
                a.clear();
            }
            Ok::<_, wf_store::StoreError>(())
        }
        .await;
        match res {
            Ok(()) => {
                metrics().delivery_log_pending.sub(n as i64);
                return;
            }
            Err(e) if !e.is_retryable() => {
                // A batch Postgres refuses for what it is (not for being unavailable)
                // would block the log forever; drop it loudly instead.
                error!(error = %e, records = n, "delivery log batch rejected; dropping it");
                metrics().delivery_log_pending.sub(n as i64);
                d.clear();
                a.clear();
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
