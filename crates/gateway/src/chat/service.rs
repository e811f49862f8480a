//! [`ChatService`]: the support-chat workflow behind frames and routes.

use std::sync::Arc;

use auth::{AgentStore, Role};
use bytestring::ByteString;
use presence::{Presence, Transition};
use protocol::frames::PresenceStatus;
use protocol::{encode, ClientFrame, ErrorCode, FrameId, UserRef};
use serde::Serialize;
use tracing::{debug, info, warn};

use super::model::*;
use super::router::Router;
use super::store::{ChatStore, SessionChange, SessionError, StoreError};
use crate::config::{AssignmentMode, Settings};
use crate::metrics::Metrics;
use crate::outbound::{ConnHandle, Outbound};
use crate::ws::Identity;

/// Most messages in one history page.
pub const MAX_HISTORY_LIMIT: usize = 200;
pub const DEFAULT_HISTORY_LIMIT: usize = 50;
/// Most sessions assigned in one assignment round.
const ASSIGN_ROUND_MAX: usize = 1000;

/// An error answer to a frame or route.
#[derive(Debug, Clone)]
pub struct ChatError {
    pub code: ErrorCode,
    pub message: String,
}

impl ChatError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ChatError {
        ChatError { code, message: message.into() }
    }

    fn forbidden(message: &str) -> ChatError {
        ChatError::new(ErrorCode::Forbidden, message)
    }
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        warn!(error = %e, "chat store unavailable");
        ChatError::new(ErrorCode::Unavailable, "the message store is unavailable; retry with the same id")
    }
}

impl From<presence::PresenceError> for ChatError {
    fn from(e: presence::PresenceError) -> Self {
        warn!(error = %e, "presence unavailable");
        ChatError::new(ErrorCode::Unavailable, "presence is unavailable; retry shortly")
    }
}

impl From<SessionError> for ChatError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound => ChatError::new(ErrorCode::NotFound, "no such session"),
            SessionError::AlreadyAssigned => {
                ChatError::new(ErrorCode::AlreadyAssigned, "the session is already assigned")
            }
            SessionError::Closed => ChatError::new(ErrorCode::SessionClosed, "the session is closed"),
            SessionError::NotAssignedToYou => ChatError::forbidden("the session is not assigned to you"),
            SessionError::AgentFull => ChatError::new(ErrorCode::Forbidden, "the agent has no capacity left"),
            SessionError::Store(e) => e.into(),
        }
    }
}

/// A successful answer to a chat frame.
#[derive(Debug)]
pub enum ChatAnswer {
    /// `message` stored: `ack`.
    Ack { message: Message },
    /// `ok` with no fields.
    Ok,
    /// `ok` with `{session}`.
    Session(SessionView),
    /// `session.history`.
    History { session_id: String, page: Page, unread: u64 },
}

impl ChatAnswer {
    pub fn encode(&self, reference: Option<&FrameId>) -> ByteString {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Ack<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(rename = "ref")]
            reference: Option<&'a FrameId>,
            message_id: &'a str,
            session_id: &'a str,
            seq: u64,
            ts: &'a str,
        }
        #[derive(Serialize)]
        struct WithSession<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
            reference: Option<&'a FrameId>,
            session: &'a SessionView,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct History<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
            reference: Option<&'a FrameId>,
            session_id: &'a str,
            messages: &'a [Message],
            unread: u64,
            has_more: bool,
        }
        #[derive(Serialize)]
        struct Ok<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
            reference: Option<&'a FrameId>,
        }
        match self {
            ChatAnswer::Ack { message } => encode(&Ack {
                kind: "ack",
                reference,
                message_id: &message.id,
                session_id: &message.session_id,
                seq: message.seq,
                ts: &message.ts,
            }),
            ChatAnswer::Ok => encode(&Ok { kind: "ok", reference }),
            ChatAnswer::Session(session) => encode(&WithSession { kind: "ok", reference, session }),
            ChatAnswer::History { session_id, page, unread } => encode(&History {
                kind: "session.history",
                reference,
                session_id,
                messages: &page.messages,
                unread: *unread,
                has_more: page.has_more,
            }),
        }
    }

    /// Frames without `id` get no `ok` (§4); acks and histories always go out.
    pub fn needs_ref(&self) -> bool {
        matches!(self, ChatAnswer::Ok | ChatAnswer::Session(_))
    }
}

