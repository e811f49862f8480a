//! Agent credentials: records, their store, and argon2id password hashes.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// An agent account. `Debug` masks the password hash.
#[derive(Clone, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    /// Login name; unique (compared exactly).
    pub username: String,
    /// Display name.
    pub name: String,
    /// argon2id PHC string from [`hash_password`].
    pub password_hash: String,
    /// A disabled agent cannot log in.
    pub disabled: bool,
}

impl fmt::Debug for AgentRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// Why an agent could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AgentStoreError {
    /// The username (or id) is taken.
    #[error("an agent with this username already exists")]
    AlreadyExists,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Agent accounts. `create` is atomic: of two concurrent creations with one username,
/// exactly one succeeds.
#[async_trait::async_trait]
pub trait AgentStore: Send + Sync + 'static {
    async fn create(&self, record: AgentRecord) -> Result<(), AgentStoreError>;
    async fn by_username(&self, username: &str) -> Result<Option<AgentRecord>, StoreError>;
    async fn by_id(&self, id: &str) -> Result<Option<AgentRecord>, StoreError>;
}

/// The single-node [`AgentStore`].
#[derive(Debug, Default)]
pub struct MemoryAgentStore {
    inner: Mutex<AgentTables>,
}

#[derive(Debug, Default)]
struct AgentTables {
    /// Agent id → record.
    by_id: HashMap<String, AgentRecord>,
    /// Username → agent id.
    by_username: HashMap<String, String>,
}

#[async_trait::async_trait]
impl AgentStore for MemoryAgentStore {
    async fn create(&self, record: AgentRecord) -> Result<(), AgentStoreError> {
        let mut t = self.inner.lock();
        if t.by_username.contains_key(&record.username) || t.by_id.contains_key(&record.id) {
            return Err(AgentStoreError::AlreadyExists);
        }
        t.by_username.insert(record.username.clone(), record.id.clone());
        t.by_id.insert(record.id.clone(), record);
        Ok(())
    }

    async fn by_username(&self, username: &str) -> Result<Option<AgentRecord>, StoreError> {
        let t = self.inner.lock();
        Ok(t.by_username.get(username).and_then(|id| t.by_id.get(id)).cloned())
    }

    async fn by_id(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        Ok(self.inner.lock().by_id.get(id).cloned())
    }
}

/// Hashing a password failed (it does not with valid parameters; kept typed anyway).
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct PasswordError(String);

/// argon2id with the OWASP parameters: 19 MiB, 2 passes, 1 lane.
fn argon2() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(19_456, 2, 1, None).map_err(|e| PasswordError(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// An argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) with a random
/// 16-byte salt. Slow on purpose (tens of milliseconds): call it off the event loop.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let salt: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError(e.to_string()))?;
    let hash = argon2()?.hash_password(password.as_bytes(), &salt).map_err(|e| PasswordError(e.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string, in constant time; `false` for anything
/// that is not a valid PHC string. The parameters come from the string itself.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// A PHC hash of a random password, to verify against when the username is unknown,
/// so that an unknown username takes as long as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let password = uuid::Uuid::new_v4().simple().to_string();
        // Cannot fail: the parameters are valid constants and the salt is 16 bytes.
        hash_password(&password).expect("argon2 accepts constant parameters")
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn password_round_trip() {
        let phc = hash_password("correct horse").expect("hashes");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert_ne!(phc, hash_password("correct horse").expect("hashes"), "salted");
    }

    #[test]
    fn garbage_hashes_never_verify() {
        for phc in ["", "plain", "$argon2id$v=19$m=19456,t=2,p=1$bad", "$2b$12$abcdefghijklmnopqrstuv"] {
            assert!(!verify_password("x", phc), "{phc}");
        }
        assert!(!verify_password("", dummy_hash()));
        assert_eq!(dummy_hash(), dummy_hash());
    }

    pub(crate) fn record(id: &str, username: &str) -> AgentRecord {
        AgentRecord {
            id: id.into(),
            username: username.into(),
            name: "Ada".into(),
            password_hash: "$argon2id$secret-hash".into(),
            disabled: false,
        }
    }

    /// Behaviour every [`AgentStore`] shares (the Redis one runs it in `crate::redis_store`).
    pub(crate) async fn agent_store(store: &dyn AgentStore) {
        store.create(record("a1", "ada")).await.expect("creates");
        assert!(matches!(store.create(record("a2", "ada")).await, Err(AgentStoreError::AlreadyExists)));
        assert!(matches!(store.create(record("a1", "bob")).await, Err(AgentStoreError::AlreadyExists)));
        assert!(store.by_username("bob").await.expect("answers").is_none(), "a failed create leaves nothing");
        let ada = store.by_username("ada").await.expect("answers").expect("found");
        assert_eq!(
            (ada.id.as_str(), ada.name.as_str(), ada.password_hash.as_str()),
            ("a1", "Ada", "$argon2id$secret-hash")
        );
        assert!(!ada.disabled);
        assert_eq!(store.by_id("a1").await.expect("answers").map(|r| r.username), Some("ada".into()));
        assert!(store.by_id("a2").await.expect("answers").is_none());
        assert!(!format!("{:?}", record("a1", "ada")).contains("secret-hash"));
    }

    #[tokio::test]
    async fn memory_agent_store() {
        agent_store(&MemoryAgentStore::default()).await;
    }
}
