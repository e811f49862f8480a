//! Wiring of one node: stores, registries, the HTTP server, and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::dev::Service;
use actix_web::{web, App, HttpServer};
use auth::{
    Authenticator, Keyring, KeyringConfig, MemoryAgentStore, MemoryLoginThrottle, MemoryTokenStore, Role, TokenSpec,
};
use futures_util::FutureExt;
use presence::MemoryPresence;
use protocol::CloseReason;
use tracing::{info, warn, Instrument};

use crate::chat::router::Router;
use crate::chat::store::MemoryChatStore;
use crate::chat::ChatService;
use crate::cluster::bridge::{Bridge, LocalTargets};
use crate::cluster::chat_store::RedisChatStore;
use crate::cluster::relay::RedisRelay;
use crate::cluster::rooms::{RedisRooms, RoomFiller};
use crate::config::{BrokerKind, Settings};
use crate::hub::room_service::RoomService;
use crate::hub::rooms::{RoomHub, RoomLimits};
use crate::hub::users::UserHub;
use crate::metrics::Metrics;
use crate::state::ClusterLink;
use crate::state::Gateway;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("keys: {0}")]
    Keys(#[from] auth::KeyringError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error("broker.kind = \"redis\": {0}")]
    Redis(String),
}

fn keyring(settings: &Settings) -> Result<Keyring, auth::KeyringError> {
    Keyring::new(KeyringConfig {
        keys: settings.auth.effective_keys(),
        signing_kid: settings.auth.signing_kid.clone(),
        issuer: settings.auth.issuer.clone(),
        audience: settings.auth.audience.clone(),
        leeway_secs: settings.auth.leeway_secs,
    })
}

