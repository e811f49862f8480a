//! `chat-bench suite`: starts redis-server, gateway nodes and the floor as child processes,
//! runs the standard benchmarks (each client run in its own `chat-bench` child process),
//! prints one JSON line per run and a summary table with each figure next to its target,
//! and exits non-zero when a target is missed.

use std::fs::File;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util;

#[derive(clap::Args, Debug, Clone)]
pub struct SuiteArgs {
    /// The gateway binary (build it first: cargo build --release -p gateway -p bench).
    #[arg(long, env = "GATEWAY_BIN", default_value = "target/release/chat-gateway")]
    pub gateway_bin: PathBuf,
    #[arg(long, env = "REDIS_SERVER", default_value = "redis-server")]
    pub redis_server: String,
    /// Logs of the children and suite-results.jsonl go here.
    #[arg(long, default_value = "target/bench")]
    pub out_dir: PathBuf,
    /// Idle connections per idle run.
    #[arg(long, default_value_t = 15000)]
    pub idle_n: usize,
    /// Runs per side in the gateway-vs-floor comparison.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seconds per fanout run.
    #[arg(long, default_value_t = 4.0)]
    pub duration: f64,
    /// Offline backlog size for the replay run.
    #[arg(long, default_value_t = 20000)]
    pub replay_k: usize,
    /// Customer/agent pairs for the chat run.
    #[arg(long, default_value_t = 20)]
    pub pairs: usize,
}

const SECRET: &str = "chat-bench-suite-secret-0123456789abcdef";
const KID: &str = "bench";
/// Publisher connections (keep-alive HTTP/1.1, one request in flight each) in phase 3.
const CROSS_PUB_CONNS: &str = "64";
const SERVICE: &str = "chat-bench-suite-service-token";

// pids of every child, for cleanup on exit, panic, Ctrl-C and SIGTERM
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn register(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

fn unregister(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).retain(|&p| p != pid);
}

/// SIGTERM every registered child, wait up to 3 s, then SIGKILL what is left.
fn kill_children() {
    let pids: Vec<u32> = std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|e| e.into_inner()));
    for &p in &pids {
        unsafe { libc::kill(p as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut left = pids.clone();
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|&p| unsafe { libc::waitpid(p as i32, std::ptr::null_mut(), libc::WNOHANG) } == 0);
        std::thread::sleep(Duration::from_millis(50));
    }
    for &p in &left {
        unsafe {
            libc::kill(p as i32, libc::SIGKILL);
            libc::waitpid(p as i32, std::ptr::null_mut(), 0);
        }
    }
}

