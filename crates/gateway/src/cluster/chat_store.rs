//! The chat store in Redis.
//!
//! Key layout (`P` = `redis.key_prefix`); braces are Redis Cluster hash tags:
//! - sessions, one slot so that assignment is atomic with the agents' loads:
//!   `{P:s}:s:<id>` hash (id, cust JSON, status, agent, created), `{P:s}:past:<id>`
//!   set, `{P:s}:st:<status>` and `{P:s}:all` sorted sets (score: created ms),
//!   `{P:s}:ag:<agent>` set of sessions assigned now, `{P:s}:own:<agent>` sorted set of
//!   sessions whose agent is `<agent>` (closed ones too), `{P:s}:cs:<customer>` set,
//!   `{P:s}:c:<customer>` customer JSON;
//! - messages, one slot per session: `{P:m:<sid>}:log` list of MESSAGE JSON (index =
//!   seq - 1), `{P:m:<sid>}:idem:<sender>:<client id>` seq (24 h),
//!   `{P:m:<sid>}:cur:<user>` hash (d = delivered, r = read).
//!
//! `append` is one script: the seq is the list length + 1, assigned and stored
//! together, so seqs never gap or repeat whatever the number of nodes.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use crate::chat::model::*;
use crate::chat::store::{
    page_bounds, Appended, ChatStore, ReplayPlan, SessionChange, SessionError, StoreError, IDEMPOTENCY_WINDOW,
};

/// Most sessions the list route returns (newest first).
const LIST_MAX: isize = 1000;

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable(format!("unreadable {what} in Redis"))
}

pub struct RedisChatStore {
    conn: ConnectionManager,
    /// `{P:s}`
    s: String,
    /// `P`
    prefix: String,
    append: Script,
    update: Script,
    advance: Script,
    unread: Script,
    replay: Script,
}

const APPEND: &str = r#"
local existing = redis.call('GET', KEYS[2])
if existing then
  local m = redis.call('LINDEX', KEYS[1], tonumber(existing) - 1)
  if m then return {1, m} end
end
local seq = redis.call('LLEN', KEYS[1]) + 1
local m = ARGV[1] .. seq .. ARGV[2]
redis.call('RPUSH', KEYS[1], m)
redis.call('SET', KEYS[2], seq, 'EX', ARGV[3])
return {0, m}
"#;

/// ARGV: tag prefix `{P:s}`, session id, op, arg1, arg2. Keys are derived from the
/// tag, so they all live in the sessions' slot.
const UPDATE: &str = r#"
local p, id, op, a1, a2 = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local sk = p .. ':s:' .. id
if redis.call('EXISTS', sk) == 0 then return 'notfound' end
local status = redis.call('HGET', sk, 'status')
local agent = redis.call('HGET', sk, 'agent') or ''
local created = redis.call('HGET', sk, 'created')
local function set_status(new)
  redis.call('ZREM', p .. ':st:' .. status, id)
  redis.call('ZADD', p .. ':st:' .. new, created, id)
  redis.call('HSET', sk, 'status', new)
  status = new
end
local function set_agent(new)
  if agent ~= '' then
    redis.call('SREM', p .. ':ag:' .. agent, id)
    redis.call('ZREM', p .. ':own:' .. agent, id)
  end
  if new ~= '' then
    redis.call('SADD', p .. ':ag:' .. new, id)
    redis.call('ZADD', p .. ':own:' .. new, created, id)
  end
  redis.call('HSET', sk, 'agent', new)
  agent = new
end
if op == 'claim' or op == 'assign' then
  if status == 'closed' then return 'closed' end
  if status == 'assigned' then return 'assigned' end
  if op == 'assign' and redis.call('SCARD', p .. ':ag:' .. a1) >= tonumber(a2) then return 'full' end
  set_agent(a1)
  set_status('assigned')
elseif op == 'transfer' then
  if status == 'closed' then return 'closed' end
  if status ~= 'assigned' or agent ~= a1 then return 'notyours' end
  if a1 ~= a2 then redis.call('SADD', p .. ':past:' .. id, a1) end
  set_agent(a2)
elseif op == 'close' then
  if status ~= 'closed' then
    if agent ~= '' then redis.call('SREM', p .. ':ag:' .. agent, id) end
    set_status('closed')
  end
elseif op == 'requeue' then
  if status == 'assigned' then
    redis.call('SADD', p .. ':past:' .. id, agent)
    set_agent('')
    set_status('queued')
  end
end
return 'ok'
"#;