/// `{type:"message"|"offline_message", message}`
pub fn message_frame(kind: &'static str, message: &Message) -> ByteString {
    #[derive(Serialize)]
    struct F<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        message: &'a Message,
    }
    encode(&F { kind, message })
}

/// Who is asking: the claims that matter to chat.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: String,
    pub role: Role,
    pub name: String,
}

impl Actor {
    pub fn of(identity: &Identity) -> Actor {
        Actor { id: identity.user.id.clone(), role: identity.claims.role, name: identity.user.name.clone() }
    }

    fn user_ref(&self) -> UserRef {
        UserRef { id: self.id.clone(), role: self.role.as_str().to_string(), name: self.name.clone() }
    }
}

struct Inner {
    store: Arc<dyn ChatStore>,
    /// Agent accounts (transfer targets must exist).
    agents: Arc<dyn AgentStore>,
    presence: Arc<dyn Presence>,
    router: Router,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    /// One assignment round at a time on this node; across nodes the store's
    /// compare-and-set keeps agents within capacity.
    assigning: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
pub struct ChatService {
    inner: Arc<Inner>,
}

impl ChatService {
    pub fn new(
        store: Arc<dyn ChatStore>,
        agents: Arc<dyn AgentStore>,
        presence: Arc<dyn Presence>,
        router: Router,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let inner =
            Inner { store, agents, presence, router, settings, metrics, assigning: tokio::sync::Mutex::new(()) };
        ChatService { inner: Arc::new(inner) }
    }

    pub fn store(&self) -> &Arc<dyn ChatStore> {
        &self.inner.store
    }

    /// Whether the store answers (`/readyz`).
    pub async fn ping(&self) -> Result<(), String> {
        self.inner.store.ping().await.map_err(|e| e.to_string())
    }

    // ------------------------------------------------------------- sessions

    /// customer-token: a new customer with a queued session.
    pub async fn open_customer(
        &self,
        name: &str,
        channel: &str,
        contact: Contact,
    ) -> Result<(Customer, Session), ChatError> {
        let now = protocol::time::unix_millis();
        let customer = Customer {
            id: format!("cust-{}", uuid::Uuid::new_v4().simple()),
            name: name.to_string(),
            channel: channel.to_string(),
            contact,
            created_at_ms: now,
        };
        let session = Session {
            id: format!("sess-{}", uuid::Uuid::new_v4().simple()),
            customer: CustomerRef {
                id: customer.id.clone(),
                name: customer.name.clone(),
                channel: customer.channel.clone(),
            },
            status: SessionStatus::Queued,
            agent_id: None,
            created_at_ms: now,
            past_agents: Vec::new(),
            last_seq: 0,
        };
        self.inner.store.create_session(&customer, &session).await?;
        self.announce_queued(&session).await;
        self.spawn_assignment();
        Ok((customer, session))
    }

    /// The SESSION object as `viewer` sees it.
    pub async fn view(&self, session: &Session, viewer: &str) -> Result<SessionView, ChatError> {
        let store = &self.inner.store;
        let last_message = if session.last_seq > 0 { store.last_message(&session.id).await? } else { None };
        let unread = if session.last_seq > 0 { store.unread(viewer, &session.id).await? } else { 0 };
        Ok(SessionView {
            id: session.id.clone(),
            customer: session.customer.clone(),
            status: session.status,
            agent_id: session.agent_id.clone(),
            created_at: protocol::time::from_unix_millis(session.created_at_ms),
            last_message,
            unread,
        })
    }

