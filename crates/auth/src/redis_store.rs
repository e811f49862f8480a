//! Redis implementations of [`TokenStore`], [`AgentStore`] and [`LoginThrottle`], shared
//! by every gateway node of a cluster, with the semantics of the memory ones.
//!
//! # Key layout
//!
//! Every key starts with a hash tag (`{...}`) that begins with the store's prefix `P`.
//! Each atomic operation (one command or one Lua script) only touches keys that share
//! one tag, so one hash slot: they work unchanged on Redis Cluster.
//!
//! | key | value | expiry |
//! |---|---|---|
//! | `{P:rt:<hash>}` | family id of refresh token `<hash>` (index, never changes) | the token's ttl |
//! | `{P:fam:<id>}:rt:<hash>` | `0` live, `1` spent | the token's ttl, kept when spent |
//! | `{P:fam:<id>}:rec` | the [`Family`] as JSON | its newest token's ttl |
//! | `{P:fam:<id>}:revoked` | `1` while the family is revoked | the revocation ttl (only extended) |
//! | `{P:jti:<jti>}` | `1` while the access token is revoked | the revocation ttl (only extended) |
//! | `{P:agents}:id:<id>` | the [`AgentRecord`] as JSON | none (accounts) |
//! | `{P:agents}:user:<username>` | agent id | none (accounts) |
//! | `{P:lock:<username>}` | sorted set of failure times (µs, Redis clock) | the window |
//!
//! The refresh-token index has one tag per token, so the tokens spread over the slots.
//! Rotation reads it (it never changes), then runs one script on the family's slot:
//! spending, re-use detection and revocation are decided there, so racing nodes are
//! serialised by Redis. Every key but the agent accounts expires, so Redis holds only
//! what may still matter. A Redis error is [`StoreError::Unavailable`].

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisError, Script};

use crate::{
    AgentRecord, AgentStore, AgentStoreError, Family, LoginThrottle, RefreshState, RotateOutcome, StoreError,
    TokenStore,
};

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Unavailable(format!("corrupt record in Redis: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// `d` in whole milliseconds, rounded up (so a non-zero ttl never becomes 0), capped
/// where Redis would reject the expiry.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX).min(1 << 50)
}

/// Sets `KEYS[1]` to `1` for `ARGV[1]` ms unless it already lives longer: a revocation
/// is extended, never shortened.
static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local ttl = tonumber(ARGV[1])
        if ttl > 0 and redis.call('PTTL', KEYS[1]) < ttl then redis.call('SET', KEYS[1], '1', 'PX', ttl) end
        return 0",
    )
});

/// KEYS: old token, new token, family record, family revocation (one family's slot).
/// ARGV: ttl in ms. Answers `{outcome}` or `{outcome, family JSON}`.
static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local tok = redis.call('GET', KEYS[1])
        local rec = redis.call('GET', KEYS[3])
        if not tok or not rec then return {'unknown'} end
        local ttl = tonumber(ARGV[1])
        if tok == '1' then
            if ttl > 0 and redis.call('PTTL', KEYS[4]) < ttl then redis.call('SET', KEYS[4], '1', 'PX', ttl) end
            return {'reused', rec}
        end
        if redis.call('EXISTS', KEYS[4]) == 1 then return {'revoked', rec} end
        redis.call('SET', KEYS[1], '1', 'KEEPTTL')
        if ttl > 0 then
            redis.call('SET', KEYS[2], '0', 'PX', ttl)
            if redis.call('PTTL', KEYS[3]) < ttl then redis.call('PEXPIRE', KEYS[3], ttl) end
        else
            redis.call('DEL', KEYS[2])
        end
        return {'rotated', rec}",
    )
});

/// The Redis [`TokenStore`] (key layout in the [module docs](self)).
///
/// [`rotate`](TokenStore::rotate) is one Lua script on the family's slot, so of any
/// number of concurrent rotations of one token, on any nodes, exactly one answers
/// `Rotated` and the others `Reused` (revoking the family). Refresh tokens and family
/// records expire with the ttl they were written with (a spent token keeps its own);
/// revocations with theirs, extended but never shortened.
#[derive(Debug, Clone)]
pub struct RedisTokenStore {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisTokenStore {
    /// A store whose keys all begin with `{prefix:`.
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        RedisTokenStore { conn, prefix: prefix.to_owned() }
    }

