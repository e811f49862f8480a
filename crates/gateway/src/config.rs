//! Configuration (§6): a tree of sections with built-in defaults, overridden by an
//! optional file (`--config FILE`) and then by `CHAT__SECTION__KEY` variables.
//! Everything is validated before anything binds.

use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The secret behind the built-in `dev` key. It exists only while no `auth.keys`
/// entry is configured, and only for nodes bound to a loopback address.
pub const DEV_SECRET: &str = "chat-gateway-development-secret-loopback-only-0001";
pub const DEV_KID: &str = "dev";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {why}")]
    Invalid { key: &'static str, why: String },
}

fn invalid(key: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, why: why.into() }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub broker: BrokerSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub heartbeat: HeartbeatSettings,
    pub rooms: RoomSettings,
    pub limits: LimitSettings,
    pub offline: OfflineSettings,
    pub assignment: AssignmentSettings,
    pub presence: PresenceSettings,
    pub shutdown: ShutdownSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address.
    pub bind: String,
    /// Node name in `hello` and logs; random when unset.
    pub node_id: Option<String>,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    /// Proxies (load balancers) whose `X-Forwarded-For` is believed for the client IP.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings { bind: "127.0.0.1:8080".into(), node_id: None, workers: 0, trusted_proxies: Vec::new() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSettings {
    pub kind: BrokerKind,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    pub url: String,
    /// Prefix of every key and channel, so that several deployments can share a Redis.
    pub key_prefix: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings { url: "redis://127.0.0.1:6379".into(), key_prefix: "chat".into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HandshakeErrors {
    #[default]
    Http,
    Close,
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    pub signing_kid: String,
    /// HS256 secrets by key id; empty means the built-in development key.
    pub keys: BTreeMap<String, String>,
    pub issuer: String,
    pub audience: String,
    pub handshake_errors: HandshakeErrors,
    pub leeway_secs: u64,
    pub timeout_secs: u64,
    pub expiry_warning_secs: u64,
    pub lockout_after_failures: u32,
    pub lockout_secs: u64,
    /// Optional static bearer for service calls.
    pub service_token: Option<String>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("signing_kid", &self.signing_kid)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("handshake_errors", &self.handshake_errors)
            .field("service_token", &self.service_token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            signing_kid: DEV_KID.into(),
            keys: BTreeMap::new(),
            issuer: "chat-gateway".into(),
            audience: "chat".into(),
            handshake_errors: HandshakeErrors::Http,
            leeway_secs: 30,
            timeout_secs: 10,
            expiry_warning_secs: 60,
            lockout_after_failures: 5,
            lockout_secs: 300,
            service_token: None,
        }
    }
}

