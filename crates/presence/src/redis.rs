//! Presence shared by every gateway node through one Redis (`broker.kind = "redis"`).
//!
//! # Semantics
//! The same as [`MemoryPresence`](crate::MemoryPresence), cluster-wide:
//! - Transitions (`connected`, `disconnected`, `room_join`, `room_leave`, and the removals
//!   done by [`RedisPresence::reap_dead_nodes`] and [`RedisPresence::clear_node`]) each run
//!   as one Lua script on the keys of one user or one room, so for a given user (or user in
//!   a room) `CameOnline` and `WentOffline` strictly alternate, whichever nodes make the
//!   calls and however they interleave. Every recorded connection counts for transitions,
//!   including one on a node that died and has not been reaped yet: reaping it reports the
//!   `WentOffline` (exactly once), so observers never see two `CameOnline` in a row.
//! - Reads (`is_online`, `available_agents`, `room_members`, `is_room_member`) count only
//!   connections of live nodes (whose liveness key exists), so a dead node's users stop
//!   being listed as soon as its key expires, before anyone reaps it.
//! - Every connection records the node it belongs to (the value stored with it); the
//!   connection id's shape is never interpreted.
//! - A node must call [`RedisPresence::heartbeat`] before it records connections, and then
//!   every `node_ttl / 3`: a node without a liveness key is dead to the others.
//!
//! # Key layout
//! `P` is the prefix. Ids inside keys are escaped (`%`, `{`, `}`, `:` as `%XX`), so no two
//! ids share a key and every hash tag is well formed. Strings stored as `ns(x)` are
//! netstrings, `<byte length>:<bytes>`, so any id round-trips.
//!
//! | key | type | content |
//! |---|---|---|
//! | `P:{u:USER}:c` | hash | connection id → node, for each open connection of USER |
//! | `P:{u:USER}:a` | string | exists while USER is online and connected as an agent |
//! | `P:{u:USER}:away` | string | exists while agent USER is away (kept while offline) |
//! | `P:{r:ROOM}:m` | hash | connection id → `ns(user) ns(node) ns(role) ns(name)` |
//! | `P:{r:ROOM}:u` | hash | user → `ns(node) ns(count)`… : the user's connections in ROOM per node |
//! | `P:{n:NODE}:alive` | string, TTL `node_ttl` | NODE's liveness key |
//! | `P:{n:NODE}:uc` | hash | connection id → user: NODE's user connections (reaping index) |
//! | `P:{n:NODE}:rc` | set | `ns(room) conn`: NODE's room memberships (reaping index) |
//! | `P:{idx}:nodes` | set | nodes that heartbeated and may have something to reap |
//! | `P:{idx}:agents` | set | a superset of the online agents |
//!
//! A user's keys vanish with their last connection (except `away`, one small key per agent
//! who said away, removed when they come back); a room's with its last member; a dead
//! node's indexes and registry entry when it is reaped.
//!
//! # Atomicity and the Redis Cluster trade-off
//! Each script touches one hash slot: the user scripts `{u:USER}`, the room scripts
//! `{r:ROOM}`. The node indexes and the agents set live in other slots, so they are kept up
//! to date by separate commands whose *order* makes them safe rather than atomic:
//! - a node-index entry is written before the connection is recorded and removed after it
//!   is, so the index of a node is always a superset of its connections and reaping misses
//!   nothing (stale index entries are dropped harmlessly when reaped or cleared);
//! - an agent is added to `agents` after its connection is recorded; an entry is removed
//!   only by "remove, then re-read `{u:USER}:a`, then re-add if still an online agent", so
//!   whatever the interleaving, an online agent ends up in the set; readers re-check
//!   every candidate against its own keys;
//! - a node is dropped from `nodes` by the same remove-then-re-check step (and
//!   `heartbeat` re-adds it after refreshing its key).
//!
//! These steps are sent in one pipeline with the script where the order allows, which keeps
//! one round trip per call on a single Redis (primary + replicas, or Sentinel; the type
//! takes a [`ConnectionManager`]). On Redis Cluster the keys are already spread by slot,
//! but a cluster client splits a pipeline by node without keeping the order across nodes,
//! so there the index steps would have to be separate round trips in the order above. The
//! two `{idx}` keys sit in one slot: the agents set is written once per agent connection
//! and the registry once per heartbeat, which keeps that slot cool.
//!
//! Reaping is idempotent and safe to run from several nodes at once: each removal runs the
//! same per-user / per-room script with the dead node as the expected owner, so a change is
//! reported only by the caller whose script made it. If Redis fails part-way, the changes
//! made so far are still returned (and the error logged); what is left is found by the next
//! reap, since the node stays dead and its index keeps the remaining entries.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{ErrorKind, FromRedisValue, Pipeline, RedisError, Script, ServerErrorKind, Value};
use tracing::{info, warn};

