//! Tokens and credentials of the chat gateway (contract §1): HS256 JWTs signed and
//! verified by key id, refresh-token families with re-use detection, revocation,
//! agent passwords and login lock-out.
//!
//! # Layout
//!
//! - [`roles`]: [`Role`] and its default token lifetimes.
//! - [`claims`]: the JWT payload ([`Claims`]) and room grants ([`pattern_matches`]).
//! - [`error`]: [`TokenError`], one variant per token error code.
//! - [`keys`]: [`Keyring`]: signing and verification with key rotation.
//! - [`store`]: [`TokenStore`]: families, refresh tokens and revocations
//!   ([`MemoryTokenStore`]; [`RedisTokenStore`] for a cluster).
//! - [`tokens`]: [`Authenticator`], the service the gateway calls: issue, verify with
//!   revocation, refresh, logout.
//! - [`agents`]: agent accounts ([`AgentStore`]) and argon2id password hashes.
//! - [`lockout`]: [`LoginThrottle`], failed-login lock-out.
//! - [`redis_store`]: the Redis implementations of the three stores, shared by the
//!   nodes of a cluster ([`RedisTokenStore`], [`RedisAgentStore`], [`RedisLoginThrottle`]).
//!
//! Nothing here logs or formats a secret: types that hold a token, password hash or
//! key implement `Debug` by hand and mask it.

#![forbid(unsafe_code)]

pub mod agents;
pub mod claims;
pub mod error;
pub mod keys;
pub mod lockout;
pub mod redis_store;
pub mod roles;
pub mod store;
pub mod tokens;

pub use agents::{
    dummy_hash, hash_password, verify_password, AgentRecord, AgentStore, AgentStoreError, MemoryAgentStore,
    PasswordError,
};
pub use claims::{pattern_matches, Audience, Claims};
pub use error::TokenError;
pub use keys::{IssuedToken, Keyring, KeyringConfig, KeyringError, Subject, TokenSpec};
pub use lockout::{LoginThrottle, MemoryLoginThrottle};
pub use redis_store::{RedisAgentStore, RedisLoginThrottle, RedisTokenStore};
pub use roles::{Role, UnknownRole};
pub use store::{Family, MemoryTokenStore, RefreshState, RotateOutcome, StoreError, TokenStore};
pub use tokens::{hash_refresh_token, AuthError, Authenticator, TokenPair, REFRESH_PREFIX, REFRESH_TTL};