/// A child process that is stopped (and reaped) when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn stop(mut self) {
        self.stop_inner();
    }
    fn stop_inner(&mut self) {
        let pid = self.child.id();
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        unregister(pid);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn command(program: &Path) -> Command {
    let mut c = Command::new(program);
    c.stdin(Stdio::null());
    unsafe {
        c.pre_exec(|| {
            // die with the suite even if it is killed hard; own process group so a
            // terminal Ctrl-C reaches only the suite, which then stops us in order
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    c
}

fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc, String> {
    let f = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let f2 = f.try_clone().map_err(|e| e.to_string())?;
    cmd.stdout(f).stderr(f2);
    let child = cmd.spawn().map_err(|e| format!("cannot start {name}: {e}"))?;
    register(child.id());
    Ok(Proc { name: name.to_string(), child })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::Read;
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.split_whitespace().nth(1)?.parse().ok()
}

fn wait_ready(p: &mut Proc, port: u16, path: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = p.child.try_wait() {
            return Err(format!("{} exited early: {st}", p.name));
        }
        if http_status(port, path) == Some(200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{} not ready on {path} within 30 s", p.name))
}

struct Ctx {
    a: SuiteArgs,
    bench_bin: PathBuf,
    out: File,
    lines: Vec<Value>,
}

impl Ctx {
    fn gateway(&self, name: &str, broker: &str, redis_port: Option<u16>) -> Result<(Proc, u16), String> {
        let port = free_port();
        let mut c = command(&self.a.gateway_bin);
        c.arg("serve").env_clear();
        for k in ["PATH", "HOME", "LANG"] {
            if let Ok(v) = std::env::var(k) {
                c.env(k, v);
            }
        }
        c.env("NO_COLOR", "1")
            .env("RUST_LOG", "warn")
            .env("CHAT__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("CHAT__SERVER__NODE_ID", name)
            .env("CHAT__BROKER__KIND", broker)
            .env("CHAT__AUTH__SIGNING_KID", KID)
            .env(format!("CHAT__AUTH__KEYS__{}", KID.to_uppercase()), SECRET)
            .env("CHAT__AUTH__SERVICE_TOKEN", SERVICE)
            .env("CHAT__LIMITS__MESSAGES_PER_SEC", "1000000")
            .env("CHAT__LIMITS__MESSAGES_BURST", "1000000")
            .env("CHAT__LIMITS__TOKEN_REQUESTS_PER_MIN", "1000000")
            .env("CHAT__LIMITS__OUTBOUND_QUEUE_BYTES", (64u64 << 20).to_string())
            .env("CHAT__ASSIGNMENT__MODE", "manual")
            .env("CHAT__ASSIGNMENT__MAX_SESSIONS_PER_AGENT", "1000")
            .env("CHAT__OFFLINE__MAX_REPLAY", (self.a.replay_k.max(1000) * 2).to_string())
            .env("CHAT__SHUTDOWN__DRAIN_SECS", "1")
            .env("CHAT__LOG__LEVEL", "warn");
        if let Some(rp) = redis_port {
            c.env("CHAT__REDIS__URL", format!("redis://127.0.0.1:{rp}"));
        }
        let mut p = spawn(name, c, &self.a.out_dir.join(format!("{name}.log")))?;
        wait_ready(&mut p, port, if broker == "redis" { "/readyz" } else { "/healthz" })?;
        Ok((p, port))
    }

    fn floor(&self, name: &str) -> Result<(Proc, u16), String> {
        let port = free_port();
        let mut c = command(&self.bench_bin);
        c.args(["floor", "--listen", &format!("127.0.0.1:{port}")]);
        let mut p = spawn(name, c, &self.a.out_dir.join(format!("{name}.log")))?;
        wait_ready(&mut p, port, "/healthz")?;
        Ok((p, port))
    }

    fn redis(&self) -> Result<(Proc, u16), String> {
        let port = free_port();
        let mut c = command(Path::new(&self.a.redis_server));
        c.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        c.current_dir(&self.a.out_dir);
        let mut p = spawn("redis", c, &self.a.out_dir.join("redis.log"))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = p.child.try_wait() {
                return Err(format!("redis-server exited early: {st}"));
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                use std::io::Read;
                s.set_read_timeout(Some(Duration::from_secs(1))).ok();
                let mut b = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok() && s.read(&mut b).is_ok_and(|n| b[..n].starts_with(b"+PONG")) {
                    return Ok((p, port));
                }
            }
            if Instant::now() > deadline {
                return Err("redis-server not answering within 15 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs one `chat-bench` client command in its own process; returns its JSON line.
    fn client(&mut self, phase: &str, args: &[String]) -> Value {
        match self.client_inner(phase, args) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("chat-bench suite: {phase}: {e}");
                let v = json!({"phase": phase, "error": e, "args": args});
                let _ = writeln!(self.out, "{v}");
                self.lines.push(v.clone());
                v
            }
        }
    }

    fn client_inner(&mut self, phase: &str, args: &[String]) -> Result<Value, String> {
        let mut c = command(&self.bench_bin);
        c.args(args).env("CHAT_BENCH_SECRET", SECRET).env("CHAT_BENCH_SERVICE_TOKEN", SERVICE);
        c.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let child = c.spawn().map_err(|e| format!("cannot start client: {e}"))?;
        let pid = child.id();
        register(pid);
        // watchdog: a client run never takes longer than 4 minutes
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let dog = std::thread::spawn(move || {
            if rx.recv_timeout(Duration::from_secs(240)).is_err() {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        });
        let out = child.wait_with_output().map_err(|e| e.to_string());
        let _ = tx.send(());
        let _ = dog.join();
        unregister(pid);
        let out = out?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().rev().find(|l| l.starts_with('{')).unwrap_or("");
        let mut v: Value = serde_json::from_str(line).map_err(|_| {
            format!(
                "client `{}` failed ({}) without a JSON line",
                args.first().map(String::as_str).unwrap_or(""),
                out.status
            )
        })?;
        v["phase"] = json!(phase);
        let s = v.to_string();
        println!("{s}");
        let _ = writeln!(self.out, "{s}");
        self.lines.push(v.clone());
        Ok(v)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64().unwrap_or(f64::NAN)
}

struct Row {
    name: String,
    value: String,
    target: String,
    pass: Option<bool>,
}

fn row(rows: &mut Vec<Row>, name: &str, value: String, target: &str, pass: Option<bool>) {
    rows.push(Row { name: name.into(), value, target: target.into(), pass });
}

fn s(x: &str) -> String {
    x.to_string()
}

pub fn run(a: SuiteArgs) -> i32 {
    std::panic::set_hook({
        let prev = std::panic::take_hook();
        Box::new(move |info| {
            kill_children();
            prev(info);
        })
    });
    // Ctrl-C / SIGTERM: stop every child, then exit.
    let sig_thread = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("sigterm handler");
            tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
        });
        eprintln!("chat-bench suite: interrupted, stopping children");
        kill_children();
        std::process::exit(130);
    });
    drop(sig_thread);
    let code = match run_inner(a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat-bench suite: {e}");
            2
        }
    };
    kill_children();
    code
}

fn run_inner(a: SuiteArgs) -> Result<i32, String> {
    std::fs::create_dir_all(&a.out_dir).map_err(|e| e.to_string())?;
    if !a.gateway_bin.exists() {
        return Err(format!("{} not found: cargo build --release -p gateway -p bench", a.gateway_bin.display()));
    }
    let bench_bin = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = File::create(a.out_dir.join("suite-results.jsonl")).map_err(|e| e.to_string())?;
    let mut cx = Ctx { a: a.clone(), bench_bin, out, lines: Vec::new() };
    let t_all = Instant::now();
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut rows = Vec::new();
    let mut cpu_notes: Vec<String> = Vec::new();
    let dur = a.duration.to_string();
    eprintln!("chat-bench suite: {nproc} cores shared by the client, the server(s), Redis and the floor");

    // ---- 1. one node (memory broker) vs the floor: 3 alternating runs each, medians ----
    let (fs, fr) = ("1000", "10");
    let (gw, gport) = cx.gateway("gw-single", "memory", None)?;
    let (fl, fport) = cx.floor("floor")?;
    let fan = |url: String, pid: u32, label: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> =
            ["fanout", "--nodes", &url, "-s", fs, "-r", fr, "--duration", &dur, "--pub-conns", "4", "--kid", KID]
                .iter()
                .map(|x| x.to_string())
                .collect();
        v.extend(["--pids".into(), pid.to_string(), "--label".into(), label.into()]);
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let (mut g_dps, mut f_dps, mut g_cpd, mut f_cpd, mut f_nps) = (vec![], vec![], vec![], vec![], vec![]);
    let gurl = format!("ws://127.0.0.1:{gport}");
    let furl = format!("ws://127.0.0.1:{fport}");
    let mut single_clean = true;
    for _ in 0..a.runs.max(1) {
        let g = cx.client("single-vs-floor", &fan(gurl.clone(), gw.pid(), "gateway", &["--window", "32"]));
        let fl_v = cx.client("single-vs-floor", &fan(furl.clone(), fl.pid(), "floor", &["--window", "32"]));
        g_dps.push(f(&g, &["deliveries_per_s"]));
        g_cpd.push(f(&g, &["server_cpu_ns_per_delivery"]));
        f_dps.push(f(&fl_v, &["deliveries_per_s"]));
        f_cpd.push(f(&fl_v, &["server_cpu_ns_per_delivery"]));
        f_nps.push(f(&fl_v, &["notices_per_s"]));
        single_clean &= f(&g, &["lost"]) == 0.0 && f(&g, &["dup"]) == 0.0;
    }
    let (gm, fm, gc, fc) = (median(g_dps), median(f_dps), median(g_cpd), median(f_cpd));
    let half = (median(f_nps) / 2.0).max(1.0);
    let half_s = format!("{half:.0}");
    // Tail latency is the noisiest figure here: median p99 of alternating runs.
    let (mut g_p99, mut f_p99) = (vec![], vec![]);
    for _ in 0..a.runs.max(1) {
        let g = cx.client("single-half-rate", &fan(gurl.clone(), gw.pid(), "gateway", &["--rate", &half_s]));
        let fl_v = cx.client("single-half-rate", &fan(furl.clone(), fl.pid(), "floor", &["--rate", &half_s]));
        g_p99.push(f(&g, &["latency", "all", "p99_us"]) / 1000.0);
        f_p99.push(f(&fl_v, &["latency", "all", "p99_us"]) / 1000.0);
        single_clean &= f(&g, &["lost"]) == 0.0 && f(&g, &["dup"]) == 0.0;
    }
    cpu_notes.push(format!(
        "phase 1: gateway node {:.1} s CPU, floor {:.1} s CPU (client CPU in each JSON line)",
        util::cpu_secs(gw.pid()).unwrap_or(0.0),
        util::cpu_secs(fl.pid()).unwrap_or(0.0)
    ));
    gw.stop();
    fl.stop();
    let ratio = gm / fm;
    row(&mut rows, "fanout 1 node: deliveries/s gateway (median)", format!("{gm:.0}"), "-", None);
    row(&mut rows, "fanout 1 node: deliveries/s floor (median)", format!("{fm:.0}"), "-", None);
    row(
        &mut rows,
        "fanout 1 node: gateway/floor deliveries/s",
        format!("{:.0}%", ratio * 100.0),
        ">= 80%",
        Some(ratio >= 0.8),
    );
    let cr = gc / fc;
    row(
        &mut rows,
        "fanout 1 node: server CPU/delivery gateway vs floor",
        format!("{gc:.0} ns vs {fc:.0} ns = {cr:.2}x"),
        "<= 1.3x",
        Some(cr <= 1.3),
    );
    let (gp99, fp99) = (median(g_p99), median(f_p99));
    row(
        &mut rows,
        &format!("fanout 1 node: p99 at {half_s} notices/s, median (floor {fp99:.2} ms)"),
        format!("{gp99:.2} ms"),
        "< 5 ms",
        Some(gp99 < 5.0),
    );
    let clean = single_clean;
    row(&mut rows, "fanout 1 node: lost/dup", if clean { s("0/0") } else { s("NONZERO") }, "0/0", Some(clean));

    // ---- 2. idle connections: gateway /ws/chat, gateway /ws, floor /ws (fresh processes) ----
    let n = a.idle_n.to_string();
    let mut idle_results = Vec::new();
    for (label, endpoint) in [("gateway", "chat"), ("gateway", "push"), ("floor", "push")] {
        let (p, port) = if label == "floor" {
            cx.floor("floor-idle")?
        } else {
            cx.gateway(&format!("gw-idle-{endpoint}"), "memory", None)?
        };
        std::thread::sleep(Duration::from_millis(500));
        let v = cx.client(
            "idle",
            &[
                "idle",
                "--url",
                &format!("ws://127.0.0.1:{port}"),
                "--pid",
                &p.pid().to_string(),
                "-n",
                &n,
                "--endpoint",
                endpoint,
                "--kid",
                KID,
                "--label",
                label,
            ]
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>(),
        );
        p.stop();
        idle_results.push((label, endpoint, v));
        std::thread::sleep(Duration::from_millis(500));
    }
    let floor_kib =
        idle_results.iter().find(|r| r.0 == "floor").map(|r| f(&r.2, &["rss_per_conn_kib"])).unwrap_or(f64::NAN);
    for (label, endpoint, v) in &idle_results {
        let kib = f(v, &["rss_per_conn_kib"]);
        let connected = f(v, &["connected"]);
        let path = if *endpoint == "chat" { "/ws/chat" } else { "/ws" };
        if *label == "gateway" {
            row(
                &mut rows,
                &format!("idle {path}: gateway RSS/conn at {connected} (floor {floor_kib:.2} KiB)"),
                format!("{kib:.2} KiB"),
                "<= 10 KiB",
                Some(kib <= 10.0 && connected as usize == a.idle_n),
            );
        }
    }

    // ---- 3. two nodes over one Redis ----
    let (redis, rport) = cx.redis()?;
    let (n1, p1) = cx.gateway("gw-a", "redis", Some(rport))?;
    let (n2, p2) = cx.gateway("gw-b", "redis", Some(rport))?;
    // The yardstick for this publish pattern: the floor, one process, no broker.
    let (xfl, xfport) = cx.floor("floor-cross")?;
    let nodes = format!("ws://127.0.0.1:{p1},ws://127.0.0.1:{p2}");
    let pids = format!("{},{},{}", n1.pid(), n2.pid(), redis.pid());
    let cross_on = |nodes: &str, pids: &str, label: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "fanout",
            "--nodes",
            nodes,
            "-s",
            "40",
            "-r",
            "20",
            "--duration",
            &dur,
            "--pub-conns",
            CROSS_PUB_CONNS,
            "--pids",
            pids,
            "--kid",
            KID,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        v.extend(["--label".into(), label.into()]);
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let cross = |extra: &[&str]| cross_on(&nodes, &pids, "cluster", extra);
    let (furl_x, fpid_x) = (format!("ws://127.0.0.1:{xfport}"), xfl.pid().to_string());
    let (mut nps, mut fnps) = (vec![], vec![]);
    let mut cluster_clean = true;
    for _ in 0..a.runs.max(1) {
        let v = cx.client("cross-node", &cross(&["--window", "256"]));
        nps.push(f(&v, &["notices_per_s"]));
        cluster_clean &= f(&v, &["lost"]) == 0.0 && f(&v, &["dup"]) == 0.0 && f(&v, &["missed_before_first"]) == 0.0;
        let fv = cx.client("cross-node-floor", &cross_on(&furl_x, &fpid_x, "floor", &["--window", "256"]));
        fnps.push(f(&fv, &["notices_per_s"]));
    }
    cpu_notes.push(format!(
        "phase 3: floor (same publish pattern, one process) {:.1} s CPU",
        util::cpu_secs(xfl.pid()).unwrap_or(0.0)
    ));
    xfl.stop();
    let relayed = median(nps);
    let floor_nps = median(fnps);
    row(
        &mut rows,
        "cross-node: floor, same publish pattern, 1 process (median)",
        format!("{floor_nps:.0} notices/s"),
        "-",
        None,
    );
    row(
        &mut rows,
        "cross-node: cluster (2 nodes + Redis) / floor notices/s",
        format!("{:.0}%", 100.0 * relayed / floor_nps),
        "-",
        None,
    );
    let chalf = format!("{:.0}", (relayed / 2.0).max(1.0));
    let ch = cx.client("cross-node-half-rate", &cross(&["--rate", &chalf]));
    cluster_clean &= f(&ch, &["lost"]) == 0.0 && f(&ch, &["dup"]) == 0.0 && f(&ch, &["missed_before_first"]) == 0.0;
    let cp99 = f(&ch, &["latency", "all", "p99_us"]) / 1000.0;
    let cp99x = f(&ch, &["latency", "cross_node", "p99_us"]) / 1000.0;
    row(
        &mut rows,
        "cross-node: relayed notices/s (median)",
        format!("{relayed:.0}"),
        ">= 60000",
        Some(relayed >= 60000.0),
    );
    row(
        &mut rows,
        &format!("cross-node: p99 at {chalf} notices/s (cross-node only {cp99x:.2} ms)"),
        format!("{cp99:.2} ms"),
        "< 10 ms",
        Some(cp99 < 10.0),
    );
    row(
        &mut rows,
        "cross-node: lost/dup",
        if cluster_clean { s("0/0") } else { s("NONZERO") },
        "0/0",
        Some(cluster_clean),
    );

    let common = |cmd: &str| -> Vec<String> {
        [cmd, "--nodes", &nodes, "--kid", KID, "--label", "cluster"].iter().map(|x| x.to_string()).collect()
    };
    let mut rargs = common("replay");
    rargs.extend(["-k".into(), a.replay_k.to_string()]);
    let rp = cx.client("replay", &rargs);
    let rmps = f(&rp, &["messages_per_s_median"]);
    let rok = rp["count_ok"] == true;
    row(
        &mut rows,
        &format!("replay K={} from Redis (count ok: {rok})", a.replay_k),
        format!("{rmps:.0} msg/s"),
        ">= 100000",
        Some(rmps >= 100000.0 && rok),
    );
    let mut cargs = common("chat");
    cargs.extend(["-p".into(), a.pairs.to_string(), "--duration".into(), dur.clone()]);
    let chat = cx.client("chat", &cargs);
    row(
        &mut rows,
        &format!("chat {} pairs across nodes: msgs/s", a.pairs),
        format!("{:.0}", f(&chat, &["messages_per_s"])),
        "-",
        None,
    );
    row(
        &mut rows,
        "chat: ack p50/p99, delivery p50/p99",
        format!(
            "{:.2}/{:.2} ms, {:.2}/{:.2} ms",
            f(&chat, &["ack_latency", "p50_us"]) / 1e3,
            f(&chat, &["ack_latency", "p99_us"]) / 1e3,
            f(&chat, &["delivery_latency", "p50_us"]) / 1e3,
            f(&chat, &["delivery_latency", "p99_us"]) / 1e3
        ),
        "-",
        None,
    );
    let chat_ok = f(&chat, &["lost"]) == 0.0 && f(&chat, &["errors"]) == 0.0;
    row(&mut rows, "chat: lost/errors", format!("{}/{}", chat["lost"], chat["errors"]), "0/0", Some(chat_ok));
    cpu_notes.push(format!(
        "phase 3: gateway nodes {:.1} s + {:.1} s CPU, redis-server {:.1} s CPU",
        util::cpu_secs(n1.pid()).unwrap_or(0.0),
        util::cpu_secs(n2.pid()).unwrap_or(0.0),
        util::cpu_secs(redis.pid()).unwrap_or(0.0)
    ));
    n1.stop();
    n2.stop();
    redis.stop();

    // ---- summary ----
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(10);
    let vwidth = rows.iter().map(|r| r.value.len()).max().unwrap_or(10);
    let mut table = String::new();
    table.push_str(&format!("\n{:<width$}  {:<vwidth$}  {:<10}  result\n", "figure", "measured", "target"));
    table.push_str(&format!("{}\n", "-".repeat(width + vwidth + 22)));
    let mut missed = 0;
    for r in &rows {
        let res = match r.pass {
            Some(true) => "ok",
            Some(false) => {
                missed += 1;
                "MISSED"
            }
            None => "",
        };
        table.push_str(&format!("{:<width$}  {:<vwidth$}  {:<10}  {res}\n", r.name, r.value, r.target));
    }
    table.push_str(&format!(
        "\nWhat shared the cores: {nproc} cores in all, shared by the chat-bench client process (one per run),\n\
         the gateway node(s), redis-server (phase 3) and the floor server (phases 1 and 3); none was pinned.\n"
    ));
    for n in &cpu_notes {
        table.push_str(&format!("  {n}\n"));
    }
    table.push_str(&format!(
        "suite took {:.0} s; {} target(s) missed; JSON lines in {}\n",
        t_all.elapsed().as_secs_f64(),
        missed,
        a.out_dir.join("suite-results.jsonl").display()
    ));
    println!("{table}");
    let _ = std::fs::write(a.out_dir.join("suite-summary.txt"), &table);
    Ok(if missed > 0 { 1 } else { 0 })
}
