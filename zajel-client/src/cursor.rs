//! Per-conversation resume cursors with exactly-once delivery.
//!
//! For each conversation the tracker keeps the *contiguous* watermark (every `seq` up to it has
//! been seen) plus the sequences seen above it. The watermark is what goes into
//! `auth.resume.cursors`, so a reconnect replays everything past the first gap; sequences seen
//! above the watermark are remembered so the replay does not deliver them twice. (Using the
//! highest seq seen as the cursor would lose a message whose live event is overtaken by the ack
//! of a later send.)

use std::collections::{BTreeMap, BTreeSet};
use zajel_core::ConversationId;
use zajel_core::protocol::{ResumeState, Unlisted};

#[derive(Clone, Debug, Default)]
struct Track {
    contiguous: u64,
    above: BTreeSet<u64>,
}

/// The cursor tracker.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cursors {
    map: BTreeMap<ConversationId, Track>,
}

impl Cursors {
    /// Starts from persisted cursors (each taken as a contiguous watermark).
    pub(crate) fn from_resume(state: &ResumeState) -> Self {
        let map = state
            .cursors
            .iter()
            .map(|(c, &s)| {
                (
                    c.clone(),
                    Track {
                        contiguous: s,
                        above: BTreeSet::new(),
                    },
                )
            })
            .collect();
        Self { map }
    }

    /// Records `seq`; returns `false` when it was already seen (a duplicate to drop).
    pub(crate) fn record(&mut self, conversation: &ConversationId, seq: u64) -> bool {
        let t = self.map.entry(conversation.clone()).or_default();
        if seq <= t.contiguous || !t.above.insert(seq) {
            return false;
        }
        while t.above.remove(&(t.contiguous + 1)) {
            t.contiguous += 1;
        }
        true
    }

    /// Whether `seq` has been seen.
    #[cfg(test)]
    pub(crate) fn seen(&self, conversation: &ConversationId, seq: u64) -> bool {
        self.map
            .get(conversation)
            .is_some_and(|t| seq <= t.contiguous || t.above.contains(&seq))
    }

    /// The contiguous watermark of one conversation (0 when unknown).
    pub(crate) fn watermark(&self, conversation: &ConversationId) -> u64 {
        self.map.get(conversation).map_or(0, |t| t.contiguous)
    }

    /// What to send in `auth.resume`. With no cursor at all (a fresh device) the client starts
    /// "from now": unlisted conversations are not replayed, and [`Cursors::seed`] takes their
    /// ends from `synced`. Once it holds any cursor, every conversation it does not know is new
    /// since its last sync and is replayed.
    pub(crate) fn resume_state(&self) -> ResumeState {
        ResumeState {
            cursors: self
                .map
                .iter()
                .map(|(c, t)| (c.clone(), t.contiguous))
                .collect(),
            unlisted: if self.map.is_empty() {
                Unlisted::Skip
            } else {
                Unlisted::Replay
            },
        }
    }

    /// Starts tracking `conversation` at `last_seq` if it is not tracked yet (after a
    /// "from now" sync). Returns whether it was added.
    pub(crate) fn seed(&mut self, conversation: &ConversationId, last_seq: u64) -> bool {
        if self.map.contains_key(conversation) {
            return false;
        }
        self.map.insert(
            conversation.clone(),
            Track {
                contiguous: last_seq,
                above: BTreeSet::new(),
            },
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zajel_core::UserId;

    fn conv() -> ConversationId {
        let a: UserId = "00000000-0000-4000-8000-000000000001".parse().unwrap();
        let b: UserId = "00000000-0000-4000-8000-000000000002".parse().unwrap();
        ConversationId::direct(a, b)
    }

    #[test]
    fn in_order_advances_and_drops_duplicates() {
        let c = conv();
        let mut cur = Cursors::default();
        assert!(cur.record(&c, 1));
        assert!(cur.record(&c, 2));
        assert!(!cur.record(&c, 2));
        assert!(!cur.record(&c, 1));
        assert_eq!(cur.watermark(&c), 2);
        assert_eq!(cur.resume_state().cursors.get(&c), Some(&2));
    }

    #[test]
    fn ack_overtaking_an_event_does_not_skip_it() {
        let c = conv();
        let mut cur = Cursors::default();
        assert!(cur.record(&c, 1));
        // Ack of my send (seq 3) arrives before the peer's live message seq 2.
        assert!(cur.record(&c, 3));
        assert_eq!(cur.watermark(&c), 1, "resume must still replay seq 2");
        assert!(!cur.seen(&c, 2));
        assert!(cur.record(&c, 2));
        assert_eq!(cur.watermark(&c), 3);
        assert!(!cur.record(&c, 3));
    }

    #[test]
    fn replay_after_gap_is_exactly_once() {
        let c = conv();
        let mut cur = Cursors::from_resume(&ResumeState {
            cursors: [(c.clone(), 10)].into_iter().collect(),
            unlisted: Unlisted::Replay,
        });
        assert!(!cur.record(&c, 9));
        assert!(cur.record(&c, 12));
        // A replay from the watermark (10) re-sends 11 and 12: only 11 is new.
        assert!(cur.record(&c, 11));
        assert!(!cur.record(&c, 12));
        assert_eq!(cur.watermark(&c), 12);
    }

    #[test]
    fn fresh_client_starts_from_now_then_replays_new_conversations() {
        let c = conv();
        let mut cur = Cursors::default();
        assert_eq!(cur.resume_state().unlisted, Unlisted::Skip);
        assert!(cur.seed(&c, 7));
        assert!(!cur.seed(&c, 9), "seeding never moves a tracked cursor");
        assert_eq!(cur.watermark(&c), 7);
        assert!(!cur.record(&c, 7));
        assert!(cur.record(&c, 8));
        let state = cur.resume_state();
        assert_eq!(
            (state.unlisted, state.cursors.get(&c)),
            (Unlisted::Replay, Some(&8))
        );
    }
}
