//! Offline replay (§5.3): a dedicated actor per authenticated chat connection.
//!
//! It registers the connection for live delivery first (so that nothing stored from
//! then on is missed), then reads, for every session of the user, the messages above
//! the user's delivery cursor from the store in pages and sends them to the
//! connection as `offline_message` frames. Each page is an awaited request to the
//! connection actor, which only handles it once its socket has taken the previous
//! one: memory stays bounded whatever the backlog. Meanwhile the connection holds
//! live messages; `ReplayDone` tells it where each session's replay ended.

use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;
use tracing::{debug, warn};

use super::service::{message_frame, Actor as ChatActor, ChatService};
use super::store::StoreError;
use futures_util::future::BoxFuture;

/// Messages read from the store and sent to the connection per step.
pub const PAGE: usize = 200;

/// Frames to send, in order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReplayPage {
    pub frames: Vec<ByteString>,
}

/// The end of replay: `offline_messages_complete` and where live delivery takes over.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReplayDone {
    pub count: u64,
    /// Older ranges left out: `(sessionId, fromSeq, toSeq)`.
    pub truncated: Vec<(String, u64, u64)>,
    /// Per session, the newest seq replay covered; live messages above it follow.
    pub positions: Vec<(Arc<str>, u64)>,
    /// The store failed part-way.
    pub failed: bool,
}

pub struct Replay {
    chat: ChatService,
    user: ChatActor,
    /// Registers the connection for live delivery; done before anything is read.
    register: Option<BoxFuture<'static, ()>>,
    pages: Recipient<ReplayPage>,
    done: Recipient<ReplayDone>,
    max_replay: usize,
}

impl Replay {
    pub fn start(
        chat: ChatService,
        user: ChatActor,
        register: BoxFuture<'static, ()>,
        pages: Recipient<ReplayPage>,
        done: Recipient<ReplayDone>,
        max_replay: usize,
    ) -> Addr<Replay> {
        Replay { chat, user, register: Some(register), pages, done, max_replay }.start()
    }
}

impl Actor for Replay {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let job = run(self.chat.clone(), self.user.clone(), self.register.take(), self.pages.clone(), self.max_replay);
        let done = self.done.clone();
        ctx.wait(
            async move {
                let outcome = job.await;
                // The connection may be gone; then there is nobody to tell.
                let _ = done.send(outcome).await;
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        );
    }
}

async fn run(
    chat: ChatService,
    user: ChatActor,
    register: Option<BoxFuture<'static, ()>>,
    pages: Recipient<ReplayPage>,
    max_replay: usize,
) -> ReplayDone {
    if let Some(register) = register {
        register.await;
    }
    let mut done = ReplayDone { count: 0, truncated: Vec::new(), positions: Vec::new(), failed: false };
    match replay_sessions(&chat, &user, &pages, max_replay, &mut done).await {
        Ok(()) => debug!(user = %user.id, count = done.count, "replay complete"),
        Err(ReplayError::Store(e)) => {
            warn!(user = %user.id, error = %e, "replay stopped: store unavailable");
            done.failed = true;
        }
        Err(ReplayError::ConnectionGone) => debug!(user = %user.id, "replay stopped: connection gone"),
    }
    done
}

enum ReplayError {
    Store(StoreError),
    ConnectionGone,
}

impl From<StoreError> for ReplayError {
    fn from(e: StoreError) -> Self {
        ReplayError::Store(e)
    }
}

async fn replay_sessions(
    chat: &ChatService,
    user: &ChatActor,
    pages: &Recipient<ReplayPage>,
    max: usize,
    done: &mut ReplayDone,
) -> Result<(), ReplayError> {
    let store = chat.store();
    let is_agent = user.role == auth::Role::Agent;
    let sessions = store.sessions_of(&user.id, is_agent).await?;
    for session in sessions {
        let plan = store.replay_plan(&user.id, &session.id, max).await?;
        if let Some((from, to)) = plan.truncated {
            done.truncated.push((session.id.clone(), from, to));
        }
        if plan.from_seq > 0 {
            let mut next = plan.from_seq;
            while next <= plan.last_seq {
                let batch = store.range(&session.id, next, plan.last_seq, PAGE).await?;
                let Some(last) = batch.last() else { break };
                next = last.seq + 1;
                let frames: Vec<ByteString> = batch
                    .iter()
                    .filter(|m| m.from.id != user.id)
                    .map(|m| message_frame("offline_message", m))
                    .collect();
                done.count += frames.len() as u64;
                if !frames.is_empty() {
                    pages.send(ReplayPage { frames }).await.map_err(|_| ReplayError::ConnectionGone)?;
                }
            }
        }
        done.positions.push((session.id.as_str().into(), plan.last_seq));
    }
    Ok(())
}
