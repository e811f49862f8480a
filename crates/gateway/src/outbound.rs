//! A connection's outbound queue, as seen by everyone who sends to it.
//!
//! Frames go through a bounded channel that the connection actor drains into its
//! socket; the bytes waiting there are counted against `limits.outbound_queue_bytes`.
//! A sender never blocks and never grows memory: when the channel or the byte budget
//! is full, the connection is a slow consumer and is closed with 4011 (§5.6). Control
//! messages (close, liveness) go through the actor's own bounded mailbox.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;
use protocol::CloseReason;
use tokio::sync::mpsc;

/// Node-local connection id.
pub type ConnId = u64;

/// Frames a queue holds at most, whatever their size (the byte budget usually binds first).
pub const QUEUE_FRAMES: usize = 8192;

/// What registries may ask of a connection besides sending it frames.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub enum Control {
    /// Close with this reason (revocation, slow consumer, drain).
    Close(CloseReason),
    /// Liveness from outside the socket (`GET /heartbeat`).
    Touch,
    /// Live delivery was interrupted (cluster bus outage): fetch what may be missing.
    Resync,
    /// Cluster presence lost this node's connections (Redis was away longer than the
    /// node's liveness): record this connection and its rooms again.
    Reannounce,
}

/// What goes through a connection's outbound queue.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// An encoded frame, sent as is.
    Frame(ByteString),
    /// A live chat message: the connection orders these by `seq` per session.
    Message { session: Arc<str>, seq: u64, frame: ByteString },
    /// The connection now receives `session` (assigned or transferred to its user);
    /// messages up to `after` are history.
    Track { session: Arc<str>, after: u64 },
}

impl Outbound {
    /// Bytes this item puts on the wire.
    pub fn wire_len(&self) -> usize {
        match self {
            Outbound::Frame(f) | Outbound::Message { frame: f, .. } => f.len(),
            Outbound::Track { .. } => 0,
        }
    }
}

/// Byte accounting shared by the senders and the connection.
#[derive(Debug)]
pub struct Budget {
    /// Bytes sent to the queue and not yet handed to the socket writer.
    pending: AtomicUsize,
    /// `limits.outbound_queue_bytes`.
    limit: usize,
    /// Set once the budget overflowed; the connection is being closed.
    overflowed: AtomicBool,
}

impl Budget {
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// The connection handed `bytes` to its socket writer.
    pub fn drained(&self, bytes: usize) {
        self.pending.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// How a send went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// The connection is (now) a slow consumer and is being closed; the frame was dropped.
    SlowConsumer,
    /// The connection is gone.
    Closed,
}

/// The sending side of a connection: cheap to clone, safe to use from any thread.
#[derive(Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    frames: mpsc::Sender<Outbound>,
    control: Recipient<Control>,
    budget: Arc<Budget>,
}

impl std::fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnHandle").field("id", &self.id).finish()
    }
}

impl ConnHandle {
    /// A handle and the receiving end that the connection drains.
    pub fn new(
        id: ConnId,
        control: Recipient<Control>,
        limit: usize,
    ) -> (ConnHandle, mpsc::Receiver<Outbound>, Arc<Budget>) {
        let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
        let budget = Arc::new(Budget { pending: AtomicUsize::new(0), limit, overflowed: AtomicBool::new(false) });
        (ConnHandle { id, frames: tx, control, budget: budget.clone() }, rx, budget)
    }

    /// Queue one encoded frame (the bytes are shared, not copied).
    pub fn send(&self, frame: &ByteString) -> Sent {
        self.push(Outbound::Frame(frame.clone()))
    }

    /// Queue any outbound item.
    pub fn push(&self, item: Outbound) -> Sent {
        if self.budget.overflowed() {
            return Sent::SlowConsumer;
        }
        let len = item.wire_len();
        let before = self.budget.pending.fetch_add(len, Ordering::Relaxed);
        if before + len > self.budget.limit {
            self.budget.pending.fetch_sub(len, Ordering::Relaxed);
            return self.overflow();
        }
        match self.frames.try_send(item) {
            Ok(()) => Sent::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.budget.pending.fetch_sub(len, Ordering::Relaxed);
                self.overflow()
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.budget.pending.fetch_sub(len, Ordering::Relaxed);
                Sent::Closed
            }
        }
    }

    fn overflow(&self) -> Sent {
        if !self.budget.overflowed.swap(true, Ordering::Relaxed) {
            // If the actor is frozen behind a full socket this is not processed; the
            // socket watchdog then cuts the connection.
            let _ = self.control.try_send(Control::Close(CloseReason::SlowConsumer));
        }
        Sent::SlowConsumer
    }

    pub fn limit(&self) -> usize {
        self.budget.limit
    }

    /// Ask the connection to close (never blocks; a full mailbox means it is stuck,
    /// which the watchdog handles).
    pub fn close(&self, reason: CloseReason) {
        let _ = self.control.try_send(Control::Close(reason));
    }

    pub fn touch(&self) {
        let _ = self.control.try_send(Control::Touch);
    }

    pub fn control(&self, msg: Control) {
        let _ = self.control.try_send(msg);
    }
}