use crate::{Presence, PresenceError, RoomMember, RoomMemberCount, Transition};

/// Removals per pipeline while reaping.
const BATCH: usize = 256;

/// What reaping a node (or clearing this one) changed for others to see.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Reaped {
    /// Users that went offline (their last connection was on the removed node).
    pub users: Vec<GoneUser>,
    /// `(room, user)` pairs whose last connection in the room went away.
    pub rooms: Vec<(String, String)>,
}

/// A user that went offline when a node was reaped or cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct GoneUser {
    pub user: String,
    /// Whether they were online as an agent.
    pub agent: bool,
}

impl Reaped {
    fn sort(&mut self) {
        self.users.sort_by(|a, b| a.user.cmp(&b.user));
        self.rooms.sort();
    }

    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.rooms.is_empty()
    }
}

// ----------------------------------------------------------------- scripts

/// KEYS: conns, agent. ARGV: conn, node, agent ("1"/"0"). Returns 1 on the first connection.
const CONNECT: &str = r"
local first = redis.call('EXISTS', KEYS[1]) == 0
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '1' then redis.call('SET', KEYS[2], '1') end
if first then return 1 end
return 0
";

/// KEYS: conns, agent. ARGV: conn, expected node ('' = any).
/// Returns {code, node}: 0 not recorded here, 1 removed, 2 removed and offline,
/// 3 removed and offline, was an agent.
const DISCONNECT: &str = r"
local node = redis.call('HGET', KEYS[1], ARGV[1])
if not node then return {0, ''} end
if ARGV[2] ~= '' and node ~= ARGV[2] then return {0, ''} end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then return {1, node} end
if redis.call('DEL', KEYS[2]) == 1 then return {3, node} end
return {2, node}
";

/// Netstrings and the per-user `node → count` map, for the room scripts.
const NETSTRING_LUA: &str = r"
local function ns_read(s, pos)
  local colon = string.find(s, ':', pos, true)
  if not colon then return nil, pos end
  local len = tonumber(string.sub(s, pos, colon - 1))
  if not len or colon + len > string.len(s) then return nil, pos end
  return string.sub(s, colon + 1, colon + len), colon + len + 1
end
local function ns(s) return string.len(s) .. ':' .. s end
local function counts_read(s)
  local m, pos = {}, 1
  while pos <= string.len(s) do
    local k, v
    k, pos = ns_read(s, pos)
    if not k then break end
    v, pos = ns_read(s, pos)
    if not v then break end
    m[k] = tonumber(v) or 0
  end
  return m
end
local function counts_write(m)
  local out = {}
  for k, v in pairs(m) do
    if v > 0 then out[#out + 1] = ns(k) .. ns(tostring(v)) end
  end
  return table.concat(out)
end
";

/// KEYS: members, users. ARGV: conn, user, node, record. Returns 1 on the user's first
/// connection in the room.
const ROOM_JOIN: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
local cur = redis.call('HGET', KEYS[2], ARGV[2])
local m = counts_read(cur or '')
m[ARGV[3]] = (m[ARGV[3]] or 0) + 1
redis.call('HSET', KEYS[2], ARGV[2], counts_write(m))
if cur then return 0 end
return 1
";

/// KEYS: members, users. ARGV: conn, expected node ('' = any).
/// Returns {code, user, node}: 0 not recorded here, 1 removed, 2 removed and it was the
/// user's last connection in the room.
const ROOM_LEAVE: &str = r"
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if not rec then return {0, '', ''} end
local user, pos = ns_read(rec, 1)
local node = nil
if user then node = ns_read(rec, pos) end
if not node then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return {0, '', ''}
end
if ARGV[2] ~= '' and node ~= ARGV[2] then return {0, '', ''} end
redis.call('HDEL', KEYS[1], ARGV[1])
local m = counts_read(redis.call('HGET', KEYS[2], user) or '')
m[node] = (m[node] or 1) - 1
local s = counts_write(m)
if s == '' then
  redis.call('HDEL', KEYS[2], user)
  return {2, user, node}
end
redis.call('HSET', KEYS[2], user, s)
return {1, user, node}
";

struct Scripts {
    connect: Script,
    disconnect: Script,
    room_join: Script,
    room_leave: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            connect: Script::new(CONNECT),
            disconnect: Script::new(DISCONNECT),
            room_join: Script::new(&format!("{NETSTRING_LUA}{ROOM_JOIN}")),
            room_leave: Script::new(&format!("{NETSTRING_LUA}{ROOM_LEAVE}")),
        }
    }
}

