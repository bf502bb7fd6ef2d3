//! The outbox: a per-conversation ordered send queue (after matrix-rust-sdk's send queue).
//!
//! * Head of line: message N+1 to a conversation is not sent before N is acknowledged, so a
//!   retried message can never be stored after a later one.
//! * Every entry keeps its idempotency key for life: re-sent unchanged after a reconnect or a
//!   retryable refusal, the server stores it once.
//! * A refusal retrying cannot fix (`not_friends`, `body_too_long`, …) leaves the entry
//!   `Failed { will_retry: false }` for the UI to retry or delete; it no longer holds back
//!   later messages to the same conversation.

use crate::error::Error;
use crate::event::{OutboxItem, SendState, Target};
use crate::storage::StoredSend;
use std::collections::HashSet;
use tokio::sync::oneshot;
use zajel_core::{ConversationId, Message, UserId};

pub(crate) type SendReply = oneshot::Sender<Result<Message, Error>>;

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Queued,
    /// On the wire with this request id.
    Sending(String),
    Failed {
        error: Error,
        will_retry: bool,
    },
}

pub(crate) struct Entry {
    pub key: String,
    pub to: Target,
    pub body: String,
    reply: Option<SendReply>,
    state: State,
    /// Not before this time (ms, `rt::now_ms`) after a retryable refusal.
    not_before: u64,
    pub retries: u32,
    /// Loaded from storage (not queued by this process).
    restored: bool,
}

impl Entry {
    fn conversation(&self, me: Option<UserId>) -> Option<ConversationId> {
        match (&self.to, me) {
            (Target::Conversation(c), _) => Some(c.clone()),
            (Target::Peer(p), Some(me)) => Some(ConversationId::direct(me, *p)),
            (Target::Peer(_), None) => None,
        }
    }

    pub(crate) fn item(&self, me: Option<UserId>) -> OutboxItem {
        OutboxItem {
            key: self.key.clone(),
            to: self.to.clone(),
            conversation: self.conversation(me),
            body: self.body.clone(),
            state: match &self.state {
                State::Queued => SendState::Queued,
                State::Sending(_) => SendState::Sending,
                State::Failed { error, will_retry } => SendState::Failed {
                    error: error.clone(),
                    will_retry: *will_retry,
                },
            },
        }
    }

    fn blocks(&self) -> bool {
        !matches!(
            self.state,
            State::Failed {
                will_retry: false,
                ..
            }
        )
    }
}

#[derive(Default)]
pub(crate) struct Outbox {
    entries: Vec<Entry>,
}

impl Outbox {
    pub(crate) fn push(&mut self, key: String, to: Target, body: String, reply: Option<SendReply>) {
        self.entries.push(Entry {
            key,
            to,
            body,
            reply,
            state: State::Queued,
            not_before: 0,
            retries: 0,
            restored: false,
        });
    }

    /// Restores stored entries (after a reload); keys already queued are skipped.
    pub(crate) fn restore(&mut self, stored: Vec<StoredSend>) {
        for s in stored {
            if self.entries.iter().any(|e| e.key == s.key) {
                continue;
            }
            let state = match s.failed {
                Some(message) => State::Failed {
                    error: Error::Protocol(message),
                    will_retry: false,
                },
                None => State::Queued,
            };
            self.entries.push(Entry {
                key: s.key,
                to: s.to,
                body: s.body,
                reply: None,
                state,
                not_before: 0,
                retries: 0,
                restored: true,
            });
        }
    }

    pub(crate) fn stored(&self) -> Vec<StoredSend> {
        self.entries
            .iter()
            .map(|e| StoredSend {
                key: e.key.clone(),
                to: e.to.clone(),
                body: e.body.clone(),
                failed: match &e.state {
                    State::Failed {
                        error,
                        will_retry: false,
                    } => Some(error.to_string()),
                    _ => None,
                },
            })
            .collect()
    }

