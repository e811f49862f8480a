//! The connection actor: one per WebSocket, on the worker thread that accepted it.
//!
//! This is the only module that touches actix-web-actors. The actor owns the
//! connection's state (identity, rooms, timers, rate limit), answers every client
//! frame, and drains its outbound queue into the socket. It registers with the user
//! registry once authenticated and leaves every registry in `stopping`.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use auth::Claims;
use bytestring::ByteString;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use protocol::frames::{AuthenticatedFrame, Empty, ErrorFrame, HelloFrame, OkFrame, PongFrame, TokenExpiringFrame};
use protocol::{encode, parse_client_frame, ClientFrame, CloseReason, ErrorCode, FrameId, Inbound, UserRef};
use tracing::{debug, info, Instrument};

use super::deadlines::{Deadlines, Due};
use super::sequencer::{Sequencer, Unconfirmed};
use super::socket::{self, SocketFd, Watched};
use super::{Endpoint, Identity};
use crate::chat::replay::{Replay, ReplayDone, ReplayPage};
use crate::chat::service::{message_frame, Actor as ChatActor};
use crate::chat::{ChatAnswer, ChatError};
use crate::hub::room_service::JoinRequest;
use crate::hub::rooms::Member;
use crate::hub::users::{Register, Unregister, UserConn};
use crate::outbound::{Budget, ConnHandle, ConnId, Control, Outbound};
use crate::state::{Gateway, SlotGuard};

/// Window in which more than `limits.messages_burst` refused frames close the connection (§3).
const REFUSAL_WINDOW: Duration = Duration::from_secs(10);
/// How long a gap in a session's live messages may last before the missing ones
/// are fetched from the store.
const GAP_WAIT: Duration = Duration::from_millis(300);
/// Messages fetched per gap fill.
const GAP_FILL_MAX: usize = 500;
/// The longest timer a connection arms (a year): far-future `exp` values are clamped.
const MAX_TIMER_MS: i64 = 365 * 24 * 3600 * 1000;
/// The only subprotocol the server selects.
pub const SUBPROTOCOL: &str = "chat.v1";

/// What the handshake decided about a new connection.
pub struct Admission {
    pub endpoint: Endpoint,
    pub identity: Option<Identity>,
    /// Rooms a push-only `/ws` connection subscribes to at once.
    pub push_rooms: Vec<String>,
    pub device_id: Option<String>,
    pub client_id: Option<String>,
    /// `auth.handshake_errors = "close"`: accept, then close at once with this reason.
    pub reject: Option<CloseReason>,
    pub slot: Option<SlotGuard>,
    /// The socket, for the watchdog (absent for non-TCP transports).
    pub socket: Option<Rc<SocketFd>>,
}

/// Upgrade the request and start the connection actor.
pub fn start(
    req: &HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    admission: Admission,
) -> actix_web::Result<HttpResponse> {
    let codec = actix_http::ws::Codec::new().max_size(gw.settings.limits.max_frame_bytes);
    let actor = Connection::new(gw, admission);
    ws::WsResponseBuilder::new(actor, req, payload).codec(codec).protocols(&[SUBPROTOCOL]).start()
}

pub struct Connection {
    gw: web::Data<Gateway>,
    id: ConnId,
    /// `connectionId` in `hello` and logs.
    label: Arc<str>,
    endpoint: Endpoint,
    identity: Option<Identity>,
    /// Rooms this connection is subscribed to.
    rooms: Vec<Arc<str>>,
    push_rooms: Vec<String>,
    device_id: Option<String>,
    client_id: Option<String>,
    reject: Option<CloseReason>,
    /// Our own sending side, given to registries; set in `started`.
    handle: Option<ConnHandle>,
    budget: Option<Arc<Budget>>,
    /// Last inbound frame, pong or `/heartbeat` touch.
    last_seen: Instant,
    limiter: DefaultDirectRateLimiter,
    /// When recent frames were refused for the rate, newest last.
    refusals: VecDeque<Instant>,
    /// Heartbeat, authentication deadline, token expiry: behind one timer.
    deadlines: Deadlines,
    /// The armed timer and the deadline it is armed for.
    timer: Option<(Instant, SpawnHandle)>,
    /// A fragmented message being reassembled (bounded by `limits.max_frame_bytes`).
    fragments: Option<Vec<u8>>,
    /// Orders live chat messages per session.
    sequencer: Sequencer,
    /// Offline replay is running: live messages wait in `held`.
    replaying: bool,
    /// Live messages that arrived during replay, in arrival order.
    held: Vec<(Arc<str>, u64, ByteString)>,
    held_bytes: usize,
    /// A gap check is scheduled.
    gap_check: bool,
    /// Messages answered `UNAVAILABLE` that the store may have kept anyway.
    unconfirmed: Unconfirmed,
    closing: bool,
    socket: Option<Rc<SocketFd>>,
    /// The watchdog's view of this connection, stamped while the actor runs.
    watched: Option<Rc<Watched>>,
    span: tracing::Span,
    _slot: Option<SlotGuard>,
}

