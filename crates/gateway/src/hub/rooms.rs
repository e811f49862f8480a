//! Rooms: members, `seq`, bounded history for `since` recovery, and fan-out.
//!
//! A room lives in exactly one [`RoomShard`]; the shard is the only owner of its
//! state, so `seq` order and delivery order are the same. A notice is encoded once
//! and the same bytes are queued to every member.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use auth::Role;
use bytestring::ByteString;
use protocol::frames::{NoticeFrame, PresenceStatus, RoomPresenceFrame, SubscribedFrame, UnsubscribedFrame};
use protocol::{encode, FrameId};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::metrics::Metrics;
use crate::outbound::{ConnHandle, ConnId, Sent};

/// A subscriber of a room.
#[derive(Debug, Clone)]
pub struct Member {
    pub conn: ConnHandle,
    pub user: Arc<str>,
    pub role: Role,
    pub name: Arc<str>,
    /// `/ws/chat` members also get `presence` frames; push-only `/ws` ones do not.
    pub chat: bool,
}

/// One member of the presence list (`GET /rooms/{room}/presence`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemberInfo {
    pub user_id: String,
    pub role: Role,
    pub name: String,
    pub connections: usize,
}

/// Subscribe `member` to `room`. The shard queues `subscribed` and the kept notices
/// after `since` to the member itself, so that they precede any live notice.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub room: Arc<str>,
    pub member: Member,
    pub since: Option<u64>,
    pub reference: Option<FrameId>,
    /// Queue `subscribed` (chat subscriptions); push-only `/ws` rooms are joined silently.
    pub announce: bool,
}

/// Unsubscribe one connection; `reference` set: queue `unsubscribed` to it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub room: Arc<str>,
    pub conn: ConnId,
    pub reference: Option<Option<FrameId>>,
    /// For the answer when the connection was not a member.
    pub handle: Option<ConnHandle>,
}

/// Publish a notice; answers the room `seq` it got.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Publish {
    pub room: Arc<str>,
    pub event: Option<String>,
    pub data: Box<RawValue>,
}

/// The members of a room, one entry per user.
#[derive(Message)]
#[rtype(result = "Vec<MemberInfo>")]
pub struct Members {
    pub room: Arc<str>,
}

/// Whether `user` has a connection subscribed to `room`.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct IsMember {
    pub room: Arc<str>,
    pub user: Arc<str>,
}

struct KeptNotice {
    seq: u64,
    at: Instant,
    bytes: ByteString,
}

#[derive(Default)]
struct Room {
    /// Latest notice seq of the room.
    seq: u64,
    /// The last `history_size` notices, oldest first, none older than `history_ttl`.
    history: VecDeque<KeptNotice>,
    /// Subscribed connections.
    members: HashMap<ConnId, Member>,
    /// Connections per user, for presence transitions.
    users: HashMap<Arc<str>, usize>,
}

/// Settings a shard needs.
#[derive(Debug, Clone)]
pub struct RoomLimits {
    pub history_size: usize,
    pub history_ttl: Duration,
}

pub struct RoomShard {
    /// Rooms of this shard that have members, history or a seq.
    rooms: HashMap<Arc<str>, Room>,
    limits: RoomLimits,
    metrics: Arc<Metrics>,
}

impl Actor for RoomShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        // Forget rooms whose history expired and that nobody is in, so that
        // one-off rooms do not accumulate.
        ctx.run_interval(Duration::from_secs(30), |shard, _| shard.sweep());
    }
}

impl RoomShard {
    pub fn new(limits: RoomLimits, metrics: Arc<Metrics>) -> Self {
        RoomShard { rooms: HashMap::new(), limits, metrics }
    }

    fn sweep(&mut self) {
        let ttl = self.limits.history_ttl;
        self.rooms.retain(|_, room| {
            prune(&mut room.history, ttl);
            !room.members.is_empty() || !room.history.is_empty()
        });
    }

    fn presence(room_name: &str, room: &Room, user: &str, status: PresenceStatus) {
        let bytes = encode(&RoomPresenceFrame { kind: "presence", room: room_name, user_id: user, status });
        for member in room.members.values() {
            if member.chat && &*member.user != user {
                member.conn.send(&bytes);
            }
        }
    }
}

fn prune(history: &mut VecDeque<KeptNotice>, ttl: Duration) {
    while history.front().is_some_and(|n| n.at.elapsed() > ttl) {
        history.pop_front();
    }
}

impl Handler<Join> for RoomShard {
    type Result = ();

