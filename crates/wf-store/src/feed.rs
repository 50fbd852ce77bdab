//! The change feed: which organisations' webhooks changed, for the workers' subscription
//! caches.
//!
//! A trigger on `webhooks` (see the migration) does `pg_notify('wf_webhooks', org_id)` on
//! every insert, update and delete. This module listens on a dedicated connection — not a
//! pooled one: the pool's connection driver discards server notifications — and turns
//! them into [`ChangeEvent`]s. Notifications sent while the connection is down are lost,
//! so after every reconnect the feed says [`ChangeEvent::Resync`] (reload everything).

use std::pin::Pin;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};
use wf_core::ids::OrgId;

use crate::migrate::parse_config;
use crate::StoreError;

/// The notification channel the trigger writes to.
pub const CHANNEL: &str = "wf_webhooks";

/// Buffered events before the feed folds the overflow into one [`ChangeEvent::Resync`].
const BUFFER: usize = 1024;

/// A notification from [`ChangeFeed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeEvent {
    /// Some webhook of this organisation was created, updated (including a rotation or a
    /// system disable) or deleted: reload its subscriptions.
    WebhookChanged(OrgId),
    /// Notifications may have been lost — the listening connection was re-established, or
    /// the consumer fell more than 1024 events behind: reload everything.
    Resync,
}

/// A stream of [`ChangeEvent`]s, kept alive across connection losses by a background
/// task (stopped when the feed is dropped).
#[derive(Debug)]
pub struct ChangeFeed {
    config: Config,
    rx: mpsc::Receiver<ChangeEvent>,
    task: JoinHandle<()>,
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts listening for webhook changes.
///
/// The first connection is made before this returns, so a bad URL or a down database is
/// reported now, and no change committed after this returns is missed. Later connection
/// losses are retried forever with exponential backoff (0.1 s up to 10 s) and reported as
/// [`ChangeEvent::Resync`] once listening again.
///
/// # Errors
/// [`StoreError::InvalidConfig`] for an unusable URL; [`StoreError::Db`] when the first
/// connection or `LISTEN` fails.
pub async fn listen_changes(database_url: &str) -> Result<ChangeFeed, StoreError> {
    let mut config = parse_config(database_url)?;
    config.application_name("wf-change-feed");
    // A half-open TCP connection would otherwise look like a quiet feed forever.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    config.keepalives_interval(Duration::from_secs(10));
    config.keepalives_retries(3);
    let session = Session::open(&config).await?;
    let (tx, rx) = mpsc::channel(BUFFER);
    let task = tokio::spawn(run(config.clone(), tx, Some(session)));
    Ok(ChangeFeed { config, rx, task })
}

impl ChangeFeed {
    /// The next change; waits as long as there is none.
    pub async fn next(&mut self) -> ChangeEvent {
        match self.rx.recv().await {
            Some(event) => event,
            None => {
                // The background task ended, which it only does by panicking: start a new
                // one. Anything may have been missed meanwhile.
                tracing::error!("change feed task ended unexpectedly; restarting it");
                let (tx, rx) = mpsc::channel(BUFFER);
                self.rx = rx;
                self.task = tokio::spawn(run(self.config.clone(), tx, None));
                ChangeEvent::Resync
            }
        }
    }
}

type Messages = Pin<Box<dyn Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Send>>;

/// One listening connection.
struct Session {
    /// Kept alive: dropping the client closes the connection.
    _client: Client,
    messages: Messages,
}

impl Session {
    /// Connects and runs `LISTEN`; the connection is driven through `messages`, which must
    /// be polled for anything (including the `LISTEN` itself) to make progress.
    async fn open(config: &Config) -> Result<Session, StoreError> {
        let (client, mut connection) = config.connect(NoTls).await?;
        let mut messages: Messages = Box::pin(futures::stream::poll_fn(move |cx| {
            connection.poll_message(cx)
        }));
        let listen_sql = format!("LISTEN {CHANNEL}");
        {
            let listen = client.batch_execute(&listen_sql);
            tokio::pin!(listen);
            loop {
                tokio::select! {
                    result = &mut listen => {
                        result?;
                        break;
                    }
                    message = messages.next() => match message {
                        // Nothing can be notified before LISTEN; notices are ignored.
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e.into()),
                        None => {
                            // The connection ended; the LISTEN future reports why.
                            (&mut listen).await?;
                            break;
                        }
                    },
                }
            }
        }
        Ok(Session {
            _client: client,
            messages,
        })
    }
}

/// Why [`pump`] returned.
enum PumpEnd {
    /// The feed was dropped: stop.
    Closed,
    /// The connection failed: reconnect.
    Lost(Option<tokio_postgres::Error>),
}

/// Runs until the feed is dropped: pump the current session, reconnect when it dies.
async fn run(config: Config, tx: mpsc::Sender<ChangeEvent>, mut session: Option<Session>) {
    loop {
        let current = match session.take() {
            Some(s) => s,
            None => {
                let reconnect = (|| Session::open(&config))
                    .retry(
                        ExponentialBuilder::default()
                            .with_min_delay(Duration::from_millis(100))
                            .with_max_delay(Duration::from_secs(10))
                            .with_jitter()
                            .without_max_times(),
                    )
                    .notify(|e: &StoreError, after: Duration| {
                        tracing::warn!(error = %e, retry_in = ?after, "change feed cannot reconnect");
                    });
                let s = tokio::select! {
                    s = reconnect => s,
                    () = tx.closed() => return,
                };
                let Ok(s) = s else {
                    // Unreachable: retried forever.
                    continue;
                };
                tracing::info!("change feed listening again; asking for a resync");
                // Sent only now that LISTEN is active, so a reload it triggers cannot miss
                // a change made after it.
                if tx.send(ChangeEvent::Resync).await.is_err() {
                    return;
                }
                s
            }
        };
        match pump(current, &tx).await {
            PumpEnd::Closed => return,
            PumpEnd::Lost(e) => match e {
                Some(e) => {
                    tracing::warn!(error = %StoreError::Db(e), "change feed connection lost")
                }
                None => tracing::warn!("change feed connection closed"),
            },
        }
    }
}

/// Forwards notifications until the connection ends or the feed is dropped. When the
/// consumer lags and the buffer is full, notifications are dropped and replaced by one
/// `Resync` as soon as there is room: the socket keeps being read, so the server-side
/// notification queue never backs up into the writers' transactions.
async fn pump(mut session: Session, tx: &mpsc::Sender<ChangeEvent>) -> PumpEnd {
    let mut overflowed = false;
    loop {
        tokio::select! {
            permit = tx.reserve(), if overflowed => match permit {
                Ok(permit) => {
                    permit.send(ChangeEvent::Resync);
                    overflowed = false;
                }
                Err(_) => return PumpEnd::Closed,
            },
            () = tx.closed(), if !overflowed => return PumpEnd::Closed,
            message = session.messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if n.channel() != CHANNEL || overflowed {
                        continue;
                    }
                    let event = match OrgId::parse(n.payload()) {
                        Ok(org) => ChangeEvent::WebhookChanged(org),
                        Err(_) => {
                            tracing::warn!(payload = n.payload(), "unexpected change notification; resyncing");
                            ChangeEvent::Resync
                        }
                    };
                    match tx.try_send(event) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            tracing::warn!("change feed consumer is behind; will ask for a resync");
                            overflowed = true;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return PumpEnd::Closed,
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return PumpEnd::Lost(Some(e)),
                None => return PumpEnd::Lost(None),
            },
        }
    }
}