impl Connection {
    fn new(gw: web::Data<Gateway>, admission: Admission) -> Self {
        let id = gw.next_conn_id();
        let label: Arc<str> = format!("{}-{id}", gw.node_id).into();
        let limits = &gw.settings.limits;
        let per_sec = NonZeroU32::new(limits.messages_per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.messages_burst).unwrap_or(NonZeroU32::MIN);
        let span = tracing::info_span!(
            "conn",
            conn_id = %label,
            endpoint = admission.endpoint.as_str(),
            user = tracing::field::Empty,
            node = %gw.node_id,
        );
        Connection {
            id,
            label,
            endpoint: admission.endpoint,
            identity: admission.identity,
            rooms: Vec::new(),
            push_rooms: admission.push_rooms,
            device_id: admission.device_id,
            client_id: admission.client_id,
            reject: admission.reject,
            handle: None,
            budget: None,
            last_seen: Instant::now(),
            limiter: RateLimiter::direct(Quota::per_second(per_sec).allow_burst(burst)),
            refusals: VecDeque::new(),
            deadlines: Deadlines::new(Instant::now()),
            unconfirmed: Unconfirmed::default(),
            timer: None,
            fragments: None,
            sequencer: Sequencer::default(),
            replaying: false,
            held: Vec::new(),
            held_bytes: 0,
            gap_check: false,
            closing: false,
            socket: admission.socket,
            watched: None,
            span,
            _slot: admission.slot,
            gw,
        }
    }

    fn conn_handle(&self) -> &ConnHandle {
        // Set in `started`, before any frame or message is handled.
        self.handle.as_ref().expect("handle is set in started")
    }

    // ------------------------------------------------------------------ output

    fn send(&self, ctx: &mut ws::WebsocketContext<Self>, frame: ByteString) {
        ctx.text(frame);
    }

    fn error(&self, ctx: &mut ws::WebsocketContext<Self>, reference: Option<&FrameId>, code: ErrorCode, message: &str) {
        self.gw.metrics.frame_errors.get_or_create(&vec![("code", code.as_str())]).inc();
        self.send(ctx, encode(&ErrorFrame::new(reference, code, message)));
    }

    fn ok(&self, ctx: &mut ws::WebsocketContext<Self>, reference: Option<&FrameId>) {
        if let Some(r) = reference {
            self.send(ctx, encode(&OkFrame::new(r, Empty {})));
        }
    }

