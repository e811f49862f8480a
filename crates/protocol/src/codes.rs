//! Error codes and WebSocket close codes: the stable strings and numbers clients see.

use serde::{Deserialize, Serialize};

/// Every error code of the contract (HTTP bodies, handshake headers, error frames,
/// close reasons). The string form is the SCREAMING_SNAKE name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    // token errors (§1)
    MissingToken,
    TokenMalformed,
    TokenExpired,
    TokenInvalid,
    TokenRevoked,
    // request and workflow errors (§2, §4)
    InvalidRequest,
    UnsupportedProtocol,
    Forbidden,
    NotFound,
    AlreadyAssigned,
    AlreadyExists,
    SessionClosed,
    MessageTooBig,
    RateLimited,
    Unavailable,
    InvalidCredentials,
    InvalidRefreshToken,
    MissingRoom,
    ServerBusy,
    Internal,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MissingToken => "MISSING_TOKEN",
            ErrorCode::TokenMalformed => "TOKEN_MALFORMED",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::TokenInvalid => "TOKEN_INVALID",
            ErrorCode::TokenRevoked => "TOKEN_REVOKED",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::UnsupportedProtocol => "UNSUPPORTED_PROTOCOL",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyAssigned => "ALREADY_ASSIGNED",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::SessionClosed => "SESSION_CLOSED",
            ErrorCode::MessageTooBig => "MESSAGE_TOO_BIG",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::InvalidCredentials => "INVALID_CREDENTIALS",
            ErrorCode::InvalidRefreshToken => "INVALID_REFRESH_TOKEN",
            ErrorCode::MissingRoom => "MISSING_ROOM",
            ErrorCode::ServerBusy => "SERVER_BUSY",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// The HTTP status this code answers with when a route has no more specific one.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::MissingToken
            | ErrorCode::TokenMalformed
            | ErrorCode::TokenExpired
            | ErrorCode::TokenInvalid
            | ErrorCode::TokenRevoked
            | ErrorCode::InvalidCredentials
            | ErrorCode::InvalidRefreshToken
            | ErrorCode::MissingRoom => 401,
            ErrorCode::InvalidRequest | ErrorCode::UnsupportedProtocol | ErrorCode::MessageTooBig => 400,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyAssigned | ErrorCode::AlreadyExists | ErrorCode::SessionClosed => 409,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable | ErrorCode::ServerBusy => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// The close code a connection is closed with for this reason (§3), where the
    /// reason can end a connection at all.
    pub const fn close_code(self) -> Option<CloseCode> {
        Some(match self {
            ErrorCode::MissingToken => CloseCode::AUTH,
            ErrorCode::TokenExpired => CloseCode::TOKEN_EXPIRED,
            ErrorCode::TokenInvalid | ErrorCode::TokenMalformed => CloseCode::TOKEN_INVALID,
            ErrorCode::TokenRevoked => CloseCode::TOKEN_REVOKED,
            ErrorCode::Forbidden => CloseCode::FORBIDDEN,
            ErrorCode::InvalidRequest | ErrorCode::MissingRoom => CloseCode::INVALID_REQUEST,
            ErrorCode::ServerBusy | ErrorCode::Unavailable => CloseCode::TRY_AGAIN_LATER,
            ErrorCode::RateLimited => CloseCode::RATE_LIMITED,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A WebSocket close code of the contract (§3), with the reason string that goes
/// with it. One code may carry several reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const INVALID_UTF8: CloseCode = CloseCode(1007);
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    pub const INVALID_REQUEST: CloseCode = CloseCode(4000);
    pub const AUTH: CloseCode = CloseCode(4001);
    pub const TOKEN_EXPIRED: CloseCode = CloseCode(4002);
    pub const TOKEN_INVALID: CloseCode = CloseCode(4003);
    pub const FORBIDDEN: CloseCode = CloseCode(4004);
    pub const TOKEN_REVOKED: CloseCode = CloseCode(4005);
    pub const RATE_LIMITED: CloseCode = CloseCode(4008);
    pub const HEARTBEAT_TIMEOUT: CloseCode = CloseCode(4010);
    pub const SLOW_CONSUMER: CloseCode = CloseCode(4011);
}

/// Why a connection is closed: the close code and the reason sent with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Normal,
    InvalidUtf8,
    MessageTooBig,
    ServiceRestart,
    ServerBusy,
    /// The shared store or bus (Redis) is unreachable: try again after a backoff.
    Unavailable,
    InvalidRequest,
    MissingRoom,
    MissingToken,
    AuthTimeout,
    TokenExpired,
    TokenInvalid,
    TokenMalformed,
    Forbidden,
    TokenRevoked,
    RateLimited,
    HeartbeatTimeout,
    SlowConsumer,
}

impl CloseReason {
    pub const fn code(self) -> CloseCode {
        match self {
            CloseReason::Normal => CloseCode::NORMAL,
            CloseReason::InvalidUtf8 => CloseCode::INVALID_UTF8,
            CloseReason::MessageTooBig => CloseCode::MESSAGE_TOO_BIG,
            CloseReason::ServiceRestart => CloseCode::SERVICE_RESTART,
            CloseReason::ServerBusy | CloseReason::Unavailable => CloseCode::TRY_AGAIN_LATER,
            CloseReason::InvalidRequest | CloseReason::MissingRoom => CloseCode::INVALID_REQUEST,
            CloseReason::MissingToken | CloseReason::AuthTimeout => CloseCode::AUTH,
            CloseReason::TokenExpired => CloseCode::TOKEN_EXPIRED,
            CloseReason::TokenInvalid | CloseReason::TokenMalformed => CloseCode::TOKEN_INVALID,
            CloseReason::Forbidden => CloseCode::FORBIDDEN,
            CloseReason::TokenRevoked => CloseCode::TOKEN_REVOKED,
            CloseReason::RateLimited => CloseCode::RATE_LIMITED,
            CloseReason::HeartbeatTimeout => CloseCode::HEARTBEAT_TIMEOUT,
            CloseReason::SlowConsumer => CloseCode::SLOW_CONSUMER,
        }
    }

    /// The reason string sent in the close frame: always the specific code in capitals.
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseReason::Normal => "NORMAL",
            CloseReason::InvalidUtf8 => "INVALID_UTF8",
            CloseReason::MessageTooBig => "MESSAGE_TOO_BIG",
            CloseReason::ServiceRestart => "SERVICE_RESTART",
            CloseReason::ServerBusy => "SERVER_BUSY",
            CloseReason::Unavailable => "UNAVAILABLE",
            CloseReason::InvalidRequest => "INVALID_REQUEST",
            CloseReason::MissingRoom => "MISSING_ROOM",
            CloseReason::MissingToken => "MISSING_TOKEN",
            CloseReason::AuthTimeout => "AUTH_TIMEOUT",
            CloseReason::TokenExpired => "TOKEN_EXPIRED",
            CloseReason::TokenInvalid => "TOKEN_INVALID",
            CloseReason::TokenMalformed => "TOKEN_MALFORMED",
            CloseReason::Forbidden => "FORBIDDEN",
            CloseReason::TokenRevoked => "TOKEN_REVOKED",
            CloseReason::RateLimited => "RATE_LIMITED",
            CloseReason::HeartbeatTimeout => "HEARTBEAT_TIMEOUT",
            CloseReason::SlowConsumer => "SLOW_CONSUMER",
        }
    }

    /// The close reason for a handshake error code, where one exists.
    pub const fn from_error(code: ErrorCode) -> Option<CloseReason> {
        Some(match code {
            ErrorCode::MissingToken => CloseReason::MissingToken,
            ErrorCode::TokenExpired => CloseReason::TokenExpired,
            ErrorCode::TokenInvalid => CloseReason::TokenInvalid,
            ErrorCode::TokenMalformed => CloseReason::TokenMalformed,
            ErrorCode::TokenRevoked => CloseReason::TokenRevoked,
            ErrorCode::Forbidden => CloseReason::Forbidden,
            ErrorCode::InvalidRequest => CloseReason::InvalidRequest,
            ErrorCode::MissingRoom => CloseReason::MissingRoom,
            ErrorCode::ServerBusy => CloseReason::ServerBusy,
            ErrorCode::Unavailable => CloseReason::Unavailable,
            ErrorCode::RateLimited => CloseReason::RateLimited,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_name_matches_as_str() {
        for code in [ErrorCode::MissingToken, ErrorCode::InvalidRefreshToken, ErrorCode::UnsupportedProtocol] {
            let json = serde_json::to_string(&code).expect("serializes");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn handshake_reasons_map_to_contract_close_codes() {
        let table = [
            (ErrorCode::MissingToken, 4001),
            (ErrorCode::MissingRoom, 4000),
            (ErrorCode::TokenExpired, 4002),
            (ErrorCode::TokenInvalid, 4003),
            (ErrorCode::TokenMalformed, 4003),
            (ErrorCode::TokenRevoked, 4005),
            (ErrorCode::Forbidden, 4004),
            (ErrorCode::ServerBusy, 1013),
        ];
        for (code, close) in table {
            let reason = CloseReason::from_error(code).expect("handshake code has a close reason");
            assert_eq!(reason.code().0, close, "{code}");
            assert_eq!(reason.as_str(), code.as_str());
        }
    }
}