impl AuthSettings {
    /// True when no key is configured and the built-in development secret is in use.
    pub fn uses_dev_secret(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that verify tokens: the configured ones, or the development key.
    pub fn effective_keys(&self) -> BTreeMap<String, String> {
        if self.keys.is_empty() {
            BTreeMap::from([(DEV_KID.to_string(), DEV_SECRET.to_string())])
        } else {
            self.keys.clone()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatSettings {
    pub interval_secs: u64,
    pub timeout_secs: u64,
}

impl Default for HeartbeatSettings {
    fn default() -> Self {
        HeartbeatSettings { interval_secs: 10, timeout_secs: 30 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomSettings {
    pub max_per_connection: usize,
    pub device_grants: Vec<String>,
    pub history_size: usize,
    pub history_ttl_secs: u64,
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings {
            max_per_connection: 2,
            device_grants: vec!["*".into()],
            history_size: 100,
            history_ttl_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    pub max_connections: usize,
    pub max_frame_bytes: usize,
    pub max_text_chars: usize,
    pub messages_per_sec: u32,
    pub messages_burst: u32,
    pub outbound_queue_bytes: usize,
    pub token_requests_per_min: u32,
    /// `TCP_USER_TIMEOUT` of accepted sockets: unacknowledged data this old drops the connection.
    pub tcp_user_timeout_secs: u64,
    /// A WebSocket whose socket takes no byte of waiting data for this long is cut.
    pub write_stall_secs: u64,
    /// `SO_SNDBUF` of accepted sockets (0: the kernel's autotuning). Small buffers
    /// bound the kernel memory a client that stops reading can pin.
    pub socket_send_buffer_bytes: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_connections: 100_000,
            max_frame_bytes: 65_536,
            max_text_chars: 4096,
            messages_per_sec: 20,
            messages_burst: 40,
            outbound_queue_bytes: 1_048_576,
            token_requests_per_min: 30,
            tcp_user_timeout_secs: 20,
            write_stall_secs: 15,
            socket_send_buffer_bytes: 262_144,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfflineSettings {
    pub max_replay: usize,
}

impl Default for OfflineSettings {
    fn default() -> Self {
        OfflineSettings { max_replay: 1000 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AssignmentMode {
    #[default]
    Auto,
    Manual,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssignmentSettings {
    pub mode: AssignmentMode,
    pub max_sessions_per_agent: usize,
}

impl Default for AssignmentSettings {
    fn default() -> Self {
        AssignmentSettings { mode: AssignmentMode::Auto, max_sessions_per_agent: 5 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceSettings {
    pub node_ttl_secs: u64,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        PresenceSettings { node_ttl_secs: 15 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    pub drain_secs: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        ShutdownSettings { drain_secs: 10 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A `tracing` filter (`info`, `gateway=debug,info`); `RUST_LOG` wins.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings { level: "info".into(), format: "text".into() }
    }
}

/// List-valued keys: comma-separated when set through the environment.
const LIST_KEYS: &[&str] = &["rooms.device_grants", "server.trusted_proxies"];

impl Settings {
    /// Defaults, then `file`, then `CHAT__*` variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let mut env = config::Environment::with_prefix("CHAT")
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .try_parsing(true);
        for key in LIST_KEYS {
            env = env.with_list_parse_key(key);
        }
        let mut settings: Settings = builder.add_source(env).build()?.try_deserialize()?;
        // An empty service token (`CHAT__AUTH__SERVICE_TOKEN=`) means none.
        if settings.auth.service_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            settings.auth.service_token = None;
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Checks that no single key can catch; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let addrs: Vec<_> = self
            .server
            .bind
            .to_socket_addrs()
            .map_err(|e| invalid("server.bind", format!("`{}` is not a listen address: {e}", self.server.bind)))?
            .collect();
        if addrs.is_empty() {
            return Err(invalid("server.bind", "resolves to no address"));
        }
        if self.auth.uses_dev_secret() && addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(invalid(
                "server.bind",
                format!(
                    "`{}` is not a loopback address, and no signing key is configured: the built-in development \
                     secret may only serve 127.0.0.1 / ::1. Set auth.keys.<kid> (CHAT__AUTH__KEYS__<KID>=secret) \
                     and auth.signing_kid, or bind to 127.0.0.1",
                    self.server.bind
                ),
            ));
        }
        let keys = self.auth.effective_keys();
        if !keys.contains_key(&self.auth.signing_kid) {
            return Err(invalid(
                "auth.signing_kid",
                format!(
                    "no key `{}` in auth.keys (configured: {})",
                    self.auth.signing_kid,
                    keys.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if let Some((kid, _)) = keys.iter().find(|(_, s)| s.len() < 16) {
            return Err(invalid("auth.keys", format!("the secret of key `{kid}` is shorter than 16 bytes")));
        }
        let positive: [(&'static str, u64); 13] = [
            ("heartbeat.interval_secs", self.heartbeat.interval_secs),
            ("heartbeat.timeout_secs", self.heartbeat.timeout_secs),
            ("auth.timeout_secs", self.auth.timeout_secs),
            ("auth.lockout_after_failures", self.auth.lockout_after_failures.into()),
            ("rooms.max_per_connection", self.rooms.max_per_connection as u64),
            ("limits.max_connections", self.limits.max_connections as u64),
            ("limits.max_frame_bytes", self.limits.max_frame_bytes as u64),
            ("limits.max_text_chars", self.limits.max_text_chars as u64),
            ("limits.messages_per_sec", self.limits.messages_per_sec.into()),
            ("limits.messages_burst", self.limits.messages_burst.into()),
            ("limits.outbound_queue_bytes", self.limits.outbound_queue_bytes as u64),
            ("limits.token_requests_per_min", self.limits.token_requests_per_min.into()),
            ("limits.write_stall_secs", self.limits.write_stall_secs),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.assignment.max_sessions_per_agent == 0 {
            return Err(invalid("assignment.max_sessions_per_agent", "must be greater than 0"));
        }
        if self.offline.max_replay == 0 {
            return Err(invalid("offline.max_replay", "must be greater than 0"));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", "must be `text` or `json`"));
        }
        Ok(())
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat.interval_secs)
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs(self.heartbeat.timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().expect("defaults validate");
    }

    #[test]
    fn dev_secret_refuses_public_bind() {
        let mut s = Settings::default();
        s.server.bind = "0.0.0.0:8080".into();
        let err = s.validate().expect_err("refused").to_string();
        assert!(err.contains("development"), "{err}");
        s.auth.keys.insert("k1".into(), "a-real-secret-of-enough-length".into());
        s.auth.signing_kid = "k1".into();
        s.validate().expect("with a configured key it may bind anywhere");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = config::Config::builder()
            .set_override("server.bnid", "127.0.0.1:1")
            .and_then(|b| b.build())
            .and_then(|c| c.try_deserialize::<Settings>())
            .expect_err("a typo is an error, not a silent default")
            .to_string();
        assert!(err.contains("bnid"), "{err}");
    }

    #[test]
    fn signing_kid_must_name_a_key() {
        let mut s = Settings::default();
        s.auth.keys.insert("k1".into(), "a-real-secret-of-enough-length".into());
        let err = s.validate().expect_err("dev is gone once keys are configured").to_string();
        assert!(err.contains("auth.signing_kid"), "{err}");
    }
}
