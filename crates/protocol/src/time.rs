//! Timestamps on the wire: RFC 3339 UTC strings with milliseconds.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// `2026-11-22T06:00:00.000Z` for the current instant.
pub fn now_rfc3339() -> String {
    format_millis(Utc::now())
}

/// RFC 3339 with milliseconds and `Z`.
pub fn format_millis(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Unix seconds (a JWT `exp`) as an RFC 3339 string; out-of-range values clamp to the epoch.
pub fn from_unix_secs(secs: i64) -> String {
    format_millis(Utc.timestamp_opt(secs, 0).single().unwrap_or_default())
}

/// Unix milliseconds as an RFC 3339 string.
pub fn from_unix_millis(ms: i64) -> String {
    format_millis(Utc.timestamp_millis_opt(ms).single().unwrap_or_default())
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_millis() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_and_z() {
        assert_eq!(from_unix_secs(1_795_500_000), "2026-11-24T06:00:00.000Z");
        assert_eq!(from_unix_millis(1_795_500_000_123), "2026-11-24T06:00:00.123Z");
        assert_eq!(now_rfc3339().len(), 24);
    }
}