/// What `chat-gateway token` asks for.
pub struct TokenRequest {
    pub role: String,
    pub sub: String,
    pub name: Option<String>,
    pub ttl_secs: Option<u64>,
    pub rooms: Option<Vec<String>>,
    pub publish: Option<Vec<String>>,
    pub channel: Option<String>,
    pub sid: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("--role: {0}")]
    Role(String),
    #[error("--sub must not be empty")]
    EmptySub,
    #[error(transparent)]
    Keys(#[from] auth::KeyringError),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Sign a token with the configured signing key (the `token` subcommand).
pub fn mint_token(settings: &Settings, req: TokenRequest) -> Result<String, MintError> {
    let role: Role = req.role.parse().map_err(|e: auth::UnknownRole| MintError::Role(e.to_string()))?;
    if req.sub.trim().is_empty() {
        return Err(MintError::EmptySub);
    }
    let keyring = keyring(settings)?;
    let mut spec = TokenSpec::new(req.sub, role);
    spec.subject.name = req.name;
    spec.subject.rooms = req.rooms;
    spec.subject.publish = req.publish;
    spec.subject.channel = req.channel;
    spec.subject.sid = req.sid;
    spec.ttl = req.ttl_secs.map(Duration::from_secs);
    keyring.issue(spec).map(|t| t.token).map_err(|e| MintError::Sign(e.message()))
}

/// Run a node until SIGTERM/SIGINT and its drain are over.
pub fn run(settings: Settings) -> Result<(), ServeError> {
    let workers = match settings.server.workers {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        n => n,
    };
    actix_web::rt::System::new().block_on(serve(settings, workers))
}

async fn serve(settings: Settings, workers: usize) -> Result<(), ServeError> {
    let settings = Arc::new(settings);
    let node_id: Arc<str> = settings
        .server
        .node_id
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]))
        .into();
    let metrics = Arc::new(Metrics::new());
    let keyring = keyring(&settings)?;
    if settings.auth.uses_dev_secret() {
        warn!("no auth.keys configured: tokens are signed with the built-in development secret (loopback only)");
    }
    // Registry shards, one per core, each on an arbiter of its own.
    let arbiters: Vec<Arbiter> = (0..crate::hub::default_shards()).map(|_| Arbiter::new()).collect();
    let handles: Vec<ArbiterHandle> = arbiters.iter().map(Arbiter::handle).collect();
    let limits = RoomLimits {
        history_size: settings.rooms.history_size,
        history_ttl: Duration::from_secs(settings.rooms.history_ttl_secs),
    };
    let lockout_window = Duration::from_secs(settings.auth.lockout_secs);
    let gw = match settings.broker.kind {
        BrokerKind::Memory => {
            let agents: Arc<dyn auth::AgentStore> = Arc::new(MemoryAgentStore::default());
            let throttle = Arc::new(MemoryLoginThrottle::new(settings.auth.lockout_after_failures, lockout_window));
            let auth = Arc::new(Authenticator::new(keyring, Arc::new(MemoryTokenStore::default())));
            let presence: Arc<dyn presence::Presence> = Arc::new(MemoryPresence::new());
            let rooms =
                RoomService::new(RoomHub::start(&handles, limits, metrics.clone(), None), presence.clone(), None);
            let users = UserHub::start(&handles);
            let router = Router::new(users.clone(), None);
            let store = Arc::new(MemoryChatStore::new());
            let chat =
                ChatService::new(store, agents.clone(), presence.clone(), router, settings.clone(), metrics.clone());
            Gateway::new(
                settings.clone(),
                node_id.clone(),
                auth,
                agents,
                throttle,
                rooms,
                presence,
                users,
                chat,
                metrics,
            )
        }
        BrokerKind::Redis => cluster_gateway(&settings, node_id.clone(), keyring, &handles, limits, metrics).await?,
    };
    let gw = web::Data::new(gw);
    let sweeper = gw.clone();
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            sweeper.token_requests.forget_idle();
        }
    });
    if let Some(presence) = cluster_presence(&gw) {
        spawn_presence_keeper(gw.clone(), presence, Duration::from_secs(settings.presence.node_ttl_secs.max(3)));
    }

    let app_gw = gw.clone();
    let drain = Duration::from_secs(settings.shutdown.drain_secs);
    let server = HttpServer::new(move || {
        let gw = app_gw.clone();
        App::new()
            .app_data(app_gw.clone())
            .wrap_fn(move |req, srv| {
                // The span (and its request id) only when something will log it: this
                // runs for every request, publishes included.
                let span = if tracing::enabled!(tracing::Level::INFO) {
                    let request_id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
                    tracing::info_span!("http", request_id = %request_id, method = %req.method(), path = %req.path())
                } else {
                    tracing::Span::none()
                };
                let started = Instant::now();
                let gw = gw.clone();
                srv.call(req)
                    .map(move |res| {
                        if let Ok(res) = &res {
                            let status = res.status().as_u16();
                            gw.metrics.http_request(status);
                            tracing::debug!(status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
                        }
                        res
                    })
                    .instrument(span)
            })
            .configure(crate::http::routes)
    })
    .on_connect(crate::ws::socket::on_connect(
        Duration::from_secs(settings.limits.tcp_user_timeout_secs.max(1)),
        settings.limits.socket_send_buffer_bytes,
    ))
    .workers(workers)
    .max_connection_rate(2048)
    .backlog(4096)
    .disable_signals()
    .shutdown_timeout(drain.as_secs() + 5);
    let server = server
        .bind(&settings.server.bind)
        .map_err(|source| ServeError::Bind { addr: settings.server.bind.clone(), source })?
        .run();
    info!(node = %node_id, bind = %settings.server.bind, workers, broker = ?settings.broker.kind, "chat gateway listening");

    let handle = server.handle();
    let shutdown_gw = gw.clone();
    actix_web::rt::spawn(async move {
        shutdown_signal().await;
        info!("shutdown: draining");
        shutdown_gw.lifecycle.start_draining();
        drain_connections(&shutdown_gw, drain).await;
        handle.stop(true).await;
    });
    server.await?;
    for arbiter in arbiters {
        arbiter.stop();
    }
    info!("stopped");
    Ok(())
}

