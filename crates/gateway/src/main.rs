//! `chat-gateway`: parse the command line, load the configuration, run.

use std::process::ExitCode;

use clap::Parser;
use gateway::cli::{Cli, Command};
use gateway::config::Settings;

/// Exit status for a configuration error (EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let settings = match Settings::load(config.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("chat-gateway: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            gateway::telemetry::init(&settings.log);
            match gateway::server::run(settings) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "node stopped");
                    eprintln!("chat-gateway: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Token { config, role, sub, name, ttl_secs, rooms, publish, channel, sid } => {
            let settings = match Settings::load(config.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("chat-gateway: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let request = gateway::server::TokenRequest { role, sub, name, ttl_secs, rooms, publish, channel, sid };
            match gateway::server::mint_token(&settings, request) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("chat-gateway: {e}");
                    ExitCode::from(64)
                }
            }
        }
    }
}
