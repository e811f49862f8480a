//! Token families, refresh tokens and revocations: the state behind refresh and logout.
//!
//! Refresh tokens are stored only as hashes (see [`crate::hash_refresh_token`]). The
//! memory implementation is one node's; the cluster build keeps the same state in Redis.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::Subject;

/// A token family: its id and the subject it re-issues access tokens for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Family {
    pub id: String,
    #[serde(flatten)]
    pub subject: Subject,
}

/// The store did not answer; callers answer `UNAVAILABLE`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// What [`TokenStore::rotate`] did with a presented refresh token.
#[derive(Debug, Clone, PartialEq)]
pub enum RotateOutcome {
    /// The token was live: it is now spent and the new hash is the family's live token.
    Rotated(Family),
    /// Never seen, expired, or its family is gone.
    Unknown,
    /// The token was already spent: the family is now revoked (it may have been before).
    Reused(Family),
    /// The token is unspent but its family was revoked (logout or re-use); nothing changed.
    Revoked(Family),
}

/// Where a refresh token stands, without spending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshState {
    /// Unspent, family not revoked: [`TokenStore::rotate`] would rotate it.
    Live,
    /// Already spent: presenting it again is re-use.
    Spent,
    /// Unspent, but the family is revoked.
    Revoked,
}

/// Token families, refresh tokens and revocations.
///
/// Guarantees every implementation gives: [`TokenStore::rotate`] is atomic (of two
/// concurrent rotations of one token exactly one answers `Rotated`); every entry
/// expires after the `ttl` it was written with, so the store holds only what may still
/// matter; a revocation is visible to every later call on any node.
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Stores a refresh token (only its SHA-256 hash) for a family, and the family
    /// record; both live for `ttl`.
    async fn put_refresh(&self, family: &Family, token_hash: &str, ttl: Duration) -> Result<(), StoreError>;

    /// Atomically spends `token_hash`: `Rotated` (and `new_hash` stored for the family
    /// for `ttl`) if live; `Reused` if already spent (the family is revoked for `ttl`),
    /// also when the family was already revoked; `Revoked` if unspent in a revoked
    /// family; `Unknown` if never seen, expired, or its family record is gone.
    async fn rotate(&self, token_hash: &str, new_hash: &str, ttl: Duration) -> Result<RotateOutcome, StoreError>;

    /// The family of `token_hash` and where the token stands, changing nothing;
    /// `None` where `rotate` would answer `Unknown`.
    async fn family_of(&self, token_hash: &str) -> Result<Option<(Family, RefreshState)>, StoreError>;

    /// Revokes the family for `ttl` (extending, never shortening, an earlier revocation).
    async fn revoke_family(&self, family_id: &str, ttl: Duration) -> Result<(), StoreError>;

    async fn is_family_revoked(&self, family_id: &str) -> Result<bool, StoreError>;

    /// Revokes one access token by `jti` for `ttl`.
    async fn revoke_jti(&self, jti: &str, ttl: Duration) -> Result<(), StoreError>;

    async fn is_jti_revoked(&self, jti: &str) -> Result<bool, StoreError>;
}

/// How often, at most, a write sweeps expired entries out of the memory stores.
pub const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// The single-node [`TokenStore`]: maps behind one mutex, so every operation is
/// atomic. Expired entries are ignored on read and swept on writes at most every
/// [`PRUNE_EVERY`], so memory stays bounded by the live tokens.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    inner: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    /// Refresh-token hash → its family and whether it was spent.
    refresh: HashMap<String, RefreshEntry>,
    /// Family id → the family record, kept as long as its newest refresh token.
    families: HashMap<String, Expiring<Family>>,
    /// Revoked family id → until when.
    revoked_families: HashMap<String, Instant>,
    /// Revoked access-token id → until when.
    revoked_jtis: HashMap<String, Instant>,
    /// When expired entries were last swept; `None` before the first write.
    last_prune: Option<Instant>,
}

#[derive(Debug)]
struct RefreshEntry {
    family_id: String,
    spent: bool,
    until: Instant,
}

#[derive(Debug)]
struct Expiring<T> {
    value: T,
    until: Instant,
}

impl Tables {
    fn prune_if_due(&mut self, now: Instant) {
        if self.last_prune.is_some_and(|at| now.duration_since(at) < PRUNE_EVERY) {
            return;
        }
        self.last_prune = Some(now);
        self.refresh.retain(|_, e| e.until > now);
        self.families.retain(|_, f| f.until > now);
        self.revoked_families.retain(|_, until| *until > now);
        self.revoked_jtis.retain(|_, until| *until > now);
    }