/// Wire a cluster node: every store and presence in Redis, the bridge for rooms and
/// user deliveries.
async fn cluster_gateway(
    settings: &Arc<Settings>,
    node_id: Arc<str>,
    keyring: Keyring,
    handles: &[ArbiterHandle],
    limits: RoomLimits,
    metrics: Arc<Metrics>,
) -> Result<Gateway, ServeError> {
    let url = settings.redis.url.clone();
    let client = redis::Client::open(url.as_str()).map_err(|e| ServeError::Redis(format!("redis.url: {e}")))?;
    let conn = connect_with_retry(&url).await?;
    let prefix: Arc<str> = settings.redis.key_prefix.as_str().into();
    let agents: Arc<dyn auth::AgentStore> = Arc::new(auth::RedisAgentStore::new(conn.clone(), &prefix));
    let throttle = Arc::new(auth::RedisLoginThrottle::new(
        conn.clone(),
        &prefix,
        settings.auth.lockout_after_failures,
        Duration::from_secs(settings.auth.lockout_secs),
    ));
    let auth = Arc::new(Authenticator::new(keyring, Arc::new(auth::RedisTokenStore::new(conn.clone(), &prefix))));
    let node_ttl = Duration::from_secs(settings.presence.node_ttl_secs.max(3));
    let presence = Arc::new(presence::RedisPresence::new(conn.clone(), &prefix, &node_id, node_ttl));
    presence.heartbeat().await.map_err(|e| ServeError::Redis(e.to_string()))?;
    // (A first beat never reports a lapse.)

    let bus_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut wired = None;
    let bridge = Bridge::create(|ctx| {
        let redis_rooms =
            RedisRooms::new(conn.clone(), prefix.clone(), ctx.address(), limits.history_size, limits.history_ttl);
        let filler = RoomFiller { rooms: redis_rooms.clone() }.start();
        let hub = RoomHub::start(handles, limits.clone(), metrics.clone(), Some(filler.recipient()));
        let users = UserHub::start(handles);
        wired = Some((redis_rooms, hub.clone(), users.clone()));
        let targets = LocalTargets { node: node_id.clone(), prefix: prefix.clone(), rooms: hub, users };
        Bridge::new(client, targets, bus_up.clone())
    });
    let Some((redis_rooms, hub, users)) = wired else {
        return Err(ServeError::Redis("the bridge did not start".into()));
    };
    let presence_dyn: Arc<dyn presence::Presence> = presence.clone();
    let rooms = RoomService::new(hub, presence_dyn.clone(), Some(Arc::new(redis_rooms)));
    let relay = RedisRelay::new(conn.clone(), prefix.clone(), node_id.clone());
    let router = Router::new(users.clone(), Some(Arc::new(relay.clone())));
    let conn_for_limits = conn.clone();
    let store = Arc::new(RedisChatStore::new(conn, &prefix));
    let chat = ChatService::new(store, agents.clone(), presence_dyn.clone(), router, settings.clone(), metrics.clone());
    let mut gw =
        Gateway::new(settings.clone(), node_id, auth, agents, throttle, rooms, presence_dyn, users, chat, metrics);
    gw.token_requests = crate::limits::TokenRequestLimit::Cluster {
        conn: conn_for_limits,
        prefix: prefix.clone(),
        per_min: settings.limits.token_requests_per_min,
    };
    gw.cluster = Some(ClusterLink { relay, bus_up, presence, bridge, prefix });
    Ok(gw)
}

/// Redis may come up after the node (compose, restarts): keep trying for a while.
async fn connect_with_retry(url: &str) -> Result<redis::aio::ConnectionManager, ServeError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match crate::cluster::chat_store::connect(url).await {
            Ok(conn) => return Ok(conn),
            Err(e) if Instant::now() < deadline => {
                warn!(error = %e, "waiting for redis");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(ServeError::Redis(format!("cannot reach {url}: {e}"))),
        }
    }
}

fn cluster_presence(gw: &Gateway) -> Option<Arc<presence::RedisPresence>> {
    gw.cluster.as_ref().map(|c| c.presence.clone())
}

/// Keep this node alive in presence, and turn the users of dead nodes offline.
fn spawn_presence_keeper(gw: web::Data<Gateway>, presence: Arc<presence::RedisPresence>, ttl: Duration) {
    actix_web::rt::spawn(async move {
        // Connections a previous life of this node left behind.
        if let Ok(stale) = presence.clear_node().await {
            announce_gone(&gw, stale).await;
        }
        let mut tick = tokio::time::interval(ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match presence.heartbeat().await {
                Ok(false) => {}
                Ok(true) => {
                    // Other nodes took this one for dead and reaped its connections.
                    for conn in gw.connections.snapshot() {
                        conn.control(crate::outbound::Control::Reannounce);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "presence heartbeat failed");
                    continue;
                }
            }
            match presence.reap_dead_nodes().await {
                Ok(reaped) => announce_gone(&gw, reaped).await,
                Err(e) => warn!(error = %e, "reaping dead nodes failed"),
            }
        }
    });
}

async fn announce_gone(gw: &Gateway, reaped: presence::Reaped) {
    for gone in reaped.users {
        info!(user = %gone.user, "user offline: their node is gone");
        gw.chat.user_went_offline(&gone.user, gone.agent).await;
    }
    for (room, user) in reaped.rooms {
        gw.rooms.announce(&room.into(), &user.into(), protocol::frames::PresenceStatus::Offline).await;
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Close every connection with 1012, spread evenly over `drain`.
async fn drain_connections(gw: &Gateway, drain: Duration) {
    let conns = gw.connections.snapshot();
    if conns.is_empty() {
        return;
    }
    let step = drain / conns.len() as u32;
    info!(connections = conns.len(), drain_secs = drain.as_secs(), "closing connections");
    for conn in conns {
        conn.close(CloseReason::ServiceRestart);
        if !step.is_zero() {
            tokio::time::sleep(step).await;
        }
    }
    // Give the last ones a moment to flush their close frames.
    tokio::time::sleep(Duration::from_millis(200)).await;
}
