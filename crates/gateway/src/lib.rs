//! The chat gateway: actix-web HTTP API and WebSocket endpoints.
//!
//! # Layout
//! - [`config`]: settings with built-in defaults, file and `CHAT__*` overrides, validation.
//! - [`server`]: wiring of a node, the HTTP server, shutdown and drain.
//! - [`http`]: the HTTP routes and the single place errors become responses.
//! - [`ws`]: the WebSocket handshake and the connection actor (the only user of
//!   actix-web-actors), with per-session message ordering.
//! - [`outbound`]: a connection's bounded outbound queue, as seen by senders.
//! - [`hub`]: sharded registries: rooms (fan-out, history) and users (connections).
//! - [`chat`]: support sessions, messages, assignment, offline replay.
//! - [`limits`]: per-client-IP rate limits of HTTP routes.
//! - [`metrics`], [`telemetry`]: Prometheus metrics, structured logs.

#![deny(unsafe_code)]

pub mod chat;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod outbound;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod ws;
