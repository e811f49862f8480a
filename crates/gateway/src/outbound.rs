//! A connection's outbound queue, as seen by everyone who sends to it.
//!
//! Frames go through a bounded queue that the connection actor drains into its
//! socket, a whole batch per wake-up; the bytes waiting there are counted against
//! `limits.outbound_queue_bytes`. An idle connection's queue holds no allocation.
//! A sender never blocks and never grows memory: when the channel or the byte budget
//! is full, the connection is a slow consumer and is closed with 4011 (§5.6). Control
//! messages (close, liveness) go through the actor's own bounded mailbox.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use protocol::CloseReason;
use std::collections::VecDeque;

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

/// The queue between senders and the connection, with its byte accounting.
#[derive(Debug)]
pub struct Budget {
    /// Items waiting for the connection, oldest first.
    items: Mutex<VecDeque<Outbound>>,
    /// The connection's task, woken when items arrive.
    waker: AtomicWaker,
    /// Bytes sent to the queue and not yet handed to the socket writer.
    pending: AtomicUsize,
    /// `limits.outbound_queue_bytes`.
    limit: usize,
    /// Set once the budget overflowed; the connection is being closed.
    overflowed: AtomicBool,
    /// The connection is gone: sends answer `Closed`.
    closed: AtomicBool,
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

/// The connection's end of its queue: a stream of batches (everything waiting at
/// each wake-up). Dropping it closes the queue.
pub struct Receiver(Arc<Budget>);

impl futures_util::Stream for Receiver {
    type Item = VecDeque<Outbound>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        // Register before looking, so that a push in between still wakes us.
        self.0.waker.register(cx.waker());
        let batch = std::mem::take(&mut *self.0.items.lock());
        if batch.is_empty() {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(Some(batch))
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.items.lock().clear();
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
    pub fn new(id: ConnId, control: Recipient<Control>, limit: usize) -> (ConnHandle, Receiver, Arc<Budget>) {
        let budget = Arc::new(Budget {
            items: Mutex::new(VecDeque::new()),
            waker: AtomicWaker::new(),
            pending: AtomicUsize::new(0),
            limit,
            overflowed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        (ConnHandle { id, control, budget: budget.clone() }, Receiver(budget.clone()), budget)
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
        if self.budget.closed.load(Ordering::Acquire) {
            self.budget.pending.fetch_sub(len, Ordering::Relaxed);
            return Sent::Closed;
        }
        let mut items = self.budget.items.lock();
        if items.len() >= QUEUE_FRAMES {
            drop(items);
            self.budget.pending.fetch_sub(len, Ordering::Relaxed);
            return self.overflow();
        }
        items.push_back(item);
        drop(items);
        self.budget.waker.wake();
        Sent::Queued
    }

    fn overflow(&self) -> Sent {
        if !self.budget.overflowed.swap(true, Ordering::Relaxed) {
            // If the actor is frozen behind a full socket this is not processed; the
            // socket watchdog then cuts the connection.
            let _ = self.control.try_send(Control::Close(CloseReason::SlowConsumer));
        }
        Sent::SlowConsumer
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
