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

/// The behaviour every [`ChatStore`] must have; run against each implementation.
#[cfg(test)]
pub mod suite {
    use std::sync::Arc;

    use protocol::UserRef;

    use super::*;

    fn user(id: &str, role: &str) -> UserRef {
        UserRef { id: id.into(), role: role.into(), name: format!("Name {id}") }
    }

    async fn new_session(store: &dyn ChatStore, tag: &str, created: i64) -> Session {
        let customer = Customer {
            id: format!("cust-{tag}"),
            name: format!("Customer {tag}"),
            channel: "web".into(),
            contact: Contact::default(),
            created_at_ms: created,
        };
        let session = Session {
            id: format!("sess-{tag}"),
            customer: CustomerRef { id: customer.id.clone(), name: customer.name.clone(), channel: "web".into() },
            status: SessionStatus::Queued,
            agent_id: None,
            created_at_ms: created,
            past_agents: vec![],
            last_seq: 0,
        };
        store.create_session(&customer, &session).await.expect("create");
        session
    }

    async fn send(store: &dyn ChatStore, session: &str, from: &UserRef, id: &str) -> Appended {
        let msg = NewMessage {
            session_id: session.into(),
            from: from.clone(),
            client_msg_id: id.into(),
            text: format!("text {id}"),
        };
        store.append(msg).await.expect("append")
    }

    pub async fn sessions_lifecycle(store: Arc<dyn ChatStore>) {
        let s1 = new_session(&*store, "a", 1_000).await;
        let s2 = new_session(&*store, "b", 2_000).await;
        let got = store.session(&s1.id).await.unwrap().expect("stored");
        assert_eq!(
            (got.status, got.agent_id.clone(), got.customer.clone()),
            (SessionStatus::Queued, None, s1.customer.clone())
        );
        assert!(store.session("nope").await.unwrap().is_none());
        let queued: Vec<String> = store.queued(10).await.unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(queued, vec![s1.id.clone(), s2.id.clone()], "oldest first");
        let listed: Vec<String> = store.list_sessions(None, None).await.unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(listed, vec![s2.id.clone(), s1.id.clone()], "newest first");

        let claimed = store.update_session(&s1.id, SessionChange::Claim { agent: "ag1".into() }).await.unwrap();
        assert_eq!((claimed.status, claimed.agent_id.as_deref()), (SessionStatus::Assigned, Some("ag1")));
        assert!(matches!(
            store.update_session(&s1.id, SessionChange::Claim { agent: "ag2".into() }).await,
            Err(SessionError::AlreadyAssigned)
        ));
        assert!(matches!(store.update_session("nope", SessionChange::Close).await, Err(SessionError::NotFound)));
        assert_eq!(store.agent_load("ag1").await.unwrap(), 1);
        assert!(matches!(
            store.update_session(&s2.id, SessionChange::Assign { agent: "ag1".into(), max_load: 1 }).await,
            Err(SessionError::AgentFull)
        ));
        let mine: Vec<String> =
            store.list_sessions(None, Some("ag1")).await.unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(mine, vec![s1.id.clone()]);
        let queued: Vec<String> =
            store.list_sessions(Some(SessionStatus::Queued), None).await.unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(queued, vec![s2.id.clone()]);

        // transfer: only the holder, history readers remember
        assert!(matches!(
            store.update_session(&s1.id, SessionChange::Transfer { from: "ag9".into(), to: "ag2".into() }).await,
            Err(SessionError::NotAssignedToYou)
        ));
        let moved = store
            .update_session(&s1.id, SessionChange::Transfer { from: "ag1".into(), to: "ag2".into() })
            .await
            .unwrap();
        assert_eq!(moved.agent_id.as_deref(), Some("ag2"));
        assert_eq!(moved.past_agents, vec!["ag1".to_string()]);
        assert!(moved.may_read("ag1") && !moved.is_participant("ag1"));
        assert_eq!(store.agent_load("ag1").await.unwrap(), 0);
        let of_ag2: Vec<String> = store.sessions_of("ag2", true).await.unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(of_ag2, vec![s1.id.clone()]);
        let of_cust: Vec<String> =
            store.sessions_of(&s1.customer.id, false).await.unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(of_cust, vec![s1.id.clone()]);

        // close twice is the same; a closed session cannot be claimed or transferred
        let closed = store.update_session(&s1.id, SessionChange::Close).await.unwrap();
        assert_eq!(closed.status, SessionStatus::Closed);
        assert_eq!(store.update_session(&s1.id, SessionChange::Close).await.unwrap().status, SessionStatus::Closed);
        assert!(matches!(
            store.update_session(&s1.id, SessionChange::Claim { agent: "ag3".into() }).await,
            Err(SessionError::Closed)
        ));
        assert_eq!(store.agent_load("ag2").await.unwrap(), 0);
        let closed_mine: Vec<String> = store
            .list_sessions(Some(SessionStatus::Closed), Some("ag2"))
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(closed_mine, vec![s1.id.clone()]);
    }

