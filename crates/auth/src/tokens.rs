//! The token service the gateway calls: issue, verify with revocation, refresh, logout.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use protocol::ErrorCode;
use sha2::{Digest, Sha256};

use crate::keys::unix_now;
use crate::Subject;
use crate::{Claims, Family, IssuedToken, Keyring, Role, RotateOutcome, StoreError, TokenError, TokenSpec, TokenStore};

/// Lifetime of a refresh token, and so of a family that keeps refreshing.
pub const REFRESH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Prefix of every refresh token, so that it is never mistaken for a JWT.
pub const REFRESH_PREFIX: &str = "rt_";

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Unknown or expired refresh token, or one of another customer.
    #[error("the refresh token is unknown or expired: log in or request a new token")]
    InvalidRefreshToken,
    /// A spent refresh token was presented again: this call revoked its family (code
    /// `TOKEN_REVOKED`). Carries the family so that the caller can close its live
    /// connections.
    #[error("this refresh token was already used, so its session was revoked: log in again")]
    FamilyRevoked(Box<Family>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AuthError {
    /// The contract's error code; a store failure is `UNAVAILABLE`.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Token(e) => e.code(),
            AuthError::InvalidRefreshToken => ErrorCode::InvalidRefreshToken,
            AuthError::FamilyRevoked(_) => ErrorCode::TokenRevoked,
            AuthError::Store(_) => ErrorCode::Unavailable,
        }
    }

    /// The human text for the error body.
    pub fn message(&self) -> String {
        match self {
            AuthError::Store(_) => "the token store is unavailable: try again shortly".to_owned(),
            other => other.to_string(),
        }
    }
}

/// An access token and the refresh token that renews it. `Debug` masks both tokens.
#[derive(Clone)]
pub struct TokenPair {
    pub access: IssuedToken,
    pub refresh_token: String,
    pub family: Family,
}

impl fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPair")
            .field("access", &self.access)
            .field("refresh_token", &"<redacted>")
            .field("family", &self.family)
            .finish()
    }
}

/// The token service: a [`Keyring`] for signatures plus a [`TokenStore`] for families
/// and revocations.
pub struct Authenticator {
    keyring: Keyring,
    store: Arc<dyn TokenStore>,
    /// Lifetime of each refresh token ([`REFRESH_TTL`]).
    refresh_ttl: Duration,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("keyring", &self.keyring)
            .field("refresh_ttl", &self.refresh_ttl)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(keyring: Keyring, store: Arc<dyn TokenStore>) -> Self {
        Authenticator { keyring, store, refresh_ttl: REFRESH_TTL }
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Starts a family (customer-token, login): a new family id, an access token with
    /// `fam` = that id, and its first refresh token.
    pub async fn open_family(&self, subject: Subject) -> Result<TokenPair, AuthError> {
        let family = Family { id: uuid::Uuid::new_v4().simple().to_string(), subject };
        let access = self.issue_for(&family)?;
        let refresh_token = new_refresh_token();
        self.store.put_refresh(&family, &hash_refresh_token(&refresh_token), self.refresh_ttl).await?;
        Ok(TokenPair { access, refresh_token, family })
    }

    /// Spends `presented` for a new pair. Unknown or expired: `InvalidRefreshToken`.
    /// Already spent (re-use): the family is revoked and the answer is
    /// `FamilyRevoked(family)`; an unspent token of a family revoked earlier answers
    /// `Token(Revoked)`. Both have the code `TOKEN_REVOKED`. With `expected_sub`
    /// (the customer route), a token of another subject is `InvalidRefreshToken` and
    /// is neither spent nor revoked.
    pub async fn refresh(&self, presented: &str, expected_sub: Option<&str>) -> Result<TokenPair, AuthError> {
        if !presented.starts_with(REFRESH_PREFIX) {
            return Err(AuthError::InvalidRefreshToken);
        }
        let hash = hash_refresh_token(presented);
        if let Some(expected) = expected_sub {
            // A family's subject never changes, so checking before rotating is safe.
            match self.store.family_of(&hash).await? {
                Some((family, _)) if family.subject.sub == expected => {}
                _ => return Err(AuthError::InvalidRefreshToken),
            }
        }
        let refresh_token = new_refresh_token();
        match self.store.rotate(&hash, &hash_refresh_token(&refresh_token), self.refresh_ttl).await? {
            RotateOutcome::Rotated(family) => {
                let access = self.issue_for(&family)?;
                Ok(TokenPair { access, refresh_token, family })
            }
            RotateOutcome::Unknown => Err(AuthError::InvalidRefreshToken),
            RotateOutcome::Reused(family) => {
                // The store revoked the family for the refresh lifetime; make sure the
                // revocation also outlives the family's access tokens.
                self.store.revoke_family(&family.id, self.family_revocation_ttl(family.subject.role)).await?;
                Err(AuthError::FamilyRevoked(Box::new(family)))
            }
            RotateOutcome::Revoked(_) => Err(TokenError::Revoked.into()),
        }
    }

    /// Verifies signature and claims ([`Keyring::verify`]), then revocation: a revoked
    /// family (`fam`) or a revoked `jti` is `Token(Revoked)`.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let claims = self.keyring.verify(token)?;
        if let Some(fam) = &claims.fam {
            if self.store.is_family_revoked(fam).await? {
                return Err(TokenError::Revoked.into());
            }
        }
        if let Some(jti) = &claims.jti {
            if self.store.is_jti_revoked(jti).await? {
                return Err(TokenError::Revoked.into());
            }
        }
        Ok(claims)
    }

