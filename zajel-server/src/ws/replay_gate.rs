//! Bounds concurrent resume replays per node (`max_concurrent_replays`).
//!
//! A replay reads every conversation's backlog from the store. When a node's whole population
//! returns at once (after a restart, or a wave of 4008 closes) the replays queue here instead
//! of stampeding the store; live traffic is not held back. The gate counts what `/metrics`
//! reports: replays running, the most ever running at once, and how many had to wait.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::{Semaphore, SemaphorePermit};

/// The per-node replay semaphore and its counters.
pub(crate) struct ReplayGate {
    permits: Semaphore,
    active: AtomicUsize,
    peak: AtomicUsize,
    waited: AtomicU64,
}

/// One running replay; dropping it frees the slot.
pub(crate) struct ReplaySlot<'a> {
    gate: &'a ReplayGate,
    _permit: SemaphorePermit<'a>,
}

impl ReplayGate {
    /// A gate letting `max` replays run at once (at least 1).
    pub(crate) fn new(max: u32) -> Self {
        Self {
            permits: Semaphore::new((max as usize).max(1)),
            active: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            waited: AtomicU64::new(0),
        }
    }

    /// Waits for a slot. `None` only if the semaphore was closed (it never is).
    pub(crate) async fn enter(&self) -> Option<ReplaySlot<'_>> {
        let permit = match self.permits.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                self.waited.fetch_add(1, Ordering::Relaxed);
                self.permits.acquire().await.ok()?
            }
        };
        let now = self.active.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now, Ordering::AcqRel);
        Some(ReplaySlot {
            gate: self,
            _permit: permit,
        })
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
                    let _slot = gate.enter().await.expect("open");
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
    }
}