// ----------------------------------------------------------------- keys and encodings

/// Escape an id for use inside a key: no `{`, `}` (hash tags) or `:` (separator) remain.
fn esc(id: &str) -> Cow<'_, str> {
    if !id.contains(['%', '{', '}', ':']) {
        return Cow::Borrowed(id);
    }
    let mut out = String::with_capacity(id.len() + 8);
    for ch in id.chars() {
        match ch {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

struct Keys {
    prefix: String,
}

impl Keys {
    fn key(&self, kind: &str, id: &str, what: &str) -> String {
        format!("{}:{{{}:{}}}:{}", self.prefix, kind, esc(id), what)
    }
    fn conns(&self, user: &str) -> String {
        self.key("u", user, "c")
    }
    fn agent(&self, user: &str) -> String {
        self.key("u", user, "a")
    }
    fn away(&self, user: &str) -> String {
        self.key("u", user, "away")
    }
    fn room_members(&self, room: &str) -> String {
        self.key("r", room, "m")
    }
    fn room_users(&self, room: &str) -> String {
        self.key("r", room, "u")
    }
    fn alive(&self, node: &str) -> String {
        self.key("n", node, "alive")
    }
    fn node_users(&self, node: &str) -> String {
        self.key("n", node, "uc")
    }
    fn node_rooms(&self, node: &str) -> String {
        self.key("n", node, "rc")
    }
    fn nodes(&self) -> String {
        format!("{}:{{idx}}:nodes", self.prefix)
    }
    fn agents(&self) -> String {
        format!("{}:{{idx}}:agents", self.prefix)
    }
}

fn ns_push(out: &mut String, s: &str) {
    out.push_str(&s.len().to_string());
    out.push(':');
    out.push_str(s);
}

/// Split one netstring off the front of `s`.
fn ns_split(s: &str) -> Option<(&str, &str)> {
    let colon = s.find(':')?;
    let len: usize = s[..colon].parse().ok()?;
    let rest = &s[colon + 1..];
    let value = rest.get(..len)?;
    Some((value, &rest[len..]))
}

struct Record<'a> {
    user: &'a str,
    node: &'a str,
    role: &'a str,
    name: &'a str,
}

fn encode_record(member: &RoomMember, node: &str) -> String {
    let mut out = String::new();
    for field in [member.user_id.as_str(), node, member.role.as_str(), member.name.as_str()] {
        ns_push(&mut out, field);
    }
    out
}

fn decode_record(s: &str) -> Option<Record<'_>> {
    let (user, s) = ns_split(s)?;
    let (node, s) = ns_split(s)?;
    let (role, s) = ns_split(s)?;
    let (name, _) = ns_split(s)?;
    Some(Record { user, node, role, name })
}

/// The nodes of a `P:{r:ROOM}:u` entry that hold at least one connection.
fn decode_counts(mut s: &str) -> Vec<&str> {
    let mut nodes = Vec::new();
    while !s.is_empty() {
        let Some((node, rest)) = ns_split(s) else { break };
        let Some((count, rest)) = ns_split(rest) else { break };
        if count.parse::<i64>().is_ok_and(|c| c > 0) {
            nodes.push(node);
        }
        s = rest;
    }
    nodes
}

fn room_conn_field(room: &str, conn: &str) -> String {
    let mut out = String::new();
    ns_push(&mut out, room);
    out.push_str(conn);
    out
}

fn err(e: RedisError) -> PresenceError {
    PresenceError(format!("redis: {e}"))
}