    /// Logout: revokes the token's family (its access and refresh tokens) if it has
    /// `fam`, else the token itself by `jti`; a token with neither cannot be revoked
    /// and this is a no-op. A revocation lasts as long as any token it covers may live.
    pub async fn revoke(&self, claims: &Claims) -> Result<(), AuthError> {
        if let Some(fam) = &claims.fam {
            self.store.revoke_family(fam, self.family_revocation_ttl(claims.role)).await?;
        } else if let Some(jti) = &claims.jti {
            let lives_for = claims
                .exp
                .saturating_add(i64::try_from(self.keyring.leeway_secs()).unwrap_or(i64::MAX))
                .saturating_sub(unix_now());
            let secs = u64::try_from(lives_for).unwrap_or(0).max(1);
            self.store.revoke_jti(jti, Duration::from_secs(secs)).await?;
        }
        Ok(())
    }

    /// A token outside any family (`/get/token`, the CLI).
    pub fn issue(&self, spec: TokenSpec) -> Result<IssuedToken, AuthError> {
        Ok(self.keyring.issue(spec)?)
    }

    /// An access token of `family`, with the role's default lifetime.
    fn issue_for(&self, family: &Family) -> Result<IssuedToken, TokenError> {
        self.keyring.issue(TokenSpec { subject: family.subject.clone(), fam: Some(family.id.clone()), ttl: None })
    }

    /// Long enough to outlive every token of a family revoked now: its live refresh
    /// tokens (so no new access token is issued) and the access tokens already issued.
    fn family_revocation_ttl(&self, role: Role) -> Duration {
        self.refresh_ttl.max(role.default_ttl()) + Duration::from_secs(self.keyring.leeway_secs())
    }
}

