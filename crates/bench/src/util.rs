//! Shared pieces: the clock, JWT minting, /proc readings, WebSocket connect, latency histograms.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds on this process's monotonic clock (publisher and subscribers share it).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// How the tool authenticates against the nodes: the service bearer (publish, admin
/// routes) and the HS256 key it mints user tokens with.
#[derive(clap::Args, Debug, Clone)]
pub struct Credentials {
    /// Service bearer for the publish and admin routes.
    #[arg(long, env = "CHAT_BENCH_SERVICE_TOKEN", default_value = "")]
    pub service_token: String,
    /// HS256 secret of the nodes' signing key, to mint tokens.
    #[arg(long, env = "CHAT_BENCH_SECRET", default_value = "")]
    pub secret: String,
    #[arg(long, default_value = "dev")]
    pub kid: String,
}

impl Credentials {
    pub fn minter(&self) -> Result<Minter, String> {
        Minter::new(&self.secret, &self.kid)
    }
}

/// HS256 token per PROTOCOL.md §1 (kid header; sub, role, name, exp, iss, aud, rooms).
pub struct Minter {
    key: jsonwebtoken::EncodingKey,
    kid: String,
}

impl Minter {
    pub fn new(secret: &str, kid: &str) -> Result<Self, String> {
        if secret.is_empty() {
            return Err("--secret (or CHAT_BENCH_SECRET) is required to mint tokens".into());
        }
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).map_err(|e| format!("secret: {e}"))?;
        Ok(Minter { key, kid: kid.to_string() })
    }

    pub fn mint(&self, role: &str, sub: &str, name: &str, rooms: Option<&[&str]>, ttl_secs: u64) -> String {
        let now = unix_secs();
        let mut claims = json!({
            "sub": sub, "role": role, "name": name,
            "iat": now, "exp": now + ttl_secs,
            "iss": "chat-gateway", "aud": "chat",
        });
        if let Some(r) = rooms {
            claims["rooms"] = json!(r);
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("jwt encode")
    }
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok())
}

/// utime + stime of a process in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the ")" of comm: state is field 3; utime 14, stime 15 (1-based)
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / if hz > 0.0 { hz } else { 100.0 })
}

pub fn self_cpu_secs() -> f64 {
    cpu_secs(std::process::id()).unwrap_or(0.0)
}

/// Raises the soft open-file limit to the hard one; returns the soft limit in force.
pub fn raise_nofile() -> u64 {
    unsafe {
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit { rlim_cur: rl.rlim_max, rlim_max: rl.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return rl.rlim_max;
            }
        }
        rl.rlim_cur
    }
}

/// Fails early when `conns` sockets (plus headroom) cannot be opened by this process.
pub fn check_nofile(conns: usize) -> Result<(), String> {
    let limit = raise_nofile();
    if (conns as u64) + 64 > limit {
        return Err(format!(
            "{conns} connections need more than this process's open-file limit ({limit}); lower -n/-s"
        ));
    }
    Ok(())
}

pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0).max_message_size(Some(64 << 20))
}

/// Opens a WebSocket to `url` (ws://127.0.0.1:port/path?query) within `limit`.
pub async fn ws_connect(url: &str, limit: Duration) -> Result<Ws, String> {
    let addr = crate::http::host_port(url);
    let fut = async {
        let tcp = TcpStream::connect(&addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_nodelay(true).ok();
        let (ws, _resp) = tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config()))
            .await
            .map_err(|e| format!("handshake {url}: {e}"))?;
        Ok::<_, String>(ws)
    };
    timeout(limit, fut).await.map_err(|_| format!("connect {addr}: timeout"))?
}

/// Reads frames until a text frame whose `type` is `want`; returns it.
pub async fn wait_type(ws: &mut Ws, want: &str, limit: Duration) -> Result<Value, String> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let fut = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v["type"] == want {
                        return Ok(v);
                    }
                    if v["type"] == "error" && want != "error" {
                        return Err(format!("error frame while waiting for {want}: {v}"));
                    }
                }
                Some(Ok(Message::Close(c))) => return Err(format!("closed while waiting for {want}: {c:?}")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("ws error while waiting for {want}: {e}")),
                None => return Err(format!("eof while waiting for {want}")),
            }
        }
    };
    timeout(limit, fut).await.map_err(|_| format!("timeout waiting for {want}"))?
}

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 120_000_000_000, 3).expect("histogram bounds")
}

/// Latency histogram shared by many tasks; tasks batch samples locally.
pub struct SharedHist(pub Mutex<Histogram<u64>>);

impl SharedHist {
    pub fn new() -> Self {
        SharedHist(Mutex::new(new_hist()))
    }
    pub fn record_all(&self, samples: &mut Vec<u64>) {
        if samples.is_empty() {
            return;
        }
        let mut h = self.0.lock().expect("hist lock");
        for &s in samples.iter() {
            h.saturating_record(s.max(1_000));
        }
        samples.clear();
    }
    pub fn summary(&self) -> LatencySummary {
        LatencySummary::of(&self.0.lock().expect("hist lock"))
    }
}

impl Default for SharedHist {
    fn default() -> Self {
        Self::new()
    }
}

/// Percentiles in microseconds.
#[derive(Serialize, Clone, Debug, Default)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let us = |v: u64| (v as f64 / 1000.0 * 10.0).round() / 10.0;
        LatencySummary {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// Prints the machine-readable result line on stdout.
pub fn emit(v: &Value) {
    println!("{}", serde_json::to_string(v).expect("json"));
}

pub fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

/// A process-unique id fragment for user ids and room names.
pub fn run_id() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), t & 0xffff_ffff)
}