    pub(crate) fn items(&self, me: Option<UserId>) -> Vec<OutboxItem> {
        self.entries.iter().map(|e| e.item(me)).collect()
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// The next entry to put on the wire: the head of some conversation's queue that is not
    /// already sending and is due. Returns its index.
    pub(crate) fn next_due(&self, me: UserId, now: u64) -> Option<usize> {
        let mut blocked: HashSet<ConversationId> = HashSet::new();
        for (i, e) in self.entries.iter().enumerate() {
            if !e.blocks() {
                continue;
            }
            let Some(c) = e.conversation(Some(me)) else {
                continue;
            };
            if !blocked.insert(c) {
                continue;
            }
            let due = match e.state {
                State::Queued => e.not_before <= now,
                State::Failed {
                    will_retry: true, ..
                } => e.not_before <= now,
                _ => false,
            };
            if due {
                return Some(i);
            }
        }
        None
    }

    /// The earliest time a waiting head becomes due (for the driver's timer).
    pub(crate) fn next_wake(&self, me: UserId) -> Option<u64> {
        let mut blocked: HashSet<ConversationId> = HashSet::new();
        let mut wake: Option<u64> = None;
        for e in &self.entries {
            if !e.blocks() {
                continue;
            }
            let Some(c) = e.conversation(Some(me)) else {
                continue;
            };
            if !blocked.insert(c) {
                continue;
            }
            if !matches!(e.state, State::Sending(_)) {
                wake = Some(wake.map_or(e.not_before, |w| w.min(e.not_before)));
            }
        }
        wake
    }

    /// Marks entry `i` as on the wire with request id `id`; returns the frame's parts.
    pub(crate) fn mark_sending(&mut self, i: usize, id: String) -> &Entry {
        let e = &mut self.entries[i];
        e.state = State::Sending(id);
        e.not_before = 0;
        e
    }

    /// The message with this key was stored: removes the entry, answers its `send`.
    /// Returns false when no entry has the key.
    pub(crate) fn complete(&mut self, message: &Message) -> bool {
        let Some(pos) = self
            .entries
            .iter()
            .position(|e| e.key == message.idempotency_key)
        else {
            return false;
        };
        let e = self.entries.remove(pos);
        if let Some(r) = e.reply {
            let _ = r.send(Ok(message.clone()));
        }
        true
    }

    /// The server refused the entry with `key`. Retryable: back to the queue after `delay`
    /// (still the head of its conversation). Not retryable: `Failed`; returns its `send`'s
    /// reply for the caller to answer once the change is visible.
    pub(crate) fn refused(
        &mut self,
        key: &str,
        error: Error,
        retry_at: Option<u64>,
    ) -> Option<SendReply> {
        let e = self.entries.iter_mut().find(|e| e.key == key)?;
        match retry_at {
            Some(at) => {
                e.retries += 1;
                e.not_before = at;
                e.state = State::Failed {
                    error,
                    will_retry: true,
                };
                None
            }
            None => {
                e.state = State::Failed {
                    error,
                    will_retry: false,
                };
                e.reply.take()
            }
        }
    }

    /// The connection dropped: everything on the wire is queued again (same key). Returns the
    /// keys that changed.
    pub(crate) fn connection_lost(&mut self) -> Vec<String> {
        let mut changed = Vec::new();
        for e in &mut self.entries {
            if matches!(e.state, State::Sending(_)) {
                e.state = State::Queued;
                changed.push(e.key.clone());
            }
        }
        changed
    }

    /// Puts a failed entry back in the queue (`retry`). False if there is none with `key` or
    /// it is not failed.
    pub(crate) fn retry(&mut self, key: &str) -> bool {
        match self.entries.iter_mut().find(|e| e.key == key) {
            Some(e) if matches!(e.state, State::Failed { .. }) => {
                e.state = State::Queued;
                e.not_before = 0;
                e.retries = 0;
                true
            }
            _ => false,
        }
    }

    /// Removes an entry that is not on the wire (its outcome would be unknown). Its pending
    /// `send` fails with `error`.
    pub(crate) fn delete(&mut self, key: &str, error: Error) -> Result<Entry, Error> {
        let pos = self
            .entries
            .iter()
            .position(|e| e.key == key)
            .ok_or_else(|| Error::InvalidArgument(format!("no outbox entry with key {key:?}")))?;
        if matches!(self.entries[pos].state, State::Sending(_)) {
            return Err(Error::InvalidArgument(
                "the message is being sent; wait for its ack or failure".into(),
            ));
        }
        let mut e = self.entries.remove(pos);
        if let Some(r) = e.reply.take() {
            let _ = r.send(Err(error));
        }
        Ok(e)
    }

    /// The client stops: every pending `send` fails with `error`. Entries stay (they are
    /// in storage for the next start).
    pub(crate) fn fail_all_replies(&mut self, error: &Error) {
        for e in &mut self.entries {
            if let Some(r) = e.reply.take() {
                let _ = r.send(Err(error.clone()));
            }
        }
    }

    /// Drops every entry (the stored outbox belonged to another account).
    pub(crate) fn clear_unowned(&mut self) {
        self.entries.retain(|e| !e.restored);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> UserId {
        "00000000-0000-4000-8000-000000000001".parse().unwrap()
    }

    #[test]
    fn head_of_line_per_conversation_and_failed_entries_do_not_block() {
        let (a, b) = (UserId::new_random(), UserId::new_random());
        let mut o = Outbox::default();
        for (k, to) in [("a1", a), ("a2", a), ("b1", b)] {
            o.push(k.into(), Target::Peer(to), "x".into(), None);
        }
        let i = o.next_due(me(), 0).unwrap();
        assert_eq!(o.mark_sending(i, "s1".into()).key, "a1");
        let i = o.next_due(me(), 0).unwrap();
        assert_eq!(o.mark_sending(i, "s2".into()).key, "b1");
        assert_eq!(o.next_due(me(), 0), None, "a2 waits for a1");
        // a1 is rate limited: retried at t=100, a2 still waits behind it.
        assert!(o.refused("a1", Error::Timeout, Some(100)).is_none());
        assert_eq!(o.next_due(me(), 50), None);
        assert_eq!(o.next_wake(me()), Some(100));
        let i = o.next_due(me(), 100).unwrap();
        assert_eq!(o.mark_sending(i, "s3".into()).key, "a1");
        // Refused for good: a2 may go, a1 stays visible as failed.
        let _ = o.refused("a1", Error::Closed, None);
        let i = o.next_due(me(), 100).unwrap();
        assert_eq!(o.entries[i].key, "a2");
        assert!(matches!(
            o.get("a1").unwrap().item(Some(me())).state,
            SendState::Failed {
                will_retry: false,
                ..
            }
        ));
        assert!(o.delete("b1", Error::Closed).is_err(), "b1 is on the wire");
        assert!(o.delete("a1", Error::Closed).is_ok());
    }
}