    /// `GET /sessions`: agents only.
    pub async fn list(
        &self,
        actor: &Actor,
        status: Option<SessionStatus>,
        mine: bool,
    ) -> Result<Vec<SessionView>, ChatError> {
        if actor.role != Role::Agent {
            return Err(ChatError::forbidden("only agents list sessions"));
        }
        let sessions = self.inner.store.list_sessions(status, mine.then_some(actor.id.as_str())).await?;
        let mut views = Vec::with_capacity(sessions.len());
        for s in &sessions {
            views.push(self.view(s, &actor.id).await?);
        }
        Ok(views)
    }

    /// The session, or `NOT_FOUND`.
    async fn session(&self, session_id: &str) -> Result<Session, ChatError> {
        self.inner
            .store
            .session(session_id)
            .await?
            .ok_or_else(|| ChatError::new(ErrorCode::NotFound, "no such session"))
    }

    async fn readable(&self, actor: &Actor, session_id: &str) -> Result<Session, ChatError> {
        let session = self.session(session_id).await?;
        if !session.may_read(&actor.id) {
            return Err(ChatError::forbidden("you are not a participant of this session"));
        }
        Ok(session)
    }

    /// The history route.
    pub async fn history(&self, actor: &Actor, session_id: &str, query: HistoryQuery) -> Result<Page, ChatError> {
        self.readable(actor, session_id).await?;
        Ok(self.inner.store.history(session_id, query).await?)
    }

    pub async fn claim(&self, actor: &Actor, session_id: &str) -> Result<SessionView, ChatError> {
        if actor.role != Role::Agent {
            return Err(ChatError::forbidden("only agents claim sessions"));
        }
        let session =
            self.inner.store.update_session(session_id, SessionChange::Claim { agent: actor.id.clone() }).await?;
        info!(session_id, agent_id = %actor.id, "session claimed");
        self.announce_assigned(&session).await;
        self.view(&session, &actor.id).await
    }

    pub async fn transfer(&self, actor: &Actor, session_id: &str, to_agent: &str) -> Result<SessionView, ChatError> {
        if actor.role != Role::Agent {
            return Err(ChatError::forbidden("only the assigned agent transfers a session"));
        }
        let current = self.session(session_id).await?;
        if current.status == SessionStatus::Closed {
            return Err(SessionError::Closed.into());
        }
        if current.agent_id.as_deref() != Some(actor.id.as_str()) {
            return Err(ChatError::forbidden("only the assigned agent transfers a session"));
        }
        if self.inner.agents.by_id(to_agent).await?.is_none() {
            return Err(ChatError::new(ErrorCode::NotFound, format!("no agent `{to_agent}`")));
        }
        let change = SessionChange::Transfer { from: actor.id.clone(), to: to_agent.to_string() };
        let session = self.inner.store.update_session(session_id, change).await?;
        info!(session_id, from = %actor.id, to = to_agent, "session transferred");
        self.announce_transferred(&session, &actor.id).await;
        self.spawn_assignment();
        self.view(&session, &actor.id).await
    }

    pub async fn close(&self, actor: &Actor, session_id: &str) -> Result<SessionView, ChatError> {
        let current = self.session(session_id).await?;
        let allowed = match actor.role {
            Role::Customer => current.customer.id == actor.id,
            Role::Agent => current.agent_id.as_deref() == Some(actor.id.as_str()),
            _ => false,
        };
        if !allowed {
            return Err(ChatError::forbidden("only the customer or the assigned agent closes a session"));
        }
        let was_closed = current.status == SessionStatus::Closed;
        let session = self.inner.store.update_session(session_id, SessionChange::Close).await?;
        if !was_closed {
            info!(session_id, by = %actor.id, "session closed");
            self.announce(&session, "session.closed", None, session.participants().map(str::to_string).collect()).await;
            self.spawn_assignment();
        }
        self.view(&session, &actor.id).await
    }

    // ------------------------------------------------------------- frames

