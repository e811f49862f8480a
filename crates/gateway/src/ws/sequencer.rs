//! Per-session ordering of live chat messages on one connection (§5.2, §5.3).
//!
//! Messages of a session can reach a connection out of order (two senders on two
//! threads or nodes) or not at all (pub/sub traffic lost while Redis was away). The
//! sequencer emits each session's messages strictly in `seq` order from the first
//! one it tracks, drops repeats, and holds messages that arrive early until the gap
//! is filled (by the late message, or by the connection fetching the range from the
//! store). The connection's own messages are answered with `ack`, not delivered: they
//! count as seen.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytestring::ByteString;

#[derive(Debug, Default)]
struct Track {
    /// The next seq to emit.
    next: u64,
    /// Early arrivals by seq; `None` marks this connection's own (acked) message.
    held: BTreeMap<u64, Option<ByteString>>,
}

#[derive(Debug, Default)]
pub struct Sequencer {
    tracks: HashMap<Arc<str>, Track>,
    /// Bytes of held frames, bounded by the connection's outbound budget.
    held_bytes: usize,
}

impl Sequencer {
    /// Start (or move forward) tracking `session`: everything up to `after` was seen.
    pub fn track(&mut self, session: Arc<str>, after: u64, out: &mut Vec<ByteString>) {
        let track = self.tracks.entry(session).or_insert_with(|| Track { next: after + 1, held: BTreeMap::new() });
        if track.next <= after {
            track.next = after + 1;
        }
        Self::release(track, &mut self.held_bytes, out);
    }

    /// A live message arrived; frames ready to send are pushed to `out`.
    pub fn live(&mut self, session: &Arc<str>, seq: u64, frame: ByteString, out: &mut Vec<ByteString>) {
        let track = self.tracks.entry(session.clone()).or_insert_with(|| Track { next: seq, held: BTreeMap::new() });
        if seq < track.next || track.held.contains_key(&seq) {
            return; // a repeat
        }
        if seq == track.next {
            out.push(frame);
            track.next += 1;
        } else {
            self.held_bytes += frame.len();
            track.held.insert(seq, Some(frame));
        }
        Self::release(track, &mut self.held_bytes, out);
    }

    /// This connection's own message `seq` was stored (and acked).
    pub fn own(&mut self, session: &Arc<str>, seq: u64, out: &mut Vec<ByteString>) {
        let track = self.tracks.entry(session.clone()).or_insert_with(|| Track { next: seq, held: BTreeMap::new() });
        if seq == track.next {
            track.next += 1;
        } else if seq > track.next {
            track.held.insert(seq, None);
        }
        Self::release(track, &mut self.held_bytes, out);
    }

    fn release(track: &mut Track, held_bytes: &mut usize, out: &mut Vec<ByteString>) {
        // Drop what an advanced `next` made stale, then emit the contiguous run.
        while let Some(entry) = track.held.first_entry() {
            let seq = *entry.key();
            if seq > track.next {
                break;
            }
            let frame = entry.remove();
            if let Some(f) = &frame {
                *held_bytes -= f.len();
            }
            if seq == track.next {
                if let Some(f) = frame {
                    out.push(f);
                }
                track.next += 1;
            }
        }
    }

    /// Missing ranges `(session, from, to)` that hold later messages back.
    pub fn gaps(&self) -> Vec<(Arc<str>, u64, u64)> {
        self.tracks
            .iter()
            .filter_map(|(s, t)| t.held.keys().next().map(|first| (s.clone(), t.next, first - 1)))
            .collect()
    }

    /// The next seq expected for each tracked session.
    pub fn positions(&self) -> Vec<(Arc<str>, u64)> {
        self.tracks.iter().map(|(s, t)| (s.clone(), t.next)).collect()
    }

    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }
}

/// Ids of this connection's messages answered `UNAVAILABLE`, newest last, at most
/// [`Unconfirmed::MAX`]. The store may have kept such a message anyway (Redis applied
/// the write, its answer was lost). If one turns up in a fill from the store it is the
/// connection's own (seen, not delivered): the client's resend gets its `ack`.
#[derive(Debug, Default)]
pub struct Unconfirmed(VecDeque<String>);

impl Unconfirmed {
    pub const MAX: usize = 64;

    pub fn remember(&mut self, client_msg_id: String) {
        if client_msg_id.is_empty() {
            return;
        }
        if self.0.len() >= Self::MAX {
            self.0.pop_front();
        }
        self.0.push_back(client_msg_id);
    }

    pub fn contains(&self, client_msg_id: &str) -> bool {
        !client_msg_id.is_empty() && self.0.iter().any(|id| id == client_msg_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconfirmed_ids_are_bounded_and_never_empty() {
        let mut u = Unconfirmed::default();
        u.remember(String::new());
        assert!(!u.contains(""));
        for i in 0..=Unconfirmed::MAX {
            u.remember(format!("m{i}"));
        }
        assert!(!u.contains("m0"), "the oldest was forgotten");
        assert!(u.contains("m1") && u.contains(&format!("m{}", Unconfirmed::MAX)));
        assert!(!u.contains("other"));
    }

    fn f(seq: u64) -> ByteString {
        ByteString::from(format!("m{seq}"))
    }

    fn run(seq: &mut Sequencer, s: &Arc<str>, items: &[u64]) -> Vec<String> {
        let mut out = Vec::new();
        for &n in items {
            seq.live(s, n, f(n), &mut out);
        }
        out.iter().map(|b| b.to_string()).collect()
    }

    #[test]
    fn in_order_passes_through_and_repeats_drop() {
        let s: Arc<str> = "s".into();
        let mut q = Sequencer::default();
        assert_eq!(run(&mut q, &s, &[3, 4, 4, 5, 3]), ["m3", "m4", "m5"]);
    }

    #[test]
    fn early_messages_wait_for_the_gap() {
        let s: Arc<str> = "s".into();
        let mut q = Sequencer::default();
        let mut out = Vec::new();
        q.track(s.clone(), 10, &mut out);
        assert_eq!(run(&mut q, &s, &[12, 13]), Vec::<String>::new());
        assert_eq!(q.gaps(), vec![(s.clone(), 11, 11)]);
        assert!(q.held_bytes() > 0);
        assert_eq!(run(&mut q, &s, &[11]), ["m11", "m12", "m13"]);
        assert!(q.gaps().is_empty());
        assert_eq!(q.held_bytes(), 0);
    }

    #[test]
    fn own_messages_count_as_seen() {
        let s: Arc<str> = "s".into();
        let mut q = Sequencer::default();
        let mut out = Vec::new();
        q.track(s.clone(), 0, &mut out);
        assert_eq!(run(&mut q, &s, &[1, 3]), ["m1"]);
        q.own(&s, 2, &mut out);
        assert_eq!(out.iter().map(|b| b.to_string()).collect::<Vec<_>>(), ["m3"]);
        out.clear();
        q.own(&s, 5, &mut out);
        assert_eq!(run(&mut q, &s, &[4, 6]), ["m4", "m6"]);
    }

    #[test]
    fn track_after_replay_drops_what_replay_sent() {
        let s: Arc<str> = "s".into();
        let mut q = Sequencer::default();
        let mut out = Vec::new();
        q.track(s.clone(), 7, &mut out);
        assert_eq!(run(&mut q, &s, &[5, 7, 8]), ["m8"]);
    }
}
