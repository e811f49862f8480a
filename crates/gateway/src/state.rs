//! The node's shared services, handed to every handler and connection.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use auth::{AgentStore, Authenticator, LoginThrottle};
use parking_lot::Mutex;

use crate::outbound::{ConnHandle, ConnId};

use crate::chat::ChatService;
use crate::config::Settings;
use crate::hub::room_service::RoomService;
use crate::hub::users::UserHub;
use crate::metrics::Metrics;

pub struct Gateway {
    pub settings: Arc<Settings>,
    /// `server.node_id`, or a random name.
    pub node_id: Arc<str>,
    pub auth: Arc<Authenticator>,
    pub agents: Arc<dyn AgentStore>,
    pub login_throttle: Arc<dyn LoginThrottle>,
    pub rooms: RoomService,
    pub presence: Arc<dyn presence::Presence>,
    pub users: UserHub,
    pub chat: ChatService,
    pub slots: Arc<ConnectionSlots>,
    /// Every open connection, for the drain.
    pub connections: ConnectionIndex,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: Arc<Metrics>,
    /// Cluster mode: the relay for revocations and liveness, and the bridge's state.
    pub cluster: Option<ClusterLink>,
    /// `limits.token_requests_per_min` per client IP for customer-token.
    pub token_requests: crate::limits::TokenRequestLimit,
    next_conn: AtomicU64,
}

impl Gateway {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Arc<Settings>,
        node_id: Arc<str>,
        auth: Arc<Authenticator>,
        agents: Arc<dyn AgentStore>,
        login_throttle: Arc<dyn LoginThrottle>,
        rooms: RoomService,
        presence: Arc<dyn presence::Presence>,
        users: UserHub,
        chat: ChatService,
        metrics: Arc<Metrics>,
    ) -> Gateway {
        Gateway {
            slots: Arc::new(ConnectionSlots::new(settings.limits.max_connections)),
            lifecycle: Arc::new(Lifecycle::default()),
            connections: ConnectionIndex::default(),
            cluster: None,
            token_requests: crate::limits::TokenRequestLimit::local(settings.limits.token_requests_per_min),
            next_conn: AtomicU64::new(1),
            settings,
            node_id,
            auth,
            agents,
            login_throttle,
            rooms,
            presence,
            users,
            chat,
            metrics,
        }
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// `limits.max_connections`: WebSocket connections open on this node.
#[derive(Debug)]
pub struct ConnectionSlots {
    open: AtomicUsize,
    max: usize,
}

impl ConnectionSlots {
    pub fn new(max: usize) -> Self {
        ConnectionSlots { open: AtomicUsize::new(0), max }
    }

    /// A slot, held for the connection's lifetime; `None` at the limit.
    pub fn try_acquire(self: &Arc<Self>) -> Option<SlotGuard> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| SlotGuard(self.clone()))
    }
}

/// One connection slot; released on drop.
#[derive(Debug)]
pub struct SlotGuard(Arc<ConnectionSlots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether the node is draining (SIGTERM received).
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
}

impl Lifecycle {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

impl Gateway {
    /// Close the connections a revocation ends, on every node.
    pub async fn close_revoked(&self, user: Arc<str>, which: crate::hub::users::Revoked) {
        match &self.cluster {
            Some(cluster) => cluster.relay.revoke(&user, &which).await,
            None => {
                let _ = self.users.shard(&user).send(crate::hub::users::Revoke { user, which }).await;
            }
        }
    }
}

/// Handles of the node's open connections, for the drain on shutdown. Touched only
/// when a connection opens or closes.
#[derive(Default)]
pub struct ConnectionIndex {
    open: Mutex<std::collections::HashMap<ConnId, ConnHandle>>,
}

impl ConnectionIndex {
    pub fn insert(&self, conn: ConnHandle) {
        self.open.lock().insert(conn.id, conn);
    }

    pub fn remove(&self, id: ConnId) {
        self.open.lock().remove(&id);
    }

    pub fn snapshot(&self) -> Vec<ConnHandle> {
        self.open.lock().values().cloned().collect()
    }
}

/// What a cluster node needs beyond the single-node services.
#[derive(Clone)]
pub struct ClusterLink {
    pub relay: crate::cluster::relay::RedisRelay,
    /// The bridge's pub/sub connection is up.
    pub bus_up: Arc<AtomicBool>,
    pub presence: Arc<presence::RedisPresence>,
    pub bridge: actix::Addr<crate::cluster::bridge::Bridge>,
    pub prefix: Arc<str>,
}

impl Gateway {
    /// Register a connection for deliveries to its user: in a cluster, this node
    /// subscribes to the user's channel first (and keeps wanting it even if Redis is
    /// away right now, so that it resubscribes when Redis returns).
    pub async fn register(gw: actix_web::web::Data<Self>, register: crate::hub::users::Register) {
        if let Some(cluster) = &gw.cluster {
            let channel = crate::cluster::wire::user_channel(&cluster.prefix, &register.user);
            let holder = register.conn.conn.id;
            if let Ok(Err(e)) = cluster.bridge.send(crate::cluster::bridge::Ensure { channel, holder }).await {
                tracing::warn!(user = %register.user, error = %e, "live delivery across nodes waits for redis");
            }
        }
        let _ = gw.users.shard(&register.user).send(register).await;
    }

    /// The user's connection `holder` here closed (after `register`).
    pub async fn unwatch_user(&self, user: &str, holder: ConnId) {
        if let Some(cluster) = &self.cluster {
            let channel = crate::cluster::wire::user_channel(&cluster.prefix, user);
            let _ = cluster.bridge.send(crate::cluster::bridge::Release { channel, holder }).await;
        }
    }
}
