//! Coalescing of concurrent appends (issue 13): the server appends one message per `send`, so
//! 1,000 senders made 1,000 `EVALSHA`s, and the script call itself (argument conversion, the
//! Lua call, the reply) cost Redis more than the commands inside it. At most one append call is
//! outstanding: while none is, a caller sends its own messages at once (a lone message waits
//! for nothing and pays no queue); while one is, callers queue, and a background task sends
//! everything queued as one script call as soon as the reply is in. So the busier Redis is, the
//! more messages share a call. One node only: on a Cluster a batch is one script call per
//! conversation anyway.
//!
//! Why one and not two (session 9): with a second call allowed in flight, half the sends at
//! 5,000 msgs/s found it free and went out alone, so a call carried 1.5-1.7 messages and each
//! message paid most of a call's fixed cost (~26,500 Redis instructions, a socket write and
//! read on both sides, a wakeup). With one, a send that arrives during a call waits for that
//! call's reply (one round trip, ~0.1-0.2 ms at that load) and shares the next call.
//!
//! Each message stays its own atomic step in the script, so merging callers changes no
//! result: every caller gets exactly the results for its own messages, in its order.

use super::{RedisStore, StoreError, StoreResult};
use crate::model::{Appended, NewMessage};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Most messages in one script call: Redis runs a script without interleaving other clients'
/// commands, so this bounds how long one call holds it (~10 µs per message).
const MAX_MESSAGES: usize = 64;

/// One caller's messages and where its results go.
struct Pending {
    batch: Vec<NewMessage>,
    reply: oneshot::Sender<Vec<StoreResult<Appended>>>,
}

/// The queue in front of [`RedisStore::append_now`]. Dropping the last store clone closes it
/// and ends the task once the queue is empty.
pub(super) struct Coalescer {
    queue: mpsc::UnboundedSender<Pending>,
    /// The one append call allowed outstanding, shared with the task. Tokio's semaphore hands a
    /// released permit to its waiters first, so the queue's task is served before a new caller.
    slot: Arc<Semaphore>,
}

impl Coalescer {
    /// Starts the task that drains the queue through `store`, which must be a store without a
    /// coalescer of its own (the task would otherwise keep itself alive). `None` outside a
    /// Tokio runtime: then appends go out directly.
    pub(super) fn start(store: RedisStore) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (queue, rx) = mpsc::unbounded_channel();
        let slot = Arc::new(Semaphore::new(1));
        runtime.spawn(drain(store, rx, slot.clone()));
        Some(Self { queue, slot })
    }

    /// Appends `batch` at once if no call is in flight, else queues it and waits for its results.
    /// If the task is gone (its runtime shut down), `batch` is appended directly.
    pub(super) async fn append(
        &self,
        store: &RedisStore,
        batch: Vec<NewMessage>,
    ) -> Vec<StoreResult<Appended>> {
        if let Ok(_slot) = self.slot.try_acquire() {
            return store.append_now(batch).await;
        }
        let n = batch.len();
        let (reply, results) = oneshot::channel();
        if let Err(mpsc::error::SendError(p)) = self.queue.send(Pending { batch, reply }) {
            return store.append_now(p.batch).await;
        }
        results.await.unwrap_or_else(|_| {
            // The task dropped the call (its runtime is shutting down): whether it reached
            // Redis is unknown, which is what `Unavailable` tells the caller (a retry with
            // the same idempotency key is safe).
            let stopped = StoreError::unavailable("the append queue stopped", 0);
            (0..n).map(|_| Err(stopped.clone())).collect()
        })
    }
}

/// Takes the queue's head, waits until no call is in flight (meanwhile more callers queue up),
/// then sends everything queued (up to [`MAX_MESSAGES`]) as one append and hands each caller
/// its results. The call runs on this task: only one can be in flight, so there is nothing to
/// do meanwhile but let the queue grow.
async fn drain(store: RedisStore, mut rx: mpsc::UnboundedReceiver<Pending>, slot: Arc<Semaphore>) {
    while let Some(first) = rx.recv().await {
        let Ok(_slot) = slot.acquire().await else {
            return;
        };
        let mut sizes = vec![first.batch.len()];
        let mut replies = vec![first.reply];
        let mut all = first.batch;
        while all.len() < MAX_MESSAGES {
            match rx.try_recv() {
                Ok(p) => {
                    sizes.push(p.batch.len());
                    all.extend(p.batch);
                    replies.push(p.reply);
                }
                Err(_) => break,
            }
        }
        let mut results = store.append_now(all).await.into_iter();
        for (reply, n) in replies.into_iter().zip(sizes) {
            // A caller that stopped waiting no longer needs its results.
            let _ = reply.send(results.by_ref().take(n).collect());
        }
    }
}
