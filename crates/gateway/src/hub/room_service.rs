//! What connections and routes call to use rooms: membership (with cluster-wide
//! presence), publishing and room-level broadcasts, on one node or across a cluster.

use std::sync::Arc;

use async_trait::async_trait;
use bytestring::ByteString;
use presence::{Presence, RoomMember, RoomMemberCount, Transition};
use protocol::encode;
use protocol::frames::{notice_parts, PresenceStatus, RoomPresenceFrame};
use protocol::FrameId;
use serde_json::value::RawValue;
use tracing::warn;

use super::rooms::{Broadcast, Join, Leave, Member, Publish, RoomHub, RoomSnapshot};
use crate::outbound::{ConnHandle, ConnId};

/// The shared store or broker did not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unavailable: {0}")]
pub struct Unavailable(pub String);

impl From<presence::PresenceError> for Unavailable {
    fn from(e: presence::PresenceError) -> Self {
        Unavailable(e.to_string())
    }
}

/// Rooms across the nodes of a cluster (Redis): notices are numbered, kept and
/// relayed there; a node receives a room's traffic while it `watch`es the room.
#[async_trait]
pub trait RoomCluster: Send + Sync + 'static {
    /// Make sure this node receives the room's traffic for the local connection
    /// `holder` (returns once it does). Idempotent per holder.
    async fn watch(&self, room: &str, holder: ConnId) -> Result<(), Unavailable>;
    /// `holder` no longer needs the room's traffic. Idempotent per holder.
    async fn unwatch(&self, room: &str, holder: ConnId);
    /// The room's latest seq and the kept notices after `since`.
    async fn snapshot(&self, room: &str, since: Option<u64>) -> Result<RoomSnapshot, Unavailable>;
    /// Number, keep and relay a notice `head + seq + tail`; answers the seq.
    async fn publish(&self, room: &str, head: String, tail: String) -> Result<u64, Unavailable>;
    /// A room-level frame for `/ws/chat` members on every node.
    async fn broadcast(&self, room: &str, frame: &ByteString, except_user: Option<&str>) -> Result<(), Unavailable>;
}

/// A subscription request from a connection.
pub struct JoinRequest {
    pub room: Arc<str>,
    pub member: Member,
    /// Cluster-unique connection key (`node-id`).
    pub conn_key: Arc<str>,
    pub since: Option<u64>,
    pub reference: Option<FrameId>,
    pub announce: bool,
    /// The connection is subscribed already (a repeated `subscribe`, e.g. with `since`):
    /// a failure must not take away the interest its first subscription holds.
    pub again: bool,
}

#[derive(Clone)]
pub struct RoomService {
    hub: RoomHub,
    presence: Arc<dyn Presence>,
    cluster: Option<Arc<dyn RoomCluster>>,
}

impl RoomService {
    pub fn new(hub: RoomHub, presence: Arc<dyn Presence>, cluster: Option<Arc<dyn RoomCluster>>) -> Self {
        RoomService { hub, presence, cluster }
    }

    /// Subscribe; on an error nothing is left behind (the caller must not `leave`).
    pub async fn join(&self, req: JoinRequest) -> Result<(), Unavailable> {
        let holder = req.member.conn.id;
        let snapshot = match &self.cluster {
            Some(cluster) => {
                let snapshot = match cluster.watch(&req.room, holder).await {
                    Ok(()) => cluster.snapshot(&req.room, req.since).await,
                    Err(e) => Err(e),
                };
                match snapshot {
                    Ok(s) => Some(s),
                    Err(e) => {
                        if !req.again {
                            cluster.unwatch(&req.room, holder).await;
                        }
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        let member = RoomMember {
            user_id: req.member.user.to_string(),
            role: req.member.role.as_str().to_string(),
            name: req.member.name.to_string(),
        };
        let user = req.member.user.clone();
        let join = Join {
            room: req.room.clone(),
            member: req.member,
            since: req.since,
            reference: req.reference,
            announce: req.announce,
            snapshot,
        };
        if let Err(e) = self.hub.shard(&req.room).send(join).await {
            // The shard is gone (the node is stopping): undo this join's interest.
            if let (Some(cluster), false) = (&self.cluster, req.again) {
                cluster.unwatch(&req.room, holder).await;
            }
            return Err(Unavailable(e.to_string()));
        }
        match self.presence.room_join(&req.room, &req.conn_key, &member).await {
            Ok(Transition::CameOnline) => self.announce(&req.room, &user, PresenceStatus::Online).await,
            Ok(_) => {}
            Err(e) => warn!(room = %req.room, error = %e, "room presence not recorded"),
        }
        Ok(())
    }

    /// Record a member in room presence again (after its node was taken for dead).
    pub async fn rejoin_presence(&self, room: &Arc<str>, conn_key: &str, member: &Member) {
        let record = RoomMember {
            user_id: member.user.to_string(),
            role: member.role.as_str().to_string(),
            name: member.name.to_string(),
        };
        if let Ok(Transition::CameOnline) = self.presence.room_join(room, conn_key, &record).await {
            self.announce(room, &member.user, PresenceStatus::Online).await;
        }
    }

    /// Leave a room; with `answer`, queue `unsubscribed` (ref) to `handle`.
    pub async fn leave(
        &self,
        room: Arc<str>,
        conn: ConnId,
        conn_key: &str,
        user: &Arc<str>,
        answer: Option<(Option<FrameId>, ConnHandle)>,
    ) {
        let (reference, handle) = match answer {
            Some((r, h)) => (Some(r), Some(h)),
            None => (None, None),
        };
        let _ = self.hub.shard(&room).send(Leave { room: room.clone(), conn, reference, handle }).await;
        if let Some(cluster) = &self.cluster {
            cluster.unwatch(&room, conn).await;
        }
        match self.presence.room_leave(&room, conn_key, user).await {
            Ok(Transition::WentOffline) => self.announce(&room, user, PresenceStatus::Offline).await,
            Ok(_) => {}
            Err(e) => warn!(room = %room, error = %e, "room presence not updated"),
        }
    }

    /// Tell the room's chat members that `user` came or went.
    pub async fn announce(&self, room: &Arc<str>, user: &Arc<str>, status: PresenceStatus) {
        let frame = encode(&RoomPresenceFrame { kind: "presence", room, user_id: user, status });
        match &self.cluster {
            Some(cluster) => {
                if let Err(e) = cluster.broadcast(room, &frame, Some(user)).await {
                    warn!(room = %room, error = %e, "room presence not relayed");
                }
            }
            None => {
                let _ = self
                    .hub
                    .shard(room)
                    .send(Broadcast { room: room.clone(), frame, except_user: Some(user.clone()) })
                    .await;
            }
        }
    }

    pub async fn publish(
        &self,
        room: Arc<str>,
        event: Option<String>,
        data: Box<RawValue>,
    ) -> Result<u64, Unavailable> {
        match &self.cluster {
            Some(cluster) => {
                let ts = protocol::time::now_rfc3339();
                let (head, tail) = notice_parts(&room, event.as_deref(), &data, &ts);
                cluster.publish(&room, head, tail).await
            }
            None => self
                .hub
                .shard(&room)
                .send(Publish { room: room.clone(), event, data })
                .await
                .map_err(|e| Unavailable(e.to_string())),
        }
    }

    pub async fn members(&self, room: &str) -> Result<Vec<RoomMemberCount>, Unavailable> {
        Ok(self.presence.room_members(room).await?)
    }

    pub async fn is_member(&self, room: &str, user: &str) -> Result<bool, Unavailable> {
        Ok(self.presence.is_room_member(room, user).await?)
    }
}