const ADVANCE: &str = r#"
local last = redis.call('LLEN', KEYS[2])
local up = math.min(tonumber(ARGV[1]), last)
local d = tonumber(redis.call('HGET', KEYS[1], 'd') or '0')
local r = tonumber(redis.call('HGET', KEYS[1], 'r') or '0')
if up > d then d = up; redis.call('HSET', KEYS[1], 'd', d) end
if ARGV[2] == '1' and up > r then r = up; redis.call('HSET', KEYS[1], 'r', r) end
return {d, r}
"#;

/// ARGV[1]: the JSON of `"from":{"id":<user>,` — present exactly in the user's own messages.
const UNREAD: &str = r#"
local r = tonumber(redis.call('HGET', KEYS[2], 'r') or '0')
local n = 0
for _, m in ipairs(redis.call('LRANGE', KEYS[1], r, -1)) do
  if not string.find(m, ARGV[1], 1, true) then n = n + 1 end
end
return n
"#;

/// Scan back from the newest message to the delivery cursor, counting others'
/// messages up to ARGV[2]; returns {from_seq, last_seq, truncated, from, to}.
const REPLAY: &str = r#"
local cursor = tonumber(redis.call('HGET', KEYS[2], 'd') or '0')
local last = redis.call('LLEN', KEYS[1])
local max = tonumber(ARGV[2])
local count, from = 0, 0
local i = last
while i > cursor do
  local lo = math.max(cursor + 1, i - 199)
  local chunk = redis.call('LRANGE', KEYS[1], lo - 1, i - 1)
  for j = #chunk, 1, -1 do
    if not string.find(chunk[j], ARGV[1], 1, true) then
      if count == max then return {from, last, 1, cursor + 1, from - 1} end
      count = count + 1
      from = lo + j - 1
    end
  end
  i = lo - 1
end
return {from, last, 0, 0, 0}
"#;

