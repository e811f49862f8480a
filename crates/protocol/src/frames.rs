//! Frames (§4): what clients send, what the server sends, and their encoding.
//!
//! Client frames are parsed in two steps: a cheap scan of `type` and `id` (so that
//! even a frame with bad fields can be answered with its `ref`), then the frame's
//! own fields. Server frames are serialized once into a [`ByteString`] that every
//! recipient shares.

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::codes::ErrorCode;

/// A client frame's `id`, echoed as `ref` in the answer. Strings and integers are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FrameId {
    Str(String),
    Num(i64),
}

impl std::fmt::Display for FrameId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameId::Str(s) => f.write_str(s),
            FrameId::Num(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    id: Option<FrameId>,
}

/// Agent availability (`status` frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Available,
    Away,
}

/// A parsed client frame.
#[derive(Debug)]
pub enum ClientFrame {
    Hello { protocol_version: Option<i64> },
    Auth { token: String },
    Login { username: String, password: String },
    Message { session_id: String, text: String },
    Delivered { session_id: String, up_to_seq: u64 },
    Read { session_id: String, up_to_seq: u64 },
    Typing { session_id: String, active: bool },
    Subscribe { room: String, since: Option<u64> },
    Unsubscribe { room: String },
    Publish { room: String, data: Box<RawValue>, event: Option<String> },
    SessionSwitch { session_id: String },
    SessionClaim { session_id: String },
    SessionTransfer { session_id: String, to_agent_id: String },
    SessionClose { session_id: String },
    Status { status: AgentStatus },
    Ping,
}

impl ClientFrame {
    /// Frames that must carry an `id` (§4).
    pub fn requires_id(&self) -> bool {
        matches!(
            self,
            ClientFrame::Message { .. }
                | ClientFrame::Publish { .. }
                | ClientFrame::SessionSwitch { .. }
                | ClientFrame::SessionClaim { .. }
                | ClientFrame::SessionTransfer { .. }
                | ClientFrame::SessionClose { .. }
        )
    }

    /// The frame's `type` name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Hello { .. } => "hello",
            ClientFrame::Auth { .. } => "auth",
            ClientFrame::Login { .. } => "login",
            ClientFrame::Message { .. } => "message",
            ClientFrame::Delivered { .. } => "delivered",
            ClientFrame::Read { .. } => "read",
            ClientFrame::Typing { .. } => "typing",
            ClientFrame::Subscribe { .. } => "subscribe",
            ClientFrame::Unsubscribe { .. } => "unsubscribe",
            ClientFrame::Publish { .. } => "publish",
            ClientFrame::SessionSwitch { .. } => "session.switch",
            ClientFrame::SessionClaim { .. } => "session.claim",
            ClientFrame::SessionTransfer { .. } => "session.transfer",
            ClientFrame::SessionClose { .. } => "session.close",
            ClientFrame::Status { .. } => "status",
            ClientFrame::Ping => "ping",
        }
    }
}

/// A frame that could not be parsed: the error to answer with, and the `id` to
/// answer to when the frame had a readable one.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub id: Option<FrameId>,
    pub code: ErrorCode,
    pub message: String,
}

/// A client frame with its optional `id`.
#[derive(Debug)]
pub struct Inbound {
    pub id: Option<FrameId>,
    pub frame: ClientFrame,
}

