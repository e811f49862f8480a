//! chat-bench: drives a running chat-gateway node or cluster over the public contract
//! (PROTOCOL.md) and reports throughput, latency, loss and resource use; also ships the
//! `floor` yardstick server and the `suite` that `make bench` runs.

mod chat;
mod fanout;
mod floor;
mod http;
mod idle;
mod suite;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "chat-bench", version, about = "Benchmarks for chat-gateway (127.0.0.1 only)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N authenticated idle connections to one node; RSS per connection.
    Idle(idle::IdleArgs),
    /// Room notices fanned out to subscribers over one or more nodes.
    Fanout(fanout::FanoutArgs),
    /// Customer/agent pairs on different nodes exchanging messages.
    Chat(chat::ChatArgs),
    /// Offline replay of a K-message backlog on reconnect.
    Replay(chat::ReplayArgs),
    /// The minimal broadcast server used as a yardstick.
    Floor(floor::FloorArgs),
    /// Starts Redis, gateway nodes and the floor, runs the standard suite, checks targets.
    Suite(suite::SuiteArgs),
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

fn main() {
    let cli = Cli::parse();
    let result: Result<serde_json::Value, String> = match cli.cmd {
        Cmd::Floor(a) => floor::run(a).map(|_| serde_json::Value::Null),
        Cmd::Suite(a) => std::process::exit(suite::run(a)),
        Cmd::Idle(a) => runtime().block_on(with_ctrl_c(idle::run(a))),
        Cmd::Fanout(a) => runtime().block_on(with_ctrl_c(fanout::run(a))),
        Cmd::Chat(a) => runtime().block_on(with_ctrl_c(chat::chat(a))),
        Cmd::Replay(a) => runtime().block_on(with_ctrl_c(chat::replay(a))),
    };
    match result {
        Ok(v) => {
            if !v.is_null() {
                util::emit(&v);
            }
            // Do not wait for lingering connection tasks at runtime drop.
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("chat-bench: {e}");
            std::process::exit(1);
        }
    }
}

async fn with_ctrl_c<F: std::future::Future<Output = Result<serde_json::Value, String>>>(
    f: F,
) -> Result<serde_json::Value, String> {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    tokio::select! {
        r = f => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        _ = term.recv() => Err("terminated".into()),
    }
}
