//! Cluster mode (`broker.kind = "redis"`): the Redis implementations of the stores,
//! and the bridge that relays rooms and user deliveries between nodes.
//!
//! - [`bridge`]: the node's pub/sub connection and what arrives on it.
//! - [`wire`]: the format of relayed items and the channel names.
//! - [`relay`]: publishing deliveries for users and agents.
//! - [`rooms`]: room seq, history and publishing in Redis.
//! - [`chat_store`]: sessions, messages and cursors in Redis.

pub mod bridge;
pub mod chat_store;
pub mod relay;
pub mod rooms;
pub mod wire;