    fn close(&mut self, ctx: &mut ws::WebsocketContext<Self>, reason: CloseReason) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.gw.metrics.closes.get_or_create(&vec![("code", reason.as_str())]).inc();
        let _enter = self.span.enter();
        debug!(reason = reason.as_str(), "closing");
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::from(reason.code().0),
            description: Some(reason.as_str().to_string()),
        }));
        ctx.stop();
    }

    // ------------------------------------------------------------ lifecycle

    fn send_hello(&self, ctx: &mut ws::WebsocketContext<Self>) {
        let hello = HelloFrame {
            kind: "hello",
            connection_id: &self.label,
            node: &self.gw.node_id,
            authenticated: self.identity.is_some(),
            user: self.identity.as_ref().map(|i| &i.user),
            expires_at: self.identity.as_ref().map(|i| protocol::time::from_unix_secs(i.claims.exp)),
            heartbeat_interval_ms: self.gw.settings.heartbeat.interval_secs * 1000,
            protocol_version: protocol::PROTOCOL_VERSION,
            device_id: self.device_id.as_deref(),
            client_id: self.client_id.as_deref(),
        };
        self.send(ctx, encode(&hello));
    }

    /// Arm the connection's one timer for its earliest deadline (if not armed for it).
    fn rearm(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let next = self.deadlines.next();
        if matches!(self.timer, Some((at, _)) if at == next) {
            return;
        }
        if let Some((_, timer)) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        let timer = ctx.run_later(next.saturating_duration_since(Instant::now()), |act, ctx| {
            act.timer = None;
            act.on_deadline(ctx);
        });
        self.timer = Some((next, timer));
    }

    fn on_deadline(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let now = Instant::now();
        while let Some(due) = self.deadlines.take_due(now) {
            match due {
                Due::Expired => return self.close(ctx, CloseReason::TokenExpired),
                Due::AuthTimeout if self.identity.is_none() => return self.close(ctx, CloseReason::AuthTimeout),
                Due::AuthTimeout => {}
                Due::Warn => {
                    let exp_ms = self.identity.as_ref().map_or(0, |i| i.claims.exp.saturating_mul(1000));
                    let left = exp_ms.saturating_sub(protocol::time::unix_millis()).max(0) as u64;
                    self.send(ctx, encode(&TokenExpiringFrame { kind: "token_expiring", expires_in_ms: left }));
                }
                Due::Ping => {
                    if let Some(w) = &self.watched {
                        w.progressed();
                    }
                    if self.last_seen.elapsed() > self.gw.settings.heartbeat_timeout() {
                        return self.close(ctx, CloseReason::HeartbeatTimeout);
                    }
                    ctx.ping(b"");
                    // From now, not from the missed tick: a connection frozen behind a
                    // full socket does not replay missed ticks at once.
                    self.deadlines.ping = now + self.gw.settings.heartbeat_interval();
                }
            }
        }
        self.rearm(ctx);
    }

    /// Identity established (handshake, `auth` or `login`): register, arm expiry, replay.
    fn authenticated(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(identity) = self.identity.clone() else { return };
        self.span.record("user", &*identity.user.id);
        self.deadlines.auth = None;
        self.schedule_expiry(ctx, &identity.claims);
        let register = Gateway::register(self.gw.clone(), self.registration(&identity));
        if self.endpoint == Endpoint::Push {
            actix::spawn(register);
            return;
        }
        self.replaying = true;
        let actor = ChatActor::of(&identity);
        let addr = ctx.address();
        Replay::start(
            self.gw.chat.clone(),
            actor.clone(),
            Box::pin(register),
            addr.clone().recipient(),
            addr.recipient(),
            self.gw.settings.offline.max_replay,
        );
        let chat = self.gw.chat.clone();
        let key = self.label.clone();
        actix::spawn(async move { chat.connection_opened(&actor, &key).await });
    }

    fn registration(&self, identity: &Identity) -> Register {
        let conn = UserConn {
            conn: self.conn_handle().clone(),
            family: identity.claims.fam.as_deref().map(Arc::from),
            jti: identity.claims.jti.as_deref().map(Arc::from),
            push: self.endpoint == Endpoint::Push,
            agent: identity.claims.role == auth::Role::Agent && self.endpoint == Endpoint::Chat,
        };
        Register { user: identity.user_id.clone(), conn }
    }

    fn register_user(&self, identity: &Identity) {
        let register = self.registration(identity);
        let shard = self.gw.users.shard(&identity.user_id).clone();
        actix::spawn(async move {
            let _ = shard.send(register).await;
        });
    }

    fn schedule_expiry(&mut self, ctx: &mut ws::WebsocketContext<Self>, claims: &Claims) {
        let (now_ms, now) = (protocol::time::unix_millis(), Instant::now());
        let exp_ms = claims.exp.saturating_mul(1000);
        let warn_ms = exp_ms.saturating_sub((self.gw.settings.auth.expiry_warning_secs as i64).saturating_mul(1000));
        let close_ms = exp_ms.saturating_add((self.gw.settings.auth.leeway_secs as i64).saturating_mul(1000));
        // Clamped: a token may claim an `exp` centuries away, and a deadline that far out
        // would overflow the clock.
        let at = |at_ms: i64| now + Duration::from_millis(at_ms.saturating_sub(now_ms).clamp(0, MAX_TIMER_MS) as u64);
        self.deadlines.warn = Some(at(warn_ms));
        self.deadlines.expire = Some(at(close_ms));
        self.rearm(ctx);
    }

    fn join_push_rooms(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(identity) = self.identity.clone() else { return };
        for room in std::mem::take(&mut self.push_rooms) {
            let room: Arc<str> = room.into();
            self.rooms.push(room.clone());
            let req = JoinRequest {
                room,
                member: self.member(&identity, false),
                conn_key: self.label.clone(),
                since: None,
                reference: None,
                announce: false,
                again: false,
            };
            let rooms = self.gw.rooms.clone();
            let joined = async move { (req.room.clone(), rooms.join(req).await) };
            ctx.spawn(joined.into_actor(self).map(|(room, result), act, ctx| {
                if let Err(e) = result {
                    // A push connection without its room is useless: let the client come
                    // back after a backoff (1013 UNAVAILABLE), when the bus is reachable.
                    tracing::warn!(parent: &act.span, room = %room, error = %e, "push subscription failed");
                    act.rooms.retain(|r| *r != room);
                    act.close(ctx, CloseReason::Unavailable);
                }
            }));
        }
    }

    fn member(&self, identity: &Identity, chat: bool) -> Member {
        Member {
            conn: self.conn_handle().clone(),
            user: identity.user_id.clone(),
            role: identity.claims.role,
            name: identity.name.clone(),
            chat,
        }
    }

    // ------------------------------------------------------------------ input

    fn handle_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        self.last_seen = Instant::now();
        if self.endpoint == Endpoint::Push {
            return; // push-only: client frames only count as liveness
        }
        self.gw.metrics.frames_in.inc();
        if self.limiter.check().is_err() {
            let id = parse_client_frame(text).ok().and_then(|f| f.id);
            self.error(ctx, id.as_ref(), ErrorCode::RateLimited, "too many frames: slow down");
            let now = Instant::now();
            self.refusals.push_back(now);
            while self.refusals.front().is_some_and(|t| now.duration_since(*t) > REFUSAL_WINDOW) {
                self.refusals.pop_front();
            }
            if self.refusals.len() > self.gw.settings.limits.messages_burst as usize {
                self.close(ctx, CloseReason::RateLimited);
            }
            return;
        }
        match parse_client_frame(text) {
            Ok(inbound) => self.dispatch(inbound, ctx),
            Err(e) => self.error(ctx, e.id.as_ref(), e.code, &e.message),
        }
    }

    fn dispatch(&mut self, Inbound { id, frame }: Inbound, ctx: &mut ws::WebsocketContext<Self>) {
        let reference = id.as_ref();
        match frame {
            ClientFrame::Ping => self.send(ctx, encode(&PongFrame { kind: "pong", reference })),
            ClientFrame::Hello { protocol_version } => match protocol_version {
                None | Some(1) => self.ok(ctx, reference),
                Some(v) => self.error(
                    ctx,
                    reference,
                    ErrorCode::UnsupportedProtocol,
                    &format!("protocol version {v} is not supported; this server speaks version 1"),
                ),
            },
            ClientFrame::Auth { token } => self.auth(token, id, ctx),
            ClientFrame::Login { username, password } => self.login(username, password, id, ctx),
            frame => {
                let Some(identity) = self.identity.clone() else {
                    return self.error(
                        ctx,
                        reference,
                        ErrorCode::MissingToken,
                        "authenticate first: send `auth` with a token or `login` with agent credentials",
                    );
                };
                match frame {
                    ClientFrame::Subscribe { room, since } => self.subscribe(&identity, room, since, id, ctx),
                    ClientFrame::Unsubscribe { room } => self.unsubscribe(room, id, ctx),
                    ClientFrame::Publish { room, data, event } => self.publish(&identity, room, data, event, id, ctx),
                    other => self.chat_frame(identity, other, id, ctx),
                }
            }
        }
    }

    fn auth(&mut self, token: String, id: Option<FrameId>, ctx: &mut ws::WebsocketContext<Self>) {
        let gw = self.gw.clone();
        let fut = async move { gw.auth.verify(&token).await };
        ctx.wait(fut.into_actor(self).map(move |result, act, ctx| match result {
            Ok(claims) => act.become_user(claims, id, ctx),
            Err(e) => act.error(ctx, id.as_ref(), e.code(), &e.message()),
        }));
    }

    fn login(&mut self, username: String, password: String, id: Option<FrameId>, ctx: &mut ws::WebsocketContext<Self>) {
        let gw = self.gw.clone();
        let fut = async move { crate::http::tokens::login(&gw, &username, &password).await };
        ctx.wait(fut.into_actor(self).map(move |result, act, ctx| match result {
            Ok(pair) => act.become_user(pair.access.claims, id, ctx),
            Err(e) => act.error(ctx, id.as_ref(), e.code, &e.message),
        }));
    }

    /// Take on `claims`: the first authentication, or a refresh for the same user.
    fn become_user(&mut self, claims: Claims, id: Option<FrameId>, ctx: &mut ws::WebsocketContext<Self>) {
        let identity = Identity::from_claims(claims);
        if let Some(current) = &self.identity {
            if current.user_id != identity.user_id || current.claims.role != identity.claims.role {
                return self.error(
                    ctx,
                    id.as_ref(),
                    ErrorCode::Forbidden,
                    "a live connection can only be refreshed with a token of the same user",
                );
            }
            self.identity = Some(identity.clone());
            self.register_user(&identity);
            self.schedule_expiry(ctx, &identity.claims);
            self.send_authenticated(ctx, id.as_ref(), &identity);
            return;
        }
        self.identity = Some(identity.clone());
        info!(parent: &self.span, user = %identity.user.id, role = identity.claims.role.as_str(), "authenticated in-band");
        self.send_authenticated(ctx, id.as_ref(), &identity);
        self.authenticated(ctx);
    }

    fn send_authenticated(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        reference: Option<&FrameId>,
        identity: &Identity,
    ) {
        self.send(
            ctx,
            encode(&AuthenticatedFrame {
                kind: "authenticated",
                reference,
                user: &identity.user,
                expires_at: protocol::time::from_unix_secs(identity.claims.exp),
            }),
        );
    }

    fn subscribe(
        &mut self,
        identity: &Identity,
        room: String,
        since: Option<u64>,
        id: Option<FrameId>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        if let Err(why) = super::validate_room(&room) {
            return self.error(ctx, id.as_ref(), ErrorCode::InvalidRequest, &why);
        }
        if !identity.claims.may_subscribe(&room) {
            return self.error(
                ctx,
                id.as_ref(),
                ErrorCode::Forbidden,
                &format!("your token grants no access to room `{room}`"),
            );
        }
        let known = self.rooms.iter().any(|r| **r == *room);
        let max = self.gw.settings.rooms.max_per_connection;
        if !known && self.rooms.len() >= max {
            return self.error(
                ctx,
                id.as_ref(),
                ErrorCode::InvalidRequest,
                &format!("at most {max} rooms per connection: unsubscribe from one first"),
            );
        }
        let room: Arc<str> = room.into();
        if !known {
            self.rooms.push(room.clone());
        }
        let req = JoinRequest {
            room: room.clone(),
            member: self.member(identity, true),
            conn_key: self.label.clone(),
            since,
            reference: id.clone(),
            announce: true,
            again: known,
        };
        let rooms = self.gw.rooms.clone();
        // Awaited, so that frames after this one see the subscription.
        ctx.wait(async move { rooms.join(req).await }.into_actor(self).map(move |result, act, ctx| {
            if let Err(e) = result {
                if !known {
                    act.rooms.retain(|r| *r != room);
                }
                act.error(ctx, id.as_ref(), ErrorCode::Unavailable, &format!("cannot subscribe right now: {e}"));
            }
        }));
    }

    fn unsubscribe(&mut self, room: String, id: Option<FrameId>, ctx: &mut ws::WebsocketContext<Self>) {
        let room: Arc<str> = room.into();
        self.rooms.retain(|r| *r != room);
        let Some(identity) = self.identity.clone() else { return };
        let rooms = self.gw.rooms.clone();
        let (conn, key, handle) = (self.id, self.label.clone(), self.conn_handle().clone());
        let fut = async move { rooms.leave(room, conn, &key, &identity.user_id, Some((id, handle))).await };
        ctx.wait(fut.into_actor(self));
    }

    fn publish(
        &mut self,
        identity: &Identity,
        room: String,
        data: Box<serde_json::value::RawValue>,
        event: Option<String>,
        id: Option<FrameId>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        if let Err(why) = super::validate_room(&room) {
            return self.error(ctx, id.as_ref(), ErrorCode::InvalidRequest, &why);
        }
        if !identity.claims.may_publish(&room) {
            return self.error(
                ctx,
                id.as_ref(),
                ErrorCode::Forbidden,
                &format!("your token may not publish to room `{room}`"),
            );
        }
        let room: Arc<str> = room.into();
        self.gw.metrics.notices_published.inc();
        let rooms = self.gw.rooms.clone();
        let target = room.clone();
        let fut = async move { rooms.publish(target, event, data).await };
        ctx.wait(fut.into_actor(self).map(move |result, act, ctx| match result {
            Ok(seq) => {
                if let Some(r) = id.as_ref() {
                    #[derive(serde::Serialize)]
                    struct Published<'a> {
                        room: &'a str,
                        seq: u64,
                    }
                    act.send(ctx, encode(&OkFrame::new(r, Published { room: &room, seq })));
                }
            }
            Err(e) => act.error(ctx, id.as_ref(), ErrorCode::Unavailable, &format!("not published: {e}; retry")),
        }));
    }

    fn chat_frame(
        &mut self,
        identity: Identity,
        frame: ClientFrame,
        id: Option<FrameId>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let gw = self.gw.clone();
        let conn = self.conn_handle().clone();
        let reference = id.clone();
        let message_id = matches!(frame, ClientFrame::Message { .. }).then(|| id.as_ref().map(ToString::to_string));
        let fut = async move { gw.chat.handle_frame(&identity, &conn, frame, reference.as_ref()).await };
        // Awaited in order: a connection's frames are answered in the order sent, and an
        // `ack` is processed before any later live message of the session.
        ctx.wait(fut.into_actor(self).map(move |result, act, ctx| match result {
            Ok(answer) => {
                if let ChatAnswer::Ack { message } = &answer {
                    let session: Arc<str> = message.session_id.as_str().into();
                    let mut out = Vec::new();
                    act.sequencer.own(&session, message.seq, &mut out);
                    act.emit(ctx, out);
                }
                if id.is_some() || !answer.needs_ref() {
                    act.send(ctx, answer.encode(id.as_ref()));
                }
            }
            Err(ChatError { code, message }) => {
                if let (ErrorCode::Unavailable, Some(Some(mid))) = (code, message_id) {
                    act.unconfirmed.remember(mid);
                }
                act.error(ctx, id.as_ref(), code, &message)
            }
        }));
    }

    fn emit(&mut self, ctx: &mut ws::WebsocketContext<Self>, frames: Vec<ByteString>) {
        for frame in frames {
            ctx.text(frame);
        }
        if !self.gap_check && !self.sequencer.gaps().is_empty() {
            self.gap_check = true;
            ctx.run_later(GAP_WAIT, |act, ctx| act.fill_gaps(ctx));
        }
        if self.sequencer.held_bytes() + self.held_bytes > self.gw.settings.limits.outbound_queue_bytes {
            self.close(ctx, CloseReason::SlowConsumer);
        }
    }

    /// Record this connection in cluster presence again (its node was taken for dead).
    fn reannounce(&self) {
        let Some(identity) = self.identity.clone() else { return };
        let rooms = self.gw.rooms.clone();
        let chat = (self.endpoint == Endpoint::Chat).then(|| self.gw.chat.clone());
        let key = self.label.clone();
        let members: Vec<(Arc<str>, Member)> =
            self.rooms.iter().map(|r| (r.clone(), self.member(&identity, self.endpoint == Endpoint::Chat))).collect();
        actix::spawn(async move {
            if let Some(chat) = chat {
                chat.connection_opened(&ChatActor::of(&identity), &key).await;
            }
            for (room, member) in members {
                rooms.rejoin_presence(&room, &key, &member).await;
            }
        });
    }

    /// After a bus outage: fetch every tracked session's messages from where this
    /// connection stands, in case some were published while nobody listened.
    fn catch_up(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.replaying {
            return;
        }
        let positions = self.sequencer.positions();
        let store = self.gw.chat.store().clone();
        let fut = async move {
            let mut found = Vec::new();
            for (session, next) in positions {
                if let Ok(messages) = store.range(&session, next, u64::MAX, GAP_FILL_MAX).await {
                    found.push((session, messages));
                }
            }
            found
        };
        ctx.spawn(fut.into_actor(self).map(|found, act, ctx| act.feed(found, ctx)));
    }

    fn feed(&mut self, found: Vec<(Arc<str>, Vec<crate::chat::model::Message>)>, ctx: &mut ws::WebsocketContext<Self>) {
        let mut out = Vec::new();
        let me = self.identity.as_ref().map(|i| i.user.id.clone());
        for (session, messages) in found {
            for m in messages {
                let own = me.as_deref() == Some(m.from.id.as_str()) && self.unconfirmed.contains(&m.client_msg_id);
                if own {
                    self.sequencer.own(&session, m.seq, &mut out);
                } else {
                    act_live(&mut self.sequencer, &session, &m, &mut out);
                }
            }
        }
        self.emit(ctx, out);
    }

    /// Fetch the messages still missing after `GAP_WAIT` from the store.
    fn fill_gaps(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        self.gap_check = false;
        let gaps = self.sequencer.gaps();
        if gaps.is_empty() {
            return;
        }
        let store = self.gw.chat.store().clone();
        let fut = async move {
            let mut found = Vec::new();
            for (session, from, to) in gaps {
                if let Ok(messages) = store.range(&session, from, to, GAP_FILL_MAX).await {
                    found.push((session, messages));
                }
            }
            found
        };
        ctx.spawn(fut.into_actor(self).map(|found, act, ctx| act.feed(found, ctx)));
    }

    fn handle_bytes(&mut self, bytes: &[u8], ctx: &mut ws::WebsocketContext<Self>) {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.handle_text(text, ctx),
            Err(_) => self.close(ctx, CloseReason::InvalidUtf8),
        }
    }
}