    /// The live family and token entry of `hash`, if neither expired.
    fn lookup(&self, hash: &str, now: Instant) -> Option<(&RefreshEntry, &Family)> {
        let entry = self.refresh.get(hash).filter(|e| e.until > now)?;
        let family = self.families.get(&entry.family_id).filter(|f| f.until > now)?;
        Some((entry, &family.value))
    }

    fn family_revoked(&self, id: &str, now: Instant) -> bool {
        self.revoked_families.get(id).is_some_and(|until| *until > now)
    }

    fn revoke_family(&mut self, id: &str, until: Instant) {
        let slot = self.revoked_families.entry(id.to_owned()).or_insert(until);
        *slot = (*slot).max(until);
    }
}

#[async_trait::async_trait]
impl TokenStore for MemoryTokenStore {
    async fn put_refresh(&self, family: &Family, token_hash: &str, ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let until = now + ttl;
        let mut t = self.inner.lock();
        t.prune_if_due(now);
        t.refresh.insert(token_hash.to_owned(), RefreshEntry { family_id: family.id.clone(), spent: false, until });
        t.families.insert(family.id.clone(), Expiring { value: family.clone(), until });
        Ok(())
    }

    async fn rotate(&self, token_hash: &str, new_hash: &str, ttl: Duration) -> Result<RotateOutcome, StoreError> {
        let now = Instant::now();
        let until = now + ttl;
        let mut t = self.inner.lock();
        t.prune_if_due(now);
        let Some((entry, family)) = t.lookup(token_hash, now) else {
            return Ok(RotateOutcome::Unknown);
        };
        let (spent, family) = (entry.spent, family.clone());
        if spent {
            t.revoke_family(&family.id, until);
            return Ok(RotateOutcome::Reused(family));
        }
        if t.family_revoked(&family.id, now) {
            return Ok(RotateOutcome::Revoked(family));
        }
        // The spent entry keeps its expiry: re-use is detected as long as it could
        // have been presented legitimately.
        if let Some(entry) = t.refresh.get_mut(token_hash) {
            entry.spent = true;
        }
        t.refresh.insert(new_hash.to_owned(), RefreshEntry { family_id: family.id.clone(), spent: false, until });
        if let Some(record) = t.families.get_mut(&family.id) {
            record.until = record.until.max(until);
        }
        Ok(RotateOutcome::Rotated(family))
    }

    async fn family_of(&self, token_hash: &str) -> Result<Option<(Family, RefreshState)>, StoreError> {
        let now = Instant::now();
        let t = self.inner.lock();
        Ok(t.lookup(token_hash, now).map(|(entry, family)| {
            let state = if entry.spent {
                RefreshState::Spent
            } else if t.family_revoked(&family.id, now) {
                RefreshState::Revoked
            } else {
                RefreshState::Live
            };
            (family.clone(), state)
        }))
    }

    async fn revoke_family(&self, family_id: &str, ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut t = self.inner.lock();
        t.prune_if_due(now);
        t.revoke_family(family_id, now + ttl);
        Ok(())
    }

    async fn is_family_revoked(&self, family_id: &str) -> Result<bool, StoreError> {
        Ok(self.inner.lock().family_revoked(family_id, Instant::now()))
    }

    async fn revoke_jti(&self, jti: &str, ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut t = self.inner.lock();
        t.prune_if_due(now);
        let slot = t.revoked_jtis.entry(jti.to_owned()).or_insert(now + ttl);
        *slot = (*slot).max(now + ttl);
        Ok(())
    }

