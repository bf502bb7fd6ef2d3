//! Read transactions on the blocking pool, coalesced.
//!
//! A `spawn_blocking` per read cost more CPU than the read itself when thousands of clients
//! authenticate at once: tokio wakes an idle pool thread for every task while any thread is
//! idle, so every read was a futex wake and two context switches, plus a pool lock that the
//! runtime's workers contended for (docs/benchmarks.md, "Issue 13: connection setup
//! (session 6)"). Here reads are queued instead, and a drainer on the blocking pool runs every
//! queued read before it leaves: under load, many reads share one wake-up and one read
//! transaction; a lone read costs what it did.
//!
//! **Freshness.** A read must see every write acknowledged before it was asked for. A read
//! transaction begun after the read was queued does, so reads are numbered as they are queued
//! and a drainer reuses its transaction only for reads queued before that transaction began.
//!
//! **A slow read does not hold the others.** Each drainer takes one read at a time; when more
//! than [`BACKLOG_PER_DRAINER`] reads wait per running drainer (one is stuck in a long history
//! scan, or on a disk read), another drainer starts, up to [`MAX_DRAINERS`].

use super::StoreError;
use super::tables::be;
use super::writer::Shared;
use redb::{ReadTransaction, ReadableDatabase};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard};

/// A queued read: runs with the transaction (or why none could be begun) and returns how to
/// deliver its answer (run once the drainer has let go of what it must before answering).
pub(super) type ReadJob = Box<dyn FnOnce(Result<&ReadTransaction, StoreError>) -> Delivery + Send>;

/// Sends a read's answer to its caller.
pub(super) type Delivery = Box<dyn FnOnce() + Send>;

/// Waiting reads per running drainer before another drainer starts.
const BACKLOG_PER_DRAINER: usize = 4;

/// Most drainers at once: enough to overlap reads that wait on the disk; more would only
/// compete for the cores (the blocking pool's threads are shared with password hashing).
const MAX_DRAINERS: usize = 16;

/// The read queue of one store.
#[derive(Default)]
pub(super) struct Readers {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Reads not yet started, with their queue numbers.
    queue: VecDeque<(u64, ReadJob)>,
    /// The number the next queued read gets.
    next: u64,
    /// Drainers started and not yet finished.
    drainers: usize,
}

impl Readers {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `job`; starts a drainer on the blocking pool if none is running, or if the
    /// running ones are falling behind.
    pub(super) fn submit(self: &Arc<Self>, shared: &Arc<Shared>, job: ReadJob) {
        let start = {
            let mut s = self.lock();
            let n = s.next;
            s.next += 1;
            s.queue.push_back((n, job));
            let start = s.drainers == 0
                || (s.drainers < MAX_DRAINERS && s.queue.len() > BACKLOG_PER_DRAINER * s.drainers);
            if start {
                s.drainers += 1;
            }
            start
        };
        if start {
            let drainer = Drainer {
                readers: self.clone(),
                shared: shared.clone(),
                finished: false,
            };
            tokio::task::spawn_blocking(move || drainer.run());
        }
    }
}

/// One drainer: counted in [`State::drainers`] from its start until it leaves, also when the
/// runtime drops it unstarted (then the next read starts a new one).
struct Drainer {
    readers: Arc<Readers>,
    shared: Arc<Shared>,
    /// Whether [`Drainer::run`] already uncounted this drainer.
    finished: bool,
}

impl Drainer {
    fn run(mut self) {
        // The transaction in use, and the queue number before which reads may use it.
        let mut txn: Option<(u64, Result<ReadTransaction, StoreError>)> = None;
        loop {
            let (n, job, fresh_before) = {
                let mut s = self.readers.lock();
                match s.queue.pop_front() {
                    Some((n, job)) => (n, job, s.next),
                    None => {
                        // Uncounted under the same lock that saw the queue empty, so a read
                        // queued right after starts a drainer of its own.
                        s.drainers -= 1;
                        self.finished = true;
                        return;
                    }
                }
            };
            if txn.as_ref().is_none_or(|(before, _)| n >= *before) {
                // Begun after every read numbered below `fresh_before` was queued.
                let begun = self.shared.db().and_then(|db| db.begin_read().map_err(be));
                txn = Some((fresh_before, begun));
            }
            let current = match txn.as_ref().map(|(_, t)| t) {
                Some(Ok(t)) => Ok(t),
                Some(Err(e)) => Err(e.clone()),
                None => Err(StoreError::Backend("no read transaction".into())),
            };
            // A read that panics drops its answer channel (its caller gets an error); the
            // drainer goes on with the others.
            let delivery = catch_unwind(AssertUnwindSafe(|| job(current))).ok();
            let last = {
                let mut s = self.readers.lock();
                let last = s.queue.is_empty();
                if last {
                    s.drainers -= 1;
                    self.finished = true;
                }
                last
            };
            if last {
                // Let go of the file before the last answer: a caller that drops the store on
                // it may open the same file again at once (redb locks it while open).
                drop(txn);
                drop(self);
                if let Some(deliver) = delivery {
                    deliver();
                }
                return;
            }
            if let Some(deliver) = delivery {
                deliver();
            }
        }
    }
}

