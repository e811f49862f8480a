//! `chat-bench idle`: N authenticated idle connections to one node; the node's RSS before
//! and after, per connection.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Instant};

use crate::http::ws_base;
use crate::util::{self, Ws};

#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    /// Node URL (ws://127.0.0.1:PORT).
    #[arg(long)]
    pub url: String,
    /// The node's pid (VmRSS from /proc/PID/status).
    #[arg(long)]
    pub pid: u32,
    #[arg(short = 'n', long, default_value_t = 15000)]
    pub n: usize,
    /// `chat`: /ws/chat?token=T (customer token, waits for hello); `push`: /ws?token=T&roomIds=idle-K.
    #[arg(long, default_value = "chat")]
    pub endpoint: String,
    #[command(flatten)]
    pub credentials: crate::util::Credentials,
    /// Connections opened concurrently while ramping up.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Seconds to wait after the last `hello` before reading RSS.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    #[arg(long, default_value = "")]
    pub label: String,
}

pub async fn run(a: IdleArgs) -> Result<Value, String> {
    util::check_nofile(a.n)?;
    let minter = a.credentials.minter()?;
    let rid = util::run_id();
    let rss_before = util::rss_kib(a.pid).ok_or_else(|| format!("cannot read /proc/{}/status", a.pid))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut holders: JoinSet<()> = JoinSet::new();
    let (mut errors, mut first_error) = (0usize, None::<String>);
    let t0 = Instant::now();
    let mut i = 0;
    while i < a.n {
        let end = (i + a.batch).min(a.n);
        let mut batch = JoinSet::new();
        for k in i..end {
            let url = match a.endpoint.as_str() {
                "push" => {
                    let token = minter.mint("device", &format!("idle-{rid}-{k}"), "idle", Some(&["*"]), 3 * 3600);
                    format!("{}/ws?token={token}&roomIds=idle-{rid}-{}", ws_base(&a.url), k % 100)
                }
                _ => {
                    let token = minter.mint("customer", &format!("idle-{rid}-{k}"), "idle", None, 3 * 3600);
                    format!("{}/ws/chat?token={token}", ws_base(&a.url))
                }
            };
            batch.spawn(async move {
                let mut ws = util::ws_connect(&url, Duration::from_secs(20)).await?;
                util::wait_type(&mut ws, "hello", Duration::from_secs(20)).await?;
                Ok::<_, String>(ws)
            });
        }
        while let Some(r) = batch.join_next().await {
            match r {
                Ok(Ok(ws)) => {
                    holders.spawn(hold(ws, stop_rx.clone()));
                }
                Ok(Err(e)) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        i = end;
    }
    let ramp = t0.elapsed().as_secs_f64();
    sleep(Duration::from_secs_f64(a.settle)).await;
    let connected = holders.len();
    let rss_after = util::rss_kib(a.pid).unwrap_or(0);
    let _ = stop_tx.send(true);
    if timeout(Duration::from_secs(20), async { while holders.join_next().await.is_some() {} }).await.is_err() {
        holders.abort_all();
    }
    let per_conn = if connected > 0 { (rss_after as f64 - rss_before as f64) * 1024.0 / connected as f64 } else { 0.0 };
    if let Some(e) = &first_error {
        eprintln!("idle: {errors} connections failed, first: {e}");
    }
    Ok(json!({
        "kind": "idle",
        "label": a.label,
        "endpoint": a.endpoint,
        "requested": a.n,
        "connected": connected,
        "errors": errors,
        "first_error": first_error,
        "ramp_secs": util::round(ramp, 2),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_per_conn_bytes": util::round(per_conn, 0),
        "rss_per_conn_kib": util::round(per_conn / 1024.0, 2),
    }))
}

/// Keeps one connection open, reading (so pings are answered) until stopped.
async fn hold(mut ws: Ws, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            m = ws.next() => if matches!(m, None | Some(Err(_))) { break },
            _ = stop.changed() => {
                let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
                break;
            }
        }
    }
}
