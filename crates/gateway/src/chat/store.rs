//! The chat store: sessions, messages, cursors. A trait with the in-memory
//! implementation; the Redis one lives in `crate::cluster`.
//!
//! Guarantees every implementation gives (and `tests` below check):
//! - `append` is atomic: the per-session `seq` rises by exactly 1 per stored
//!   message, with no gap and no repeat under concurrent callers; a resend with the
//!   same (sender, session, client id) returns the stored message and stores nothing.
//! - `update_session` is a compare-and-set on the session's state; `Assign` never
//!   takes an agent past `max_load` assigned sessions.
//! - cursors never move backwards.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use async_trait::async_trait;
pub use auth::StoreError;
use parking_lot::Mutex;

use super::model::*;

/// How long a client message id is remembered for idempotent resends.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// A state change of a session.
#[derive(Debug, Clone)]
pub enum SessionChange {
    /// An agent takes a queued session (manual mode).
    Claim { agent: String },
    /// Auto-assignment: like `Claim`, only while `agent` has fewer than `max_load` sessions.
    Assign { agent: String, max_load: usize },
    /// The assigned agent hands over to another agent.
    Transfer { from: String, to: String },
    /// Closing (the customer or the assigned agent); closing a closed session is a no-op.
    Close,
    /// Put an assigned session back in the queue.
    Requeue,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("no such session")]
    NotFound,
    #[error("the session is already assigned")]
    AlreadyAssigned,
    #[error("the session is closed")]
    Closed,
    #[error("the session is not assigned to you")]
    NotAssignedToYou,
    #[error("the agent has no capacity left")]
    AgentFull,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The result of `append`.
#[derive(Debug, Clone)]
pub struct Appended {
    pub message: Message,
    /// A resend of an already stored message: nothing was stored.
    pub duplicate: bool,
}

/// What replay sends for one session: messages above the cursor not sent by the
/// user, at most `max` of them (the newest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayPlan {
    /// Replay messages with seq >= this (0: nothing to replay).
    pub from_seq: u64,
    /// The session's newest seq when planned.
    pub last_seq: u64,
    /// Older messages left out: `(fromSeq, toSeq)`.
    pub truncated: Option<(u64, u64)>,
}

#[async_trait]
pub trait ChatStore: Send + Sync + 'static {
    async fn ping(&self) -> Result<(), StoreError>;
    async fn create_session(&self, customer: &Customer, session: &Session) -> Result<(), StoreError>;
    async fn session(&self, id: &str) -> Result<Option<Session>, StoreError>;
    /// Sessions newest first, optionally only of one status and/or one assigned agent.
    async fn list_sessions(
        &self,
        status: Option<SessionStatus>,
        agent: Option<&str>,
    ) -> Result<Vec<Session>, StoreError>;
    /// Queued sessions, oldest first (the assignment order).
    async fn queued(&self, limit: usize) -> Result<Vec<Session>, StoreError>;
    /// Sessions whose messages the user receives: a customer's own, an agent's assigned ones.
    async fn sessions_of(&self, user: &str, agent: bool) -> Result<Vec<Session>, StoreError>;
    async fn agent_load(&self, agent: &str) -> Result<usize, StoreError>;
    async fn update_session(&self, id: &str, change: SessionChange) -> Result<Session, SessionError>;
    async fn append(&self, message: NewMessage) -> Result<Appended, StoreError>;
    async fn history(&self, session: &str, query: HistoryQuery) -> Result<Page, StoreError>;
    async fn last_message(&self, session: &str) -> Result<Option<Message>, StoreError>;
    /// Messages with `from_seq <= seq <= to_seq`, ascending, at most `limit`.
    async fn range(&self, session: &str, from_seq: u64, to_seq: u64, limit: usize) -> Result<Vec<Message>, StoreError>;
    async fn cursor(&self, user: &str, session: &str) -> Result<Cursor, StoreError>;
    /// Move the delivered cursor (and, for `read`, the read position too) up to `up_to`.
    async fn advance(&self, user: &str, session: &str, up_to: u64, read: bool) -> Result<Cursor, StoreError>;
    /// Messages not sent by `user` with seq above the user's read position.
    async fn unread(&self, user: &str, session: &str) -> Result<u64, StoreError>;
    async fn replay_plan(&self, user: &str, session: &str, max: usize) -> Result<ReplayPlan, StoreError>;
}