    fn handle(&mut self, msg: Join, _: &mut Self::Context) {
        let ttl = self.limits.history_ttl;
        let room = self.rooms.entry(msg.room.clone()).or_default();
        prune(&mut room.history, ttl);
        let (recovered, missed, from) = match msg.since {
            None => (false, 0, None),
            Some(since) if since >= room.seq => (true, 0, None),
            Some(since) => {
                let oldest = room.history.front().map_or(room.seq + 1, |n| n.seq);
                // Notices since+1 .. oldest-1 are gone.
                let lost = oldest.saturating_sub(since + 1);
                (lost == 0, lost, Some(since))
            }
        };
        let conn = &msg.member.conn;
        let subscribed = encode(&SubscribedFrame {
            kind: "subscribed",
            reference: msg.reference.as_ref(),
            room: &msg.room,
            seq: room.seq,
            recovered,
            missed,
        });
        if msg.announce {
            conn.send(&subscribed);
        }
        if let Some(since) = from {
            for notice in room.history.iter().filter(|n| n.seq > since) {
                conn.send(&notice.bytes);
            }
        }
        let already = room.members.insert(conn.id, msg.member.clone()).is_some();
        if !already {
            let count = room.users.entry(msg.member.user.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                Self::presence(&msg.room, room, &msg.member.user, PresenceStatus::Online);
            }
        }
    }
}

impl Handler<Leave> for RoomShard {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Self::Context) {
        let mut answer_to = msg.handle;
        if let Some(room) = self.rooms.get_mut(&msg.room) {
            if let Some(member) = room.members.remove(&msg.conn) {
                answer_to.get_or_insert(member.conn.clone());
                let gone = match room.users.get_mut(&member.user) {
                    Some(n) if *n > 1 => {
                        *n -= 1;
                        false
                    }
                    _ => true,
                };
                if gone {
                    room.users.remove(&member.user);
                    Self::presence(&msg.room, room, &member.user, PresenceStatus::Offline);
                }
            }
        }
        if let (Some(reference), Some(conn)) = (msg.reference, answer_to) {
            conn.send(&encode(&UnsubscribedFrame {
                kind: "unsubscribed",
                reference: reference.as_ref(),
                room: &msg.room,
            }));
        }
    }
}

impl Handler<Publish> for RoomShard {
    type Result = u64;

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) -> u64 {
        let room = self.rooms.entry(msg.room.clone()).or_default();
        room.seq += 1;
        let seq = room.seq;
        let ts = protocol::time::now_rfc3339();
        let bytes = encode(&NoticeFrame {
            kind: "notice",
            room: &msg.room,
            seq,
            event: msg.event.as_deref(),
            data: &msg.data,
            ts: &ts,
        });
        let mut slow = 0u64;
        for member in room.members.values() {
            if member.conn.send(&bytes) == Sent::SlowConsumer {
                slow += 1;
            }
        }
        self.metrics.notices_delivered.inc_by(room.members.len() as u64 - slow);
        if self.limits.history_size > 0 {
            if room.history.len() >= self.limits.history_size {
                room.history.pop_front();
            }
            room.history.push_back(KeptNotice { seq, at: Instant::now(), bytes });
        }
        seq
    }
}

impl Handler<Members> for RoomShard {
    type Result = MessageResult<Members>;

    fn handle(&mut self, msg: Members, _: &mut Self::Context) -> Self::Result {
        let Some(room) = self.rooms.get(&msg.room) else { return MessageResult(Vec::new()) };
        let mut by_user: HashMap<&str, MemberInfo> = HashMap::new();
        for member in room.members.values() {
            by_user
                .entry(&member.user)
                .or_insert_with(|| MemberInfo {
                    user_id: member.user.to_string(),
                    role: member.role,
                    name: member.name.to_string(),
                    connections: 0,
                })
                .connections += 1;
        }
        let mut list: Vec<MemberInfo> = by_user.into_values().collect();
        list.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        MessageResult(list)
    }
}

impl Handler<IsMember> for RoomShard {
    type Result = bool;

    fn handle(&mut self, msg: IsMember, _: &mut Self::Context) -> bool {
        self.rooms.get(&msg.room).is_some_and(|room| room.users.contains_key(&msg.user))
    }
}

/// The room shards of this node.
#[derive(Clone)]
pub struct RoomHub {
    shards: Arc<[Addr<RoomShard>]>,
}

impl RoomHub {
    /// One shard per arbiter; `arbiters` are the threads to spread them over.
    pub fn start(arbiters: &[ArbiterHandle], limits: RoomLimits, metrics: Arc<Metrics>) -> RoomHub {
        let shards: Vec<_> = arbiters
            .iter()
            .map(|arbiter| {
                let (limits, metrics) = (limits.clone(), metrics.clone());
                RoomShard::start_in_arbiter(arbiter, move |_| RoomShard::new(limits, metrics))
            })
            .collect();
        RoomHub { shards: shards.into() }
    }

    pub fn shard(&self, room: &str) -> &Addr<RoomShard> {
        &self.shards[super::shard_of(room, self.shards.len())]
    }
}
