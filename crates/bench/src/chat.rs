//! `chat-bench chat` and `chat-bench replay`: customer/agent pairs over /ws/chat.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::http::{http_base, ws_base, Conn};
use crate::util::{self, now_ns, Minter, SharedHist, Ws};

#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Comma-separated node URLs.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Agent tokens are minted with sub = agentId from the admin API.
    #[command(flatten)]
    pub credentials: crate::util::Credentials,
    #[arg(long, default_value = "")]
    pub label: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ChatArgs {
    #[command(flatten)]
    pub common: Common,
    /// Customer/agent pairs (agent on node i % N, customer on node (i + 1) % N).
    #[arg(short = 'p', long, default_value_t = 20)]
    pub pairs: usize,
    /// Seconds of messaging.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Messages in flight (sent, not yet acked) per connection.
    #[arg(long, default_value_t = 4)]
    pub window: usize,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub common: Common,
    /// Backlog size.
    #[arg(short = 'k', long, default_value_t = 20000)]
    pub k: usize,
    /// Agent messages in flight while building the backlog.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Reconnects measured (the backlog is replayed each time: no `delivered` is sent).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

pub struct Person {
    pub id: String,
    pub token: String,
    pub session: Option<String>,
}

async fn create_agent(conn: &mut Conn, c: &Common, minter: &Minter, tag: &str) -> Result<Person, String> {
    let username = format!("bench-{tag}");
    let r = conn
        .post_json(
            "/api/v1/admin/agents",
            Some(&c.credentials.service_token),
            &json!({"username": username, "password": "bench-password-123", "name": format!("Agent {tag}")}),
        )
        .await
        .map_err(|e| format!("admin/agents: {e}"))?;
    if r.status != 201 {
        return Err(format!("admin/agents: HTTP {} {}", r.status, r.text()));
    }
    let id = r.json()["agentId"].as_str().ok_or("admin/agents: no agentId")?.to_string();
    let token = minter.mint("agent", &id, &format!("Agent {tag}"), None, 3 * 3600);
    Ok(Person { id, token, session: None })
}

async fn create_customer(conn: &mut Conn, tag: &str) -> Result<Person, String> {
    let r = conn
        .post_json("/api/v1/public/customer-token", None, &json!({"name": format!("Customer {tag}"), "channel": "web"}))
        .await
        .map_err(|e| format!("customer-token: {e}"))?;
    if r.status != 201 {
        return Err(format!("customer-token: HTTP {} {}", r.status, r.text()));
    }
    let v = r.json();
    let get = |k: &str| v[k].as_str().map(str::to_string).ok_or(format!("customer-token: no {k}: {v}"));
    Ok(Person { id: get("customerId")?, token: get("token")?, session: Some(get("sessionId")?) })
}

async fn claim(conn: &mut Conn, agent: &Person, session: &str) -> Result<(), String> {
    let r = conn
        .request("POST", &format!("/api/v1/sessions/{session}/claim"), Some(&agent.token), None)
        .await
        .map_err(|e| format!("claim: {e}"))?;
    if r.status != 200 {
        return Err(format!("claim: HTTP {} {}", r.status, r.text()));
    }
    Ok(())
}

/// /ws/chat with the token in the query; waits for `hello` and `offline_messages_complete`.
async fn chat_connect(node: &str, token: &str) -> Result<Ws, String> {
    let mut ws = util::ws_connect(&format!("{}/ws/chat?token={token}", ws_base(node)), Duration::from_secs(15)).await?;
    util::wait_type(&mut ws, "hello", Duration::from_secs(15)).await?;
    util::wait_type(&mut ws, "offline_messages_complete", Duration::from_secs(30)).await?;
    Ok(ws)
}

struct ChatShared {
    ack: SharedHist,
    delivery: SharedHist,
    acked: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
}

pub async fn chat(a: ChatArgs) -> Result<Value, String> {
    let c = &a.common;
    let n = c.nodes.len();
    if n == 0 || a.pairs == 0 {
        return Err("need --nodes and -p > 0".into());
    }
    util::check_nofile(a.pairs * 2 + 16)?;
    let minter = c.credentials.minter()?;
    let rid = util::run_id();
    let mut https: Vec<Conn> = c.nodes.iter().map(|u| Conn::new(&http_base(u))).collect();
    let mut pairs = Vec::new();
    let t_setup = Instant::now();
    for i in 0..a.pairs {
        let (an, cn) = (i % n, (i + 1) % n);
        let agent = create_agent(&mut https[an], c, &minter, &format!("{rid}-{i}")).await?;
        let cust = create_customer(&mut https[cn], &format!("{rid}-{i}")).await?;
        let sid = cust.session.clone().expect("session");
        claim(&mut https[an], &agent, &sid).await?;
        pairs.push((agent, an, cust, cn, sid));
    }
    let mut conns = Vec::new();
    for (agent, an, cust, cn, sid) in &pairs {
        let wa = chat_connect(&c.nodes[*an], &agent.token).await?;
        let wc = chat_connect(&c.nodes[*cn], &cust.token).await?;
        conns.push((wa, agent.id.clone(), sid.clone()));
        conns.push((wc, cust.id.clone(), sid.clone()));
    }
    let setup_secs = t_setup.elapsed().as_secs_f64();
    let shared = Arc::new(ChatShared {
        ack: SharedHist::new(),
        delivery: SharedHist::new(),
        acked: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (quit_tx, quit_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let client_cpu0 = util::self_cpu_secs();
    let t0 = Instant::now();
    for (ws, me, sid) in conns {
        tasks.spawn(talker(ws, me, sid, a.window.max(1), shared.clone(), stop_rx.clone(), quit_rx.clone()));
    }
    sleep(Duration::from_secs_f64(a.duration)).await;
    let _ = stop_tx.send(true);
    let send_secs = t0.elapsed().as_secs_f64();
    // Drain: outstanding acks and deliveries (every acked message reaches the peer).
    let drain = Instant::now();
    let mut last = (shared.delivered.load(Ordering::Relaxed), Instant::now());
    while drain.elapsed() < Duration::from_secs(15) {
        let d = shared.delivered.load(Ordering::Relaxed);
        if d >= shared.acked.load(Ordering::Relaxed) && drain.elapsed() > Duration::from_millis(300) {
            break;
        }
        if d != last.0 {
            last = (d, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    let _ = quit_tx.send(true);
    if timeout(Duration::from_secs(15), async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tasks.abort_all();
    }
    let acked = shared.acked.load(Ordering::Relaxed);
    let delivered = shared.delivered.load(Ordering::Relaxed);
    Ok(json!({
        "kind": "chat",
        "label": c.label,
        "nodes": n,
        "pairs": a.pairs,
        "window": a.window,
        "setup_secs": util::round(setup_secs, 2),
        "duration_s": util::round(send_secs, 3),
        "acked": acked,
        "delivered": delivered,
        "lost": acked.saturating_sub(delivered),
        "errors": shared.errors.load(Ordering::Relaxed),
        "messages_per_s": util::round(acked as f64 / send_secs, 1),
        "ack_latency": shared.ack.summary(),
        "delivery_latency": shared.delivery.summary(),
        "client_cpu_s": util::round(util::self_cpu_secs() - client_cpu0, 3),
    }))
}

/// One side of a pair: keeps `window` messages in flight until stopped, records ack latency,
/// and delivery latency of the peer's messages (their text is the send time in ns).
async fn talker(
    mut ws: Ws,
    me: String,
    sid: String,
    window: usize,
    sh: Arc<ChatShared>,
    mut stop: watch::Receiver<bool>,
    mut quit: watch::Receiver<bool>,
) {
    let mut inflight: HashMap<String, u64> = HashMap::new();
    let mut next = 0u64;
    let mut stopping = false;
    let (mut ack_buf, mut del_buf) = (Vec::with_capacity(128), Vec::with_capacity(128));
    loop {
        while !stopping && inflight.len() < window {
            next += 1;
            let id = format!("m{next}");
            let ts = now_ns();
            let f = json!({"type": "message", "id": id, "sessionId": sid, "text": ts.to_string()}).to_string();
            if ws.send(Message::text(f)).await.is_err() {
                sh.errors.fetch_add(1, Ordering::Relaxed);
                stopping = true;
                break;
            }
            inflight.insert(id, ts);
        }
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let now = now_ns();
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    match v["type"].as_str() {
                        Some("ack") => {
                            if let Some(ts) = v["ref"].as_str().and_then(|r| inflight.remove(r)) {
                                ack_buf.push(now.saturating_sub(ts));
                                sh.acked.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some("message") => {
                            let m = &v["message"];
                            if m["from"]["id"].as_str() != Some(me.as_str()) {
                                if let Some(ts) = m["text"].as_str().and_then(|s| s.parse::<u64>().ok()) {
                                    del_buf.push(now.saturating_sub(ts));
                                }
                                sh.delivered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some("error") => {
                            sh.errors.fetch_add(1, Ordering::Relaxed);
                            if let Some(r) = v["ref"].as_str() { inflight.remove(r); }
                        }
                        _ => {}
                    }
                    if ack_buf.len() >= 128 { sh.ack.record_all(&mut ack_buf); }
                    if del_buf.len() >= 128 { sh.delivery.record_all(&mut del_buf); }
                }
                Some(Ok(_)) => {}
                _ => { sh.errors.fetch_add(1, Ordering::Relaxed); break; }
            },
            _ = stop.changed(), if !stopping => { stopping = true; }
            _ = quit.changed() => break,
        }
    }
    sh.ack.record_all(&mut ack_buf);
    sh.delivery.record_all(&mut del_buf);
    let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
}

pub async fn replay(a: ReplayArgs) -> Result<Value, String> {
    let c = &a.common;
    let n = c.nodes.len();
    if n == 0 || a.k == 0 {
        return Err("need --nodes and -k > 0".into());
    }
    let minter = c.credentials.minter()?;
    let rid = util::run_id();
    let (an, cn) = (0, 1 % n);
    let mut ha = Conn::new(&http_base(&c.nodes[an]));
    let mut hc = Conn::new(&http_base(&c.nodes[cn]));
    let agent = create_agent(&mut ha, c, &minter, &format!("{rid}-r")).await?;
    let cust = create_customer(&mut hc, &format!("{rid}-r")).await?;
    let sid = cust.session.clone().expect("session");
    claim(&mut ha, &agent, &sid).await?;
    // The customer is offline while its agent sends K messages.
    let mut wa = chat_connect(&c.nodes[an], &agent.token).await?;
    let t_send = Instant::now();
    let (mut sent, mut acked, mut inflight) = (0usize, 0usize, 0usize);
    let window = a.window.max(1);
    let fill = async {
        while acked < a.k {
            while sent < a.k && inflight < window {
                sent += 1;
                inflight += 1;
                let f = json!({"type": "message", "id": format!("r{sent}"), "sessionId": sid, "text": format!("backlog {sent}")});
                wa.send(Message::text(f.to_string())).await.map_err(|e| format!("send: {e}"))?;
            }
            match wa.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    match v["type"].as_str() {
                        Some("ack") => {
                            acked += 1;
                            inflight -= 1;
                        }
                        Some("error") => return Err(format!("agent got an error frame: {v}")),
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                other => return Err(format!("agent connection ended: {other:?}")),
            }
        }
        Ok::<_, String>(())
    };
    timeout(Duration::from_secs(300), fill).await.map_err(|_| "backlog fill timed out".to_string())??;
    let fill_secs = t_send.elapsed().as_secs_f64();
    let _ = timeout(Duration::from_secs(2), wa.close(None)).await;
    sleep(Duration::from_millis(300)).await;

    let mut runs = Vec::new();
    for _ in 0..a.runs.max(1) {
        let t0 = Instant::now();
        let url = format!("{}/ws/chat?token={}", ws_base(&c.nodes[cn]), cust.token);
        let mut ws = util::ws_connect(&url, Duration::from_secs(15)).await?;
        let mut count = 0usize;
        let mut last_seq = 0u64;
        let mut in_order = true;
        let mut hello_ms = None;
        let read = async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let s = t.as_str();
                        if s.contains("\"offline_message\"") {
                            let v: Value = serde_json::from_str(s).unwrap_or(Value::Null);
                            let seq = v["message"]["seq"].as_u64().unwrap_or(0);
                            in_order &= seq > last_seq;
                            last_seq = seq;
                            count += 1;
                        } else {
                            let v: Value = serde_json::from_str(s).unwrap_or(Value::Null);
                            match v["type"].as_str() {
                                Some("hello") => hello_ms = Some(t0.elapsed().as_secs_f64() * 1e3),
                                Some("offline_messages_complete") => return Ok(v),
                                _ => {}
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                    other => return Err(format!("customer connection ended: {other:?}")),
                }
            }
        };
        let done = timeout(Duration::from_secs(120), read).await.map_err(|_| "replay timed out".to_string())??;
        let secs = t0.elapsed().as_secs_f64();
        let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
        runs.push(json!({
            "secs": util::round(secs, 4),
            "hello_ms": hello_ms.map(|v| util::round(v, 2)),
            "count": count,
            "complete_count": done["count"],
            "truncated": done["truncated"],
            "in_order": in_order,
            "messages_per_s": util::round(count as f64 / secs, 1),
            "ok": count == a.k && done["count"].as_u64() == Some(a.k as u64) && in_order,
        }));
        sleep(Duration::from_millis(200)).await;
    }
    let mut rates: Vec<f64> = runs.iter().map(|r| r["messages_per_s"].as_f64().unwrap_or(0.0)).collect();
    rates.sort_by(f64::total_cmp);
    let ok = runs.iter().all(|r| r["ok"] == true);
    Ok(json!({
        "kind": "replay",
        "label": c.label,
        "k": a.k,
        "agent_node": an,
        "customer_node": cn,
        "fill_secs": util::round(fill_secs, 2),
        "fill_messages_per_s": util::round(a.k as f64 / fill_secs, 1),
        "runs": runs,
        "messages_per_s_median": rates[rates.len() / 2],
        "count_ok": ok,
    }))
}