impl Actor for Connection {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(reason) = self.reject {
            self.gw.metrics.handshake_rejections.get_or_create(&vec![("code", reason.as_str())]).inc();
            self.close(ctx, reason);
            return;
        }
        ctx.set_mailbox_capacity(64);
        let (handle, frames, budget) =
            ConnHandle::new(self.id, ctx.address().recipient(), self.gw.settings.limits.outbound_queue_bytes);
        self.gw.connections.insert(handle.clone());
        if let Some(fd) = self.socket.take() {
            // Frozen longer than the heartbeat timeout plus one interval: cut it.
            let stall = self.gw.settings.heartbeat_timeout() + self.gw.settings.heartbeat_interval();
            let write_stall = Duration::from_secs(self.gw.settings.limits.write_stall_secs);
            self.watched = Some(socket::watch(&fd, budget.clone(), stall, write_stall));
        }
        self.handle = Some(handle);
        self.budget = Some(budget);
        ctx.add_stream(frames);
        self.gw.metrics.connections_open.inc();
        self.gw.metrics.connections_total.get_or_create(&vec![("endpoint", self.endpoint.as_str())]).inc();
        self.send_hello(ctx);
        // The first tick at a random point of the interval: connections opened together
        // (a reconnect storm, a load test) do not all ping in the same instant.
        let interval = self.gw.settings.heartbeat_interval();
        let now = Instant::now();
        self.deadlines.ping = now + interval.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        if self.identity.is_some() {
            self.authenticated(ctx);
            self.join_push_rooms(ctx);
        } else {
            self.deadlines.auth = Some(now + Duration::from_secs(self.gw.settings.auth.timeout_secs));
        }
        self.rearm(ctx);
        debug!(parent: &self.span, "connection open");
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if self.handle.is_none() {
            return Running::Stop;
        }
        self.gw.metrics.connections_open.dec();
        self.gw.connections.remove(self.id);
        if let Some(identity) = &self.identity {
            let rooms = self.gw.rooms.clone();
            let (conn, key, user) = (self.id, self.label.clone(), identity.user_id.clone());
            let left: Vec<Arc<str>> = self.rooms.drain(..).collect();
            actix::spawn(
                async move {
                    for room in left {
                        rooms.leave(room, conn, &key, &user, None).await;
                    }
                }
                .instrument(self.span.clone()),
            );
        }
        if let Some(identity) = &self.identity {
            let user = identity.user_id.clone();
            let shard = self.gw.users.shard(&user).clone();
            let conn = self.id;
            let chat = (self.endpoint == Endpoint::Chat)
                .then(|| (self.gw.chat.clone(), ChatActor::of(identity), self.label.clone()));
            actix::spawn(async move {
                let _ = shard.send(Unregister { user, conn }).await;
                if let Some((chat, actor, key)) = chat {
                    chat.connection_closed(&actor, &key).await;
                }
            });
        }
        debug!(parent: &self.span, "connection closed");
        Running::Stop
    }
}

