//! WebSocket endpoints (§3): `/ws/chat` (two-way chat) and `/ws` (push-only).
//!
//! - [`handshake`]: token sources, the failure table in both `handshake_errors` modes.
//! - [`connection`]: the connection actor (the only user of actix-web-actors).
//! - [`deadlines`]: heartbeat, authentication deadline and token expiry behind one timer.

pub mod connection;
mod deadlines;
pub mod handshake;
pub mod sequencer;
pub mod socket;

use std::sync::Arc;

use auth::Claims;
use protocol::UserRef;

/// Which endpoint a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Push,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Push => "push",
        }
    }
}

/// Who a connection (or a request) is: the verified claims and how frames show the user.
#[derive(Debug, Clone)]
pub struct Identity {
    pub claims: Arc<Claims>,
    pub user: UserRef,
    pub user_id: Arc<str>,
    pub name: Arc<str>,
}

/// Longest room name accepted.
pub const MAX_ROOM_LEN: usize = 200;

/// A room name: 1..=200 characters, no whitespace or control characters.
pub fn validate_room(room: &str) -> Result<(), String> {
    if room.is_empty() {
        return Err("the room name is empty".into());
    }
    if room.len() > MAX_ROOM_LEN {
        return Err(format!("room names are at most {MAX_ROOM_LEN} bytes"));
    }
    if room.chars().any(|c| c.is_whitespace() || c.is_control() || c == ',') {
        return Err("room names contain no whitespace, commas or control characters".into());
    }
    Ok(())
}
