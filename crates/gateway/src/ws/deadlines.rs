//! What a connection waits for, behind one timer: the next heartbeat, the deadline to
//! authenticate, the token's expiry warning and its expiry. actix polls every timer of
//! an actor each time the actor wakes (for every batch of deliveries), so a connection
//! keeps one timer armed for the earliest of these instead of one timer per concern.

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The token expired (past `exp` + leeway).
    Expired,
    /// Not authenticated in time.
    AuthTimeout,
    /// Time for `token_expiring`.
    Warn,
    /// Time to check liveness and ping; the caller sets the next `ping`.
    Ping,
}

#[derive(Debug)]
pub struct Deadlines {
    pub ping: Instant,
    pub auth: Option<Instant>,
    pub warn: Option<Instant>,
    pub expire: Option<Instant>,
}

impl Deadlines {
    pub fn new(ping: Instant) -> Self {
        Deadlines { ping, auth: None, warn: None, expire: None }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Instant {
        [self.auth, self.warn, self.expire].into_iter().flatten().fold(self.ping, Instant::min)
    }

    /// The most pressing event due at `now`; one-shot deadlines are taken off.
    pub fn take_due(&mut self, now: Instant) -> Option<Due> {
        let due = |at: &mut Option<Instant>| at.is_some_and(|t| t <= now) && at.take().is_some();
        if due(&mut self.expire) {
            Some(Due::Expired)
        } else if due(&mut self.auth) {
            Some(Due::AuthTimeout)
        } else if due(&mut self.warn) {
            Some(Due::Warn)
        } else if self.ping <= now {
            Some(Due::Ping)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_earliest_deadline_arms_the_timer() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut d = Deadlines::new(t0 + 30 * s);
        assert_eq!(d.next(), t0 + 30 * s);
        d.auth = Some(t0 + 10 * s);
        d.warn = Some(t0 + 20 * s);
        assert_eq!(d.next(), t0 + 10 * s);
        d.auth = None;
        assert_eq!(d.next(), t0 + 20 * s);
    }

    #[test]
    fn due_events_come_once_most_pressing_first() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut d = Deadlines::new(t0 + 5 * s);
        d.warn = Some(t0 + s);
        d.expire = Some(t0 + 2 * s);
        assert_eq!(d.take_due(t0), None);
        assert_eq!(d.take_due(t0 + s), Some(Due::Warn));
        assert_eq!(d.take_due(t0 + s), None);
        assert_eq!(d.take_due(t0 + 10 * s), Some(Due::Expired));
        assert_eq!(d.take_due(t0 + 10 * s), Some(Due::Ping));
        // a ping stays due until the caller moves it
        assert_eq!(d.take_due(t0 + 10 * s), Some(Due::Ping));
        d.ping = t0 + 40 * s;
        assert_eq!(d.take_due(t0 + 10 * s), None);
        assert_eq!(d.next(), t0 + 40 * s);
    }
}