/// A new opaque refresh token: `rt_` and 32 random bytes, base64url without padding.
fn new_refresh_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of a refresh token: lower-case hex SHA-256.
pub fn hash_refresh_token(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::keyring;
    use crate::MemoryTokenStore;

    fn service() -> Authenticator {
        Authenticator::new(keyring(), Arc::new(MemoryTokenStore::default()))
    }

    fn customer(id: &str) -> Subject {
        Subject { channel: Some("web".into()), sid: Some("s1".into()), ..Subject::new(id, Role::Customer) }
    }

    fn is_revoked<T: fmt::Debug>(result: Result<T, AuthError>) -> bool {
        matches!(result, Err(AuthError::Token(TokenError::Revoked)))
    }

    fn is_reuse<T: fmt::Debug>(result: Result<T, AuthError>, family: &Family) -> bool {
        matches!(result, Err(AuthError::FamilyRevoked(f)) if *f == *family)
    }

    #[tokio::test]
    async fn open_family_issues_a_family_token_and_a_refresh_token() {
        let auth = service();
        let pair = auth.open_family(customer("c1")).await.expect("opens");
        assert_eq!(pair.access.claims.fam.as_deref(), Some(pair.family.id.as_str()));
        assert_eq!(pair.access.claims.channel.as_deref(), Some("web"));
        assert!(pair.refresh_token.starts_with("rt_"));
        assert_eq!(pair.refresh_token.len(), 3 + 43);
        assert_eq!(auth.verify(&pair.access.token).await.expect("valid"), pair.access.claims);
        let debug = format!("{pair:?}");
        assert!(!debug.contains(&pair.refresh_token) && !debug.contains(&pair.access.token));
    }

    #[tokio::test]
    async fn refresh_rotates() {
        let auth = service();
        let first = auth.open_family(customer("c1")).await.expect("opens");
        let second = auth.refresh(&first.refresh_token, None).await.expect("rotates");
        assert_ne!(second.refresh_token, first.refresh_token);
        assert_ne!(second.access.token, first.access.token);
        assert_eq!(second.family, first.family);
        let third = auth.refresh(&second.refresh_token, Some("c1")).await.expect("rotates");
        assert_eq!(third.access.claims.sub, "c1");
    }

    #[tokio::test]
    async fn reuse_revokes_the_whole_family_only() {
        let auth = service();
        let first = auth.open_family(customer("c1")).await.expect("opens");
        let other = auth.open_family(customer("c2")).await.expect("opens");
        let second = auth.refresh(&first.refresh_token, None).await.expect("rotates");

        let reuse = auth.refresh(&first.refresh_token, None).await;
        assert_eq!(reuse.as_ref().map_err(AuthError::code).err(), Some(ErrorCode::TokenRevoked));
        assert!(is_reuse(reuse, &first.family), "re-use");
        assert!(is_revoked(auth.refresh(&second.refresh_token, None).await), "newest refresh token");
        assert!(is_revoked(auth.verify(&first.access.token).await));
        assert!(is_revoked(auth.verify(&second.access.token).await));
        let again = auth.refresh(&first.refresh_token, None).await;
        assert!(is_reuse(again, &first.family), "still re-use");

        assert!(auth.verify(&other.access.token).await.is_ok());
        assert!(auth.refresh(&other.refresh_token, None).await.is_ok());
    }

    #[tokio::test]
    async fn unknown_refresh_token() {
        let auth = service();
        for presented in ["rt_nope", "", "eyJhbGciOi.x.y"] {
            let err = auth.refresh(presented, None).await.expect_err("refused");
            assert!(matches!(err, AuthError::InvalidRefreshToken));
            assert_eq!(err.code(), ErrorCode::InvalidRefreshToken);
        }
    }

    #[tokio::test]
    async fn foreign_subject_neither_spends_nor_revokes() {
        let auth = service();
        let pair = auth.open_family(customer("c1")).await.expect("opens");
        let err = auth.refresh(&pair.refresh_token, Some("c2")).await.expect_err("refused");
        assert!(matches!(err, AuthError::InvalidRefreshToken));
        assert!(auth.verify(&pair.access.token).await.is_ok());
        auth.refresh(&pair.refresh_token, Some("c1")).await.expect("the owner still rotates it");
    }

    #[tokio::test]
    async fn logout_revokes_the_family() {
        let auth = service();
        let pair = auth.open_family(Subject::new("a1", Role::Agent)).await.expect("opens");
        let claims = auth.verify(&pair.access.token).await.expect("valid");
        auth.revoke(&claims).await.expect("revokes");
        assert!(is_revoked(auth.verify(&pair.access.token).await));
        assert!(is_revoked(auth.refresh(&pair.refresh_token, None).await));
    }

    #[tokio::test]
    async fn logout_of_a_familyless_token_revokes_its_jti() {
        let auth = service();
        let a = auth.issue(TokenSpec::new("d1", Role::Device)).expect("signs");
        let b = auth.issue(TokenSpec::new("d1", Role::Device)).expect("signs");
        auth.revoke(&a.claims).await.expect("revokes");
        assert!(is_revoked(auth.verify(&a.token).await));
        assert!(auth.verify(&b.token).await.is_ok());
        let mut bare = b.claims.clone();
        bare.jti = None;
        auth.revoke(&bare).await.expect("nothing to revoke is fine");
    }

    #[tokio::test]
    async fn store_failures_are_unavailable() {
        let err = AuthError::from(StoreError::Unavailable("redis down".into()));
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert_eq!(AuthError::from(TokenError::Expired).code(), ErrorCode::TokenExpired);
    }

    #[test]
    fn refresh_tokens_are_stored_as_hex_sha256() {
        let hash = hash_refresh_token("rt_abc");
        assert_eq!(hash.len(), 64);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(new_refresh_token(), new_refresh_token());
    }
}
