//! `chat-bench fanout`: subscribers on /ws?token&roomIds=room spread over the nodes, notices
//! published with POST /api/v1/rooms/{room}/publish carrying their send time and a publisher
//! sequence; latency (same-node / cross-node), throughput, loss and duplicates.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::http::{http_base, ws_base, Conn};
use crate::util::{self, now_ns, LatencySummary, SharedHist, Ws};

#[derive(clap::Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Comma-separated node URLs (ws:// or http://, host:port only is used).
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Subscriber connections in all.
    #[arg(short = 's', long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Rooms; subscriber i takes room i % R on node (i / R) % N, so every room has
    /// subscribers on every node once S >= R * N.
    #[arg(short = 'r', long, default_value_t = 10)]
    pub rooms: usize,
    /// Fixed publish rate in notices/s (omit for window mode).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Window mode: at most W notices published but not yet delivered to all their subscribers.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Publishing time in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Subscribers get device tokens with rooms [*].
    #[command(flatten)]
    pub credentials: util::Credentials,
    /// Server pids whose utime+stime is read before and after (CPU per delivery).
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Keep-alive HTTP connections publishing (spread over the nodes).
    #[arg(long, default_value_t = 4)]
    pub pub_conns: usize,
    /// Connections opened concurrently while ramping up.
    #[arg(long, default_value_t = 250)]
    pub batch: usize,
    /// Seconds without delivery progress that end the drain after publishing stops.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,
    /// Free text copied into the JSON line (e.g. "gateway" or "floor").
    #[arg(long, default_value = "")]
    pub label: String,
    /// Room name prefix (default: unique per run).
    #[arg(long)]
    pub room_prefix: Option<String>,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    t: u64,
    #[serde(default)]
    n: usize,
}

struct Shared {
    delivered: AtomicU64,
    expected: AtomicU64,
    last_delivery_ns: AtomicU64,
    same: SharedHist,
    cross: SharedHist,
    disconnects: AtomicU64,
    other_frames: AtomicU64,
    reordered: AtomicU64,
}

struct SubResult {
    room: usize,
    first: Option<u64>,
    bits: Vec<u64>,
    received: u64,
}

#[derive(Default)]
struct RoomSeq {
    first: AtomicU64,
    last: AtomicU64,
}

