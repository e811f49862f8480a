//! The connections of each user on this node: revocation (logout, refresh re-use),
//! liveness from `GET /heartbeat`, and delivery to all of a user's connections.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use protocol::CloseReason;

use crate::outbound::{ConnHandle, ConnId, Outbound};

/// One authenticated connection of a user.
#[derive(Debug, Clone)]
pub struct UserConn {
    pub conn: ConnHandle,
    /// The token family the connection authenticated with.
    pub family: Option<Arc<str>>,
    /// The `jti` of that token.
    pub jti: Option<Arc<str>>,
    /// Push-only `/ws` connection.
    pub push: bool,
    /// An agent's `/ws/chat` connection (receives `session.queued`).
    pub agent: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub user: Arc<str>,
    pub conn: UserConn,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub user: Arc<str>,
    pub conn: ConnId,
}

/// Which of a user's connections a revocation ends.
#[derive(Debug, Clone)]
pub enum Revoked {
    Family(Arc<str>),
    Jti(Arc<str>),
    /// Every connection (user disabled).
    All,
}

/// Close the matching connections of `user` with 4005.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Revoke {
    pub user: Arc<str>,
    pub which: Revoked,
}

/// `GET /heartbeat?token=T`: liveness for the user's push connections opened with T's `jti`
/// (all of the user's push connections when T has no `jti`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Touch {
    pub user: Arc<str>,
    pub jti: Option<Arc<str>>,
}

/// Queue an item to every chat connection of `user`, except `except`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendToUser {
    pub user: Arc<str>,
    pub item: Outbound,
    pub except: Option<ConnId>,
}

/// Queue a frame to every agent connection of this shard.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendToAgents {
    pub item: Outbound,
}

/// The bridge was away: every chat connection fetches what it missed.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Resync;

#[derive(Default)]
pub struct UserShard {
    /// Authenticated connections by user id.
    users: HashMap<Arc<str>, Vec<UserConn>>,
}

impl Actor for UserShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<Register> for UserShard {
    type Result = ();

    fn handle(&mut self, msg: Register, _: &mut Self::Context) {
        // Most users have one connection: no room for four (what `push` would reserve).
        let conns = self.users.entry(msg.user).or_insert_with(|| Vec::with_capacity(1));
        conns.retain(|c| c.conn.id != msg.conn.conn.id);
        conns.push(msg.conn);
    }
}

impl Handler<Unregister> for UserShard {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Self::Context) {
        if let Some(conns) = self.users.get_mut(&msg.user) {
            conns.retain(|c| c.conn.id != msg.conn);
            if conns.is_empty() {
                self.users.remove(&msg.user);
            }
        }
    }
}

impl Handler<Revoke> for UserShard {
    type Result = ();

    fn handle(&mut self, msg: Revoke, _: &mut Self::Context) {
        for c in self.users.get(&msg.user).into_iter().flatten() {
            let hit = match &msg.which {
                Revoked::Family(f) => c.family.as_deref() == Some(&**f),
                Revoked::Jti(j) => c.jti.as_deref() == Some(&**j),
                Revoked::All => true,
            };
            if hit {
                c.conn.close(CloseReason::TokenRevoked);
            }
        }
    }
}

impl Handler<Touch> for UserShard {
    type Result = ();

    fn handle(&mut self, msg: Touch, _: &mut Self::Context) {
        for c in self.users.get(&msg.user).into_iter().flatten() {
            if c.push && (msg.jti.is_none() || c.jti == msg.jti) {
                c.conn.touch();
            }
        }
    }
}

impl Handler<SendToUser> for UserShard {
    type Result = ();

    fn handle(&mut self, msg: SendToUser, _: &mut Self::Context) {
        for c in self.users.get(&msg.user).into_iter().flatten() {
            if !c.push && Some(c.conn.id) != msg.except {
                c.conn.push(msg.item.clone());
            }
        }
    }
}

impl Handler<Resync> for UserShard {
    type Result = ();

    fn handle(&mut self, _: Resync, _: &mut Self::Context) {
        for c in self.users.values().flatten().filter(|c| !c.push) {
            c.conn.control(crate::outbound::Control::Resync);
        }
    }
}

impl Handler<SendToAgents> for UserShard {
    type Result = ();

    fn handle(&mut self, msg: SendToAgents, _: &mut Self::Context) {
        for c in self.users.values().flatten().filter(|c| c.agent) {
            c.conn.push(msg.item.clone());
        }
    }
}

/// The user shards of this node.
#[derive(Clone)]
pub struct UserHub {
    shards: Arc<[Addr<UserShard>]>,
}

impl UserHub {
    pub fn start(arbiters: &[ArbiterHandle]) -> UserHub {
        let shards: Vec<_> =
            arbiters.iter().map(|a| UserShard::start_in_arbiter(a, |_| UserShard::default())).collect();
        UserHub { shards: shards.into() }
    }

    pub fn shard(&self, user: &str) -> &Addr<UserShard> {
        &self.shards[super::shard_of(user, self.shards.len())]
    }

    pub fn shards(&self) -> &[Addr<UserShard>] {
        &self.shards
    }
}
