//! Bounds concurrent resume replays per node (`max_concurrent_replays`).
//!
//! A replay reads every conversation's backlog from the store. When a node's whole population
//! returns at once (after a restart, or a wave of 4008 closes) the replays queue here instead
//! of stampeding the store; live traffic is not held back. The gate counts what `/metrics`
//! reports: replays running, the most ever running at once, and how many had to wait.
//!
//! A replay keeps its slot while it writes to its client, so a client that reads slowly holds
//! a slot for long. One user may therefore hold at most a quarter of the slots (at least one):
//! a user who opens many resumes and reads them slowly cannot starve everyone else's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
use zajel_core::UserId;

/// The per-node replay semaphore, the per-user shares and the counters.
pub(crate) struct ReplayGate {
    permits: Semaphore,
    per_user: usize,
    users: Mutex<HashMap<UserId, Arc<Semaphore>>>,
    active: AtomicUsize,
    peak: AtomicUsize,
    waited: AtomicU64,
}

/// One running replay; dropping it frees the slot (and the user's share).
pub(crate) struct ReplaySlot<'a> {
    gate: &'a ReplayGate,
    user: UserId,
    _permit: SemaphorePermit<'a>,
    share: Option<OwnedSemaphorePermit>,
}

impl ReplayGate {
    /// A gate letting `max` replays run at once (at least 1), at most a quarter of them (at
    /// least 1) for one user.
    pub(crate) fn new(max: u32) -> Self {
        let max = (max as usize).max(1);
        Self {
            permits: Semaphore::new(max),
            per_user: (max / 4).max(1),
            users: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            waited: AtomicU64::new(0),
        }
    }

    /// Waits for the user's share, then for a node slot. `None` only if a semaphore was
    /// closed (they never are).
    pub(crate) async fn enter(&self, user: UserId) -> Option<ReplaySlot<'_>> {
        let share = self.share_of(user);
        let mut waited = false;
        let share = match share.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                waited = true;
                share.acquire_owned().await.ok()?
            }
        };
        let permit = match self.permits.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                waited = true;
                self.permits.acquire().await.ok()?
            }
        };
        if waited {
            self.waited.fetch_add(1, Ordering::Relaxed);
        }
        let now = self.active.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now, Ordering::AcqRel);
        Some(ReplaySlot {
            gate: self,
            user,
            _permit: permit,
            share: Some(share),
        })
    }

    /// The user's share semaphore, created on first use.
    fn share_of(&self, user: UserId) -> Arc<Semaphore> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .entry(user)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_user)))
            .clone()
    }

    /// Replays running now.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// The most replays that ever ran at once.
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }

    /// Replays that found the gate full and waited.
    pub(crate) fn waited(&self) -> u64 {
        self.waited.load(Ordering::Relaxed)
    }
}

impl Drop for ReplaySlot<'_> {
    fn drop(&mut self) {
        self.gate.active.fetch_sub(1, Ordering::AcqRel);
        drop(self.share.take());
        // Forget the user's share once nobody holds or awaits it (the map stays as small as
        // the number of users replaying now).
        let mut users = self.gate.users.lock().unwrap_or_else(|e| e.into_inner());
        if users
            .get(&self.user)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            users.remove(&self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn never_more_than_the_cap_and_waiters_are_counted() {
        let gate = Arc::new(ReplayGate::new(2));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let gate = gate.clone();
                tokio::spawn(async move {
                    let _slot = gate.enter(UserId::new_random()).await.expect("open");
                    assert!(gate.active() <= 2);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(gate.peak(), 2);
        assert_eq!(gate.active(), 0);
        assert!(gate.waited() >= 8, "{}", gate.waited());
        assert!(gate.users.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn one_user_holds_at_most_a_quarter_of_the_slots() {
        let gate = ReplayGate::new(8);
        let hog = UserId::new_random();
        let first = gate.enter(hog).await.expect("open");
        let second = gate.enter(hog).await.expect("open");
        // The hog's third replay waits for its own share although six node slots are free...
        let third = tokio::time::timeout(Duration::from_millis(50), gate.enter(hog)).await;
        assert!(third.is_err(), "a third replay for one user must wait");
        // ...while another user's replay starts at once.
        let other =
            tokio::time::timeout(Duration::from_millis(50), gate.enter(UserId::new_random()))
                .await
                .expect("another user is not starved")
                .expect("open");
        assert_eq!(gate.active(), 3);
        drop(first);
        let third = tokio::time::timeout(Duration::from_millis(50), gate.enter(hog))
            .await
            .expect("the hog's share is free again")
            .expect("open");
        drop((second, third, other));
        assert_eq!(gate.active(), 0);
        assert!(gate.users.lock().expect("lock").is_empty());
    }
}