fn parse<T: FromRedisValue>(v: Value) -> Result<T, PresenceError> {
    redis::from_redis_value(v).map_err(|e| PresenceError(format!("redis: unexpected reply: {e}")))
}

// ----------------------------------------------------------------- RedisPresence

/// The cluster-wide [`Presence`], kept in Redis (see the module doc for the layout).
pub struct RedisPresence {
    conn: ConnectionManager,
    keys: Keys,
    node: String,
    node_ttl: Duration,
    /// Whether a heartbeat has succeeded, to tell a lapsed liveness key from the first one.
    beaten: AtomicBool,
    scripts: Scripts,
}

impl RedisPresence {
    /// `node`: this node's id; connection ids passed to the trait are unique cluster-wide
    /// (each connection's node is recorded explicitly, their shape is not relied on).
    pub fn new(conn: ConnectionManager, prefix: &str, node: &str, node_ttl: Duration) -> Self {
        RedisPresence {
            conn,
            keys: Keys { prefix: prefix.to_string() },
            node: node.to_string(),
            node_ttl,
            beaten: AtomicBool::new(false),
            scripts: Scripts::new(),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Refresh this node's liveness key (TTL = `node_ttl`). The gateway calls it every
    /// `node_ttl / 3`, and once before serving. Answers `true` when the key had expired
    /// since the last beat (a Redis outage longer than `node_ttl`): other nodes may have
    /// reaped this node's connections, and the caller must record them again.
    pub async fn heartbeat(&self) -> Result<bool, PresenceError> {
        let ttl_ms = u64::try_from(self.node_ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut p = redis::pipe();
        p.cmd("SET").arg(self.keys.alive(&self.node)).arg("1").arg("PX").arg(ttl_ms).arg("GET");
        // After the key: a reaper that drops the node re-checks the key afterwards.
        p.cmd("SADD").arg(self.keys.nodes()).arg(&self.node).ignore();
        let (previous,): (Option<String>,) = self.query(&p, &[]).await?;
        let had_beaten = self.beaten.swap(true, Ordering::Relaxed);
        let expired = previous.is_none() && had_beaten;
        if expired {
            warn!(
                node = %self.node,
                "presence: this node's liveness key had expired; other nodes may have reaped its connections"
            );
        }
        Ok(expired)
    }

    /// Remove every connection (user and room memberships) of nodes whose liveness key
    /// expired (other than this one), and return what that changed for others. Safe to run
    /// concurrently from several nodes: each change is reported by exactly one caller.
    pub async fn reap_dead_nodes(&self) -> Result<Reaped, PresenceError> {
        let nodes: Vec<String> = self.query_cmd(redis::cmd("SMEMBERS").arg(self.keys.nodes())).await?;
        let others: Vec<&str> = nodes.iter().map(String::as_str).filter(|n| *n != self.node).collect();
        let live = self.live_nodes(others.iter().copied()).await?;
        let mut out = Reaped::default();
        for node in others.into_iter().filter(|n| !live.contains(*n)) {
            let before = (out.users.len(), out.rooms.len());
            let result = match self.remove_node(node, &mut out).await {
                Ok(()) => self.forget_node(node).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                return self.partial(out, e);
            }
            info!(
                node = %node,
                users_offline = out.users.len() - before.0,
                room_leaves = out.rooms.len() - before.1,
                "presence: reaped dead node"
            );
        }
        out.sort();
        Ok(out)
    }

    /// Remove all of this node's connections (at start-up after a crash with the same node
    /// id, and at graceful shutdown); returns what that changed for others.
    pub async fn clear_node(&self) -> Result<Reaped, PresenceError> {
        let mut out = Reaped::default();
        if let Err(e) = self.remove_node(&self.node, &mut out).await {
            return self.partial(out, e);
        }
        out.sort();
        Ok(out)
    }

    /// A failure part-way: report what was changed, if anything, since nobody else will.
    fn partial(&self, mut out: Reaped, e: PresenceError) -> Result<Reaped, PresenceError> {
        if out.is_empty() {
            return Err(e);
        }
        warn!(error = %e, "presence: node removal interrupted; the rest is left for the next reap");
        out.sort();
        Ok(out)
    }

    /// Remove every connection in `node`'s indexes that is still recorded as `node`'s.
    async fn remove_node(&self, node: &str, out: &mut Reaped) -> Result<(), PresenceError> {
        let users_key = self.keys.node_users(node);
        let conns: HashMap<String, String> = self.query_cmd(redis::cmd("HGETALL").arg(&users_key)).await?;
        let conns: Vec<(String, String)> = conns.into_iter().collect();
        for chunk in conns.chunks(BATCH) {
            let mut p = redis::pipe();
            for (conn, user) in chunk {
                p.invoke_script(
                    self.scripts.disconnect.key(self.keys.conns(user)).key(self.keys.agent(user)).arg(conn).arg(node),
                );
            }
            let results: Vec<(i64, String)> = self.query(&p, &[&self.scripts.disconnect]).await?;
            let mut gone_agents = Vec::new();
            for ((_, user), (code, _)) in chunk.iter().zip(results) {
                if code >= 2 {
                    out.users.push(GoneUser { user: user.clone(), agent: code == 3 });
                }
                if code == 3 {
                    gone_agents.push(user.as_str());
                }
            }
            let mut hdel = redis::cmd("HDEL");
            hdel.arg(&users_key);
            for (conn, _) in chunk {
                hdel.arg(conn);
            }
            self.query_cmd::<i64>(&hdel).await?;
            self.unindex_agents(&gone_agents).await?;
        }

        let rooms_key = self.keys.node_rooms(node);
        let fields: Vec<String> = self.query_cmd(redis::cmd("SMEMBERS").arg(&rooms_key)).await?;
        for chunk in fields.chunks(BATCH) {
            let entries: Vec<(&str, &str)> = chunk.iter().filter_map(|f| ns_split(f)).collect();
            if !entries.is_empty() {
                let mut p = redis::pipe();
                for (room, conn) in &entries {
                    p.invoke_script(
                        self.scripts
                            .room_leave
                            .key(self.keys.room_members(room))
                            .key(self.keys.room_users(room))
                            .arg(*conn)
                            .arg(node),
                    );
                }
                let results: Vec<(i64, String, String)> = self.query(&p, &[&self.scripts.room_leave]).await?;
                for ((room, _), (code, user, _)) in entries.iter().zip(results) {
                    if code == 2 {
                        out.rooms.push((room.to_string(), user));
                    }
                }
            }
            let mut srem = redis::cmd("SREM");
            srem.arg(&rooms_key).arg(chunk);
            self.query_cmd::<i64>(&srem).await?;
        }
        Ok(())
    }

    /// Drop a reaped node from the registry, unless it came back or has entries again.
    async fn forget_node(&self, node: &str) -> Result<(), PresenceError> {
        let mut p = redis::pipe();
        p.cmd("SREM").arg(self.keys.nodes()).arg(node).ignore();
        p.cmd("EXISTS").arg(self.keys.alive(node));
        p.cmd("EXISTS").arg(self.keys.node_users(node));
        p.cmd("EXISTS").arg(self.keys.node_rooms(node));
        let (alive, users, rooms): (bool, bool, bool) = self.query(&p, &[]).await?;
        if alive || users || rooms {
            self.query_cmd::<i64>(redis::cmd("SADD").arg(self.keys.nodes()).arg(node)).await?;
        }
        Ok(())
    }

    /// Remove users from the agents set, then put back those that are (again) online agents.
    async fn unindex_agents(&self, users: &[&str]) -> Result<(), PresenceError> {
        if users.is_empty() {
            return Ok(());
        }
        let mut p = redis::pipe();
        p.cmd("SREM").arg(self.keys.agents()).arg(users).ignore();
        for user in users {
            p.cmd("EXISTS").arg(self.keys.agent(user));
        }
        let back: Vec<bool> = self.query(&p, &[]).await?;
        let readd: Vec<&str> = users.iter().zip(back).filter(|(_, b)| *b).map(|(u, _)| *u).collect();
        if !readd.is_empty() {
            self.query_cmd::<i64>(redis::cmd("SADD").arg(self.keys.agents()).arg(&readd)).await?;
        }
        Ok(())
    }

    /// Which of `nodes` have a liveness key.
    async fn live_nodes<'a>(&self, nodes: impl IntoIterator<Item = &'a str>) -> Result<HashSet<String>, PresenceError> {
        let nodes: BTreeSet<&str> = nodes.into_iter().collect();
        if nodes.is_empty() {
            return Ok(HashSet::new());
        }
        let mut p = redis::pipe();
        for node in &nodes {
            p.cmd("EXISTS").arg(self.keys.alive(node));
        }
        let alive: Vec<bool> = self.query(&p, &[]).await?;
        Ok(nodes.into_iter().zip(alive).filter(|(_, a)| *a).map(|(n, _)| n.to_string()).collect())
    }

    async fn any_live(&self, nodes: &[&str]) -> Result<bool, PresenceError> {
        Ok(!self.live_nodes(nodes.iter().copied()).await?.is_empty())
    }

    /// Run a pipeline; when Redis lost a script (restart, `SCRIPT FLUSH`), load `scripts`
    /// and run it once more. Every other step of the pipelines here is idempotent.
    async fn query<T: FromRedisValue>(&self, p: &Pipeline, scripts: &[&Script]) -> Result<T, PresenceError> {
        let mut c = self.conn.clone();
        match p.query_async(&mut c).await {
            Ok(v) => Ok(v),
            Err(e) if !scripts.is_empty() && e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                for script in scripts {
                    script.load_async(&mut c).await.map_err(err)?;
                }
                p.query_async(&mut c).await.map_err(err)
            }
            Err(e) => Err(err(e)),
        }
    }

    async fn query_cmd<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, PresenceError> {
        let mut c = self.conn.clone();
        cmd.query_async(&mut c).await.map_err(err)
    }
}

#[async_trait::async_trait]
impl Presence for RedisPresence {
    async fn connected(&self, user: &str, agent: bool, conn: &str) -> Result<Transition, PresenceError> {
        let mut p = redis::pipe();
        // Index first: the node's index is a superset of its connections.
        p.cmd("HSET").arg(self.keys.node_users(&self.node)).arg(conn).arg(user).ignore();
        p.invoke_script(
            self.scripts
                .connect
                .key(self.keys.conns(user))
                .key(self.keys.agent(user))
                .arg(conn)
                .arg(&self.node)
                .arg(if agent { "1" } else { "0" }),
        );
        if agent {
            // After the script: see the module doc.
            p.cmd("SADD").arg(self.keys.agents()).arg(user).ignore();
        }
        let (first,): (i64,) = self.query(&p, &[&self.scripts.connect]).await?;
        Ok(if first == 1 { Transition::CameOnline } else { Transition::Unchanged })
    }