    pub async fn messages_and_cursors(store: Arc<dyn ChatStore>) {
        let s = new_session(&*store, "m", 1).await;
        let cust = user(&s.customer.id, "customer");
        let agent = user("ag", "agent");
        let a1 = send(&*store, &s.id, &cust, "c1").await;
        assert_eq!((a1.message.seq, a1.duplicate), (1, false));
        assert_eq!(a1.message.client_msg_id, "c1");
        assert_eq!(a1.message.ts.len(), 24);
        let again = send(&*store, &s.id, &cust, "c1").await;
        assert!(again.duplicate, "a resend is recognised");
        assert_eq!((again.message.seq, again.message.id.clone()), (1, a1.message.id.clone()));
        // the same client id from another sender is another message
        assert_eq!(send(&*store, &s.id, &agent, "c1").await.message.seq, 2);
        for i in 3..=12 {
            let from = if i % 2 == 0 { &agent } else { &cust };
            assert_eq!(send(&*store, &s.id, from, &format!("x{i}")).await.message.seq, i);
        }
        assert_eq!(store.session(&s.id).await.unwrap().unwrap().last_seq, 12);
        assert_eq!(store.last_message(&s.id).await.unwrap().unwrap().seq, 12);

        let seqs = |p: &Page| p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
        let q = |after, before, limit| HistoryQuery { after, before, limit };
        let latest = store.history(&s.id, q(None, None, 5)).await.unwrap();
        assert_eq!((seqs(&latest), latest.has_more), (vec![8, 9, 10, 11, 12], true));
        let after = store.history(&s.id, q(Some(2), None, 3)).await.unwrap();
        assert_eq!((seqs(&after), after.has_more), (vec![3, 4, 5], true));
        let tail = store.history(&s.id, q(Some(10), None, 5)).await.unwrap();
        assert_eq!((seqs(&tail), tail.has_more), (vec![11, 12], false));
        let before = store.history(&s.id, q(None, Some(4), 5)).await.unwrap();
        assert_eq!((seqs(&before), before.has_more), (vec![1, 2, 3], false));
        let between = store.history(&s.id, q(Some(3), Some(9), 3)).await.unwrap();
        assert_eq!((seqs(&between), between.has_more), (vec![4, 5, 6], true));
        assert!(store.history(&s.id, q(Some(12), None, 5)).await.unwrap().messages.is_empty());
        let range = store.range(&s.id, 4, 6, 10).await.unwrap();
        assert_eq!(range.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![4, 5, 6]);
        assert_eq!(store.range(&s.id, 11, 99, 10).await.unwrap().len(), 2);

        // cursors only move forward, and never past the last message
        let c = store.advance(&agent.id, &s.id, 5, false).await.unwrap();
        assert_eq!((c.delivered, c.read), (5, 0));
        let c = store.advance(&agent.id, &s.id, 3, true).await.unwrap();
        assert_eq!((c.delivered, c.read), (5, 3));
        let c = store.advance(&agent.id, &s.id, 99, false).await.unwrap();
        assert_eq!(c.delivered, 12);
        assert_eq!(store.cursor(&agent.id, &s.id).await.unwrap(), Cursor { delivered: 12, read: 3 });
        // unread: not sent by the reader, above its read position (customer sent 1,3,5,7,9,11)
        assert_eq!(store.unread(&agent.id, &s.id).await.unwrap(), 4);
        assert_eq!(store.unread(&cust.id, &s.id).await.unwrap(), 6);

        // replay: newest `max` messages of others above the delivery cursor
        let plan = store.replay_plan(&cust.id, &s.id, 100).await.unwrap();
        assert_eq!(plan, ReplayPlan { from_seq: 2, last_seq: 12, truncated: None });
        let plan = store.replay_plan(&cust.id, &s.id, 2).await.unwrap();
        assert_eq!(plan, ReplayPlan { from_seq: 10, last_seq: 12, truncated: Some((1, 9)) });
        store.advance(&cust.id, &s.id, 10, false).await.unwrap();
        let plan = store.replay_plan(&cust.id, &s.id, 100).await.unwrap();
        assert_eq!(plan, ReplayPlan { from_seq: 12, last_seq: 12, truncated: None });
        let plan = store.replay_plan(&agent.id, &s.id, 100).await.unwrap();
        assert_eq!(plan.from_seq, 0, "nothing above the agent's cursor");
    }

    pub async fn concurrent_appends(store: Arc<dyn ChatStore>) {
        let s = new_session(&*store, "c", 1).await;
        let mut tasks = Vec::new();
        for sender in 0..8 {
            let store = store.clone();
            let sid = s.id.clone();
            tasks.push(tokio::spawn(async move {
                let from = user(&format!("u{sender}"), "customer");
                let mut seqs = Vec::new();
                for i in 0..25 {
                    let id = format!("m{i}");
                    let msg =
                        NewMessage { session_id: sid.clone(), from: from.clone(), client_msg_id: id, text: "t".into() };
                    seqs.push(store.append(msg).await.expect("append").message.seq);
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        all.sort_unstable();
        assert_eq!(all, (1..=200).collect::<Vec<u64>>(), "no gap, no repeat");
    }

    pub async fn assignment_capacity_under_contention(store: Arc<dyn ChatStore>) {
        let mut ids = Vec::new();
        for i in 0..10 {
            ids.push(new_session(&*store, &format!("cap{i}"), i).await.id);
        }
        let mut tasks = Vec::new();
        for id in ids {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.update_session(&id, SessionChange::Assign { agent: "busy".into(), max_load: 3 }).await.is_ok()
            }));
        }
        let mut assigned = 0;
        for t in tasks {
            assigned += usize::from(t.await.expect("task"));
        }
        assert_eq!(assigned, 3);
        assert_eq!(store.agent_load("busy").await.unwrap(), 3);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn memory() -> Arc<dyn ChatStore> {
        Arc::new(MemoryChatStore::new())
    }

    #[tokio::test]
    async fn memory_sessions_lifecycle() {
        suite::sessions_lifecycle(memory()).await;
    }

    #[tokio::test]
    async fn memory_messages_and_cursors() {
        suite::messages_and_cursors(memory()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_concurrent_appends() {
        suite::concurrent_appends(memory()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_assignment_capacity() {
        suite::assignment_capacity_under_contention(memory()).await;
    }
}