/// Plan a replay from a session's messages (newest last): shared by implementations
/// that can scan a session's log.
pub fn plan_replay<'a>(
    msgs: impl DoubleEndedIterator<Item = &'a Message>,
    user: &str,
    cursor: u64,
    last_seq: u64,
    max: usize,
) -> ReplayPlan {
    let mut count = 0;
    let mut from_seq = 0;
    let mut truncated = None;
    for m in msgs.rev() {
        if m.seq <= cursor {
            break;
        }
        if m.from.id == user {
            continue;
        }
        if count == max {
            truncated = Some((cursor + 1, from_seq - 1));
            break;
        }
        count += 1;
        from_seq = m.seq;
    }
    ReplayPlan { from_seq, last_seq, truncated }
}

#[derive(Default)]
struct Tables {
    customers: HashMap<String, Customer>,
    sessions: HashMap<String, Session>,
    /// Session ids by customer.
    by_customer: HashMap<String, Vec<String>>,
    /// Assigned session ids by agent.
    by_agent: HashMap<String, BTreeSet<String>>,
    /// Queued sessions by (created_at_ms, id).
    queue: BTreeSet<(i64, String)>,
    /// Message logs by session, ascending; index = seq - 1.
    logs: HashMap<String, Vec<Message>>,
    /// (sender, session, client id) → (seq, stored at).
    idempotency: HashMap<(String, String, String), (u64, Instant)>,
    /// (user, session) → cursor.
    cursors: HashMap<(String, String), Cursor>,
    last_sweep: Option<Instant>,
}

/// The in-memory [`ChatStore`] (`broker.kind = "memory"`): one mutex, held only
/// for map operations, never across an await.
#[derive(Default)]
pub struct MemoryChatStore {
    tables: Mutex<Tables>,
}

impl MemoryChatStore {
    pub fn new() -> Self {
        Self::default()
    }
}

fn index_agent(t: &mut Tables, session: &Session, previous_agent: Option<&str>) {
    if let Some(prev) = previous_agent {
        if let Some(set) = t.by_agent.get_mut(prev) {
            set.remove(&session.id);
        }
    }
    if session.status == SessionStatus::Assigned {
        if let Some(agent) = &session.agent_id {
            t.by_agent.entry(agent.clone()).or_default().insert(session.id.clone());
        }
    }
    if session.status == SessionStatus::Queued {
        t.queue.insert((session.created_at_ms, session.id.clone()));
    } else {
        t.queue.remove(&(session.created_at_ms, session.id.clone()));
    }
}

fn newest_first(mut list: Vec<Session>) -> Vec<Session> {
    list.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then_with(|| b.id.cmp(&a.id)));
    list
}