    fn index_key(&self, hash: &str) -> String {
        format!("{{{}:rt:{hash}}}", self.prefix)
    }

    fn family_key(&self, family_id: &str, suffix: &str) -> String {
        format!("{{{}:fam:{family_id}}}:{suffix}", self.prefix)
    }

    fn token_key(&self, family_id: &str, hash: &str) -> String {
        self.family_key(family_id, &format!("rt:{hash}"))
    }

    /// The family id `hash` was stored for, if the index entry lives.
    async fn family_id(&self, hash: &str) -> Result<Option<String>, StoreError> {
        redis::cmd("GET").arg(self.index_key(hash)).query_async(&mut self.conn.clone()).await.map_err(unavailable)
    }

    async fn extend(&self, key: String, ttl: Duration) -> Result<(), StoreError> {
        EXTEND.key(key).arg(millis(ttl)).invoke_async(&mut self.conn.clone()).await.map_err(unavailable)
    }
}

#[async_trait::async_trait]
impl TokenStore for RedisTokenStore {
    /// Three writes, each to one slot, in one round trip; the token is usable once all
    /// three are in (nobody holds it before this returns). A zero `ttl` deletes them,
    /// as the memory store's already-expired entries would shadow older ones.
    async fn put_refresh(&self, family: &Family, token_hash: &str, ttl: Duration) -> Result<(), StoreError> {
        let (ms, json) = (millis(ttl), encode(family)?);
        let keys = [
            (self.family_key(&family.id, "rec"), json),
            (self.token_key(&family.id, token_hash), "0".to_owned()),
            (self.index_key(token_hash), family.id.clone()),
        ];
        let mut pipe = redis::pipe();
        for (key, value) in keys {
            if ms == 0 {
                pipe.cmd("DEL").arg(key);
            } else {
                pipe.cmd("SET").arg(key).arg(value).arg("PX").arg(ms);
            }
        }
        pipe.exec_async(&mut self.conn.clone()).await.map_err(unavailable)
    }

    /// The new token's index entry is written before the script runs (an entry whose
    /// family holds no such token reads as `Unknown`) and removed again when the
    /// script did not rotate, so a rotation never hands out an unusable token.
    async fn rotate(&self, token_hash: &str, new_hash: &str, ttl: Duration) -> Result<RotateOutcome, StoreError> {
        let Some(family_id) = self.family_id(token_hash).await? else {
            return Ok(RotateOutcome::Unknown);
        };
        let mut conn = self.conn.clone();
        let (ms, new_index) = (millis(ttl), self.index_key(new_hash));
        if ms > 0 {
            let set = redis::cmd("SET").arg(&new_index).arg(&family_id).arg("PX").arg(ms).exec_async(&mut conn).await;
            set.map_err(unavailable)?;
        }
        let answer: Vec<String> = ROTATE
            .key(self.token_key(&family_id, token_hash))
            .key(self.token_key(&family_id, new_hash))
            .key(self.family_key(&family_id, "rec"))
            .key(self.family_key(&family_id, "revoked"))
            .arg(ms)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let outcome = match (answer.first().map(String::as_str), answer.get(1)) {
            (Some("rotated"), Some(json)) => return Ok(RotateOutcome::Rotated(decode(json)?)),
            (Some("reused"), Some(json)) => RotateOutcome::Reused(decode(json)?),
            (Some("revoked"), Some(json)) => RotateOutcome::Revoked(decode(json)?),
            (Some("unknown"), None) => RotateOutcome::Unknown,
            _ => return Err(StoreError::Unavailable(format!("unexpected rotation answer {answer:?}"))),
        };
        if ms > 0 {
            redis::cmd("DEL").arg(&new_index).exec_async(&mut conn).await.map_err(unavailable)?;
        }
        Ok(outcome)
    }

