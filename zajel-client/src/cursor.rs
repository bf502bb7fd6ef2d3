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
    /// When this conversation last saw a message (a counter): resume sends the most recently
    /// active cursors first.
    touched: u64,
}

/// The cursor tracker.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cursors {
    map: BTreeMap<ConversationId, Track>,
    clock: u64,
    /// Changed since the last [`Cursors::take_dirty`] (for the storage seam).
    dirty: bool,
}

/// Rough wire size of one cursor in `auth.resume` (`"dm.<uuid>.<uuid>":18446744073709551615,`).
fn cursor_bytes(c: &ConversationId, seq: u64) -> usize {
    c.as_str().len() + 4 + seq.to_string().len()
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
                        touched: 0,
                    },
                )
            })
            .collect();
        Self {
            map,
            clock: 0,
            dirty: false,
        }
    }

    /// Adds cursors (keeping the higher watermark where both know a conversation).
    pub(crate) fn merge(&mut self, cursors: &BTreeMap<ConversationId, u64>) {
        for (c, &s) in cursors {
            let t = self.map.entry(c.clone()).or_default();
            if s > t.contiguous {
                t.contiguous = s;
                t.above.retain(|&x| x > s);
                self.dirty = true;
            }
        }
    }

    /// Whether anything changed since the last [`Cursors::take_dirty`].
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Whether anything changed since the last call (and clears the flag).
    pub(crate) fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Forgets everything (the stored cursors belonged to another account).
    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.dirty = true;
    }

    /// Whether no conversation is tracked (a fresh device).
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The highest sequence seen above a gap, if `conversation` has a gap.
    pub(crate) fn gap_end(&self, conversation: &ConversationId) -> Option<u64> {
        self.map
            .get(conversation)
            .and_then(|t| t.above.last().copied())
    }

    /// Records `seq`; returns `false` when it was already seen (a duplicate to drop).
    pub(crate) fn record(&mut self, conversation: &ConversationId, seq: u64) -> bool {
        self.clock += 1;
        let t = self.map.entry(conversation.clone()).or_default();
        t.touched = self.clock;
        if seq <= t.contiguous || !t.above.insert(seq) {
            return false;
        }
        // Sequences come from the network: never overflow.
        while let Some(next) = t.contiguous.checked_add(1)
            && t.above.remove(&next)
        {
            t.contiguous = next;
        }
        self.dirty = true;
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
    /// What to send in `auth.resume` within `budget` bytes of cursors. When every cursor fits
    /// this is [`Cursors::resume_state`]; otherwise the most recently active cursors that fit,
    /// with `unlisted: skip` (the server replays nothing for the others and the driver pages
    /// them in from `synced` with `history {after}`). The second value says whether cursors
    /// were left out.
    pub(crate) fn resume_within(&self, budget: usize) -> (ResumeState, bool) {
        let full: usize = self
            .map
            .iter()
            .map(|(c, t)| cursor_bytes(c, t.contiguous))
            .sum();
        if full <= budget {
            return (self.resume_state(), false);
        }
        let mut by_recency: Vec<(&ConversationId, &Track)> = self.map.iter().collect();
        by_recency.sort_by_key(|b| std::cmp::Reverse(b.1.touched));
        let mut used = 0;
        let mut cursors = BTreeMap::new();
        for (c, t) in by_recency {
            let size = cursor_bytes(c, t.contiguous);
            if used + size > budget {
                break;
            }
            used += size;
            cursors.insert(c.clone(), t.contiguous);
        }
        (
            ResumeState {
                cursors,
                unlisted: Unlisted::Skip,
            },
            true,
        )
    }

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
                touched: 0,
            },
        );
        self.dirty = true;
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
    fn resume_stays_within_the_budget_most_recent_first() {
        let me: UserId = "00000000-0000-4000-8000-000000000001".parse().unwrap();
        let mut cur = Cursors::default();
        let convs: Vec<ConversationId> = (0..3000)
            .map(|_| ConversationId::direct(me, UserId::new_random()))
            .collect();
        for c in &convs {
            cur.record(c, 1);
        }
        let (state, partial) = cur.resume_within(16 * 1024);
        assert!(partial);
        assert_eq!(state.unlisted, Unlisted::Skip);
        let wire = serde_json::to_string(&state).unwrap();
        assert!(wire.len() <= 16 * 1024 + 64, "{}", wire.len());
        assert!(state.cursors.len() > 100);
        // The most recently active conversation is always in.
        assert!(state.cursors.contains_key(&convs[2999]));
        assert!(!state.cursors.contains_key(&convs[0]));
        let (small, partial) = Cursors::default().resume_within(16 * 1024);
        assert!(!partial && small.cursors.is_empty());
    }

    #[test]
    fn hostile_sequences_do_not_overflow() {
        let c = conv();
        let mut cur = Cursors::default();
        assert!(cur.record(&c, u64::MAX));
        assert!(cur.record(&c, u64::MAX - 1));
        assert_eq!(cur.gap_end(&c), Some(u64::MAX));
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
