//! Presence kept in the process: exact, and lost on restart.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;

use crate::{Presence, PresenceError, Transition};

#[derive(Default)]
struct Online {
    /// Open connection ids by user.
    conns: HashMap<String, HashSet<String>>,
    /// Online users that are agents.
    agents: HashSet<String>,
    /// Agents that said `away` (kept while they are offline too).
    away: HashSet<String>,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_and_last_connection_are_transitions() {
        let p = MemoryPresence::new();
        assert_eq!(p.connected("u", false, "n1:1").await.unwrap(), Transition::CameOnline);
        assert_eq!(p.connected("u", false, "n2:1").await.unwrap(), Transition::Unchanged);
        assert!(p.is_online("u").await.unwrap());
        assert_eq!(p.disconnected("u", "n1:1").await.unwrap(), Transition::Unchanged);
        assert_eq!(p.disconnected("u", "n1:1").await.unwrap(), Transition::Unchanged, "closing twice changes nothing");
        assert_eq!(p.disconnected("u", "n2:1").await.unwrap(), Transition::WentOffline);
        assert!(!p.is_online("u").await.unwrap());
    }

    #[tokio::test]
    async fn away_agents_are_not_available() {
        let p = MemoryPresence::new();
        p.connected("a1", true, "c1").await.unwrap();
        p.connected("a2", true, "c2").await.unwrap();
        p.connected("cust", false, "c3").await.unwrap();
        let mut avail = p.available_agents().await.unwrap();
        avail.sort();
        assert_eq!(avail, vec!["a1", "a2"]);
        p.set_away("a1", true).await.unwrap();
        assert_eq!(p.available_agents().await.unwrap(), vec!["a2"]);
        p.disconnected("a2", "c2").await.unwrap();
        assert!(p.available_agents().await.unwrap().is_empty());
    }
}