    /// One `MGET` of the family's slot after the index look-up: a consistent snapshot.
    async fn family_of(&self, token_hash: &str) -> Result<Option<(Family, RefreshState)>, StoreError> {
        let Some(family_id) = self.family_id(token_hash).await? else {
            return Ok(None);
        };
        let (token, record, revoked): (Option<String>, Option<String>, Option<String>) = redis::cmd("MGET")
            .arg(self.token_key(&family_id, token_hash))
            .arg(self.family_key(&family_id, "rec"))
            .arg(self.family_key(&family_id, "revoked"))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let (Some(token), Some(record)) = (token, record) else {
            return Ok(None);
        };
        let state = match (token.as_str(), revoked) {
            ("1", _) => RefreshState::Spent,
            (_, Some(_)) => RefreshState::Revoked,
            _ => RefreshState::Live,
        };
        Ok(Some((decode(&record)?, state)))
    }

    async fn revoke_family(&self, family_id: &str, ttl: Duration) -> Result<(), StoreError> {
        self.extend(self.family_key(family_id, "revoked"), ttl).await
    }

    async fn is_family_revoked(&self, family_id: &str) -> Result<bool, StoreError> {
        let key = self.family_key(family_id, "revoked");
        redis::cmd("EXISTS").arg(key).query_async(&mut self.conn.clone()).await.map_err(unavailable)
    }

    async fn revoke_jti(&self, jti: &str, ttl: Duration) -> Result<(), StoreError> {
        self.extend(format!("{{{}:jti:{jti}}}", self.prefix), ttl).await
    }

    async fn is_jti_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let key = format!("{{{}:jti:{jti}}}", self.prefix);
        redis::cmd("EXISTS").arg(key).query_async(&mut self.conn.clone()).await.map_err(unavailable)
    }
}

/// The Redis [`AgentStore`]. All accounts share the slot `{P:agents}`: `create` is one
/// `MSETNX` of the username and id keys, so of two concurrent creations with one
/// username (or id), on any nodes, exactly one succeeds. Accounts never expire.
#[derive(Debug, Clone)]
pub struct RedisAgentStore {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisAgentStore {
    /// A store whose keys all begin with `{prefix:agents}`.
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        RedisAgentStore { conn, prefix: prefix.to_owned() }
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{{{}:agents}}:{kind}:{name}", self.prefix)
    }

    async fn get(&self, key: String) -> Result<Option<String>, StoreError> {
        redis::cmd("GET").arg(key).query_async(&mut self.conn.clone()).await.map_err(unavailable)
    }
}

#[async_trait::async_trait]
impl AgentStore for RedisAgentStore {
    async fn create(&self, record: AgentRecord) -> Result<(), AgentStoreError> {
        let created: bool = redis::cmd("MSETNX")
            .arg(self.key("user", &record.username))
            .arg(&record.id)
            .arg(self.key("id", &record.id))
            .arg(encode(&record)?)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        if created {
            Ok(())
        } else {
            Err(AgentStoreError::AlreadyExists)
        }
    }

    async fn by_username(&self, username: &str) -> Result<Option<AgentRecord>, StoreError> {
        match self.get(self.key("user", username)).await? {
            Some(id) => self.by_id(&id).await,
            None => Ok(None),
        }
    }

    async fn by_id(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.get(self.key("id", id)).await?.map(|json| decode(&json)).transpose()
    }
}

/// KEYS: the username's failures. ARGV: window (µs), max failures, a unique member,
/// window (ms). Drops failures outside the window, adds one at Redis's clock, keeps the
/// newest `max`, and expires the set with the window.
static RECORD_FAILURE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
        redis.call('ZADD', KEYS[1], now, ARGV[3])
        redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[2]) - 1)
        redis.call('PEXPIRE', KEYS[1], ARGV[4])
        return 0",
    )
});

/// KEYS: the username's failures. ARGV: window (µs), max failures. 1 when locked.
static IS_LOCKED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local recent = redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[1]) + 1, '+inf')
        if recent >= tonumber(ARGV[2]) then return 1 end
        return 0",
    )
});