/// A message from the store, through the sequencer like a live one.
fn act_live(sequencer: &mut Sequencer, session: &Arc<str>, m: &crate::chat::model::Message, out: &mut Vec<ByteString>) {
    sequencer.live(session, m.seq, message_frame("message", m), out);
}

impl StreamHandler<std::collections::VecDeque<Outbound>> for Connection {
    fn handle(&mut self, batch: std::collections::VecDeque<Outbound>, ctx: &mut Self::Context) {
        for item in batch {
            self.outbound(item, ctx);
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // The queue only ends with the actor.
    }
}

impl Connection {
    /// One item of the outbound queue: a frame to send, or a chat message to order.
    fn outbound(&mut self, item: Outbound, ctx: &mut ws::WebsocketContext<Self>) {
        if let Some(budget) = &self.budget {
            budget.drained(item.wire_len());
        }
        if self.closing {
            return;
        }
        match item {
            Outbound::Frame(frame) => ctx.text(frame),
            Outbound::Message { session, seq, frame } if self.replaying => {
                self.held_bytes += frame.len();
                self.held.push((session, seq, frame));
                self.emit(ctx, Vec::new());
            }
            Outbound::Message { session, seq, frame } => {
                let mut out = Vec::new();
                self.sequencer.live(&session, seq, frame, &mut out);
                self.emit(ctx, out);
            }
            Outbound::Track { session, after } => {
                let mut out = Vec::new();
                self.sequencer.track(session, after, &mut out);
                self.emit(ctx, out);
            }
        }
    }
}

impl Handler<ReplayPage> for Connection {
    type Result = ();

