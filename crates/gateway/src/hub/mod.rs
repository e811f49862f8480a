//! Local routing: who on this node receives what.
//!
//! - [`rooms`]: room membership, room `seq` and history, notice fan-out.
//! - [`users`]: the connections of each user (revocation, liveness, session delivery).
//! - [`room_service`]: what connections and routes call: membership with presence,
//!   publishing, on one node or through the cluster.
//!
//! Both are sharded: one actor per shard, each on its own arbiter (thread), a key
//! always handled by the same shard, so that no single actor sees every message of
//! the node.

pub mod room_service;
pub mod rooms;
pub mod users;

use std::hash::{Hash, Hasher};

/// The shard a key belongs to.
pub fn shard_of(key: &str, shards: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % shards as u64) as usize
}

/// Shards per registry: one per core.
pub fn default_shards() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}
