//! Rate limits shared by HTTP routes: customer-token requests per client IP.
//!
//! On one node a GCRA limiter in memory; in a cluster a fixed one-minute window
//! counted in Redis, so that the limit holds however requests are spread over nodes.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use redis::aio::ConnectionManager;

pub enum TokenRequestLimit {
    Local(DefaultKeyedRateLimiter<IpAddr>),
    Cluster { conn: ConnectionManager, prefix: Arc<str>, per_min: u32 },
}

/// A request over the limit, or the limit could not be checked.
#[derive(Debug, PartialEq, Eq)]
pub enum LimitOutcome {
    Allowed,
    Limited,
    /// Redis did not answer: the request is let through rather than refused.
    Unknown,
}

impl TokenRequestLimit {
    pub fn local(per_min: u32) -> Self {
        let per_min = NonZeroU32::new(per_min).unwrap_or(NonZeroU32::MIN);
        TokenRequestLimit::Local(RateLimiter::keyed(Quota::per_minute(per_min)))
    }

    /// Forget addresses whose limit has fully recovered, so that the memory limiter
    /// stays bounded by the recently active clients (called periodically).
    pub fn forget_idle(&self) {
        if let TokenRequestLimit::Local(limiter) = self {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    pub async fn check(&self, ip: IpAddr) -> LimitOutcome {
        match self {
            TokenRequestLimit::Local(limiter) => {
                if limiter.check_key(&ip).is_ok() {
                    LimitOutcome::Allowed
                } else {
                    LimitOutcome::Limited
                }
            }
            TokenRequestLimit::Cluster { conn, prefix, per_min } => {
                let window = protocol::time::unix_millis() / 60_000;
                let key = format!("{{{prefix}:rl}}:ct:{ip}:{window}");
                let mut conn = conn.clone();
                let count: Result<(u32, ()), _> =
                    redis::pipe().atomic().incr(&key, 1).expire(&key, 120).query_async(&mut conn).await;
                match count {
                    Ok((n, ())) if n > *per_min => LimitOutcome::Limited,
                    Ok(_) => LimitOutcome::Allowed,
                    Err(e) => {
                        tracing::warn!(error = %e, "rate-limit counter unavailable");
                        LimitOutcome::Unknown
                    }
                }
            }
        }
    }
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the
/// rightmost `X-Forwarded-For` address that is not a trusted proxy.
pub fn client_ip(peer: Option<IpAddr>, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let hops = forwarded_for.unwrap_or("").split(',').rev().filter_map(|h| h.trim().parse::<IpAddr>().ok());
    for hop in hops {
        if !trusted.contains(&hop) {
            return Some(hop);
        }
    }
    Some(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_only_believed_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.2".parse().expect("an address");
        let client: IpAddr = "203.0.113.9".parse().expect("an address");
        let spoofed = "198.51.100.1, 203.0.113.9";
        assert_eq!(client_ip(Some(client), Some("1.2.3.4"), &[proxy]), Some(client), "untrusted peer: header ignored");
        assert_eq!(client_ip(Some(proxy), Some(spoofed), &[proxy]), Some(client), "rightmost untrusted hop");
        assert_eq!(client_ip(Some(proxy), None, &[proxy]), Some(proxy));
    }

    #[tokio::test]
    async fn local_limit_is_per_address() {
        let limit = TokenRequestLimit::local(2);
        let a: IpAddr = "127.0.0.1".parse().expect("an address");
        let b: IpAddr = "127.0.0.2".parse().expect("an address");
        assert_eq!(limit.check(a).await, LimitOutcome::Allowed);
        assert_eq!(limit.check(a).await, LimitOutcome::Allowed);
        assert_eq!(limit.check(a).await, LimitOutcome::Limited);
        assert_eq!(limit.check(b).await, LimitOutcome::Allowed);
    }
}
