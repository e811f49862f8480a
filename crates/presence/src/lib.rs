//! Who is online, across gateway nodes.
//!
//! # Layout
//! - [`Presence`]: the trait the gateway uses: connections per user, agent availability.
//! - [`MemoryPresence`]: the single-node implementation (`broker.kind = "memory"`).
//! - [`RedisPresence`]: the cluster implementation (`broker.kind = "redis"`): any number of
//!   nodes sharing one Redis, with node liveness and reaping of dead nodes' connections.
//!
//! A user is online while at least one of their connections is open, on any node.
//! An agent is available while online and not `away`. Connection ids must be unique
//! across the cluster (the gateway prefixes them with its node id).
#![forbid(unsafe_code)]

#[cfg(test)]
#[path = "tests/conformance.rs"]
mod conformance;
mod memory;
mod redis;

pub use self::redis::{GoneUser, Reaped, RedisPresence};
pub use memory::MemoryPresence;

/// Presence could not be read or written (the shared store is unreachable).
#[derive(Debug, Clone, thiserror::Error)]
#[error("presence unavailable: {0}")]
pub struct PresenceError(pub String);

/// A transition of a user's presence caused by one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The user's first connection anywhere: they came online.
    CameOnline,
    /// The user's last connection anywhere closed: they went offline.
    WentOffline,
    /// Nothing changed for others to see.
    Unchanged,
}

/// A subscriber of a room, as the presence route lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomMember {
    pub user_id: String,
    pub role: String,
    pub name: String,
}

/// A room member with its number of subscribed connections (all nodes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomMemberCount {
    pub user_id: String,
    pub role: String,
    pub name: String,
    pub connections: usize,
}

#[async_trait::async_trait]
pub trait Presence: Send + Sync + 'static {
    /// A connection of `user` opened. `agent` marks agents (for availability).
    async fn connected(&self, user: &str, agent: bool, conn: &str) -> Result<Transition, PresenceError>;
    /// A connection of `user` closed.
    async fn disconnected(&self, user: &str, conn: &str) -> Result<Transition, PresenceError>;
    async fn is_online(&self, user: &str) -> Result<bool, PresenceError>;
    /// An agent's `status` frame: away agents get no new sessions.
    async fn set_away(&self, agent: &str, away: bool) -> Result<(), PresenceError>;
    /// Agents online and not away, in no particular order.
    async fn available_agents(&self) -> Result<Vec<String>, PresenceError>;

    /// A connection subscribed to `room`; `CameOnline` when it is the user's first in
    /// that room, anywhere. Joining twice with the same `conn` changes nothing.
    async fn room_join(&self, room: &str, conn: &str, member: &RoomMember) -> Result<Transition, PresenceError>;
    /// A connection left `room`; `WentOffline` when it was the user's last there.
    async fn room_leave(&self, room: &str, conn: &str, user: &str) -> Result<Transition, PresenceError>;
    /// The room's members, one entry per user, sorted by user id.
    async fn room_members(&self, room: &str) -> Result<Vec<RoomMemberCount>, PresenceError>;
    async fn is_room_member(&self, room: &str, user: &str) -> Result<bool, PresenceError>;
}