#[async_trait]
impl ChatStore for MemoryChatStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn create_session(&self, customer: &Customer, session: &Session) -> Result<(), StoreError> {
        let mut t = self.tables.lock();
        t.customers.insert(customer.id.clone(), customer.clone());
        t.by_customer.entry(customer.id.clone()).or_default().push(session.id.clone());
        t.sessions.insert(session.id.clone(), session.clone());
        index_agent(&mut t, session, None);
        Ok(())
    }

    async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        Ok(self.tables.lock().sessions.get(id).cloned())
    }

    async fn list_sessions(
        &self,
        status: Option<SessionStatus>,
        agent: Option<&str>,
    ) -> Result<Vec<Session>, StoreError> {
        let t = self.tables.lock();
        let list = t
            .sessions
            .values()
            .filter(|s| status.is_none_or(|st| s.status == st))
            .filter(|s| agent.is_none_or(|a| s.agent_id.as_deref() == Some(a)))
            .cloned()
            .collect();
        Ok(newest_first(list))
    }

    async fn queued(&self, limit: usize) -> Result<Vec<Session>, StoreError> {
        let t = self.tables.lock();
        Ok(t.queue.iter().take(limit).filter_map(|(_, id)| t.sessions.get(id).cloned()).collect())
    }

    async fn sessions_of(&self, user: &str, agent: bool) -> Result<Vec<Session>, StoreError> {
        let t = self.tables.lock();
        let ids: Vec<&String> = if agent {
            t.by_agent.get(user).map(|s| s.iter().collect()).unwrap_or_default()
        } else {
            t.by_customer.get(user).map(|v| v.iter().collect()).unwrap_or_default()
        };
        Ok(ids.into_iter().filter_map(|id| t.sessions.get(id).cloned()).collect())
    }

    async fn agent_load(&self, agent: &str) -> Result<usize, StoreError> {
        Ok(self.tables.lock().by_agent.get(agent).map_or(0, BTreeSet::len))
    }

    async fn update_session(&self, id: &str, change: SessionChange) -> Result<Session, SessionError> {
        let mut t = self.tables.lock();
        let load = |t: &Tables, agent: &str| t.by_agent.get(agent).map_or(0, BTreeSet::len);
        let current = t.sessions.get(id).cloned().ok_or(SessionError::NotFound)?;
        let mut next = current.clone();
        match change {
            SessionChange::Claim { agent } => {
                match current.status {
                    SessionStatus::Closed => return Err(SessionError::Closed),
                    SessionStatus::Assigned => return Err(SessionError::AlreadyAssigned),
                    SessionStatus::Queued => {}
                }
                next.status = SessionStatus::Assigned;
                next.agent_id = Some(agent);
            }
            SessionChange::Assign { agent, max_load } => {
                match current.status {
                    SessionStatus::Closed => return Err(SessionError::Closed),
                    SessionStatus::Assigned => return Err(SessionError::AlreadyAssigned),
                    SessionStatus::Queued => {}
                }
                if load(&t, &agent) >= max_load {
                    return Err(SessionError::AgentFull);
                }
                next.status = SessionStatus::Assigned;
                next.agent_id = Some(agent);
            }
            SessionChange::Transfer { from, to } => {
                if current.status == SessionStatus::Closed {
                    return Err(SessionError::Closed);
                }
                if current.status != SessionStatus::Assigned || current.agent_id.as_deref() != Some(from.as_str()) {
                    return Err(SessionError::NotAssignedToYou);
                }
                if from != to && !next.past_agents.contains(&from) {
                    next.past_agents.push(from);
                }
                next.agent_id = Some(to);
            }
            SessionChange::Close => {
                if current.status == SessionStatus::Closed {
                    return Ok(current);
                }
                next.status = SessionStatus::Closed;
            }
            SessionChange::Requeue => {
                if current.status != SessionStatus::Assigned {
                    return Ok(current);
                }
                if let Some(agent) = next.agent_id.take() {
                    if !next.past_agents.contains(&agent) {
                        next.past_agents.push(agent);
                    }
                }
                next.status = SessionStatus::Queued;
            }
        }
        index_agent(&mut t, &next, current.agent_id.as_deref());
        t.sessions.insert(next.id.clone(), next.clone());
        Ok(next)
    }

    async fn append(&self, message: NewMessage) -> Result<Appended, StoreError> {
        let mut t = self.tables.lock();
        let now = Instant::now();
        if t.last_sweep.is_none_or(|at| now.duration_since(at) > Duration::from_secs(60)) {
            t.idempotency.retain(|_, (_, at)| now.duration_since(*at) < IDEMPOTENCY_WINDOW);
            t.last_sweep = Some(now);
        }
        let key = (message.from.id.clone(), message.session_id.clone(), message.client_msg_id.clone());
        if let Some((seq, _)) = t.idempotency.get(&key) {
            let seq = *seq;
            if let Some(m) = t.logs.get(&message.session_id).and_then(|log| log.get(seq as usize - 1)) {
                return Ok(Appended { message: m.clone(), duplicate: true });
            }
        }
        let log = t.logs.entry(message.session_id.clone()).or_default();
        let seq = log.len() as u64 + 1;
        let stored = Message {
            id: format!("msg-{}", uuid::Uuid::new_v4().simple()),
            session_id: message.session_id.clone(),
            seq,
            from: message.from,
            text: message.text,
            ts: protocol::time::now_rfc3339(),
            client_msg_id: message.client_msg_id,
        };
        log.push(stored.clone());
        t.idempotency.insert(key, (seq, now));
        if let Some(s) = t.sessions.get_mut(&message.session_id) {
            s.last_seq = seq;
        }
        Ok(Appended { message: stored, duplicate: false })
    }

    async fn history(&self, session: &str, q: HistoryQuery) -> Result<Page, StoreError> {
        let t = self.tables.lock();
        let log = t.logs.get(session).map(Vec::as_slice).unwrap_or_default();
        Ok(page_of(log, q))
    }

    async fn last_message(&self, session: &str) -> Result<Option<Message>, StoreError> {
        Ok(self.tables.lock().logs.get(session).and_then(|l| l.last().cloned()))
    }

    async fn range(&self, session: &str, from_seq: u64, to_seq: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        let t = self.tables.lock();
        let log = t.logs.get(session).map(Vec::as_slice).unwrap_or_default();
        let start = from_seq.max(1) as usize - 1;
        let end = (to_seq as usize).min(log.len());
        Ok(log.get(start..end.max(start)).unwrap_or_default().iter().take(limit).cloned().collect())
    }

    async fn cursor(&self, user: &str, session: &str) -> Result<Cursor, StoreError> {
        Ok(self.tables.lock().cursors.get(&(user.to_string(), session.to_string())).copied().unwrap_or_default())
    }

    async fn advance(&self, user: &str, session: &str, up_to: u64, read: bool) -> Result<Cursor, StoreError> {
        let mut t = self.tables.lock();
        let last = t.logs.get(session).map_or(0, |l| l.len() as u64);
        let up_to = up_to.min(last);
        let c = t.cursors.entry((user.to_string(), session.to_string())).or_default();
        c.delivered = c.delivered.max(up_to);
        if read {
            c.read = c.read.max(up_to);
        }
        Ok(*c)
    }

    async fn unread(&self, user: &str, session: &str) -> Result<u64, StoreError> {
        let t = self.tables.lock();
        let read = t.cursors.get(&(user.to_string(), session.to_string())).map_or(0, |c| c.read);
        let log = t.logs.get(session).map(Vec::as_slice).unwrap_or_default();
        Ok(log.iter().skip(read as usize).filter(|m| m.from.id != user).count() as u64)
    }

    async fn replay_plan(&self, user: &str, session: &str, max: usize) -> Result<ReplayPlan, StoreError> {
        let t = self.tables.lock();
        let cursor = t.cursors.get(&(user.to_string(), session.to_string())).map_or(0, |c| c.delivered);
        let log = t.logs.get(session).map(Vec::as_slice).unwrap_or_default();
        Ok(plan_replay(log.iter(), user, cursor, log.len() as u64, max))
    }
}

