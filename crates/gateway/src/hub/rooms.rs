//! Rooms: members, `seq`, bounded history for `since` recovery, and fan-out.
//!
//! A room lives in exactly one [`RoomShard`] per node; the shard is the only owner
//! of its state. With the memory broker the shard also numbers the room's notices
//! and keeps its history. With Redis, notices are numbered and kept in Redis and
//! arrive through the bridge as [`Deliver`]; the shard delivers them strictly in
//! `seq` order, holding early ones until a gap is filled from Redis. A notice is
//! encoded once and the same bytes are queued to every member.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use auth::Role;
use bytestring::ByteString;
use protocol::frames::{notice_parts, SubscribedFrame, UnsubscribedFrame};
use protocol::{encode, FrameId};
use serde_json::value::RawValue;
use tracing::warn;

use crate::metrics::Metrics;
use crate::outbound::{ConnHandle, ConnId, Sent};

/// Early notices a room holds while waiting for a gap to be filled.
const MAX_PENDING: usize = 10_000;

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

/// The room's state in Redis when a member joins (cluster mode).
#[derive(Debug, Clone, Default)]
pub struct RoomSnapshot {
    /// The room's latest seq.
    pub latest: u64,
    /// Kept notices with seq > the member's `since`, ascending.
    pub kept: Vec<(u64, ByteString)>,
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
    /// Cluster mode: the room as Redis has it; `None`: the shard's own history.
    pub snapshot: Option<RoomSnapshot>,
}

/// Unsubscribe one connection; `reference` set: queue `unsubscribed` to `handle`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub room: Arc<str>,
    pub conn: ConnId,
    pub reference: Option<Option<FrameId>>,
    pub handle: Option<ConnHandle>,
}

/// Memory broker: number, keep and deliver a notice; answers its seq.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Publish {
    pub room: Arc<str>,
    pub event: Option<String>,
    pub data: Box<RawValue>,
}

/// Cluster mode: a notice numbered by Redis, from the bridge or a gap fill.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub room: Arc<str>,
    pub seq: u64,
    pub frame: ByteString,
}

/// Cluster mode: several notices from the bridge at once, in arrival order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeliverMany {
    pub notices: Vec<Deliver>,
}

/// Cluster mode: notices up to `to` cannot be had any more (history expired).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Skip {
    pub room: Arc<str>,
    pub to: u64,
}

/// A room-level frame (presence) for the room's `/ws/chat` members, except `except_user`'s.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Broadcast {
    pub room: Arc<str>,
    pub frame: ByteString,
    pub except_user: Option<Arc<str>>,
}

/// Cluster mode: the bridge was away; fetch what was published meanwhile.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Resync;

/// Cluster mode: fetch notices `after < seq < before` of `room` and send them back as
/// [`Deliver`] (then [`Skip`] for any that are gone).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FillRoom {
    pub room: Arc<str>,
    pub after: u64,
    pub before: u64,
    pub shard: Addr<RoomShard>,
}

struct KeptNotice {
    seq: u64,
    at: Instant,
    bytes: ByteString,
}

struct Subscriber {
    member: Member,
    /// The seq the member joined at: it gets only notices above it.
    after: u64,
}

#[derive(Default)]
struct Room {
    /// Latest notice seq delivered here (memory broker: the room's seq).
    seq: u64,
    /// Memory broker: the last `history_size` notices, none older than `history_ttl`.
    history: VecDeque<KeptNotice>,
    /// Subscribed connections.
    members: HashMap<ConnId, Subscriber>,
    /// Cluster mode: notices that arrived ahead of a gap.
    pending: BTreeMap<u64, ByteString>,
    /// A gap fill is under way.
    filling: bool,
}

/// Settings a shard needs.
#[derive(Debug, Clone)]
pub struct RoomLimits {
    pub history_size: usize,
    pub history_ttl: Duration,
}

pub struct RoomShard {
    /// Rooms of this shard that have members or history.
    rooms: HashMap<Arc<str>, Room>,
    limits: RoomLimits,
    metrics: Arc<Metrics>,
    /// Cluster mode: who fills gaps from Redis.
    filler: Option<Recipient<FillRoom>>,
}

impl Actor for RoomShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        // Forget rooms whose history expired and that nobody is in.
        ctx.run_interval(Duration::from_secs(30), |shard, _| shard.sweep());
    }
}

impl RoomShard {
    pub fn new(limits: RoomLimits, metrics: Arc<Metrics>, filler: Option<Recipient<FillRoom>>) -> Self {
        RoomShard { rooms: HashMap::new(), limits, metrics, filler }
    }

    fn sweep(&mut self) {
        let ttl = self.limits.history_ttl;
        let cluster = self.filler.is_some();
        self.rooms.retain(|_, room| {
            prune(&mut room.history, ttl);
            !room.members.is_empty() || (!cluster && (!room.history.is_empty() || room.seq > 0))
        });
    }