    async fn is_jti_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let now = Instant::now();
        Ok(self.inner.lock().revoked_jtis.get(jti).is_some_and(|until| *until > now))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Behaviour every [`TokenStore`] shares, run against each implementation (the Redis
    //! one in `crate::redis_store`).

    use std::sync::Arc;

    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    pub(crate) fn family(id: &str) -> Family {
        Family { id: id.into(), subject: Subject::new("c1", crate::Role::Customer) }
    }

    pub(crate) async fn rotation_chain_and_reuse(store: &dyn TokenStore) {
        store.put_refresh(&family("f"), "h1", TTL).await.expect("stores");
        assert_eq!(store.family_of("h1").await.expect("answers"), Some((family("f"), RefreshState::Live)));
        assert_eq!(store.rotate("h1", "h2", TTL).await.expect("answers"), RotateOutcome::Rotated(family("f")));
        assert_eq!(store.family_of("h1").await.expect("answers").map(|f| f.1), Some(RefreshState::Spent));
        assert_eq!(store.family_of("h2").await.expect("answers").map(|f| f.1), Some(RefreshState::Live));
        assert!(!store.is_family_revoked("f").await.expect("answers"));

        assert_eq!(store.rotate("h1", "h3", TTL).await.expect("answers"), RotateOutcome::Reused(family("f")));
        assert!(store.is_family_revoked("f").await.expect("answers"));
        assert_eq!(store.rotate("h3", "h4", TTL).await.expect("answers"), RotateOutcome::Unknown, "h3 never stored");
        assert_eq!(store.family_of("h3").await.expect("answers"), None);
        assert_eq!(store.family_of("h2").await.expect("answers").map(|f| f.1), Some(RefreshState::Revoked));
        assert_eq!(store.rotate("h2", "h5", TTL).await.expect("answers"), RotateOutcome::Revoked(family("f")));
        assert_eq!(store.rotate("h1", "h6", TTL).await.expect("answers"), RotateOutcome::Reused(family("f")));
        assert_eq!(store.rotate("nope", "h7", TTL).await.expect("answers"), RotateOutcome::Unknown);
        assert_eq!(store.family_of("nope").await.expect("answers"), None);

        assert!(!store.is_jti_revoked("j").await.expect("answers"));
        store.revoke_jti("j", TTL).await.expect("stores");
        assert!(store.is_jti_revoked("j").await.expect("answers"));
    }

    /// Entries expire with their ttl; a shorter revocation never shortens a longer one.
    pub(crate) async fn entries_expire(store: &dyn TokenStore) {
        let short = Duration::from_millis(30);
        store.put_refresh(&family("f"), "h1", short).await.expect("stores");
        store.revoke_jti("j", short).await.expect("stores");
        store.revoke_family("g", short).await.expect("stores");
        store.revoke_jti("long", TTL).await.expect("stores");
        store.revoke_jti("long", short).await.expect("stores");
        assert!(store.is_jti_revoked("j").await.expect("answers"));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(store.rotate("h1", "h2", TTL).await.expect("answers"), RotateOutcome::Unknown);
        assert_eq!(store.family_of("h1").await.expect("answers"), None);
        assert!(!store.is_jti_revoked("j").await.expect("answers"));
        assert!(!store.is_family_revoked("g").await.expect("answers"));
        assert!(store.is_jti_revoked("long").await.expect("answers"), "not shortened");
    }

    /// Every node presents the same token at once: exactly one rotates, the others see
    /// re-use, and the family ends revoked. `nodes` share one store.
    pub(crate) async fn concurrent_rotation(nodes: &[Arc<dyn TokenStore>]) {
        nodes[0].put_refresh(&family("f"), "h1", TTL).await.expect("stores");
        let barrier = Arc::new(tokio::sync::Barrier::new(nodes.len()));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, node) in nodes.iter().enumerate() {
            let (node, barrier) = (Arc::clone(node), Arc::clone(&barrier));
            tasks.spawn(async move {
                barrier.wait().await;
                (i, node.rotate("h1", &format!("n{i}"), TTL).await.expect("answers"))
            });
        }
        let outcomes = tasks.join_all().await;
        let winners: Vec<usize> =
            outcomes.iter().filter(|(_, o)| *o == RotateOutcome::Rotated(family("f"))).map(|(i, _)| *i).collect();
        assert_eq!(winners.len(), 1, "{outcomes:?}");
        let reused = outcomes.iter().filter(|(_, o)| *o == RotateOutcome::Reused(family("f"))).count();
        assert_eq!(reused, nodes.len() - 1, "{outcomes:?}");
        let last = &nodes[nodes.len() - 1];
        assert!(last.is_family_revoked("f").await.expect("answers"));
        for i in 0..nodes.len() {
            let state = last.family_of(&format!("n{i}")).await.expect("answers").map(|f| f.1);
            assert_eq!(state, (i == winners[0]).then_some(RefreshState::Revoked), "n{i}");
        }
    }

    #[tokio::test]
    async fn memory_rotation_chain_and_reuse() {
        rotation_chain_and_reuse(&MemoryTokenStore::default()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_concurrent_rotation() {
        let store: Arc<dyn TokenStore> = Arc::new(MemoryTokenStore::default());
        concurrent_rotation(&vec![store; 16]).await;
    }

    #[tokio::test]
    async fn memory_entries_expire() {
        let store = MemoryTokenStore::default();
        entries_expire(&store).await;

        // A sweep drops what expired.
        store.inner.lock().last_prune = None;
        store.revoke_jti("k", TTL).await.expect("stores");
        let t = store.inner.lock();
        assert!(t.refresh.is_empty() && t.families.is_empty() && t.revoked_families.is_empty());
        assert_eq!(t.revoked_jtis.len(), 2, "long and k");
    }
}