pub async fn run(a: FanoutArgs) -> Result<Value, String> {
    if a.nodes.is_empty() || a.rooms == 0 || a.subscribers == 0 {
        return Err("need --nodes, -s > 0 and -r > 0".into());
    }
    util::check_nofile(a.subscribers + a.pub_conns)?;
    let n_nodes = a.nodes.len();
    let minter = a.credentials.minter()?;
    let rid = util::run_id();
    let prefix = a.room_prefix.clone().unwrap_or_else(|| format!("bench-{rid}"));
    let room_names: Vec<String> = (0..a.rooms).map(|r| format!("{prefix}-{r}")).collect();
    let mut subs_in_room = vec![0u64; a.rooms];
    for i in 0..a.subscribers {
        subs_in_room[i % a.rooms] += 1;
    }
    let shared = Arc::new(Shared {
        delivered: AtomicU64::new(0),
        expected: AtomicU64::new(0),
        last_delivery_ns: AtomicU64::new(0),
        same: SharedHist::new(),
        cross: SharedHist::new(),
        disconnects: AtomicU64::new(0),
        other_frames: AtomicU64::new(0),
        reordered: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);

    // Ramp up subscribers in batches; each waits for `hello`.
    let t_connect = Instant::now();
    let mut subs: JoinSet<SubResult> = JoinSet::new();
    let mut connect_errors = 0usize;
    let mut first_error = None;
    let mut i = 0;
    while i < a.subscribers {
        let end = (i + a.batch).min(a.subscribers);
        let mut batch = JoinSet::new();
        for k in i..end {
            let room = k % a.rooms;
            let node = (k / a.rooms) % n_nodes;
            let token = minter.mint("device", &format!("bsub-{rid}-{k}"), "bench", Some(&["*"]), 3 * 3600);
            let url = format!("{}/ws?token={}&roomIds={}", ws_base(&a.nodes[node]), token, room_names[room]);
            batch.spawn(async move {
                let mut ws = util::ws_connect(&url, Duration::from_secs(15)).await?;
                util::wait_type(&mut ws, "hello", Duration::from_secs(15)).await?;
                Ok::<_, String>((ws, room, node))
            });
        }
        while let Some(r) = batch.join_next().await {
            match r {
                Ok(Ok((ws, room, node))) => {
                    subs.spawn(subscriber(ws, room, node, shared.clone(), stop_rx.clone()));
                }
                Ok(Err(e)) => {
                    connect_errors += 1;
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    connect_errors += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        i = end;
    }
    let connect_secs = t_connect.elapsed().as_secs_f64();
    if let Some(e) = &first_error {
        eprintln!("fanout: {connect_errors} subscriber connections failed, first: {e}");
    }
    if connect_errors == a.subscribers {
        let _ = stop_tx.send(true);
        return Err(format!("no subscriber connected: {}", first_error.unwrap_or_default()));
    }
    // Let subscriptions settle (cluster interest propagation) before the first notice.
    sleep(Duration::from_millis(500)).await;

    let cpu_before: Vec<Option<f64>> = a.pids.iter().map(|&p| util::cpu_secs(p)).collect();
    let client_cpu_before = util::self_cpu_secs();
    let rooms_seq: Arc<Vec<RoomSeq>> =
        Arc::new((0..a.rooms).map(|_| RoomSeq { first: AtomicU64::new(u64::MAX), last: AtomicU64::new(0) }).collect());
    let published = Arc::new(AtomicU64::new(0));
    let publish_errors = Arc::new(AtomicU64::new(0));
    let pub_seq = Arc::new(AtomicU64::new(0));
    let stalled = Arc::new(AtomicBool::new(false));
    let first_pub_error: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let start_ns = now_ns();
    let deadline = Instant::now() + Duration::from_secs_f64(a.duration);
    let avg_subs = (a.subscribers as f64 / a.rooms as f64).max(1.0);
    let window_deliveries = ((a.window.max(1) as f64) * avg_subs) as u64;
    let subs_in_room = Arc::new(subs_in_room);
    let room_names = Arc::new(room_names);
    let ticket = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();

    let mut pubs = JoinSet::new();
    for c in 0..a.pub_conns.max(1) {
        let node = c % n_nodes;
        let mut conn = Conn::new(&http_base(&a.nodes[node]));
        let bearer = a.credentials.service_token.clone();
        let (shared, rooms_seq, published, publish_errors, pub_seq, stalled, first_pub_error) = (
            shared.clone(),
            rooms_seq.clone(),
            published.clone(),
            publish_errors.clone(),
            pub_seq.clone(),
            stalled.clone(),
            first_pub_error.clone(),
        );
        let (subs_in_room, room_names, ticket) = (subs_in_room.clone(), room_names.clone(), ticket.clone());
        let rate = a.rate;
        let rooms = a.rooms;
        pubs.spawn(async move {
            let mut last_progress = (shared.delivered.load(Ordering::Relaxed), Instant::now());
            loop {
                if Instant::now() >= deadline || stalled.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(rate) = rate {
                    let k = ticket.fetch_add(1, Ordering::Relaxed);
                    let due = t0 + Duration::from_secs_f64(k as f64 / rate);
                    if due >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                } else {
                    // bounded in-flight window, counted end to end in deliveries
                    loop {
                        let d = shared.delivered.load(Ordering::Relaxed);
                        let e = shared.expected.load(Ordering::Relaxed);
                        if e.saturating_sub(d) < window_deliveries || Instant::now() >= deadline {
                            break;
                        }
                        if d != last_progress.0 {
                            last_progress = (d, Instant::now());
                        } else if last_progress.1.elapsed() > Duration::from_secs(10) {
                            stalled.store(true, Ordering::Relaxed);
                            break;
                        }
                        sleep(Duration::from_millis(1)).await;
                    }
                    if Instant::now() >= deadline || stalled.load(Ordering::Relaxed) {
                        break;
                    }
                }
                let p = pub_seq.fetch_add(1, Ordering::Relaxed);
                let room = (p as usize) % rooms;
                shared.expected.fetch_add(subs_in_room[room], Ordering::Relaxed);
                let body = format!(r#"{{"data":{{"t":{},"n":{},"p":{}}}}}"#, now_ns(), node, p);
                let path = format!("/api/v1/rooms/{}/publish", room_names[room]);
                match conn.request("POST", &path, Some(&bearer), Some(body.as_bytes())).await {
                    Ok(r) if r.status == 202 => {
                        let seq = r.json()["seq"].as_u64().unwrap_or(0);
                        rooms_seq[room].first.fetch_min(seq, Ordering::Relaxed);
                        rooms_seq[room].last.fetch_max(seq, Ordering::Relaxed);
                        published.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        shared.expected.fetch_sub(subs_in_room[room], Ordering::Relaxed);
                        publish_errors.fetch_add(1, Ordering::Relaxed);
                        let msg = match other {
                            Ok(r) => format!("HTTP {} {}", r.status, r.text()),
                            Err(e) => e.to_string(),
                        };
                        first_pub_error.lock().expect("lock").get_or_insert(msg);
                        sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    while pubs.join_next().await.is_some() {}
    let publish_secs = t0.elapsed().as_secs_f64();

    // Drain: until every expected delivery arrived or no progress for `drain` seconds.
    let mut last = (shared.delivered.load(Ordering::Relaxed), Instant::now());
    let drain_start = Instant::now();
    loop {
        let d = shared.delivered.load(Ordering::Relaxed);
        if d >= shared.expected.load(Ordering::Relaxed) {
            break;
        }
        if d != last.0 {
            last = (d, Instant::now());
        } else if last.1.elapsed().as_secs_f64() > a.drain {
            break;
        }
        if drain_start.elapsed() > Duration::from_secs(60) {
            break;
        }
        sleep(Duration::from_millis(5)).await;
    }
    // Give duplicates a moment to show up.
    sleep(Duration::from_millis(200)).await;
    let cpu_after: Vec<Option<f64>> = a.pids.iter().map(|&p| util::cpu_secs(p)).collect();
    let client_cpu = util::self_cpu_secs() - client_cpu_before;
    let _ = stop_tx.send(true);

    let mut results = Vec::new();
    let collect = async {
        while let Some(r) = subs.join_next().await {
            if let Ok(r) = r {
                results.push(r);
            }
        }
    };
    if timeout(Duration::from_secs(20), collect).await.is_err() {
        subs.abort_all();
        return Err("subscriber tasks did not stop within 20 s".into());
    }

    // Loss and duplicates: per subscriber, every room seq once from its first to the room's last.
    let (mut lost, mut dup, mut missed_before_first, mut silent_subs) = (0u64, 0u64, 0u64, 0u64);
    for r in &results {
        let rs = &rooms_seq[r.room];
        let (rfirst, rlast) = (rs.first.load(Ordering::Relaxed), rs.last.load(Ordering::Relaxed));
        if rlast == 0 {
            continue;
        }
        match r.first {
            None => {
                silent_subs += 1;
                lost += rlast - rfirst + 1;
            }
            Some(f) => {
                if f > rfirst {
                    missed_before_first += f - rfirst;
                }
                let mut distinct = 0u64;
                for s in f..=rlast {
                    let i = (s - f) as usize;
                    if r.bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0) {
                        distinct += 1;
                    }
                }
                let expected = rlast.saturating_sub(f) + 1;
                lost += expected - distinct.min(expected);
                dup += r.received.saturating_sub(distinct);
            }
        }
    }

    let delivered = shared.delivered.load(Ordering::Relaxed);
    let last_ns = shared.last_delivery_ns.load(Ordering::Relaxed).max(start_ns + 1);
    let span = (last_ns - start_ns) as f64 / 1e9;
    let published = published.load(Ordering::Relaxed);
    let server_cpu: Option<f64> = if a.pids.is_empty() {
        None
    } else {
        let mut total = 0.0;
        for (b, af) in cpu_before.iter().zip(cpu_after.iter()) {
            if let (Some(b), Some(af)) = (b, af) {
                total += af - b;
            }
        }
        Some(total)
    };
    let same = shared.same.summary();
    let cross = shared.cross.summary();
    let mut all = util::new_hist();
    all.add(&*shared.same.0.lock().expect("lock")).ok();
    all.add(&*shared.cross.0.lock().expect("lock")).ok();
    let all = LatencySummary::of(&all);
    let out = json!({
        "kind": "fanout",
        "label": a.label,
        "nodes": n_nodes,
        "subscribers": a.subscribers,
        "connected": results.len(),
        "connect_errors": connect_errors,
        "connect_secs": util::round(connect_secs, 2),
        "rooms": a.rooms,
        "mode": if a.rate.is_some() { "rate" } else { "window" },
        "rate": a.rate,
        "window": a.window,
        "duration_s": a.duration,
        "publish_secs": util::round(publish_secs, 3),
        "published": published,
        "publish_errors": publish_errors.load(Ordering::Relaxed),
        "first_publish_error": first_pub_error.lock().expect("lock").clone(),
        "stalled": stalled.load(Ordering::Relaxed),
        "notices_per_s": util::round(published as f64 / span.max(1e-9), 1),
        "deliveries": delivered,
        "expected_deliveries": shared.expected.load(Ordering::Relaxed),
        "deliveries_per_s": util::round(delivered as f64 / span.max(1e-9), 1),
        "span_s": util::round(span, 3),
        "lost": lost,
        "dup": dup,
        "missed_before_first": missed_before_first,
        "silent_subscribers": silent_subs,
        "reordered": shared.reordered.load(Ordering::Relaxed),
        "disconnects": shared.disconnects.load(Ordering::Relaxed),
        "latency": {"all": all, "same_node": same, "cross_node": cross},
        "server_cpu_s": server_cpu.map(|c| util::round(c, 3)),
        "server_cpu_ns_per_delivery": server_cpu.filter(|_| delivered > 0).map(|c| util::round(c * 1e9 / delivered as f64, 1)),
        "client_cpu_s": util::round(client_cpu, 3),
    });
    Ok(out)
}

async fn subscriber(
    mut ws: Ws,
    room: usize,
    node: usize,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> SubResult {
    let mut res = SubResult { room, first: None, bits: Vec::new(), received: 0 };
    let mut same_buf: Vec<u64> = Vec::with_capacity(256);
    let mut cross_buf: Vec<u64> = Vec::with_capacity(256);
    let mut max_seq = 0u64;
    loop {
        tokio::select! {
            biased;
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let now = now_ns();
                    let f: Frame = match serde_json::from_str(t.as_str()) {
                        Ok(f) => f,
                        Err(_) => { shared.other_frames.fetch_add(1, Ordering::Relaxed); continue; }
                    };
                    if f.ty != "notice" {
                        shared.other_frames.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    res.received += 1;
                    let first = *res.first.get_or_insert(f.seq);
                    if f.seq < max_seq {
                        shared.reordered.fetch_add(1, Ordering::Relaxed);
                    }
                    max_seq = max_seq.max(f.seq);
                    if f.seq >= first {
                        let i = (f.seq - first) as usize;
                        if res.bits.len() <= i / 64 {
                            res.bits.resize(i / 64 + 1, 0);
                        }
                        res.bits[i / 64] |= 1 << (i % 64);
                    }
                    if let Some(d) = f.data {
                        let lat = now.saturating_sub(d.t);
                        if d.n == node { same_buf.push(lat) } else { cross_buf.push(lat) }
                        if same_buf.len() >= 256 { shared.same.record_all(&mut same_buf); }
                        if cross_buf.len() >= 256 { shared.cross.record_all(&mut cross_buf); }
                    }
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                    shared.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    shared.disconnects.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Some(Ok(_)) => {}
            },
            _ = stop.changed() => {
                let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
                break;
            }
        }
    }
    if !*stop.borrow() {
        // disconnected early: wait for the stop signal so the result is collected once
        let _ = stop.changed().await;
    }
    shared.same.record_all(&mut same_buf);
    shared.cross.record_all(&mut cross_buf);
    res
}