    fn fan_out(&self, room: &Room, seq: u64, bytes: &ByteString) {
        let mut delivered = 0u64;
        for sub in room.members.values() {
            if sub.after < seq && sub.member.conn.send(bytes) == Sent::Queued {
                delivered += 1;
            }
        }
        self.metrics.notices_delivered.inc_by(delivered);
    }

    /// Cluster mode: deliver in seq order, holding early notices until the gap fills.
    fn deliver(&mut self, name: &Arc<str>, seq: u64, frame: ByteString, ctx: &mut Context<Self>) {
        let Some(room) = self.rooms.get_mut(name) else { return };
        if seq <= room.seq {
            return;
        }
        if seq > room.seq + 1 {
            if room.pending.len() >= MAX_PENDING {
                warn!(room = %name, from = room.seq, to = seq, "room gap not filled in time: skipping ahead");
                room.seq = room.pending.keys().next().map_or(seq, |first| first - 1);
            } else {
                room.pending.insert(seq, frame);
                self.request_fill(name, ctx);
                return;
            }
        }
        let room = self.rooms.get_mut(name).expect("room checked above");
        let mut ready = vec![(seq, frame)];
        room.seq = seq;
        while let Some(entry) = room.pending.first_entry() {
            if *entry.key() > room.seq + 1 {
                break;
            }
            let (s, f) = entry.remove_entry();
            if s == room.seq + 1 {
                room.seq = s;
                ready.push((s, f));
            }
        }
        let room = &self.rooms[name];
        for (s, f) in &ready {
            self.fan_out(room, *s, f);
        }
    }

    fn request_fill(&mut self, name: &Arc<str>, ctx: &mut Context<Self>) {
        let (Some(filler), Some(room)) = (&self.filler, self.rooms.get_mut(name)) else { return };
        if room.filling {
            return;
        }
        let Some(&before) = room.pending.keys().next() else { return };
        room.filling = true;
        let fill = FillRoom { room: name.clone(), after: room.seq, before, shard: ctx.address() };
        if filler.try_send(fill).is_err() {
            room.filling = false;
        }
    }
}

fn prune(history: &mut VecDeque<KeptNotice>, ttl: Duration) {
    while history.front().is_some_and(|n| n.at.elapsed() > ttl) {
        history.pop_front();
    }
}

/// `recovered` and `missed` for a member asking for notices after `since`, given the
/// room's latest seq and the oldest notice still kept.
fn recovery(since: u64, latest: u64, oldest_kept: Option<u64>) -> (bool, u64) {
    if since >= latest {
        return (true, 0);
    }
    let oldest = oldest_kept.unwrap_or(latest + 1);
    let lost = oldest.saturating_sub(since + 1).min(latest - since);
    (lost == 0, lost)
}

impl Handler<Join> for RoomShard {
    type Result = ();

    fn handle(&mut self, msg: Join, _: &mut Self::Context) {
        let ttl = self.limits.history_ttl;
        let room = self.rooms.entry(msg.room.clone()).or_default();
        prune(&mut room.history, ttl);
        let conn = &msg.member.conn;
        let (latest, backlog): (u64, Vec<ByteString>) = match &msg.snapshot {
            Some(snapshot) => {
                if room.members.is_empty() && room.seq < snapshot.latest {
                    room.seq = snapshot.latest;
                    room.pending.retain(|s, _| *s > snapshot.latest);
                }
                let since = msg.since.unwrap_or(snapshot.latest);
                let oldest = snapshot.kept.first().map(|(s, _)| *s);
                let (recovered, missed) = recovery(since, snapshot.latest, oldest.or(Some(snapshot.latest + 1)));
                let frames = snapshot.kept.iter().filter(|(s, _)| *s > since).map(|(_, f)| f.clone()).collect();
                announce(&msg, conn, snapshot.latest, recovered, missed);
                (snapshot.latest, frames)
            }
            None => {
                let since = msg.since.unwrap_or(room.seq);
                let (recovered, missed) = recovery(since, room.seq, room.history.front().map(|n| n.seq));
                let frames = room.history.iter().filter(|n| n.seq > since).map(|n| n.bytes.clone()).collect();
                announce(&msg, conn, room.seq, recovered, missed);
                (room.seq, frames)
            }
        };
        if msg.since.is_some() {
            for frame in &backlog {
                conn.send(frame);
            }
        }
        room.members.insert(conn.id, Subscriber { member: msg.member.clone(), after: latest });
    }
}

fn announce(msg: &Join, conn: &ConnHandle, seq: u64, recovered: bool, missed: u64) {
    if msg.announce {
        let frame = SubscribedFrame {
            kind: "subscribed",
            reference: msg.reference.as_ref(),
            room: &msg.room,
            seq,
            // Without `since` nothing was asked to be recovered.
            recovered: msg.since.is_some() && recovered,
            missed: if msg.since.is_none() { 0 } else { missed },
        };
        conn.send(&encode(&frame));
    }
}

