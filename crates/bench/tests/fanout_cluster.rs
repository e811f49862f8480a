//! Correctness of chat-bench itself: against a real two-node cluster over a private Redis,
//! a short `chat-bench fanout` must report every notice delivered once (no loss, no
//! duplicate). Speed is not checked.
//!
//! Needs redis-server on PATH (or REDIS_SERVER) and the gateway binary: GATEWAY_BIN, else
//! target/debug/chat-gateway (`cargo build -p gateway`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "chat-bench-test-secret-0123456789abcdef";
const SERVICE: &str = "chat-bench-test-service";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn gateway_bin() -> PathBuf {
    let p =
        std::env::var("GATEWAY_BIN").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("target/debug/chat-gateway"));
    let p = if p.is_absolute() { p } else { repo_root().join(p) };
    assert!(p.exists(), "gateway binary {} missing: cargo build -p gateway (or set GATEWAY_BIN)", p.display());
    p
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.split_whitespace().nth(1)?.parse().ok()
}

fn wait_for(what: &str, child: &mut Kill, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.0.try_wait() {
            panic!("{what} exited early: {st}");
        }
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} not ready within 30 s");
}

fn start_redis(dir: &std::path::Path) -> (Kill, u16) {
    let port = free_port();
    let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let child = Command::new(&bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} (install redis-server): {e}"));
    let mut k = Kill(child);
    wait_for("redis-server", &mut k, || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
        s.set_read_timeout(Some(Duration::from_secs(1))).ok();
        let mut b = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok() && s.read(&mut b).is_ok_and(|n| b[..n].starts_with(b"+PONG"))
    });
    (k, port)
}

fn start_node(name: &str, redis_port: u16, dir: &std::path::Path) -> (Kill, u16) {
    let port = free_port();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(gateway_bin())
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("CHAT__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("CHAT__SERVER__NODE_ID", name)
        .env("CHAT__BROKER__KIND", "redis")
        .env("CHAT__REDIS__URL", format!("redis://127.0.0.1:{redis_port}"))
        .env("CHAT__AUTH__SIGNING_KID", "t1")
        .env("CHAT__AUTH__KEYS__T1", SECRET)
        .env("CHAT__AUTH__SERVICE_TOKEN", SERVICE)
        .env("CHAT__SHUTDOWN__DRAIN_SECS", "1")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start chat-gateway");
    let mut k = Kill(child);
    wait_for(name, &mut k, || http_status(port, "/readyz") == Some(200));
    (k, port)
}

#[test]
fn fanout_over_two_nodes_reports_no_loss_and_no_duplicates() {
    let dir = std::env::temp_dir().join(format!("chat-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_redis, rport) = start_redis(&dir);
    let (_a, pa) = start_node("bench-a", rport, &dir);
    let (_b, pb) = start_node("bench-b", rport, &dir);

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat-bench"));
    cmd.args([
        "fanout",
        "--nodes",
        &format!("ws://127.0.0.1:{pa},http://127.0.0.1:{pb}"),
        "-s",
        "40",
        "-r",
        "5",
        "--rate",
        "200",
        "--duration",
        "2",
        "--kid",
        "t1",
        "--drain",
        "5",
    ])
    .env("CHAT_BENCH_SECRET", SECRET)
    .env("CHAT_BENCH_SERVICE_TOKEN", SERVICE)
    .stdin(Stdio::null());
    let out = cmd.output().expect("run chat-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chat-bench fanout failed: {}\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
    assert_eq!(v["kind"], "fanout");
    assert_eq!(v["connect_errors"], 0, "{v}");
    assert_eq!(v["connected"], 40, "{v}");
    assert_eq!(v["publish_errors"], 0, "{v}");
    let published = v["published"].as_u64().unwrap();
    assert!(published > 0, "nothing published: {v}");
    assert_eq!(v["lost"], 0, "loss reported: {v}");
    assert_eq!(v["dup"], 0, "duplicates reported: {v}");
    assert_eq!(v["missed_before_first"], 0, "{v}");
    // every room has subscribers on both nodes, so both latency classes were measured
    assert_eq!(v["deliveries"], v["expected_deliveries"], "{v}");
    assert_eq!(v["deliveries"].as_u64().unwrap(), published * 8, "{v}");
    assert!(v["latency"]["same_node"]["count"].as_u64().unwrap() > 0, "{v}");
    assert!(v["latency"]["cross_node"]["count"].as_u64().unwrap() > 0, "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}
