//! Deliveries to users and agents across the cluster: published on the user's (or
//! the agents') channel; every node with a connection of that user delivers it,
//! the sending node included, so that one path orders everything.

use std::sync::Arc;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tracing::warn;

use super::bridge::conn_ref;
use super::wire::{self, Header};
use crate::chat::router::Relay;
use crate::hub::users::Revoked;
use crate::outbound::{ConnId, Outbound};

#[derive(Clone)]
pub struct RedisRelay {
    conn: ConnectionManager,
    prefix: Arc<str>,
    node: Arc<str>,
}

impl RedisRelay {
    pub fn new(conn: ConnectionManager, prefix: Arc<str>, node: Arc<str>) -> Self {
        RedisRelay { conn, prefix, node }
    }

    async fn publish(&self, channel: String, header: &Header, body: &str) {
        let mut conn = self.conn.clone();
        if let Err(e) = conn.publish::<_, _, ()>(&channel, wire::encode(header, body)).await {
            warn!(error = %e, "relay: publish failed (recipients catch up from the store)");
        }
    }

    /// Close the matching connections of `user` on every node.
    pub async fn revoke(&self, user: &str, which: &Revoked) {
        let mut header = Header { k: 'r', ..Header::default() };
        match which {
            Revoked::Family(f) => header.f = Some(f.to_string()),
            Revoked::Jti(j) => header.j = Some(j.to_string()),
            Revoked::All => {}
        }
        self.publish(wire::user_channel(&self.prefix, user), &header, "").await;
    }

    /// Liveness for `user`'s push connections on every node.
    pub async fn touch(&self, user: &str, jti: Option<&str>) {
        let header = Header { k: 'h', j: jti.map(str::to_string), ..Header::default() };
        self.publish(wire::user_channel(&self.prefix, user), &header, "").await;
    }
}

#[async_trait]
impl Relay for RedisRelay {
    async fn to_user(&self, user: &str, item: &Outbound, except: Option<ConnId>) {
        let x = except.map(|c| conn_ref(&self.node, c));
        let (header, body) = match item {
            Outbound::Frame(f) => (Header { k: 'f', x, ..Header::default() }, &**f),
            Outbound::Message { session, seq, frame } => {
                (Header { k: 'm', q: Some(*seq), s: Some(session.to_string()), x, ..Header::default() }, &**frame)
            }
            Outbound::Track { session, after } => {
                (Header { k: 't', s: Some(session.to_string()), a: Some(*after), x, ..Header::default() }, "")
            }
        };
        self.publish(wire::user_channel(&self.prefix, user), &header, body).await;
    }

    async fn to_agents(&self, item: &Outbound) {
        if let Outbound::Frame(frame) = item {
            self.publish(wire::agents_channel(&self.prefix), &Header { k: 'f', ..Header::default() }, frame).await;
        }
    }
}