    async fn disconnected(&self, user: &str, conn: &str) -> Result<Transition, PresenceError> {
        let mut p = redis::pipe();
        p.invoke_script(
            self.scripts.disconnect.key(self.keys.conns(user)).key(self.keys.agent(user)).arg(conn).arg(""),
        );
        // After the script, so the index stays a superset.
        p.cmd("HDEL").arg(self.keys.node_users(&self.node)).arg(conn).ignore();
        let ((code, node),): ((i64, String),) = self.query(&p, &[&self.scripts.disconnect]).await?;
        if code > 0 && node != self.node {
            self.query_cmd::<i64>(redis::cmd("HDEL").arg(self.keys.node_users(&node)).arg(conn)).await?;
        }
        if code == 3 {
            self.unindex_agents(&[user]).await?;
        }
        Ok(if code >= 2 { Transition::WentOffline } else { Transition::Unchanged })
    }

    async fn is_online(&self, user: &str) -> Result<bool, PresenceError> {
        let nodes: Vec<String> = self.query_cmd(redis::cmd("HVALS").arg(self.keys.conns(user))).await?;
        self.any_live(&nodes.iter().map(String::as_str).collect::<Vec<_>>()).await
    }

    async fn set_away(&self, agent: &str, away: bool) -> Result<(), PresenceError> {
        let mut cmd = if away { redis::cmd("SET") } else { redis::cmd("DEL") };
        cmd.arg(self.keys.away(agent));
        if away {
            cmd.arg("1");
        }
        self.query_cmd::<Value>(&cmd).await.map(drop)
    }

