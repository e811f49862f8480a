//! Who is online, across gateway nodes.
//!
//! # Layout
//! - [`Presence`]: the trait the gateway uses: connections per user, agent availability.
//! - [`MemoryPresence`]: the single-node implementation (`broker.kind = "memory"`).
//!
//! A user is online while at least one of their connections is open, on any node.
//! An agent is available while online and not `away`. Connection ids must be unique
//! across the cluster (the gateway prefixes them with its node id).
#![forbid(unsafe_code)]

mod memory;

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
}
