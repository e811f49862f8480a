//! The Redis bridge: one pub/sub connection per node, subscribed only to the
//! channels that have members here, relaying what arrives to the local registries.
//!
//! Interest is kept per channel as the set of local holders (connections) that want
//! it ([`Ensure`] / [`Release`], both idempotent per holder); the bridge reconciles
//! what Redis has with what is wanted in batches, and `Ensure` answers once the
//! subscription is active, so a member never misses what is published after it.
//! When the connection drops the bridge reconnects with backoff, subscribes to
//! everything again and then asks every registry to fill what it missed from the
//! stores ([`Resync`]): rooms from the room history, chat sessions from the log.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;
use futures_util::{FutureExt, StreamExt};
use redis::aio::PubSubSink;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::wire;
use crate::hub::room_service::Unavailable;
use crate::hub::rooms::{Broadcast, Deliver, DeliverMany, RoomHub};
use crate::hub::users::{Resync, Revoke, Revoked, SendToAgents, SendToUser, Touch, UserHub};
use crate::outbound::{ConnId, Outbound};

/// How long `Ensure` waits for a subscription before answering `Unavailable`.
const ENSURE_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Most relayed items taken from the connection before handing them on.
const RELAY_BATCH: usize = 512;

/// Make sure this node receives `channel` for `holder` (a local connection).
#[derive(Message)]
#[rtype(result = "Result<(), Unavailable>")]
pub struct Ensure {
    pub channel: String,
    pub holder: ConnId,
}

/// `holder` no longer needs `channel`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release {
    pub channel: String,
    pub holder: ConnId,
}

/// The holder of the channels the node always wants (connection ids start at 1).
const NODE_HOLDER: ConnId = 0;

#[derive(Message)]
#[rtype(result = "()")]
struct Connected {
    sink: PubSubSink,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Disconnected;

/// Where relayed items go on this node.
#[derive(Clone)]
pub struct LocalTargets {
    pub node: Arc<str>,
    pub prefix: Arc<str>,
    pub rooms: RoomHub,
    pub users: UserHub,
}

pub struct Bridge {
    client: redis::Client,
    targets: LocalTargets,
    /// The subscribe/unsubscribe side of the live connection.
    sink: Option<PubSubSink>,
    /// Local holders per wanted channel.
    wanted: HashMap<String, HashSet<ConnId>>,
    /// Channels Redis has us subscribed to.
    active: HashSet<String>,
    /// `Ensure` callers waiting for a channel to become active.
    waiters: HashMap<String, Vec<oneshot::Sender<()>>>,
    flushing: bool,
    /// Wanted changed during a flush.
    dirty: bool,
    /// Subscribed once before: the next full subscription follows an outage.
    was_connected: bool,
    /// Shared with `/readyz`.
    pub connected: Arc<AtomicBool>,
}

impl Bridge {
    pub fn new(client: redis::Client, targets: LocalTargets, connected: Arc<AtomicBool>) -> Self {
        let mut wanted = HashMap::new();
        wanted.insert(wire::agents_channel(&targets.prefix), HashSet::from([NODE_HOLDER]));
        Bridge {
            client,
            targets,
            sink: None,
            wanted,
            active: HashSet::new(),
            waiters: HashMap::new(),
            flushing: false,
            dirty: false,
            was_connected: false,
            connected,
        }
    }