    async fn available_agents(&self) -> Result<Vec<String>, PresenceError> {
        let candidates: Vec<String> = self.query_cmd(redis::cmd("SMEMBERS").arg(self.keys.agents())).await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = redis::pipe();
        for user in &candidates {
            p.cmd("EXISTS").arg(self.keys.agent(user));
            p.cmd("EXISTS").arg(self.keys.away(user));
            p.cmd("HVALS").arg(self.keys.conns(user));
        }
        let replies: Vec<Value> = self.query(&p, &[]).await?;
        if replies.len() != candidates.len() * 3 {
            return Err(PresenceError("redis: unexpected reply to the agents' state".into()));
        }
        let mut replies = replies.into_iter();
        let mut stale = Vec::new();
        let mut ready: Vec<(&str, Vec<String>)> = Vec::new();
        for user in &candidates {
            let (Some(agent), Some(away), Some(nodes)) = (replies.next(), replies.next(), replies.next()) else {
                break;
            };
            let (agent, away, nodes): (bool, bool, Vec<String>) = (parse(agent)?, parse(away)?, parse(nodes)?);
            if !agent {
                stale.push(user.as_str());
            } else if !away {
                ready.push((user, nodes));
            }
        }
        self.unindex_agents(&stale).await?;
        let live = self.live_nodes(ready.iter().flat_map(|(_, nodes)| nodes.iter().map(String::as_str))).await?;
        Ok(ready
            .into_iter()
            .filter(|(_, nodes)| nodes.iter().any(|n| live.contains(n)))
            .map(|(user, _)| user.to_string())
            .collect())
    }

