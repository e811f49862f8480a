//! Command line: `chat-gateway serve` and `chat-gateway token`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "chat-gateway",
    version,
    about = "Real-time chat gateway: customer-support chat and server push over WebSocket"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a gateway node.
    Serve {
        /// A TOML file overriding the built-in defaults (CHAT__SECTION__KEY variables override both).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print a signed JWT made with the configured signing key.
    Token {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// customer, agent, device or service.
        #[arg(long)]
        role: String,
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        #[arg(long)]
        name: Option<String>,
        /// Lifetime in seconds (default: the role's: customer 24 h, agent 8 h, device 24 h, service 1 h).
        #[arg(long)]
        ttl_secs: Option<u64>,
        /// Room patterns the token may subscribe to, comma-separated (`*`, `news.*`, `lobby`).
        #[arg(long, value_delimiter = ',')]
        rooms: Option<Vec<String>>,
        /// Room patterns the token may publish to, comma-separated.
        #[arg(long = "pub", value_delimiter = ',')]
        publish: Option<Vec<String>>,
        /// The customer's channel.
        #[arg(long)]
        channel: Option<String>,
        /// The customer's support session.
        #[arg(long)]
        sid: Option<String>,
    },
}