    fn handle(&mut self, page: ReplayPage, ctx: &mut Self::Context) {
        if !self.closing {
            for frame in page.frames {
                ctx.text(frame);
            }
        }
    }
}

impl Handler<ReplayDone> for Connection {
    type Result = ();

    fn handle(&mut self, done: ReplayDone, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        if done.failed {
            self.error(
                ctx,
                None,
                ErrorCode::Unavailable,
                "offline replay was cut short: the store is unavailable; reconnect to get the rest",
            );
        }
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Range<'a> {
            session_id: &'a str,
            from_seq: u64,
            to_seq: u64,
        }
        #[derive(serde::Serialize)]
        struct Complete<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            count: u64,
            truncated: bool,
            sessions: Vec<Range<'a>>,
        }
        let sessions = done
            .truncated
            .iter()
            .map(|(s, from, to)| Range { session_id: s, from_seq: *from, to_seq: *to })
            .collect::<Vec<_>>();
        ctx.text(encode(&Complete {
            kind: "offline_messages_complete",
            count: done.count,
            truncated: !sessions.is_empty(),
            sessions,
        }));
        self.replaying = false;
        let mut out = Vec::new();
        for (session, position) in done.positions {
            self.sequencer.track(session, position, &mut out);
        }
        self.held_bytes = 0;
        for (session, seq, frame) in std::mem::take(&mut self.held) {
            self.sequencer.live(&session, seq, frame, &mut out);
        }
        self.emit(ctx, out);
    }
}

