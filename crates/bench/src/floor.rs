//! `chat-bench floor`: a deliberately minimal broadcast server used as a yardstick.
//!
//! No auth, no actors, no broker: `GET /ws?token=..&roomIds=a,b` (token ignored) answers a
//! `hello` frame, `POST /api/v1/rooms/{room}/publish {data}` answers 202 `{room, seq}` and
//! broadcasts `{"type":"notice","room","seq","data","ts"}` encoded once into shared bytes to
//! every subscriber's bounded channel; one writer task per connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::http::read_head;

#[derive(clap::Args, Debug, Clone)]
pub struct FloorArgs {
    #[arg(long, default_value = "127.0.0.1:9900")]
    pub listen: String,
    /// Per-connection queue in frames; a subscriber that falls this far behind is closed.
    #[arg(long, default_value_t = 16384)]
    pub queue: usize,
    /// Runtime worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
}

type Tx = mpsc::Sender<Utf8Bytes>;

#[derive(Default)]
struct Room {
    seq: u64,
    subs: HashMap<u64, Tx>,
}

struct State {
    rooms: Mutex<HashMap<String, Room>>,
    next_id: AtomicU64,
    queue: usize,
}

pub fn run(a: FloorArgs) -> Result<(), String> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if a.workers > 0 {
        b.worker_threads(a.workers);
    }
    let rt = b.enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(serve(a))
}

async fn serve(a: FloorArgs) -> Result<(), String> {
    let addr: std::net::SocketAddr = a.listen.parse().map_err(|e| format!("--listen {}: {e}", a.listen))?;
    let sock = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    sock.set_reuseaddr(true).map_err(|e| e.to_string())?;
    sock.bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let listener = sock.listen(4096).map_err(|e| format!("listen {addr}: {e}"))?;
    eprintln!("floor listening on {addr}");
    let st = Arc::new(State { rooms: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1), queue: a.queue.max(1) });
    let acceptor = tokio::spawn(async move {
        loop {
            let (sock, _) = match listener.accept().await {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            sock.set_nodelay(true).ok();
            let st = st.clone();
            tokio::spawn(async move {
                let _ = conn(sock, st).await;
            });
        }
    });
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    acceptor.abort();
    Ok(())
}

fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // civil-from-days (Howard Hinnant)
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn query_param<'a>(path: &'a str, key: &str) -> Option<&'a str> {
    let q = path.split_once('?')?.1;
    q.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
}

async fn respond(s: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let r =
        format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(r.as_bytes()).await
}

async fn conn(sock: TcpStream, st: Arc<State>) -> std::io::Result<()> {
    let mut r = BufReader::new(sock);
    loop {
        let head = match timeout(Duration::from_secs(120), read_head(&mut r)).await {
            Ok(Ok(Some(h))) => h,
            _ => return Ok(()),
        };
        let mut parts = head.first_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut body = vec![0u8; head.content_length().min(1 << 20)];
        r.read_exact(&mut body).await?;
        if method == "GET" && (path == "/ws" || path.starts_with("/ws?")) {
            let Some(key) = head.header("sec-websocket-key") else {
                respond(
                    r.get_mut(),
                    "400 Bad Request",
                    r#"{"error":"INVALID_REQUEST","message":"not a WebSocket upgrade"}"#,
                )
                .await?;
                continue;
            };
            let rooms: Vec<String> = query_param(&path, "roomIds")
                .unwrap_or("")
                .split(',')
                .filter(|s| !s.is_empty())
                .take(2)
                .map(str::to_string)
                .collect();
            if rooms.is_empty() {
                respond(r.get_mut(), "401 Unauthorized", r#"{"error":"MISSING_ROOM","message":"roomIds required"}"#)
                    .await?;
                continue;
            }
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            r.get_mut().write_all(resp.as_bytes()).await?;
            let leftover = r.buffer().to_vec();
            let sock = r.into_inner();
            return websocket(sock, leftover, rooms, st).await;
        }
        if method == "POST" && path.starts_with("/api/v1/rooms/") && path.ends_with("/publish") {
            let room = path["/api/v1/rooms/".len()..path.len() - "/publish".len()].to_string();
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let seq = publish(&st, &room, &v);
            let out = json!({"room": room, "seq": seq}).to_string();
            respond(r.get_mut(), "202 Accepted", &out).await?;
            continue;
        }
        if method == "GET" && path == "/healthz" {
            respond(r.get_mut(), "200 OK", "{}").await?;
            continue;
        }
        respond(r.get_mut(), "404 Not Found", r#"{"error":"NOT_FOUND","message":"no such route"}"#).await?;
    }
}

fn publish(st: &State, room: &str, v: &Value) -> u64 {
    let mut rooms = st.rooms.lock().expect("rooms lock");
    let entry = rooms.entry(room.to_string()).or_default();
    entry.seq += 1;
    let seq = entry.seq;
    let mut frame = json!({"type": "notice", "room": room, "seq": seq, "data": v.get("data").cloned().unwrap_or(Value::Null), "ts": now_rfc3339()});
    if let Some(e) = v.get("event") {
        frame["event"] = e.clone();
    }
    let bytes = Utf8Bytes::from(frame.to_string()); // encoded once, shared by every subscriber
    entry.subs.retain(|_, tx| match tx.try_send(bytes.clone()) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => false, // slow consumer: drop it (its writer ends)
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    });
    seq
}

async fn websocket(sock: TcpStream, leftover: Vec<u8>, rooms: Vec<String>, st: Arc<State>) -> std::io::Result<()> {
    let ws = WebSocketStream::from_partially_read(sock, leftover, Role::Server, Some(crate::util::ws_config())).await;
    let (mut sink, mut stream) = ws.split();
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(st.queue);
    let hello = json!({"type": "hello", "connectionId": format!("floor-{id}"), "node": "floor", "authenticated": false,
        "heartbeatIntervalMs": 10000, "protocolVersion": 1});
    tx.try_send(Utf8Bytes::from(hello.to_string())).ok();
    {
        let mut map = st.rooms.lock().expect("rooms lock");
        for room in &rooms {
            map.entry(room.clone()).or_default().subs.insert(id, tx.clone());
        }
    }
    drop(tx);
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(Message::Text(first)).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(Message::Text(more)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    // Reader: ignores frames (pongs are answered by the library), ends on close or error.
    while let Some(Ok(m)) = stream.next().await {
        if m.is_close() {
            break;
        }
    }
    {
        let mut map = st.rooms.lock().expect("rooms lock");
        for room in &rooms {
            if let Some(r) = map.get_mut(room) {
                r.subs.remove(&id);
            }
        }
    }
    writer.abort();
    Ok(())
}