mod wire {
    //! The fields of each client frame, as sent (camelCase).
    use super::*;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Hello {
        pub protocol_version: Option<i64>,
    }
    #[derive(Deserialize)]
    pub struct Auth {
        pub token: String,
    }
    #[derive(Deserialize)]
    pub struct Login {
        pub username: String,
        pub password: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Message {
        pub session_id: String,
        pub text: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Cursor {
        pub session_id: String,
        pub up_to_seq: u64,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Typing {
        pub session_id: String,
        pub active: bool,
    }
    #[derive(Deserialize)]
    pub struct Subscribe {
        pub room: String,
        pub since: Option<u64>,
    }
    #[derive(Deserialize)]
    pub struct Unsubscribe {
        pub room: String,
    }
    #[derive(Deserialize)]
    pub struct Publish {
        pub room: String,
        pub data: Box<RawValue>,
        pub event: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct SessionRef {
        pub session_id: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Transfer {
        pub session_id: String,
        pub to_agent_id: String,
    }
    #[derive(Deserialize)]
    pub struct Status {
        pub status: AgentStatus,
    }
}

/// Parse one client text frame.
pub fn parse_client_frame(text: &str) -> Result<Inbound, FrameError> {
    let head: Head = serde_json::from_str(text).map_err(|e| FrameError {
        id: None,
        code: ErrorCode::InvalidRequest,
        message: if e.is_data() {
            "a frame must be a JSON object with a string `type` (and an optional string or integer `id`)".into()
        } else {
            format!("invalid JSON: {e}")
        },
    })?;
    let id = head.id;
    let Some(kind) = head.kind else {
        return Err(FrameError { id, code: ErrorCode::InvalidRequest, message: "the frame has no `type`".into() });
    };
    let fields = |e: serde_json::Error| e.to_string();
    let frame: Result<ClientFrame, String> = match kind.as_ref() {
        "hello" => serde_json::from_str::<wire::Hello>(text)
            .map(|f| ClientFrame::Hello { protocol_version: f.protocol_version })
            .map_err(fields),
        "auth" => {
            serde_json::from_str::<wire::Auth>(text).map(|f| ClientFrame::Auth { token: f.token }).map_err(fields)
        }
        "login" => serde_json::from_str::<wire::Login>(text)
            .map(|f| ClientFrame::Login { username: f.username, password: f.password })
            .map_err(fields),
        "message" => serde_json::from_str::<wire::Message>(text)
            .map(|f| ClientFrame::Message { session_id: f.session_id, text: f.text })
            .map_err(fields),
        "delivered" => serde_json::from_str::<wire::Cursor>(text)
            .map(|f| ClientFrame::Delivered { session_id: f.session_id, up_to_seq: f.up_to_seq })
            .map_err(fields),
        "read" => serde_json::from_str::<wire::Cursor>(text)
            .map(|f| ClientFrame::Read { session_id: f.session_id, up_to_seq: f.up_to_seq })
            .map_err(fields),
        "typing" => serde_json::from_str::<wire::Typing>(text)
            .map(|f| ClientFrame::Typing { session_id: f.session_id, active: f.active })
            .map_err(fields),
        "subscribe" => serde_json::from_str::<wire::Subscribe>(text)
            .map(|f| ClientFrame::Subscribe { room: f.room, since: f.since })
            .map_err(fields),
        "unsubscribe" => serde_json::from_str::<wire::Unsubscribe>(text)
            .map(|f| ClientFrame::Unsubscribe { room: f.room })
            .map_err(fields),
        "publish" => serde_json::from_str::<wire::Publish>(text)
            .map(|f| ClientFrame::Publish { room: f.room, data: f.data, event: f.event })
            .map_err(fields),
        "session.switch" => serde_json::from_str::<wire::SessionRef>(text)
            .map(|f| ClientFrame::SessionSwitch { session_id: f.session_id })
            .map_err(fields),
        "session.claim" => serde_json::from_str::<wire::SessionRef>(text)
            .map(|f| ClientFrame::SessionClaim { session_id: f.session_id })
            .map_err(fields),
        "session.transfer" => serde_json::from_str::<wire::Transfer>(text)
            .map(|f| ClientFrame::SessionTransfer { session_id: f.session_id, to_agent_id: f.to_agent_id })
            .map_err(fields),
        "session.close" => serde_json::from_str::<wire::SessionRef>(text)
            .map(|f| ClientFrame::SessionClose { session_id: f.session_id })
            .map_err(fields),
        "status" => {
            serde_json::from_str::<wire::Status>(text).map(|f| ClientFrame::Status { status: f.status }).map_err(fields)
        }
        "ping" => Ok(ClientFrame::Ping),
        other => {
            return Err(FrameError {
                id,
                code: ErrorCode::InvalidRequest,
                message: format!("unknown frame type `{}`", truncate(other, 64)),
            })
        }
    };
    match frame {
        Ok(frame) => {
            if id.is_none() && frame.requires_id() {
                return Err(FrameError {
                    id: None,
                    code: ErrorCode::InvalidRequest,
                    message: format!("a `{}` frame needs an `id`", frame.kind()),
                });
            }
            Ok(Inbound { id, frame })
        }
        Err(why) => Err(FrameError {
            id,
            code: ErrorCode::InvalidRequest,
            message: format!("bad `{}` frame: {why}", truncate(&kind, 64)),
        }),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

// ------------------------------------------------------------------ server frames

/// A user as shown in frames: `{id, role, name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: String,
    pub role: String,
    pub name: String,
}

/// Serialize a server frame once; the bytes are shared by every recipient.
pub fn encode<T: Serialize>(frame: &T) -> ByteString {
    // Serializing our own frame types cannot fail: they hold no maps with non-string
    // keys and no failing Serialize impls.
    match serde_json::to_string(frame) {
        Ok(s) => ByteString::from(s),
        Err(_) => ByteString::from_static(r#"{"type":"error","code":"INTERNAL","message":"encoding failed"}"#),
    }
}

/// `{type:"error", ref?, code, message}`
#[derive(Debug, Serialize)]
pub struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<&'a FrameId>,
    pub code: ErrorCode,
    pub message: &'a str,
}

impl<'a> ErrorFrame<'a> {
    pub fn new(reference: Option<&'a FrameId>, code: ErrorCode, message: &'a str) -> Self {
        ErrorFrame { kind: "error", reference, code, message }
    }
}

/// `{type:"ok", ref, ...extra}`; `extra` fields are flattened in.
#[derive(Debug, Serialize)]
pub struct OkFrame<'a, T: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "ref")]
    pub reference: &'a FrameId,
    #[serde(flatten)]
    pub extra: T,
}

impl<'a, T: Serialize> OkFrame<'a, T> {
    pub fn new(reference: &'a FrameId, extra: T) -> Self {
        OkFrame { kind: "ok", reference, extra }
    }
}

/// No extra fields in an `ok`.
#[derive(Debug, Serialize)]
pub struct Empty {}

/// `{type:"hello", ...}`: the first frame of every connection.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloFrame<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub connection_id: &'a str,
    pub node: &'a str,
    pub authenticated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a UserRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub heartbeat_interval_ms: u64,
    pub protocol_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a str>,
}

/// `{type:"authenticated", ref?, user, expiresAt}`
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticatedFrame<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<&'a FrameId>,
    pub user: &'a UserRef,
    pub expires_at: String,
}

/// `{type:"notice", room, seq, event?, data, ts}`: one room broadcast.
#[derive(Debug, Serialize)]
pub struct NoticeFrame<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub room: &'a str,
    pub seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'a str>,
    pub data: &'a RawValue,
    pub ts: &'a str,
}

/// `{type:"subscribed", ref?, room, seq, recovered, missed}`
#[derive(Debug, Serialize)]
pub struct SubscribedFrame<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<&'a FrameId>,
    pub room: &'a str,
    pub seq: u64,
    pub recovered: bool,
    pub missed: u64,
}

/// `{type:"unsubscribed", ref?, room}`
#[derive(Debug, Serialize)]
pub struct UnsubscribedFrame<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<&'a FrameId>,
    pub room: &'a str,
}