impl RedisChatStore {
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        RedisChatStore {
            conn,
            s: format!("{{{prefix}:s}}"),
            prefix: prefix.to_string(),
            append: Script::new(APPEND),
            update: Script::new(UPDATE),
            advance: Script::new(ADVANCE),
            unread: Script::new(UNREAD),
            replay: Script::new(REPLAY),
        }
    }

    fn m(&self, session: &str) -> String {
        format!("{{{}:m:{session}}}", self.prefix)
    }

    fn log(&self, session: &str) -> String {
        format!("{}:log", self.m(session))
    }

    fn cur(&self, session: &str, user: &str) -> String {
        format!("{}:cur:{user}", self.m(session))
    }

    fn own_marker(user: &str) -> String {
        format!("\"from\":{{\"id\":{},", serde_json::to_string(user).unwrap_or_default())
    }

    fn parse_message(raw: &str) -> Result<Message, StoreError> {
        serde_json::from_str(raw).map_err(|_| corrupt("message"))
    }

    async fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let mut conn = self.conn.clone();
        let (fields, past): (std::collections::HashMap<String, String>, Vec<String>) = redis::pipe()
            .hgetall(format!("{}:s:{id}", self.s))
            .smembers(format!("{}:past:{id}", self.s))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if fields.is_empty() {
            return Ok(None);
        }
        let last_seq: u64 = conn.llen(self.log(id)).await.map_err(unavailable)?;
        let customer: CustomerRef =
            serde_json::from_str(fields.get("cust").map_or("", String::as_str)).map_err(|_| corrupt("session"))?;
        let status = fields.get("status").and_then(|s| SessionStatus::parse(s)).ok_or_else(|| corrupt("session"))?;
        let mut past_agents = past;
        past_agents.sort();
        Ok(Some(Session {
            id: id.to_string(),
            customer,
            status,
            agent_id: fields.get("agent").filter(|a| !a.is_empty()).cloned(),
            created_at_ms: fields.get("created").and_then(|c| c.parse().ok()).unwrap_or(0),
            past_agents,
            last_seq,
        }))
    }

    async fn load_all(&self, ids: Vec<String>) -> Result<Vec<Session>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(s) = self.load(&id).await? {
                out.push(s);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl ChatStore for RedisChatStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| ()).map_err(unavailable)
    }

    async fn create_session(&self, customer: &Customer, session: &Session) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let cust = serde_json::to_string(&session.customer).map_err(|_| corrupt("customer"))?;
        let customer_json = serde_json::to_string(customer).map_err(|_| corrupt("customer"))?;
        let status =
            serde_json::to_value(session.status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let s = &self.s;
        redis::pipe()
            .atomic()
            .hset_multiple(
                format!("{s}:s:{}", session.id),
                &[
                    ("id", session.id.as_str()),
                    ("cust", cust.as_str()),
                    ("status", status.as_str()),
                    ("agent", session.agent_id.as_deref().unwrap_or("")),
                    ("created", &session.created_at_ms.to_string()),
                ],
            )
            .zadd(format!("{s}:st:{status}"), &session.id, session.created_at_ms)
            .zadd(format!("{s}:all"), &session.id, session.created_at_ms)
            .sadd(format!("{s}:cs:{}", customer.id), &session.id)
            .set(format!("{s}:c:{}", customer.id), customer_json)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.load(id).await
    }

    async fn list_sessions(
        &self,
        status: Option<SessionStatus>,
        agent: Option<&str>,
    ) -> Result<Vec<Session>, StoreError> {
        let mut conn = self.conn.clone();
        let key = match (agent, status) {
            (Some(a), _) => format!("{}:own:{a}", self.s),
            (None, Some(st)) => format!("{}:st:{}", self.s, status_str(st)),
            (None, None) => format!("{}:all", self.s),
        };
        let ids: Vec<String> = conn.zrevrange(key, 0, LIST_MAX - 1).await.map_err(unavailable)?;
        let mut sessions = self.load_all(ids).await?;
        if let (Some(_), Some(st)) = (agent, status) {
            sessions.retain(|s| s.status == st);
        }
        Ok(sessions)
    }

    async fn queued(&self, limit: usize) -> Result<Vec<Session>, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> =
            conn.zrange(format!("{}:st:queued", self.s), 0, limit as isize - 1).await.map_err(unavailable)?;
        self.load_all(ids).await
    }

    async fn sessions_of(&self, user: &str, agent: bool) -> Result<Vec<Session>, StoreError> {
        let mut conn = self.conn.clone();
        let key = if agent { format!("{}:ag:{user}", self.s) } else { format!("{}:cs:{user}", self.s) };
        let mut ids: Vec<String> = conn.smembers(key).await.map_err(unavailable)?;
        ids.sort();
        self.load_all(ids).await
    }

    async fn agent_load(&self, agent: &str) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        conn.scard(format!("{}:ag:{agent}", self.s)).await.map_err(unavailable)
    }

    async fn update_session(&self, id: &str, change: SessionChange) -> Result<Session, SessionError> {
        let (op, a1, a2) = match &change {
            SessionChange::Claim { agent } => ("claim", agent.clone(), String::new()),
            SessionChange::Assign { agent, max_load } => ("assign", agent.clone(), max_load.to_string()),
            SessionChange::Transfer { from, to } => ("transfer", from.clone(), to.clone()),
            SessionChange::Close => ("close", String::new(), String::new()),
            SessionChange::Requeue => ("requeue", String::new(), String::new()),
        };
        let mut conn = self.conn.clone();
        let outcome: String = self
            .update
            .arg(&self.s)
            .arg(id)
            .arg(op)
            .arg(a1)
            .arg(a2)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| SessionError::Store(unavailable(e)))?;
        match outcome.as_str() {
            "ok" => self.load(id).await?.ok_or(SessionError::NotFound),
            "notfound" => Err(SessionError::NotFound),
            "closed" => Err(SessionError::Closed),
            "assigned" => Err(SessionError::AlreadyAssigned),
            "full" => Err(SessionError::AgentFull),
            "notyours" => Err(SessionError::NotAssignedToYou),
            _ => Err(SessionError::Store(corrupt("update outcome"))),
        }
    }

    async fn append(&self, message: NewMessage) -> Result<Appended, StoreError> {
        let template = Message {
            id: format!("msg-{}", uuid::Uuid::new_v4().simple()),
            session_id: message.session_id.clone(),
            seq: 0,
            from: message.from.clone(),
            text: message.text,
            ts: protocol::time::now_rfc3339(),
            client_msg_id: message.client_msg_id.clone(),
        };
        let json = serde_json::to_string(&template).map_err(|_| corrupt("message"))?;
        // Split around the seq so that the script splices in the number it assigns.
        let marker = "\"seq\":0,";
        let at = json.find(marker).ok_or_else(|| corrupt("message template"))?;
        let (head, tail) = (&json[..at + marker.len() - 2], &json[at + marker.len() - 1..]);
        let idem = format!("{}:idem:{}:{}", self.m(&message.session_id), message.from.id, message.client_msg_id);
        let mut conn = self.conn.clone();
        let (dup, raw): (i64, String) = self
            .append
            .key(self.log(&message.session_id))
            .key(idem)
            .arg(head)
            .arg(tail)
            .arg(IDEMPOTENCY_WINDOW.as_secs())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(Appended { message: Self::parse_message(&raw)?, duplicate: dup == 1 })
    }

    async fn history(&self, session: &str, query: HistoryQuery) -> Result<Page, StoreError> {
        let mut conn = self.conn.clone();
        let last: u64 = conn.llen(self.log(session)).await.map_err(unavailable)?;
        let Some((first, end, has_more)) = page_bounds(last, query) else { return Ok(Page::default()) };
        let raw: Vec<String> =
            conn.lrange(self.log(session), first as isize - 1, end as isize - 2).await.map_err(unavailable)?;
        let messages = raw.iter().map(|r| Self::parse_message(r)).collect::<Result<_, _>>()?;
        Ok(Page { messages, has_more })
    }

    async fn last_message(&self, session: &str) -> Result<Option<Message>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn.lindex(self.log(session), -1).await.map_err(unavailable)?;
        raw.map(|r| Self::parse_message(&r)).transpose()
    }

    async fn range(&self, session: &str, from_seq: u64, to_seq: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        let from = from_seq.max(1);
        if to_seq < from || limit == 0 {
            return Ok(Vec::new());
        }
        let to = to_seq.min(from + limit as u64 - 1);
        let mut conn = self.conn.clone();
        let raw: Vec<String> =
            conn.lrange(self.log(session), from as isize - 1, to as isize - 1).await.map_err(unavailable)?;
        raw.iter().map(|r| Self::parse_message(r)).collect()
    }

    async fn cursor(&self, user: &str, session: &str) -> Result<Cursor, StoreError> {
        let mut conn = self.conn.clone();
        let (d, r): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.cur(session, user))
            .arg("d")
            .arg("r")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(Cursor { delivered: d.unwrap_or(0), read: r.unwrap_or(0) })
    }

    async fn advance(&self, user: &str, session: &str, up_to: u64, read: bool) -> Result<Cursor, StoreError> {
        let mut conn = self.conn.clone();
        let (d, r): (u64, u64) = self
            .advance
            .key(self.cur(session, user))
            .key(self.log(session))
            .arg(up_to)
            .arg(if read { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(Cursor { delivered: d, read: r })
    }

    async fn unread(&self, user: &str, session: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        self.unread
            .key(self.log(session))
            .key(self.cur(session, user))
            .arg(Self::own_marker(user))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn replay_plan(&self, user: &str, session: &str, max: usize) -> Result<ReplayPlan, StoreError> {
        let mut conn = self.conn.clone();
        let (from_seq, last_seq, truncated, from, to): (u64, u64, u8, u64, u64) = self
            .replay
            .key(self.log(session))
            .key(self.cur(session, user))
            .arg(Self::own_marker(user))
            .arg(max)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(ReplayPlan { from_seq, last_seq, truncated: (truncated == 1).then_some((from, to)) })
    }
}

fn status_str(s: SessionStatus) -> &'static str {
    match s {
        SessionStatus::Queued => "queued",
        SessionStatus::Assigned => "assigned",
        SessionStatus::Closed => "closed",
    }
}

/// A connection manager with the timeouts the contract's outage bounds need:
/// commands fail within a few seconds while Redis is away, and it reconnects by itself.
pub async fn connect(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, config).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::chat::store::suite;

    async fn store(server: &testkit::RedisServer, test: &str) -> Arc<dyn ChatStore> {
        let conn = connect(&server.url()).await.expect("redis");
        Arc::new(RedisChatStore::new(conn, &testkit::unique_prefix(test)))
    }

    #[tokio::test]
    async fn redis_sessions_lifecycle() {
        let server = testkit::RedisServer::start();
        suite::sessions_lifecycle(store(&server, "lifecycle").await).await;
    }

    #[tokio::test]
    async fn redis_messages_and_cursors() {
        let server = testkit::RedisServer::start();
        suite::messages_and_cursors(store(&server, "messages").await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_concurrent_appends() {
        let server = testkit::RedisServer::start();
        suite::concurrent_appends(store(&server, "concurrent").await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_assignment_capacity() {
        let server = testkit::RedisServer::start();
        suite::assignment_capacity_under_contention(store(&server, "capacity").await).await;
    }
}
