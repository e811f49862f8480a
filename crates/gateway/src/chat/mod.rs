//! Support chat (§4, §5): sessions, messages, assignment, offline replay.
//!
//! - [`model`]: customers, sessions, messages, cursors.
//! - [`store`]: the [`store::ChatStore`] trait and its in-memory implementation.
//! - [`service`]: [`ChatService`], what frames and routes call.
//! - [`router`]: delivery of frames to users' connections (local, and across nodes).
//! - [`replay`]: the offline replay actor started for each authenticated chat connection.

pub mod model;
pub mod replay;
pub mod router;
pub mod service;
pub mod store;

pub use model::Contact;
pub use service::{ChatAnswer, ChatError, ChatService};