/// The seqs of one page of the history route over a log of `last` messages:
/// `first..end` (end exclusive) and whether more exist in the page's direction.
pub fn page_bounds(last: u64, q: HistoryQuery) -> Option<(u64, u64, bool)> {
    // The open interval (lo, hi) of seqs in play.
    let lo = q.after.unwrap_or(0).min(last);
    let hi = q.before.unwrap_or(last + 1).min(last + 1);
    if hi <= lo + 1 {
        return None;
    }
    Some(if q.after.is_some() {
        // The `limit` right after `after` (when both bounds are given, the first ones).
        let end = (lo + q.limit as u64 + 1).min(hi);
        (lo + 1, end, end < hi)
    } else {
        // The latest `limit` before `hi`.
        let first = hi.saturating_sub(q.limit as u64).max(lo + 1);
        (first, hi, first > lo + 1)
    })
}

/// One page of the history route over a log whose index is `seq - 1`.
pub fn page_of(log: &[Message], q: HistoryQuery) -> Page {
    match page_bounds(log.len() as u64, q) {
        None => Page::default(),
        Some((first, end, has_more)) => {
            Page { messages: log[(first - 1) as usize..(end - 1) as usize].to_vec(), has_more }
        }
    }
}

#[cfg(test)]
#[path = "tests/store_suite.rs"]
pub mod suite;

#[cfg(test)]
#[path = "tests/store.rs"]
mod tests;
