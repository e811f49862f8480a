//! Login lock-out: too many failed logins for a username within a window.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::store::PRUNE_EVERY;
use crate::StoreError;

/// Counts failed logins per username.
#[async_trait::async_trait]
pub trait LoginThrottle: Send + Sync + 'static {
    /// True while `username` has at least `max_failures` failures within the last `window`.
    async fn is_locked(&self, username: &str) -> Result<bool, StoreError>;
    async fn record_failure(&self, username: &str) -> Result<(), StoreError>;
    /// Forgets the failures of `username` (after a successful login).
    async fn clear(&self, username: &str) -> Result<(), StoreError>;
}

/// The single-node [`LoginThrottle`]. Keeps at most `max_failures` timestamps per
/// username, and sweeps usernames with no failure inside the window at most every
/// [`PRUNE_EVERY`], so memory is bounded by recent failures.
#[derive(Debug)]
pub struct MemoryLoginThrottle {
    /// Failures that lock a username (at least 1).
    max_failures: usize,
    window: Duration,
    inner: Mutex<Failures>,
}

#[derive(Debug, Default)]
struct Failures {
    /// Username → its latest failures, oldest first, at most `max_failures`.
    by_username: HashMap<String, VecDeque<Instant>>,
    last_prune: Option<Instant>,
}

impl MemoryLoginThrottle {
    /// Locks a username after `max_failures` failures (0 is taken as 1) within `window`.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        MemoryLoginThrottle {
            max_failures: usize::try_from(max_failures.max(1)).unwrap_or(usize::MAX),
            window,
            inner: Mutex::new(Failures::default()),
        }
    }

    fn recent(&self, at: Instant, now: Instant) -> bool {
        now.duration_since(at) < self.window
    }
}

#[async_trait::async_trait]
impl LoginThrottle for MemoryLoginThrottle {
    async fn is_locked(&self, username: &str) -> Result<bool, StoreError> {
        let now = Instant::now();
        let t = self.inner.lock();
        Ok(t.by_username.get(username).is_some_and(|failures| {
            failures.len() >= self.max_failures && failures.iter().all(|at| self.recent(*at, now))
        }))
    }

    async fn record_failure(&self, username: &str) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut t = self.inner.lock();
        if t.last_prune.is_none_or(|at| now.duration_since(at) >= PRUNE_EVERY) {
            t.last_prune = Some(now);
            t.by_username.retain(|_, failures| failures.back().is_some_and(|at| self.recent(*at, now)));
        }
        let failures = t.by_username.entry(username.to_owned()).or_default();
        while failures.front().is_some_and(|at| !self.recent(*at, now)) || failures.len() >= self.max_failures {
            failures.pop_front();
        }
        failures.push_back(now);
        Ok(())
    }

    async fn clear(&self, username: &str) -> Result<(), StoreError> {
        self.inner.lock().by_username.remove(username);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Behaviour every [`LoginThrottle`] shares (the Redis one runs it in
    //! `crate::redis_store`).

    use super::*;

    /// `throttle` locks after 3 failures within 200 ms.
    pub(crate) async fn locks_after_n_failures_until_the_window_passes(throttle: &dyn LoginThrottle) {
        for _ in 0..2 {
            throttle.record_failure("ada").await.expect("records");
        }
        assert!(!throttle.is_locked("ada").await.expect("answers"));
        throttle.record_failure("ada").await.expect("records");
        assert!(throttle.is_locked("ada").await.expect("answers"));
        assert!(!throttle.is_locked("bob").await.expect("answers"), "other usernames unaffected");

        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(!throttle.is_locked("ada").await.expect("answers"), "window passed");
    }

    /// `throttle` locks after 2 failures within a long window.
    pub(crate) async fn clear_unlocks(throttle: &dyn LoginThrottle) {
        for _ in 0..10 {
            throttle.record_failure("ada").await.expect("records");
        }
        assert!(throttle.is_locked("ada").await.expect("answers"));
        throttle.clear("ada").await.expect("clears");
        assert!(!throttle.is_locked("ada").await.expect("answers"));
        throttle.record_failure("ada").await.expect("records");
        assert!(!throttle.is_locked("ada").await.expect("answers"), "counting starts again");
        throttle.clear("ada").await.expect("clears");
    }

    #[tokio::test]
    async fn memory_locks_after_n_failures_until_the_window_passes() {
        let throttle = MemoryLoginThrottle::new(3, Duration::from_millis(200));
        locks_after_n_failures_until_the_window_passes(&throttle).await;
    }

    #[tokio::test]
    async fn memory_clear_unlocks_and_memory_stays_bounded() {
        let throttle = MemoryLoginThrottle::new(2, Duration::from_secs(60));
        clear_unlocks(&throttle).await;
        for _ in 0..10 {
            throttle.record_failure("ada").await.expect("records");
        }
        assert_eq!(throttle.inner.lock().by_username["ada"].len(), 2);
    }
}
