//! Rooms in Redis: the room `seq` (one counter per room for the whole cluster), the
//! bounded history for `since` recovery, and publishing through the bridge.
//!
//! Keys (`P` = `redis.key_prefix`, one slot per room): `{P:r:<room>}:seq` (no expiry:
//! a room's seq never restarts), `{P:r:<room>}:h` list of `<seq>|<ms>|<frame>`, newest
//! first, trimmed to `rooms.history_size` and expiring `rooms.history_ttl_secs` after
//! the last notice (a list, not a sorted set: seqs arrive in order, and LPUSH + LTRIM
//! cost Redis less than ZADD + ZREMRANGEBYRANK on every notice). Numbering, keeping and publishing a notice is one script, so the
//! order on the channel is the seq order.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use async_trait::async_trait;
use bytestring::ByteString;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use super::bridge::{Bridge, Ensure, Release};
use super::wire::{self, Header};
use crate::hub::room_service::{RoomCluster, Unavailable};
use crate::hub::rooms::{Deliver, FillRoom, RoomSnapshot, Skip};
use crate::outbound::ConnId;

const PUBLISH: &str = r#"
local seq = redis.call('INCR', KEYS[1])
local frame = ARGV[1] .. seq .. ARGV[2]
if tonumber(ARGV[4]) > 0 then
  redis.call('LPUSH', KEYS[2], seq .. '|' .. ARGV[6] .. '|' .. frame)
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('PUBLISH', ARGV[3], '{"k":"n","q":' .. seq .. '}\n' .. frame)
return seq
"#;

fn unavailable(e: redis::RedisError) -> Unavailable {
    Unavailable(e.to_string())
}

#[derive(Clone)]
pub struct RedisRooms {
    conn: ConnectionManager,
    prefix: Arc<str>,
    bridge: Addr<Bridge>,
    history_size: usize,
    history_ttl: Duration,
    publish: Arc<Script>,
}

impl RedisRooms {
    pub fn new(
        conn: ConnectionManager,
        prefix: Arc<str>,
        bridge: Addr<Bridge>,
        history_size: usize,
        history_ttl: Duration,
    ) -> Self {
        RedisRooms { conn, prefix, bridge, history_size, history_ttl, publish: Arc::new(Script::new(PUBLISH)) }
    }

    fn key(&self, room: &str, what: &str) -> String {
        format!("{{{}:r:{room}}}:{what}", self.prefix)
    }

    /// Kept notices with `after < seq < before`, ascending, none older than the history ttl.
    async fn kept(&self, room: &str, after: u64, before: u64) -> Result<Vec<(u64, ByteString)>, Unavailable> {
        let mut conn = self.conn.clone();
        let raw: Vec<String> = conn.lrange(self.key(room, "h"), 0, -1).await.map_err(unavailable)?;
        let oldest = protocol::time::unix_millis() - self.history_ttl.as_millis() as i64;
        let mut kept: Vec<(u64, ByteString)> = raw
            .into_iter()
            .filter_map(|entry| {
                let (seq, rest) = entry.split_once('|')?;
                let (ms, frame) = rest.split_once('|')?;
                let seq: u64 = seq.parse().ok()?;
                let fresh = ms.parse::<i64>().ok()? >= oldest;
                (fresh && seq > after && seq < before).then(|| (seq, ByteString::from(frame.to_string())))
            })
            .collect();
        kept.reverse();
        Ok(kept)
    }
}

#[async_trait]
impl RoomCluster for RedisRooms {
    async fn watch(&self, room: &str, holder: ConnId) -> Result<(), Unavailable> {
        let channel = wire::room_channel(&self.prefix, room);
        self.bridge.send(Ensure { channel, holder }).await.map_err(|e| Unavailable(e.to_string()))?
    }

    async fn unwatch(&self, room: &str, holder: ConnId) {
        let _ = self.bridge.send(Release { channel: wire::room_channel(&self.prefix, room), holder }).await;
    }

    async fn snapshot(&self, room: &str, since: Option<u64>) -> Result<RoomSnapshot, Unavailable> {
        let mut conn = self.conn.clone();
        let latest: Option<u64> = conn.get(self.key(room, "seq")).await.map_err(unavailable)?;
        let latest = latest.unwrap_or(0);
        let kept = match since {
            Some(since) if since < latest => self.kept(room, since, latest + 1).await?,
            _ => Vec::new(),
        };
        Ok(RoomSnapshot { latest, kept })
    }

    async fn publish(&self, room: &str, head: String, tail: String) -> Result<u64, Unavailable> {
        let mut conn = self.conn.clone();
        self.publish
            .key(self.key(room, "seq"))
            .key(self.key(room, "h"))
            .arg(head)
            .arg(tail)
            .arg(wire::room_channel(&self.prefix, room))
            .arg(self.history_size)
            .arg(self.history_ttl.as_millis() as u64)
            .arg(protocol::time::unix_millis())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn broadcast(&self, room: &str, frame: &ByteString, except_user: Option<&str>) -> Result<(), Unavailable> {
        let header = Header { k: 'p', x: except_user.map(str::to_string), ..Header::default() };
        let mut conn = self.conn.clone();
        conn.publish::<_, _, ()>(wire::room_channel(&self.prefix, room), wire::encode(&header, frame))
            .await
            .map_err(unavailable)
    }
}

/// Fills a room shard's gap from the Redis history.
pub struct RoomFiller {
    pub rooms: RedisRooms,
}

impl Actor for RoomFiller {
    type Context = Context<Self>;
}

impl Handler<FillRoom> for RoomFiller {
    type Result = ();

    fn handle(&mut self, msg: FillRoom, ctx: &mut Self::Context) {
        let rooms = self.rooms.clone();
        ctx.spawn(
            async move {
                let kept = rooms.kept(&msg.room, msg.after, msg.before).await;
                let mut next = msg.after + 1;
                match kept {
                    Ok(notices) => {
                        for (seq, frame) in notices {
                            if seq == next {
                                let _ = msg.shard.send(Deliver { room: msg.room.clone(), seq, frame }).await;
                                next += 1;
                            }
                        }
                        // Whatever is still missing below `before` is gone for good.
                        let to = if msg.before == u64::MAX { next - 1 } else { msg.before - 1 };
                        let _ = msg.shard.send(Skip { room: msg.room.clone(), to }).await;
                    }
                    Err(_) => {
                        // Try again later: release the fill flag without skipping.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        let _ = msg.shard.send(Skip { room: msg.room.clone(), to: msg.after }).await;
                    }
                }
            }
            .into_actor(self),
        );
    }
}
