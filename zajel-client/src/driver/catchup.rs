//! Catch-up: conversations the client knows it is behind in, paged in with
//! `history {after: watermark}` a few at a time.
//!
//! Three sources: a gap in the live stream (seq 7 then 9: after a short grace, since the ack
//! of my own send can overtake a peer's event), `synced.truncated` (the server's replay bound),
//! and `synced.conversations` entries whose `last_seq` is past the watermark when the resume
//! left cursors out (big accounts, see `Cursors::resume_within`).

use std::collections::{BTreeMap, HashSet};
use zajel_core::ConversationId;

/// Pages in flight at once (each answer can be 200 messages).
pub(crate) const MAX_INFLIGHT: usize = 4;
/// Page size.
pub(crate) const PAGE: u32 = 200;
/// How long a live gap may stay open before it is fetched.
pub(crate) const GAP_GRACE_MS: u64 = 250;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Want {
    /// Reach at least this sequence (u64::MAX: until the server says `has_more: false`).
    target: u64,
    not_before: u64,
}

#[derive(Default, Debug)]
pub(crate) struct CatchUp {
    wanted: BTreeMap<ConversationId, Want>,
    inflight: HashSet<ConversationId>,
}

impl CatchUp {
    /// Asks to reach `target` in `c` from `not_before` on (merging with an earlier ask).
    pub(crate) fn want(&mut self, c: &ConversationId, target: u64, not_before: u64) {
        let w = self
            .wanted
            .entry(c.clone())
            .or_insert(Want { target, not_before });
        w.target = w.target.max(target);
        w.not_before = w.not_before.min(not_before);
    }

    /// The next conversation to fetch a page of, if fewer than [`MAX_INFLIGHT`] are in
    /// flight; `reached(c, target)` says whether the watermark already covers a request (it is
    /// then dropped without a fetch).
    pub(crate) fn next_due(
        &mut self,
        now: u64,
        mut reached: impl FnMut(&ConversationId, u64) -> bool,
    ) -> Option<ConversationId> {
        if self.inflight.len() >= MAX_INFLIGHT {
            return None;
        }
        let mut done = Vec::new();
        let mut pick = None;
        for (c, w) in &self.wanted {
            if self.inflight.contains(c) || w.not_before > now {
                continue;
            }
            if reached(c, w.target) {
                done.push(c.clone());
                continue;
            }
            pick = Some(c.clone());
            break;
        }
        for c in done {
            self.wanted.remove(&c);
        }
        let c = pick?;
        self.inflight.insert(c.clone());
        Some(c)
    }

    /// Earliest time a waiting conversation becomes due (None if nothing can start).
    pub(crate) fn next_wake(&self) -> Option<u64> {
        if self.inflight.len() >= MAX_INFLIGHT {
            return None;
        }
        self.wanted
            .iter()
            .filter(|(c, _)| !self.inflight.contains(*c))
            .map(|(_, w)| w.not_before)
            .min()
    }

    /// A page arrived. `more`: fetch the next page; otherwise the conversation is done.
    pub(crate) fn page_done(&mut self, c: &ConversationId, more: bool) {
        self.inflight.remove(c);
        if !more {
            self.wanted.remove(c);
        }
    }

    /// The connection dropped: pages in flight are asked again on the next one.
    pub(crate) fn connection_lost(&mut self) {
        self.inflight.clear();
    }

    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.wanted.is_empty() && self.inflight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zajel_core::UserId;

    #[test]
    fn bounded_inflight_and_reached_requests_are_dropped() {
        let me = UserId::new_random();
        let convs: Vec<ConversationId> = (0..6)
            .map(|_| ConversationId::direct(me, UserId::new_random()))
            .collect();
        let mut cu = CatchUp::default();
        for c in &convs {
            cu.want(c, 10, 0);
        }
        let mut started = Vec::new();
        while let Some(c) = cu.next_due(0, |_, _| false) {
            started.push(c);
        }
        assert_eq!(started.len(), MAX_INFLIGHT);
        assert_eq!(cu.next_wake(), None);
        for c in &started {
            cu.page_done(c, false);
        }
        // The rest are already covered: dropped without a fetch.
        assert_eq!(cu.next_due(0, |_, _| true), None);
        assert!(cu.is_idle());
    }
}
