//! Presence kept in the process: exact, and lost on restart.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;

use crate::{Presence, PresenceError, RoomMember, RoomMemberCount, Transition};

#[derive(Default)]
struct Online {
    /// Open connection ids by user.
    conns: HashMap<String, HashSet<String>>,
    /// Online users that are agents.
    agents: HashSet<String>,
    /// Agents that said `away` (kept while they are offline too).
    away: HashSet<String>,
    /// Room → connection → member.
    rooms: HashMap<String, HashMap<String, RoomMember>>,
}

/// The single-node [`Presence`]: one mutex, held only for map updates.
#[derive(Default)]
pub struct MemoryPresence {
    inner: Mutex<Online>,
}

impl MemoryPresence {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl Presence for MemoryPresence {
    async fn connected(&self, user: &str, agent: bool, conn: &str) -> Result<Transition, PresenceError> {
        let mut inner = self.inner.lock();
        let conns = inner.conns.entry(user.to_string()).or_default();
        let first = conns.is_empty();
        conns.insert(conn.to_string());
        if agent {
            inner.agents.insert(user.to_string());
        }
        Ok(if first { Transition::CameOnline } else { Transition::Unchanged })
    }

    async fn disconnected(&self, user: &str, conn: &str) -> Result<Transition, PresenceError> {
        let mut inner = self.inner.lock();
        let Some(conns) = inner.conns.get_mut(user) else { return Ok(Transition::Unchanged) };
        if !conns.remove(conn) {
            return Ok(Transition::Unchanged);
        }
        if conns.is_empty() {
            inner.conns.remove(user);
            inner.agents.remove(user);
            return Ok(Transition::WentOffline);
        }
        Ok(Transition::Unchanged)
    }

    async fn is_online(&self, user: &str) -> Result<bool, PresenceError> {
        Ok(self.inner.lock().conns.contains_key(user))
    }

    async fn set_away(&self, agent: &str, away: bool) -> Result<(), PresenceError> {
        let mut inner = self.inner.lock();
        if away {
            inner.away.insert(agent.to_string());
        } else {
            inner.away.remove(agent);
        }
        Ok(())
    }

    async fn available_agents(&self) -> Result<Vec<String>, PresenceError> {
        let inner = self.inner.lock();
        Ok(inner.agents.iter().filter(|a| !inner.away.contains(*a)).cloned().collect())
    }

    async fn room_join(&self, room: &str, conn: &str, member: &RoomMember) -> Result<Transition, PresenceError> {
        let mut inner = self.inner.lock();
        let members = inner.rooms.entry(room.to_string()).or_default();
        if members.contains_key(conn) {
            return Ok(Transition::Unchanged);
        }
        let first = !members.values().any(|m| m.user_id == member.user_id);
        members.insert(conn.to_string(), member.clone());
        Ok(if first { Transition::CameOnline } else { Transition::Unchanged })
    }

    async fn room_leave(&self, room: &str, conn: &str, user: &str) -> Result<Transition, PresenceError> {
        let mut inner = self.inner.lock();
        let Some(members) = inner.rooms.get_mut(room) else { return Ok(Transition::Unchanged) };
        if members.remove(conn).is_none() {
            return Ok(Transition::Unchanged);
        }
        let last = !members.values().any(|m| m.user_id == user);
        if members.is_empty() {
            inner.rooms.remove(room);
        }
        Ok(if last { Transition::WentOffline } else { Transition::Unchanged })
    }

    async fn room_members(&self, room: &str) -> Result<Vec<RoomMemberCount>, PresenceError> {
        let inner = self.inner.lock();
        let mut by_user: HashMap<&str, RoomMemberCount> = HashMap::new();
        for m in inner.rooms.get(room).into_iter().flat_map(|r| r.values()) {
            by_user
                .entry(&m.user_id)
                .or_insert_with(|| RoomMemberCount {
                    user_id: m.user_id.clone(),
                    role: m.role.clone(),
                    name: m.name.clone(),
                    connections: 0,
                })
                .connections += 1;
        }
        let mut list: Vec<_> = by_user.into_values().collect();
        list.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(list)
    }

    async fn is_room_member(&self, room: &str, user: &str) -> Result<bool, PresenceError> {
        Ok(self.inner.lock().rooms.get(room).is_some_and(|r| r.values().any(|m| m.user_id == user)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! conformance {
        ($($name:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $name() {
                crate::conformance::$name(&MemoryPresence::new()).await;
            }
        )*};
    }

    crate::conformance::each_case!(conformance);
}
