//! Wire types of the chat gateway (PROTOCOL.md v1).
//!
//! # Layout
//! - [`codes`]: error codes and close codes, the stable strings and numbers clients see.
//! - [`frames`]: client frames (parsing) and server frames (encoded once, shared as bytes).
//! - [`time`]: RFC 3339 millisecond timestamps.
//!
//! No I/O and no actix here: this crate is shared by the gateway, the benchmark
//! tool and tests.
#![forbid(unsafe_code)]

pub mod codes;
pub mod frames;
pub mod time;

pub use codes::{CloseCode, CloseReason, ErrorCode};
pub use frames::{encode, parse_client_frame, ClientFrame, FrameError, FrameId, Inbound, UserRef};

/// The only protocol version this gateway speaks.
pub const PROTOCOL_VERSION: u32 = 1;