    /// Answer one chat frame of an authenticated connection.
    pub async fn handle_frame(
        &self,
        identity: &Identity,
        conn: &ConnHandle,
        frame: ClientFrame,
        id: Option<&FrameId>,
    ) -> Result<ChatAnswer, ChatError> {
        let actor = Actor::of(identity);
        match frame {
            ClientFrame::Message { session_id, text } => {
                let client_id = id.map(ToString::to_string).unwrap_or_default();
                self.send_message(&actor, conn, &session_id, text, client_id).await
            }
            ClientFrame::Delivered { session_id, up_to_seq } => {
                self.cursor(&actor, &session_id, up_to_seq, false).await
            }
            ClientFrame::Read { session_id, up_to_seq } => self.cursor(&actor, &session_id, up_to_seq, true).await,
            ClientFrame::Typing { session_id, active } => self.typing(&actor, &session_id, active).await,
            ClientFrame::SessionSwitch { session_id } => {
                if actor.role != Role::Agent {
                    return Err(ChatError::forbidden("only agents switch sessions"));
                }
                self.readable(&actor, &session_id).await?;
                let query = HistoryQuery { after: None, before: None, limit: DEFAULT_HISTORY_LIMIT };
                let page = self.inner.store.history(&session_id, query).await?;
                let unread = self.inner.store.unread(&actor.id, &session_id).await?;
                Ok(ChatAnswer::History { session_id, page, unread })
            }
            ClientFrame::SessionClaim { session_id } => Ok(ChatAnswer::Session(self.claim(&actor, &session_id).await?)),
            ClientFrame::SessionClose { session_id } => Ok(ChatAnswer::Session(self.close(&actor, &session_id).await?)),
            ClientFrame::SessionTransfer { session_id, to_agent_id } => {
                Ok(ChatAnswer::Session(self.transfer(&actor, &session_id, &to_agent_id).await?))
            }
            ClientFrame::Status { status } => {
                if actor.role != Role::Agent {
                    return Err(ChatError::forbidden("only agents set a status"));
                }
                let away = status == protocol::frames::AgentStatus::Away;
                self.inner.presence.set_away(&actor.id, away).await?;
                if !away {
                    self.spawn_assignment();
                }
                Ok(ChatAnswer::Ok)
            }
            _ => Err(ChatError::new(ErrorCode::InvalidRequest, "not a chat frame")),
        }
    }

    async fn participant_session(&self, actor: &Actor, session_id: &str) -> Result<Session, ChatError> {
        let session = self.session(session_id).await?;
        if !session.is_participant(&actor.id) {
            return Err(ChatError::forbidden("you are not a participant of this session"));
        }
        Ok(session)
    }

    async fn send_message(
        &self,
        actor: &Actor,
        conn: &ConnHandle,
        session_id: &str,
        text: String,
        client_id: String,
    ) -> Result<ChatAnswer, ChatError> {
        let max = self.inner.settings.limits.max_text_chars;
        if text.chars().count() > max {
            return Err(ChatError::new(
                ErrorCode::MessageTooBig,
                format!("a message text is at most {max} characters"),
            ));
        }
        if text.trim().is_empty() {
            return Err(ChatError::new(ErrorCode::InvalidRequest, "a message needs a non-empty `text`"));
        }
        let session = self.participant_session(actor, session_id).await?;
        if session.status == SessionStatus::Closed {
            return Err(SessionError::Closed.into());
        }
        let appended = self
            .inner
            .store
            .append(NewMessage {
                session_id: session.id.clone(),
                from: actor.user_ref(),
                client_msg_id: client_id,
                text,
            })
            .await?;
        if !appended.duplicate {
            self.inner.metrics.messages_stored.inc();
            let message = &appended.message;
            let frame = message_frame("message", message);
            let item = Outbound::Message { session: session.id.as_str().into(), seq: message.seq, frame };
            for user in session.participants() {
                self.inner.router.to_user(user, item.clone(), Some(conn.id)).await;
            }
            debug!(session_id, seq = message.seq, "message stored");
        }
        Ok(ChatAnswer::Ack { message: appended.message })
    }

