//! Delivery of frames to users, wherever their connections are.
//!
//! On one node, connections are reached through the user shards. In a cluster every
//! item is published instead, and each node (this one too) delivers it to its own
//! connections of that user: one path, one order.

use std::sync::Arc;

use async_trait::async_trait;

use crate::hub::users::{SendToAgents, SendToUser, UserHub};
use crate::outbound::{ConnId, Outbound};

/// Relays deliveries to the other nodes of a cluster.
#[async_trait]
pub trait Relay: Send + Sync + 'static {
    async fn to_user(&self, user: &str, item: &Outbound, except: Option<ConnId>);
    async fn to_agents(&self, item: &Outbound);
}

#[derive(Clone)]
pub struct Router {
    users: UserHub,
    relay: Option<Arc<dyn Relay>>,
}

impl Router {
    pub fn new(users: UserHub, relay: Option<Arc<dyn Relay>>) -> Router {
        Router { users, relay }
    }

    /// Every chat connection of `user`, on every node, except the local connection `except`.
    pub async fn to_user(&self, user: &str, item: Outbound, except: Option<ConnId>) {
        match &self.relay {
            Some(relay) => relay.to_user(user, &item, except).await,
            None => self.local_to_user(user, item, except).await,
        }
    }

    /// This node's connections of `user` only (what a relay delivers).
    pub async fn local_to_user(&self, user: &str, item: Outbound, except: Option<ConnId>) {
        let shard = self.users.shard(user);
        let _ = shard.send(SendToUser { user: user.into(), item, except }).await;
    }

    /// Every connected agent, on every node.
    pub async fn to_agents(&self, item: Outbound) {
        match &self.relay {
            Some(relay) => relay.to_agents(&item).await,
            None => self.local_to_agents(item).await,
        }
    }

    pub async fn local_to_agents(&self, item: Outbound) {
        for shard in self.users.shards() {
            let _ = shard.send(SendToAgents { item: item.clone() }).await;
        }
    }
}
