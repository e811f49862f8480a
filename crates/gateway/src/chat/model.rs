//! Support-chat domain types: customers, sessions, messages, cursors.

use protocol::UserRef;
use serde::{Deserialize, Serialize};

/// A customer as shown in a SESSION: `{id, name, channel}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerRef {
    pub id: String,
    pub name: String,
    pub channel: String,
}

/// Contact details given to customer-token; stored, never shown in frames.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub channel_user_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub name: String,
    pub channel: String,
    pub contact: Contact,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Queued,
    Assigned,
    Closed,
}

impl SessionStatus {
    pub fn parse(s: &str) -> Option<SessionStatus> {
        match s {
            "queued" => Some(SessionStatus::Queued),
            "assigned" => Some(SessionStatus::Assigned),
            "closed" => Some(SessionStatus::Closed),
            _ => None,
        }
    }
}

/// A support session as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub customer: CustomerRef,
    pub status: SessionStatus,
    pub agent_id: Option<String>,
    pub created_at_ms: i64,
    /// Agents who held the session before the current one (they may read its history).
    pub past_agents: Vec<String>,
    /// The seq of the newest message (0: none yet).
    pub last_seq: u64,
}

impl Session {
    /// The user ids that receive the session's messages and events: the customer and
    /// the assigned agent.
    pub fn participants(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.customer.id.as_str()).chain(self.agent_id.as_deref())
    }

    pub fn is_participant(&self, user: &str) -> bool {
        self.customer.id == user || self.agent_id.as_deref() == Some(user)
    }

    /// Participants and agents who held it before: who may read the history.
    pub fn may_read(&self, user: &str) -> bool {
        self.is_participant(user) || self.past_agents.iter().any(|a| a == user)
    }
}

/// A chat message, as in frames and the history route (MESSAGE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    pub session_id: String,
    pub seq: u64,
    pub from: UserRef,
    pub text: String,
    pub ts: String,
    pub client_msg_id: String,
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub session_id: String,
    pub from: UserRef,
    pub client_msg_id: String,
    pub text: String,
}

/// A user's positions in one session. Both only move forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Highest seq the user confirmed as delivered (replay starts above it).
    pub delivered: u64,
    /// Highest seq the user has read.
    pub read: u64,
}

/// A page request of the history route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    pub after: Option<u64>,
    pub before: Option<u64>,
    pub limit: usize,
}

/// A page of history, ascending by seq.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub messages: Vec<Message>,
    /// More messages exist in the page's direction.
    pub has_more: bool,
}

/// The SESSION object of the contract, as one caller sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub id: String,
    pub customer: CustomerRef,
    pub status: SessionStatus,
    pub agent_id: Option<String>,
    pub created_at: String,
    pub last_message: Option<Message>,
    pub unread: u64,
}