    async fn cursor(&self, actor: &Actor, session_id: &str, up_to: u64, read: bool) -> Result<ChatAnswer, ChatError> {
        let session = self.participant_session(actor, session_id).await?;
        let cursor = self.inner.store.advance(&actor.id, session_id, up_to, read).await?;
        if read {
            #[derive(Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Read<'a> {
                #[serde(rename = "type")]
                kind: &'static str,
                session_id: &'a str,
                user_id: &'a str,
                up_to_seq: u64,
            }
            let frame = encode(&Read { kind: "read", session_id, user_id: &actor.id, up_to_seq: cursor.read });
            self.to_others(&session, &actor.id, frame).await;
        }
        Ok(ChatAnswer::Ok)
    }

    async fn typing(&self, actor: &Actor, session_id: &str, active: bool) -> Result<ChatAnswer, ChatError> {
        let session = self.participant_session(actor, session_id).await?;
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Typing<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            session_id: &'a str,
            user_id: &'a str,
            active: bool,
        }
        let frame = encode(&Typing { kind: "typing", session_id, user_id: &actor.id, active });
        self.to_others(&session, &actor.id, frame).await;
        Ok(ChatAnswer::Ok)
    }

    async fn to_others(&self, session: &Session, sender: &str, frame: ByteString) {
        for user in session.participants().filter(|u| *u != sender) {
            self.inner.router.to_user(user, Outbound::Frame(frame.clone()), None).await;
        }
    }

    // ------------------------------------------------------------- presence

    /// A chat connection authenticated: presence, and for agents new capacity.
    pub async fn connection_opened(&self, actor: &Actor, conn_key: &str) {
        let agent = actor.role == Role::Agent;
        match self.inner.presence.connected(&actor.id, agent, conn_key).await {
            Ok(Transition::CameOnline) => {
                self.announce_presence(actor, PresenceStatus::Online).await;
                if agent {
                    self.spawn_assignment();
                }
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "presence update failed"),
        }
    }

    pub async fn connection_closed(&self, actor: &Actor, conn_key: &str) {
        match self.inner.presence.disconnected(&actor.id, conn_key).await {
            Ok(Transition::WentOffline) => self.announce_presence(actor, PresenceStatus::Offline).await,
            Ok(_) => {}
            Err(e) => warn!(error = %e, "presence update failed"),
        }
    }

    /// A user went offline without closing (their node died): tell their sessions.
    pub async fn user_went_offline(&self, user: &str, agent: bool) {
        let actor =
            Actor { id: user.to_string(), role: if agent { Role::Agent } else { Role::Customer }, name: String::new() };
        self.announce_presence(&actor, PresenceStatus::Offline).await;
    }

    async fn announce_presence(&self, actor: &Actor, status: PresenceStatus) {
        let Ok(sessions) = self.inner.store.sessions_of(&actor.id, actor.role == Role::Agent).await else { return };
        for session in sessions.iter().filter(|s| s.status != SessionStatus::Closed) {
            self.to_others(session, &actor.id, presence_frame(&session.id, &actor.id, status)).await;
        }
    }

    // ------------------------------------------------------------- events

    async fn announce_queued(&self, session: &Session) {
        #[derive(Serialize)]
        struct Queued<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            session: &'a SessionView,
        }
        if let Ok(view) = self.view(session, "").await {
            let frame = encode(&Queued { kind: "session.queued", session: &view });
            self.inner.router.to_agents(Outbound::Frame(frame)).await;
        }
    }

    async fn announce_assigned(&self, session: &Session) {
        let to: Vec<String> = session.participants().map(str::to_string).collect();
        self.announce(session, "session.assigned", None, to).await;
        self.after_handover(session).await;
    }

    async fn announce_transferred(&self, session: &Session, from_agent: &str) {
        let mut to: Vec<String> = session.participants().map(str::to_string).collect();
        to.push(from_agent.to_string());
        self.announce(session, "session.transferred", Some(from_agent), to).await;
        self.after_handover(session).await;
    }

    /// The new agent's connections start tracking the session's messages, and learn
    /// whether the customer is online.
    async fn after_handover(&self, session: &Session) {
        let Some(agent) = &session.agent_id else { return };
        let track = Outbound::Track { session: session.id.as_str().into(), after: session.last_seq };
        self.inner.router.to_user(agent, track, None).await;
        if let Ok(true) = self.inner.presence.is_online(&session.customer.id).await {
            let frame = presence_frame(&session.id, &session.customer.id, PresenceStatus::Online);
            self.inner.router.to_user(agent, Outbound::Frame(frame), None).await;
        }
    }

    /// Send `{type: kind, session, fromAgentId?}` to each of `to`, each seeing its own SESSION view.
    async fn announce(&self, session: &Session, kind: &'static str, from_agent: Option<&str>, to: Vec<String>) {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Event<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            session: &'a SessionView,
            #[serde(skip_serializing_if = "Option::is_none")]
            from_agent_id: Option<&'a str>,
        }
        for user in to {
            if let Ok(view) = self.view(session, &user).await {
                let frame = encode(&Event { kind, session: &view, from_agent_id: from_agent });
                self.inner.router.to_user(&user, Outbound::Frame(frame), None).await;
            }
        }
    }

    // ------------------------------------------------------------- assignment

    /// Run an assignment round in the background (auto mode only).
    pub fn spawn_assignment(&self) {
        self.spawn_assignment_except(None);
    }

    fn spawn_assignment_except(&self, except: Option<String>) {
        if self.inner.settings.assignment.mode != AssignmentMode::Auto {
            return;
        }
        let this = self.clone();
        actix::spawn(async move { this.assign_round(except.as_deref()).await });
    }

    /// An agent logged out: the sessions they held go back to the queue (`session.queued`
    /// to the agents) and, in auto mode, to the other available agents.
    pub async fn agent_logged_out(&self, agent: &str) {
        let Ok(sessions) = self.inner.store.sessions_of(agent, true).await else { return };
        for session in sessions {
            if let Ok(requeued) = self.inner.store.update_session(&session.id, SessionChange::Requeue).await {
                if requeued.status == SessionStatus::Queued {
                    info!(session_id = %requeued.id, agent_id = agent, "session put back in the queue: its agent logged out");
                    self.announce_queued(&requeued).await;
                }
            }
        }
        // The agent's connections are closing right now: leave them out of this round.
        self.spawn_assignment_except(Some(agent.to_string()));
    }

    /// Assign queued sessions, oldest first, each to the least-loaded available agent
    /// (other than `except`).
    pub async fn assign_round(&self, except: Option<&str>) {
        let _round = self.inner.assigning.lock().await;
        let max = self.inner.settings.assignment.max_sessions_per_agent;
        for _ in 0..ASSIGN_ROUND_MAX {
            let Ok(queued) = self.inner.store.queued(1).await else { return };
            let Some(session) = queued.into_iter().next() else { return };
            let Ok(agents) = self.inner.presence.available_agents().await else { return };
            let mut best: Option<(usize, String)> = None;
            for agent in agents.into_iter().filter(|a| Some(a.as_str()) != except) {
                let Ok(load) = self.inner.store.agent_load(&agent).await else { return };
                if load < max && best.as_ref().is_none_or(|(l, a)| (load, &agent) < (*l, a)) {
                    best = Some((load, agent));
                }
            }
            let Some((_, agent)) = best else { return };
            match self
                .inner
                .store
                .update_session(&session.id, SessionChange::Assign { agent: agent.clone(), max_load: max })
                .await
            {
                Ok(assigned) => {
                    info!(session_id = %assigned.id, agent_id = %agent, "session assigned");
                    self.announce_assigned(&assigned).await;
                }
                Err(SessionError::Store(e)) => {
                    warn!(error = %e, "assignment stopped: store unavailable");
                    return;
                }
                // Another node got there first, or the agent filled up: look again.
                Err(_) => continue,
            }
        }
    }
}

fn presence_frame(session_id: &str, user_id: &str, status: PresenceStatus) -> ByteString {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct P<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        session_id: &'a str,
        user_id: &'a str,
        status: PresenceStatus,
    }
    encode(&P { kind: "presence", session_id, user_id, status })
}