impl Drop for Drainer {
    fn drop(&mut self) {
        if !self.finished {
            self.readers.lock().drainers -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{EmbeddedStore, UserStore};
    use crate::{Timestamp, Username};
    use std::time::Duration;
    use tokio::sync::oneshot;

    fn open() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("t.redb")).unwrap();
        (dir, store)
    }

    /// Starts a read that holds its drainer (and that drainer's transaction) until released.
    async fn parked_read(
        store: &EmbeddedStore,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<crate::StoreResult<()>>,
    ) {
        let (release, parked) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = oneshot::channel();
        let store = store.clone();
        let read = tokio::spawn(async move {
            store
                .read(move |_txn| {
                    let _ = started_tx.send(());
                    let _ = parked.recv();
                    Ok(())
                })
                .await
        });
        started.await.unwrap();
        (release, read)
    }

    /// Reads queued behind a drainer's transaction still see a write acknowledged before they
    /// were asked for: the drainer begins a fresh transaction for them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_sees_every_write_acknowledged_before_it() {
        let (_dir, store) = open();
        let (release, parked) = parked_read(&store).await;
        // The parked drainer's transaction predates this user.
        let name = Username::parse("late").unwrap();
        let u = store.create_user(&name, None, Timestamp(1)).await.unwrap();
        let read = {
            let store = store.clone();
            tokio::spawn(async move { store.user(u.id).await })
        };
        // Queued behind the parked drainer (not served by a drainer of its own).
        while store.inner.readers.lock().queue.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(store.inner.readers.lock().drainers, 1);
        release.send(()).unwrap();
        assert_eq!(parked.await.unwrap(), Ok(()));
        assert_eq!(read.await.unwrap().unwrap().map(|x| x.id), Some(u.id));
    }

    /// One slow read does not hold the queue: past the backlog bound another drainer serves
    /// the reads behind it while it is still running.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_read_does_not_hold_the_others() {
        let (_dir, store) = open();
        let name = Username::parse("someone").unwrap();
        let u = store.create_user(&name, None, Timestamp(1)).await.unwrap();
        let (release, parked) = parked_read(&store).await;
        let reads: Vec<_> = (0..super::BACKLOG_PER_DRAINER + 1)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.user(u.id).await })
            })
            .collect();
        for r in reads {
            let found = tokio::time::timeout(Duration::from_secs(10), r)
                .await
                .expect("served while the slow read still runs")
                .unwrap()
                .unwrap();
            assert_eq!(found.map(|x| x.id), Some(u.id));
        }
        release.send(()).unwrap();
        assert_eq!(parked.await.unwrap(), Ok(()));
    }

    /// A read that panics fails alone: its caller gets an error, and the reads after it (on
    /// the same drainer) are answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_read_fails_alone() {
        let (_dir, store) = open();
        let name = Username::parse("after").unwrap();
        let u = store.create_user(&name, None, Timestamp(1)).await.unwrap();
        let bad = store.read::<(), _>(|_txn| panic!("a read that panics (expected by this test)"));
        assert!(bad.await.is_err());
        // Many at once: all answered, by however many drainers that took.
        let reads: Vec<_> = (0..200)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.user(u.id).await })
            })
            .collect();
        for r in reads {
            assert_eq!(r.await.unwrap().unwrap().map(|x| x.id), Some(u.id));
        }
        // Every drainer leaves once the queue is empty (just after its last answer).
        let mut waited = 0;
        while store.inner.readers.lock().drainers > 0 && waited < 500 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        assert_eq!(store.inner.readers.lock().drainers, 0);
    }
}