/// Online or offline, in `presence` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    Online,
    Offline,
}

/// `{type:"presence", room, userId, status}`
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomPresenceFrame<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub room: &'a str,
    pub user_id: &'a str,
    pub status: PresenceStatus,
}

/// `{type:"pong", ref?}`
#[derive(Debug, Serialize)]
pub struct PongFrame<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<&'a FrameId>,
}

/// `{type:"token_expiring", expiresInMs}`
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenExpiringFrame {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub expires_in_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> FrameError {
        parse_client_frame(text).expect_err("must not parse")
    }

    #[test]
    fn parses_known_frames() {
        let f = parse_client_frame(r#"{"type":"message","id":"m1","sessionId":"s1","text":"hi"}"#).expect("ok");
        assert_eq!(f.id, Some(FrameId::Str("m1".into())));
        assert!(
            matches!(f.frame, ClientFrame::Message { ref session_id, ref text } if session_id == "s1" && text == "hi")
        );
        let f = parse_client_frame(r#"{"type":"publish","id":7,"room":"r","data":{"a":[1,2]}}"#).expect("ok");
        assert_eq!(f.id, Some(FrameId::Num(7)));
        match f.frame {
            ClientFrame::Publish { data, .. } => assert_eq!(data.get(), r#"{"a":[1,2]}"#),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_client_frame(r#"{"type":"ping"}"#).expect("ok").frame, ClientFrame::Ping));
    }

    #[test]
    fn errors_keep_the_id_when_readable() {
        let e = err(r#"{"type":"nope","id":"x"}"#);
        assert_eq!((e.id, e.code), (Some(FrameId::Str("x".into())), ErrorCode::InvalidRequest));
        assert!(e.message.contains("unknown frame type"));
        let e = err(r#"{"type":"message","id":"x","sessionId":"s"}"#);
        assert_eq!(e.id, Some(FrameId::Str("x".into())));
        assert!(e.message.contains("text"), "{}", e.message);
        let e = err("{not json");
        assert_eq!((e.id, e.code), (None, ErrorCode::InvalidRequest));
        let e = err("[1,2]");
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let e = err(r#"{"type":"message","sessionId":"s","text":"t"}"#);
        assert!(e.message.contains("needs an `id`"));
    }

    #[test]
    fn encodes_notice_with_raw_data() {
        let data = RawValue::from_string(r#"{"n":1}"#.into()).expect("raw");
        let bytes = encode(&NoticeFrame { kind: "notice", room: "r", seq: 3, event: None, data: &data, ts: "t" });
        assert_eq!(&*bytes, r#"{"type":"notice","room":"r","seq":3,"data":{"n":1},"ts":"t"}"#);
        let id = FrameId::Num(5);
        let ok = encode(&OkFrame::new(&id, Empty {}));
        assert_eq!(&*ok, r#"{"type":"ok","ref":5}"#);
    }
}

/// A notice frame split around its `seq`, so that whoever numbers the notice (the
/// room shard, or a Redis script) can splice the number in without re-encoding:
/// `head + seq + tail` is exactly what [`NoticeFrame`] encodes to.
pub fn notice_parts(room: &str, event: Option<&str>, data: &RawValue, ts: &str) -> (String, String) {
    let mut head = String::with_capacity(48 + room.len());
    head.push_str(r#"{"type":"notice","room":"#);
    head.push_str(&serde_json::to_string(room).unwrap_or_else(|_| "\"\"".into()));
    head.push_str(r#","seq":"#);
    let mut tail = String::with_capacity(32 + data.get().len());
    if let Some(event) = event {
        tail.push_str(r#","event":"#);
        tail.push_str(&serde_json::to_string(event).unwrap_or_else(|_| "\"\"".into()));
    }
    tail.push_str(r#","data":"#);
    tail.push_str(data.get());
    tail.push_str(r#","ts":"#);
    tail.push_str(&serde_json::to_string(ts).unwrap_or_else(|_| "\"\"".into()));
    tail.push('}');
    (head, tail)
}

#[cfg(test)]
mod notice_tests {
    use super::*;

    #[test]
    fn parts_splice_to_the_encoded_frame() {
        let data = RawValue::from_string(r#"{"x":"y\"z"}"#.into()).expect("raw");
        for event in [None, Some("ev\"1")] {
            let (head, tail) = notice_parts("r\"1", event, &data, "2026-01-01T00:00:00.000Z");
            let framed = encode(&NoticeFrame {
                kind: "notice",
                room: "r\"1",
                seq: 42,
                event,
                data: &data,
                ts: "2026-01-01T00:00:00.000Z",
            });
            assert_eq!(format!("{head}42{tail}"), &*framed);
        }
    }
}
