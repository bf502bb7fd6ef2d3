//! What the chat service retries in the background until the store takes it: a presence
//! announcement whose friend list could not be read, and a friends notice that could not be
//! posted. Each is node-local state (lost if the node stops before the store recovers).

use super::ChatService;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use zajel_core::{ConversationId, UserId};

impl ChatService {
    /// Runs `attempt` in the background, first after `first` and then at intervals doubling
    /// up to `max`, until it returns true (done, or nothing left to do) or the engine is
    /// dropped. Outside a Tokio runtime it does nothing.
    pub(super) fn retry_in_background<F, Fut>(&self, first: Duration, max: Duration, attempt: F)
    where
        F: Fn(ChatService) -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = std::sync::Arc::downgrade(&self.engine.inner);
        runtime.spawn(async move {
            let mut wait = first;
            loop {
                tokio::time::sleep(wait).await;
                let Some(inner) = weak.upgrade() else { return };
                if attempt(crate::Engine { inner }.chat()).await {
                    return;
                }
                wait = (wait * 2).min(max);
            }
        });
    }
}

/// A map of waiting work whose emptiness is checked without a lock: the paths that consult
/// it (every send, every announcement) almost always find it empty.
struct Waiting<K, V> {
    len: AtomicUsize,
    map: Mutex<HashMap<K, V>>,
}

impl<K, V> Default for Waiting<K, V> {
    fn default() -> Self {
        Self {
            len: AtomicUsize::new(0),
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V> Waiting<K, V> {
    /// Runs `f` on the map (under its lock) and keeps the lock-free length in step.
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<K, V>) -> R) -> R {
        let mut map: MutexGuard<'_, HashMap<K, V>> =
            self.map.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut map);
        self.len.store(map.len(), Ordering::Release);
        out
    }

    fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }
}

/// Presence announcements waiting for their friend list, each user with the ticket of their
/// newest one. A later announcement of the same user supersedes a waiting one: it says the
/// newer state, which the waiting one, published after it, would contradict.
#[derive(Default)]
pub(crate) struct PendingAnnouncements {
    tickets: Waiting<UserId, u64>,
    next: AtomicU64,
}

impl PendingAnnouncements {
    /// Records that `user`'s newest announcement waits; returns its ticket.
    pub(crate) fn wait(&self, user: UserId) -> u64 {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        self.tickets.with(|m| m.insert(user, ticket));
        ticket
    }

    /// A newer announcement of `user` is about to be published: whatever waits is stale.
    pub(crate) fn supersede(&self, user: UserId) {
        if !self.tickets.is_empty() {
            self.tickets.with(|m| m.remove(&user));
        }
    }

    /// Whether `ticket` is still `user`'s newest waiting announcement.
    pub(crate) fn is_current(&self, user: UserId, ticket: u64) -> bool {
        self.tickets.with(|m| m.get(&user) == Some(&ticket))
    }

    /// Runs `publish` if `ticket` is still current, and ends the wait. Publishing under the
    /// lock orders it with a newer announcement, which supersedes (under the lock) before it
    /// publishes: it either cancels this one or is published after it.
    pub(crate) fn complete(&self, user: UserId, ticket: u64, publish: impl FnOnce()) {
        self.tickets.with(|m| {
            if m.get(&user) == Some(&ticket) {
                m.remove(&user);
                publish();
            }
        });
    }
}

/// A friends notice the store did not take: its body and idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Notice {
    pub body: String,
    pub key: String,
}

/// Friends notices waiting to be posted, by conversation. While one waits, everything else
/// of the pair on this node (a send, a friendship change) posts it first, so that no message
/// lands before it in the history.
#[derive(Default)]
pub(crate) struct PendingNotices {
    notices: Waiting<ConversationId, Notice>,
}

impl PendingNotices {
    pub(crate) fn wait(&self, conversation: ConversationId, notice: Notice) {
        self.notices.with(|m| m.insert(conversation, notice));
    }

    /// The notice waiting in `conversation`, if any.
    pub(crate) fn get(&self, conversation: &ConversationId) -> Option<Notice> {
        if self.notices.is_empty() {
            return None;
        }
        self.notices.with(|m| m.get(conversation).cloned())
    }

    /// Ends the wait of the notice with `key` (posted, or given up).
    pub(crate) fn done(&self, conversation: &ConversationId, key: &str) {
        self.notices.with(|m| {
            if m.get(conversation).is_some_and(|n| n.key == key) {
                m.remove(conversation);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_announcement_cancels_the_waiting_one() {
        let p = PendingAnnouncements::default();
        let (alice, bob) = (UserId::new_random(), UserId::new_random());
        let a = p.wait(alice);
        let b = p.wait(bob);
        p.supersede(alice);
        assert!(!p.is_current(alice, a));
        let mut published = Vec::new();
        p.complete(alice, a, || published.push("alice"));
        p.complete(bob, b, || published.push("bob"));
        assert_eq!(published, ["bob"]);
        // Done: nothing waits, a second completion publishes nothing.
        p.complete(bob, b, || published.push("bob again"));
        assert_eq!(published, ["bob"]);
        assert!(p.tickets.is_empty());
    }

    #[test]
    fn a_second_wait_replaces_the_first() {
        let p = PendingAnnouncements::default();
        let alice = UserId::new_random();
        let first = p.wait(alice);
        let second = p.wait(alice);
        assert!(!p.is_current(alice, first));
        assert!(p.is_current(alice, second));
    }

    #[test]
    fn only_the_waiting_notice_is_done() {
        let p = PendingNotices::default();
        let conv = ConversationId::direct(UserId::new_random(), UserId::new_random());
        assert_eq!(p.get(&conv), None);
        let notice = |key: &str| Notice {
            body: "now friends".into(),
            key: key.into(),
        };
        p.wait(conv.clone(), notice("k1"));
        p.wait(conv.clone(), notice("k2"));
        p.done(&conv, "k1");
        assert_eq!(p.get(&conv), Some(notice("k2")));
        p.done(&conv, "k2");
        assert_eq!(p.get(&conv), None);
        assert!(p.notices.is_empty());
    }
}
