//! Coalesced acknowledgements: one task per consumer channel sends every ack and nack of
//! that channel, so it can settle a run of finished deliveries with one `basic.ack`
//! (`multiple = true`) instead of one frame each.
//!
//! Why: each `basic.ack` costs the client a lapin RPC (a spawned task and a wake-up of
//! its I/O thread) and costs a quorum queue one Raft command; a worker acks thousands of
//! messages a second. Deliveries finish out of order, so a multiple-ack is only safe up to
//! the oldest delivery still being worked on:
//!
//! - A delivery's tag is registered when it is handed out (`Out`, in tag order: the broker
//!   numbers a channel's deliveries 1, 2, 3, …), and is "outstanding" until settled.
//! - Acked tags below the lowest outstanding tag are settled by one multiple-ack at the
//!   highest of them. Tags the consumer has not handed out yet are always higher than
//!   every handed-out tag, so a multiple-ack never covers them.
//! - Acked tags above an outstanding one wait at most [`HOLD`] for the gap to close, then
//!   are acked one by one: a slow delivery never holds the others' acks (and prefetch
//!   slots) for longer than that.
//! - Nacks are sent at once, before any multiple-ack that could cover them, because this
//!   task sends every frame of the channel in order.
//! - [`Settler::flush`] (used by `Broker::close`) and the end of the channel's last handle
//!   send everything that is waiting.

use std::collections::BTreeSet;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::debug;

/// Longest time an ack waits for an older delivery to finish before it is sent alone.
pub(crate) const HOLD: Duration = Duration::from_millis(5);
/// Commands applied per round before frames are sent.
const ROUND: usize = 4096;

pub(crate) enum Cmd {
    /// A delivery was handed out.
    Out(u64),
    Ack(u64),
    Nack {
        tag: u64,
        requeue: bool,
    },
    /// Send everything waiting, then reply.
    Flush(oneshot::Sender<()>),
}

/// Handle to one channel's settling task; cheap to clone. The task ends once every
/// handle is gone, after sending what was waiting.
#[derive(Clone)]
pub(crate) struct Settler {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl Settler {
    pub(crate) fn start(channel: Channel) -> Settler {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(channel, rx));
        Settler { tx }
    }

    /// Queues a command. Fails only when the task is gone (its channel was dropped).
    pub(crate) fn send(&self, cmd: Cmd) -> bool {
        self.tx.send(cmd).is_ok()
    }

    /// Sends every ack waiting in this channel's task; returns once they are written
    /// (or the task is gone).
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// A handle that does not keep the task alive.
    pub(crate) fn downgrade(&self) -> WeakSettler {
        WeakSettler {
            tx: self.tx.downgrade(),
        }
    }
}

/// See [`Settler::downgrade`].
pub(crate) struct WeakSettler {
    tx: mpsc::WeakUnboundedSender<Cmd>,
}

impl WeakSettler {
    pub(crate) fn upgrade(&self) -> Option<Settler> {
        self.tx.upgrade().map(|tx| Settler { tx })
    }
}

#[derive(Default)]
struct State {
    outstanding: BTreeSet<u64>,
    /// Acked by the application, not yet sent.
    acked: BTreeSet<u64>,
    /// When the oldest of `acked` started waiting.
    waiting_since: Option<Instant>,
}

async fn run(channel: Channel, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut st = State::default();
    loop {
        let first = match st.waiting_since {
            None => rx.recv().await,
            Some(since) => match tokio::time::timeout_at(since + HOLD, rx.recv()).await {
                Ok(cmd) => cmd,
                Err(_) => {
                    send_waiting(&channel, &mut st).await;
                    continue;
                }
            },
        };
        let Some(first) = first else { break };
        let mut replies = Vec::new();
        let mut next = Some(first);
        let mut applied = 0;
        while let Some(cmd) = next {
            match cmd {
                Cmd::Out(tag) => {
                    st.outstanding.insert(tag);
                }
                Cmd::Ack(tag) => {
                    st.outstanding.remove(&tag);
                    st.acked.insert(tag);
                }
                Cmd::Nack { tag, requeue } => {
                    // Sent before any multiple-ack of this round, which may cover `tag`.
                    let opts = BasicNackOptions {
                        multiple: false,
                        requeue,
                    };
                    if let Err(e) = channel.basic_nack(tag, opts).await {
                        debug!(error = %e, tag, "basic.nack failed; the broker redelivers on channel close");
                    }
                    st.outstanding.remove(&tag);
                }
                Cmd::Flush(reply) => replies.push(reply),
            }
            applied += 1;
            next = if applied < ROUND {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        send_prefix(&channel, &mut st).await;
        if !replies.is_empty() {
            send_waiting(&channel, &mut st).await;
            for r in replies {
                let _ = r.send(());
            }
        }
        if st.acked.is_empty() {
            st.waiting_since = None;
        } else if st.waiting_since.is_none() {
            st.waiting_since = Some(Instant::now());
        }
    }
    send_waiting(&channel, &mut st).await;
}

/// One multiple-ack for every acked tag below the oldest outstanding one.
async fn send_prefix(channel: &Channel, st: &mut State) {
    let floor = st.outstanding.first().copied().unwrap_or(u64::MAX);
    let Some(&highest) = st.acked.range(..floor).next_back() else {
        return;
    };
    st.acked = st.acked.split_off(&(highest + 1));
    if st.acked.is_empty() {
        st.waiting_since = None;
    }
    ack(channel, highest, true).await;
}

/// Everything acked: the prefix in one frame, the rest one by one.
async fn send_waiting(channel: &Channel, st: &mut State) {
    send_prefix(channel, st).await;
    for tag in std::mem::take(&mut st.acked) {
        ack(channel, tag, false).await;
    }
    st.waiting_since = None;
}

async fn ack(channel: &Channel, tag: u64, multiple: bool) {
    if let Err(e) = channel.basic_ack(tag, BasicAckOptions { multiple }).await {
        // The channel is gone; the broker requeues what was unacked on it.
        debug!(error = %e, tag, multiple, "basic.ack failed");
    }
}