/// The Redis [`LoginThrottle`]: per username a sorted set `{P:lock:<username>}` of
/// failure times on Redis's clock (one clock for every node), updated by one script
/// each, holding at most `max_failures` entries and expiring after `window`.
#[derive(Debug, Clone)]
pub struct RedisLoginThrottle {
    conn: ConnectionManager,
    prefix: String,
    /// Failures that lock a username (at least 1).
    max_failures: u32,
    window: Duration,
}

impl RedisLoginThrottle {
    /// Locks a username after `max_failures` failures (0 is taken as 1) within `window`.
    pub fn new(conn: ConnectionManager, prefix: &str, max_failures: u32, window: Duration) -> Self {
        RedisLoginThrottle { conn, prefix: prefix.to_owned(), max_failures: max_failures.max(1), window }
    }

    fn key(&self, username: &str) -> String {
        format!("{{{}:lock:{username}}}", self.prefix)
    }

    fn window_micros(&self) -> u64 {
        u64::try_from(self.window.as_micros()).unwrap_or(u64::MAX).min(1 << 50)
    }
}

#[async_trait::async_trait]
impl LoginThrottle for RedisLoginThrottle {
    async fn is_locked(&self, username: &str) -> Result<bool, StoreError> {
        let (key, window) = (self.key(username), self.window_micros());
        IS_LOCKED
            .key(key)
            .arg(window)
            .arg(self.max_failures)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn record_failure(&self, username: &str) -> Result<(), StoreError> {
        RECORD_FAILURE
            .key(self.key(username))
            .arg(self.window_micros())
            .arg(self.max_failures)
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .arg(millis(self.window))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn clear(&self, username: &str) -> Result<(), StoreError> {
        redis::cmd("DEL").arg(self.key(username)).exec_async(&mut self.conn.clone()).await.map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use testkit::{unique_prefix, RedisServer};

    use super::*;
    use crate::{agents, lockout, store};

    async fn redis() -> (RedisServer, ConnectionManager) {
        let server = RedisServer::start();
        let conn = connect(&server).await;
        (server, conn)
    }

    /// A connection that gives up quickly, so a dead server fails the call fast.
    async fn connect(server: &RedisServer) -> ConnectionManager {
        let client = redis::Client::open(server.url()).expect("a valid URL");
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        client.get_connection_manager_with_config(config).await.expect("connects")
    }

    /// Every key under `prefix` with its remaining ttl in ms (-1: none).
    async fn keys_with_ttl(conn: &ConnectionManager, prefix: &str) -> Vec<(String, i64)> {
        let mut conn = conn.clone();
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{{{prefix}:*")).query_async(&mut conn).await.expect("answers");
        let mut out = Vec::new();
        for key in keys {
            let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.expect("answers");
            out.push((key, ttl));
        }
        out
    }

    #[tokio::test]
    async fn redis_rotation_chain_and_reuse() {
        let (_server, conn) = redis().await;
        store::tests::rotation_chain_and_reuse(&RedisTokenStore::new(conn, &unique_prefix("chain"))).await;
    }

    #[tokio::test]
    async fn redis_entries_expire() {
        let (_server, conn) = redis().await;
        store::tests::entries_expire(&RedisTokenStore::new(conn, &unique_prefix("expire"))).await;
    }

    /// Every node has its own connection, as in a cluster, and runs on its own thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn redis_concurrent_rotation() {
        let (server, conn) = redis().await;
        let prefix = unique_prefix("race");
        let mut nodes: Vec<Arc<dyn TokenStore>> = Vec::new();
        for _ in 0..16 {
            nodes.push(Arc::new(RedisTokenStore::new(connect(&server).await, &prefix)));
        }
        store::tests::concurrent_rotation(&nodes).await;
        let keys = keys_with_ttl(&conn, &prefix).await;
        let index = keys.iter().filter(|(k, _)| k.contains(":rt:") && k.ends_with('}')).count();
        assert_eq!(index, 2, "only the stored and the rotated token stay indexed: {keys:?}");
    }

    #[tokio::test]
    async fn redis_every_token_key_expires() {
        let (_server, conn) = redis().await;
        let (ttl, short) = (Duration::from_secs(60), Duration::from_millis(50));
        let prefix = unique_prefix("ttl");
        let store = RedisTokenStore::new(conn.clone(), &prefix);
        store.put_refresh(&store::tests::family("f"), "h1", ttl).await.expect("stores");
        store.rotate("h1", "h2", ttl).await.expect("answers");
        store.rotate("h1", "h3", ttl).await.expect("answers");
        store.revoke_jti("j", ttl).await.expect("stores");
        store.revoke_jti("j", short).await.expect("stores");
        store.revoke_family("f", short).await.expect("stores");
        let keys = keys_with_ttl(&conn, &prefix).await;
        // Family record, revocation, and for h1 and h2 the index and state; the jti.
        assert_eq!(keys.len(), 7, "{keys:?}");
        assert!(keys.iter().all(|(_, ms)| (50_000..=60_000).contains(ms)), "never shortened: {keys:?}");

        let prefix = unique_prefix("ttl-short");
        let store = RedisTokenStore::new(conn.clone(), &prefix);
        store.put_refresh(&store::tests::family("f"), "h1", short).await.expect("stores");
        store.rotate("h1", "h2", short).await.expect("answers");
        store.revoke_family("f", short).await.expect("stores");
        store.revoke_jti("j", short).await.expect("stores");
        assert_eq!(keys_with_ttl(&conn, &prefix).await.len(), 7);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(keys_with_ttl(&conn, &prefix).await.is_empty(), "all expired");
    }

    #[tokio::test]
    async fn redis_agent_store() {
        let (_server, conn) = redis().await;
        agents::tests::agent_store(&RedisAgentStore::new(conn, &unique_prefix("agents"))).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn redis_concurrent_agent_creation() {
        let (server, _conn) = redis().await;
        let prefix = unique_prefix("agents-race");
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..16 {
            let store = RedisAgentStore::new(connect(&server).await, &prefix);
            tasks.spawn(async move { store.create(agents::tests::record(&format!("a{i}"), "ada")).await.is_ok() });
        }
        assert_eq!(tasks.join_all().await.into_iter().filter(|created| *created).count(), 1);
    }

    #[tokio::test]
    async fn redis_locks_after_n_failures_until_the_window_passes() {
        let (_server, conn) = redis().await;
        let throttle = RedisLoginThrottle::new(conn, &unique_prefix("lock"), 3, Duration::from_millis(200));
        lockout::tests::locks_after_n_failures_until_the_window_passes(&throttle).await;
    }

    #[tokio::test]
    async fn redis_clear_unlocks_and_memory_stays_bounded() {
        let (_server, conn) = redis().await;
        let throttle = RedisLoginThrottle::new(conn.clone(), &unique_prefix("lock"), 2, Duration::from_secs(60));
        lockout::tests::clear_unlocks(&throttle).await;
        for _ in 0..10 {
            throttle.record_failure("ada").await.expect("records");
        }
        let mut conn = conn;
        let card: usize = redis::cmd("ZCARD").arg(throttle.key("ada")).query_async(&mut conn).await.expect("answers");
        let ttl: i64 = redis::cmd("PTTL").arg(throttle.key("ada")).query_async(&mut conn).await.expect("answers");
        assert_eq!(card, 2, "at most max_failures kept");
        assert!((59_000..=60_000).contains(&ttl), "expires with the window: {ttl}");
    }

    #[tokio::test]
    async fn redis_down_is_unavailable() {
        let (mut server, conn) = redis().await;
        server.stop();
        let tokens = RedisTokenStore::new(conn.clone(), "down");
        let err = tokens.rotate("h1", "h2", Duration::from_secs(1)).await.expect_err("no Redis");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let agents = RedisAgentStore::new(conn.clone(), "down");
        assert!(matches!(agents.by_id("a").await, Err(StoreError::Unavailable(_))));
        let throttle = RedisLoginThrottle::new(conn, "down", 1, Duration::from_secs(1));
        assert!(matches!(throttle.record_failure("ada").await, Err(StoreError::Unavailable(_))));
    }
}
