//! What travels on the bridge's pub/sub channels: one header line of JSON, then the
//! frame exactly as clients get it (encoded once, never re-encoded on the way).
//!
//! Channels (`P` = `redis.key_prefix`): `P:room:<room>` (notices, room presence),
//! `P:user:<user>` (chat deliveries, revocations, liveness), `P:agents`
//! (`session.queued`).

use serde::{Deserialize, Serialize};

/// The header of a relayed item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Kind: `n` notice, `p` room broadcast, `f` frame, `m` chat message, `t` track,
    /// `r` revoke, `h` heartbeat (liveness).
    pub k: char,
    /// Seq of a notice or chat message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<u64>,
    /// Session of a chat message or track.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s: Option<String>,
    /// `after` of a track.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<u64>,
    /// Skip: a connection `<node>/<id>` (user items) or a user id (room broadcasts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Token family (revoke).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f: Option<String>,
    /// Token id (revoke, heartbeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub j: Option<String>,
}

pub fn encode(header: &Header, body: &str) -> Vec<u8> {
    let mut out = serde_json::to_vec(header).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(body.as_bytes());
    out
}

pub fn decode(payload: &[u8]) -> Option<(Header, &str)> {
    let split = payload.iter().position(|b| *b == b'\n')?;
    let header = serde_json::from_slice(&payload[..split]).ok()?;
    let body = std::str::from_utf8(&payload[split + 1..]).ok()?;
    Some((header, body))
}

pub fn room_channel(prefix: &str, room: &str) -> String {
    format!("{prefix}:room:{room}")
}

pub fn user_channel(prefix: &str, user: &str) -> String {
    format!("{prefix}:user:{user}")
}

pub fn agents_channel(prefix: &str) -> String {
    format!("{prefix}:agents")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_body_verbatim() {
        let h = Header { k: 'm', q: Some(7), s: Some("s1".into()), x: Some("n1/3".into()), ..Header::default() };
        let body = "{\"type\":\"message\",\"text\":\"a\\nb\"}";
        let bytes = encode(&h, body);
        let (back, text) = decode(&bytes).expect("decodes");
        assert_eq!((back, text), (h, body));
        assert!(decode(b"no newline").is_none());
    }
}