impl Handler<Leave> for RoomShard {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Self::Context) {
        let mut answer_to = msg.handle;
        if let Some(room) = self.rooms.get_mut(&msg.room) {
            if let Some(sub) = room.members.remove(&msg.conn) {
                answer_to.get_or_insert(sub.member.conn);
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
        let (head, tail) = notice_parts(&msg.room, msg.event.as_deref(), &msg.data, &ts);
        let bytes = ByteString::from(format!("{head}{seq}{tail}"));
        if self.limits.history_size > 0 {
            if room.history.len() >= self.limits.history_size {
                room.history.pop_front();
            }
            room.history.push_back(KeptNotice { seq, at: Instant::now(), bytes: bytes.clone() });
        }
        let room = &self.rooms[&msg.room];
        self.fan_out(room, seq, &bytes);
        seq
    }
}

impl Handler<Deliver> for RoomShard {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        self.deliver(&msg.room, msg.seq, msg.frame, ctx);
    }
}

impl Handler<DeliverMany> for RoomShard {
    type Result = ();

    fn handle(&mut self, msg: DeliverMany, ctx: &mut Self::Context) {
        for n in msg.notices {
            self.deliver(&n.room, n.seq, n.frame, ctx);
        }
    }
}

impl Handler<Skip> for RoomShard {
    type Result = ();

    fn handle(&mut self, msg: Skip, ctx: &mut Self::Context) {
        let Some(room) = self.rooms.get_mut(&msg.room) else { return };
        room.filling = false;
        if room.seq < msg.to {
            warn!(room = %msg.room, from = room.seq, to = msg.to, "room notices lost (no longer kept)");
            room.seq = msg.to;
        }
        // Release what the skip made contiguous, then look for the next gap.
        if let Some((&first, _)) = room.pending.first_key_value() {
            if first == room.seq + 1 {
                if let Some(frame) = room.pending.remove(&first) {
                    room.seq = first - 1;
                    self.deliver(&msg.room, first, frame, ctx);
                }
            }
        }
        if self.rooms.get(&msg.room).is_some_and(|r| !r.pending.is_empty()) {
            self.request_fill(&msg.room, ctx);
        }
    }
}

impl Handler<Resync> for RoomShard {
    type Result = ();

    fn handle(&mut self, _: Resync, ctx: &mut Self::Context) {
        let Some(filler) = self.filler.clone() else { return };
        for (name, room) in self.rooms.iter_mut().filter(|(_, r)| !r.members.is_empty() && !r.filling) {
            room.filling = true;
            let fill = FillRoom { room: name.clone(), after: room.seq, before: u64::MAX, shard: ctx.address() };
            if filler.try_send(fill).is_err() {
                room.filling = false;
            }
        }
    }
}

impl Handler<Broadcast> for RoomShard {
    type Result = ();

    fn handle(&mut self, msg: Broadcast, _: &mut Self::Context) {
        let Some(room) = self.rooms.get(&msg.room) else { return };
        for sub in room.members.values() {
            if sub.member.chat && msg.except_user.as_deref() != Some(&*sub.member.user) {
                sub.member.conn.send(&msg.frame);
            }
        }
    }
}

/// The room shards of this node.
#[derive(Clone)]
pub struct RoomHub {
    shards: Arc<[Addr<RoomShard>]>,
}

impl RoomHub {
    /// One shard per arbiter; `arbiters` are the threads to spread them over.
    pub fn start(
        arbiters: &[ArbiterHandle],
        limits: RoomLimits,
        metrics: Arc<Metrics>,
        filler: Option<Recipient<FillRoom>>,
    ) -> RoomHub {
        let shards: Vec<_> = arbiters
            .iter()
            .map(|arbiter| {
                let (limits, metrics, filler) = (limits.clone(), metrics.clone(), filler.clone());
                RoomShard::start_in_arbiter(arbiter, move |_| RoomShard::new(limits, metrics, filler))
            })
            .collect();
        RoomHub { shards: shards.into() }
    }

    pub fn shard(&self, room: &str) -> &Addr<RoomShard> {
        &self.shards[self.shard_index(room)]
    }

    pub fn shard_index(&self, room: &str) -> usize {
        super::shard_of(room, self.shards.len())
    }

    pub fn shard_at(&self, index: usize) -> &Addr<RoomShard> {
        &self.shards[index]
    }

    /// Every shard fetches what its rooms missed (after the bridge reconnected).
    pub fn resync(&self) {
        for shard in self.shards.iter() {
            let _ = shard.try_send(Resync);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::recovery;

    #[test]
    fn recovery_counts_lost_notices() {
        // nothing new
        assert_eq!(recovery(10, 10, Some(5)), (true, 0));
        // all kept
        assert_eq!(recovery(6, 10, Some(5)), (true, 0));
        assert_eq!(recovery(4, 10, Some(5)), (true, 0));
        // 1..4 lost (since 0, oldest kept 5)
        assert_eq!(recovery(0, 10, Some(5)), (false, 4));
        // nothing kept at all: everything after since is lost
        assert_eq!(recovery(3, 10, None), (false, 7));
    }
}