    async fn room_join(&self, room: &str, conn: &str, member: &RoomMember) -> Result<Transition, PresenceError> {
        let mut p = redis::pipe();
        p.cmd("SADD").arg(self.keys.node_rooms(&self.node)).arg(room_conn_field(room, conn)).ignore();
        p.invoke_script(
            self.scripts
                .room_join
                .key(self.keys.room_members(room))
                .key(self.keys.room_users(room))
                .arg(conn)
                .arg(&member.user_id)
                .arg(&self.node)
                .arg(encode_record(member, &self.node)),
        );
        let (first,): (i64,) = self.query(&p, &[&self.scripts.room_join]).await?;
        Ok(if first == 1 { Transition::CameOnline } else { Transition::Unchanged })
    }

    /// The recorded member of `conn` decides whose connection count drops; `user` is only
    /// what the caller believes it is.
    async fn room_leave(&self, room: &str, conn: &str, _user: &str) -> Result<Transition, PresenceError> {
        let field = room_conn_field(room, conn);
        let mut p = redis::pipe();
        p.invoke_script(
            self.scripts.room_leave.key(self.keys.room_members(room)).key(self.keys.room_users(room)).arg(conn).arg(""),
        );
        p.cmd("SREM").arg(self.keys.node_rooms(&self.node)).arg(&field).ignore();
        let ((code, _, node),): ((i64, String, String),) = self.query(&p, &[&self.scripts.room_leave]).await?;
        if code > 0 && node != self.node {
            self.query_cmd::<i64>(redis::cmd("SREM").arg(self.keys.node_rooms(&node)).arg(&field)).await?;
        }
        Ok(if code == 2 { Transition::WentOffline } else { Transition::Unchanged })
    }

    async fn room_members(&self, room: &str) -> Result<Vec<RoomMemberCount>, PresenceError> {
        let raw: BTreeMap<String, String> =
            self.query_cmd(redis::cmd("HGETALL").arg(self.keys.room_members(room))).await?;
        let records: Vec<Record<'_>> = raw.values().filter_map(|r| decode_record(r)).collect();
        let live = self.live_nodes(records.iter().map(|r| r.node)).await?;
        // Ordered by connection id, so each user's role and name come from a stable entry.
        let mut by_user: BTreeMap<&str, RoomMemberCount> = BTreeMap::new();
        for r in records.iter().filter(|r| live.contains(r.node)) {
            by_user
                .entry(r.user)
                .or_insert_with(|| RoomMemberCount {
                    user_id: r.user.to_string(),
                    role: r.role.to_string(),
                    name: r.name.to_string(),
                    connections: 0,
                })
                .connections += 1;
        }
        Ok(by_user.into_values().collect())
    }

    async fn is_room_member(&self, room: &str, user: &str) -> Result<bool, PresenceError> {
        let counts: Option<String> =
            self.query_cmd(redis::cmd("HGET").arg(self.keys.room_users(room)).arg(user)).await?;
        let Some(counts) = counts else { return Ok(false) };
        self.any_live(&decode_counts(&counts)).await
    }
}

#[cfg(test)]
#[path = "tests/redis.rs"]
mod tests;