    fn connect(&self, ctx: &mut Context<Self>) {
        let client = self.client.clone();
        let targets = self.targets.clone();
        let me = ctx.address();
        actix::spawn(async move {
            let mut backoff = BACKOFF_MIN;
            loop {
                match tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()).await {
                    Ok(Ok(pubsub)) => {
                        let (sink, mut stream) = pubsub.split();
                        me.do_send(Connected { sink });
                        let mut notices = NoticeBatch::default();
                        while let Some(first) = stream.next().await {
                            // Take everything already received in one go: notices are
                            // handed to each room shard as one batch (one wake-up).
                            let mut next = Some(first);
                            let mut taken = 0;
                            while let Some(msg) = next.take() {
                                relay(&targets, msg.get_channel_name(), msg.get_payload_bytes(), &mut notices).await;
                                taken += 1;
                                if taken < RELAY_BATCH {
                                    next = stream.next().now_or_never().flatten();
                                }
                            }
                            notices.flush(&targets).await;
                        }
                        me.do_send(Disconnected);
                        return;
                    }
                    Ok(Err(e)) => debug!(error = %e, "bridge: redis not reachable"),
                    Err(_) => debug!("bridge: redis connect timed out"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing {
            self.dirty = true;
            return;
        }
        let Some(sink) = self.sink.clone() else { return };
        let subscribe: Vec<String> = self.wanted.keys().filter(|c| !self.active.contains(*c)).cloned().collect();
        let unsubscribe: Vec<String> = self.active.iter().filter(|c| !self.wanted.contains_key(*c)).cloned().collect();
        if subscribe.is_empty() && unsubscribe.is_empty() {
            return;
        }
        self.flushing = true;
        self.dirty = false;
        let fut = async move {
            let mut sink = sink;
            if !subscribe.is_empty() {
                sink.subscribe(&subscribe).await?;
            }
            if !unsubscribe.is_empty() {
                sink.unsubscribe(&unsubscribe).await?;
            }
            Ok::<_, redis::RedisError>((subscribe, unsubscribe))
        };
        ctx.spawn(fut.into_actor(self).map(|result, bridge, ctx| {
            bridge.flushing = false;
            match result {
                Ok((subscribed, unsubscribed)) => {
                    for channel in subscribed {
                        for waiter in bridge.waiters.remove(&channel).unwrap_or_default() {
                            let _ = waiter.send(());
                        }
                        bridge.active.insert(channel);
                    }
                    for channel in unsubscribed {
                        bridge.active.remove(&channel);
                    }
                    if bridge.dirty {
                        bridge.flush(ctx);
                    }
                }
                Err(e) => warn!(error = %e, "bridge: subscription change failed; waiting for the reconnect"),
            }
        }));
    }
}

impl Actor for Bridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16_384);
        self.connect(ctx);
    }
}

impl Handler<Ensure> for Bridge {
    type Result = ResponseFuture<Result<(), Unavailable>>;

    fn handle(&mut self, msg: Ensure, ctx: &mut Self::Context) -> Self::Result {
        self.wanted.entry(msg.channel.clone()).or_default().insert(msg.holder);
        if self.active.contains(&msg.channel) {
            return Box::pin(async { Ok(()) });
        }
        let (tx, rx) = oneshot::channel();
        let waiting = self.waiters.entry(msg.channel).or_default();
        waiting.retain(|w| !w.is_closed());
        waiting.push(tx);
        self.flush(ctx);
        Box::pin(async move {
            match tokio::time::timeout(ENSURE_TIMEOUT, rx).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(Unavailable("the message bus (Redis) is not reachable".into())),
            }
        })
    }
}

impl Handler<Release> for Bridge {
    type Result = ();

    fn handle(&mut self, msg: Release, ctx: &mut Self::Context) {
        if let Some(holders) = self.wanted.get_mut(&msg.channel) {
            holders.remove(&msg.holder);
            if holders.is_empty() {
                self.wanted.remove(&msg.channel);
                // Nobody waits for a channel nobody wants (their `Ensure` timed out).
                self.waiters.remove(&msg.channel);
                self.flush(ctx);
            }
        }
    }
}

impl Handler<Connected> for Bridge {
    type Result = ();

    fn handle(&mut self, msg: Connected, ctx: &mut Self::Context) {
        info!("bridge: connected to redis");
        self.sink = Some(msg.sink);
        self.active.clear();
        self.flushing = false;
        self.connected.store(true, Ordering::Release);
        self.flush(ctx);
        if self.was_connected {
            // What was published while we were away: fetch it from the stores once
            // the subscriptions are back (give the flush a moment to land).
            let targets = self.targets.clone();
            ctx.run_later(Duration::from_millis(200), move |_, _| resync(&targets));
        }
        self.was_connected = true;
    }
}

impl Handler<Disconnected> for Bridge {
    type Result = ();

