//! Why a token was refused, as the contract's token error codes (§1).

use protocol::ErrorCode;

/// A refused token. `Display` (and [`TokenError::message`]) is the human text sent to
/// clients; it never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token where one is required.
    #[error(
        "no token was sent: pass one as `Authorization: Bearer <token>`, \
         as the WebSocket subprotocol `bearer.<token>` or as the `token` query parameter"
    )]
    Missing,
    /// Not a JWT at all.
    #[error("the token is not a JWT: expected three base64url parts `header.payload.signature`")]
    Malformed,
    /// Signature fine, but `exp` plus the allowed clock skew has passed.
    #[error(
        "the token has expired (its `exp` time plus the allowed clock skew has passed): \
         refresh it or request a new one"
    )]
    Expired,
    /// A well-formed JWT that cannot be trusted; the text says what is wrong.
    #[error("the token is invalid: {0}; request a new token")]
    Invalid(String),
    /// Logged out, family revoked, or user disabled.
    #[error("the token has been revoked (logged out or its session ended): log in again")]
    Revoked,
}

impl TokenError {
    /// The contract's error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Missing => ErrorCode::MissingToken,
            TokenError::Malformed => ErrorCode::TokenMalformed,
            TokenError::Expired => ErrorCode::TokenExpired,
            TokenError::Invalid(_) => ErrorCode::TokenInvalid,
            TokenError::Revoked => ErrorCode::TokenRevoked,
        }
    }

    /// The human text for the error body, header or close frame.
    pub fn message(&self) -> String {
        self.to_string()
    }

    pub(crate) fn invalid(why: impl Into<String>) -> Self {
        TokenError::Invalid(why.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        assert_eq!(TokenError::Missing.code(), ErrorCode::MissingToken);
        assert_eq!(TokenError::Malformed.code(), ErrorCode::TokenMalformed);
        assert_eq!(TokenError::Expired.code(), ErrorCode::TokenExpired);
        assert_eq!(TokenError::Revoked.code(), ErrorCode::TokenRevoked);
        let invalid = TokenError::invalid("bad signature");
        assert_eq!(invalid.code(), ErrorCode::TokenInvalid);
        assert!(invalid.message().contains("bad signature"));
        assert!(TokenError::Malformed.message().contains("`header.payload.signature`"));
    }
}