impl Handler<Control> for Connection {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) {
        match msg {
            Control::Close(reason) => self.close(ctx, reason),
            Control::Touch => self.last_seen = Instant::now(),
            Control::Resync => self.catch_up(ctx),
            Control::Reannounce => self.reannounce(),
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Connection {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        let max = self.gw.settings.limits.max_frame_bytes;
        match msg {
            Ok(ws::Message::Text(text)) => self.handle_text(&text, ctx),
            Ok(ws::Message::Binary(bytes)) => self.handle_bytes(&bytes, ctx),
            Ok(ws::Message::Ping(payload)) => {
                self.last_seen = Instant::now();
                ctx.pong(&payload);
            }
            Ok(ws::Message::Pong(_)) => self.last_seen = Instant::now(),
            Ok(ws::Message::Close(_)) => {
                self.closing = true;
                ctx.close(Some(ws::CloseCode::Normal.into()));
                ctx.stop();
            }
            Ok(ws::Message::Continuation(item)) => {
                use actix_http::ws::Item;
                let (first, chunk, last) = match item {
                    Item::FirstText(b) | Item::FirstBinary(b) => (true, b, false),
                    Item::Continue(b) => (false, b, false),
                    Item::Last(b) => (false, b, true),
                };
                if first {
                    self.fragments = Some(Vec::new());
                }
                let Some(buf) = self.fragments.as_mut() else {
                    return self.close(ctx, CloseReason::InvalidRequest);
                };
                if buf.len() + chunk.len() > max {
                    return self.close(ctx, CloseReason::MessageTooBig);
                }
                buf.extend_from_slice(&chunk);
                if last {
                    if let Some(buf) = self.fragments.take() {
                        self.handle_bytes(&buf, ctx);
                    }
                }
            }
            Ok(ws::Message::Nop) => {}
            Err(ws::ProtocolError::Overflow) => self.close(ctx, CloseReason::MessageTooBig),
            Err(ws::ProtocolError::Io(e)) if e.to_string().contains("utf-8") => {
                self.close(ctx, CloseReason::InvalidUtf8)
            }
            Err(e) => {
                debug!(parent: &self.span, error = %e, "protocol error");
                self.close(ctx, CloseReason::InvalidRequest);
            }
        }
    }
}

impl Identity {
    pub fn from_claims(claims: Claims) -> Identity {
        let user = UserRef {
            id: claims.sub.clone(),
            role: claims.role.as_str().to_string(),
            name: claims.display_name().to_string(),
        };
        Identity {
            user_id: claims.sub.as_str().into(),
            name: user.name.as_str().into(),
            user,
            claims: Arc::new(claims),
        }
    }
}