    fn handle(&mut self, _: Disconnected, ctx: &mut Self::Context) {
        warn!("bridge: lost the redis pub/sub connection; reconnecting");
        self.sink = None;
        self.active.clear();
        self.connected.store(false, Ordering::Release);
        self.connect(ctx);
    }
}

fn resync(targets: &LocalTargets) {
    for shard in targets.users.shards() {
        let _ = shard.try_send(Resync);
    }
    targets.rooms.resync();
}

/// Room notices taken from the bus, grouped by room shard.
#[derive(Default)]
struct NoticeBatch {
    by_shard: HashMap<usize, Vec<Deliver>>,
}

impl NoticeBatch {
    async fn flush(&mut self, targets: &LocalTargets) {
        for (shard, notices) in self.by_shard.drain() {
            deliver(targets.rooms.shard_at(shard), DeliverMany { notices }).await;
        }
    }
}

/// Deliver one relayed item to this node's registries (room notices into `notices`,
/// to be flushed by the caller).
async fn relay(targets: &LocalTargets, channel: &str, payload: &[u8], notices: &mut NoticeBatch) {
    let Some((header, body)) = wire::decode(payload) else {
        warn!(channel, "bridge: unreadable item dropped");
        return;
    };
    let prefix = &*targets.prefix;
    let Some(rest) = channel.strip_prefix(prefix).and_then(|r| r.strip_prefix(':')) else { return };
    let frame = ByteString::from(body.to_string());
    if let Some(room) = rest.strip_prefix("room:") {
        let room: Arc<str> = room.into();
        let shard = targets.rooms.shard(&room);
        match header.k {
            'n' => {
                let Some(seq) = header.q else { return };
                let index = targets.rooms.shard_index(&room);
                notices.by_shard.entry(index).or_default().push(Deliver { room, seq, frame });
            }
            'p' => {
                // Keep the room's order: notices taken before this go first.
                notices.flush(targets).await;
                deliver(shard, Broadcast { room, frame, except_user: header.x.map(Arc::from) }).await
            }
            _ => {}
        }
    } else if let Some(user) = rest.strip_prefix("user:") {
        let user: Arc<str> = user.into();
        let shard = targets.users.shard(&user);
        match header.k {
            'f' | 'm' | 't' => {
                let item = match (header.k, header.s) {
                    ('m', Some(session)) => {
                        Outbound::Message { session: session.into(), seq: header.q.unwrap_or(0), frame }
                    }
                    ('t', Some(session)) => Outbound::Track { session: session.into(), after: header.a.unwrap_or(0) },
                    _ => Outbound::Frame(frame),
                };
                let except = header.x.as_deref().and_then(|x| local_conn(&targets.node, x));
                deliver(shard, SendToUser { user, item, except }).await;
            }
            'r' => {
                let which = match (header.f, header.j) {
                    (Some(f), _) => Revoked::Family(f.into()),
                    (None, Some(j)) => Revoked::Jti(j.into()),
                    (None, None) => Revoked::All,
                };
                deliver(shard, Revoke { user, which }).await;
            }
            'h' => deliver(shard, Touch { user, jti: header.j.map(Arc::from) }).await,
            _ => {}
        }
    } else if rest == "agents" {
        for shard in targets.users.shards() {
            deliver(shard, SendToAgents { item: Outbound::Frame(frame.clone()) }).await;
        }
    }
}

/// Queue without blocking when the registry has room; otherwise wait for it, so
/// that a busy registry slows the bridge instead of growing a queue.
async fn deliver<A, M>(addr: &Addr<A>, msg: M)
where
    A: Actor<Context = Context<A>> + Handler<M>,
    M: Message<Result = ()> + Send + 'static,
{
    match addr.try_send(msg) {
        Ok(()) => {}
        Err(SendError::Full(msg)) => {
            let _ = addr.send(msg).await;
        }
        Err(SendError::Closed(_)) => {}
    }
}

/// `<node>/<id>` → the connection id when `<node>` is this node.
fn local_conn(node: &str, x: &str) -> Option<ConnId> {
    let (n, id) = x.rsplit_once('/')?;
    (n == node).then(|| id.parse().ok()).flatten()
}

/// The `x` of a user item from this node's connection `conn`.
pub fn conn_ref(node: &str, conn: ConnId) -> String {
    format!("{node}/{conn}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn except_names_a_connection_of_this_node_only() {
        assert_eq!(local_conn("n1", &conn_ref("n1", 17)), Some(17));
        assert_eq!(local_conn("n1", &conn_ref("n2", 17)), None);
        assert_eq!(local_conn("a/b", "a/b/5"), Some(5));
    }
}
