//! Coalescing of concurrent appends (issue 13): the server appends one message per `send`, so
//! 1,000 senders made 1,000 `EVALSHA`s, and the script call itself (argument conversion, the
//! Lua call, the reply) cost Redis more than the commands inside it. At most [`IN_FLIGHT`]
//! append calls are outstanding: while a slot is free a caller sends its own messages at once
//! (a lone message waits for nothing and pays no queue); when both are taken callers queue,
//! and a background task sends everything queued as one script call as soon as a slot frees.
//! So the busier Redis is, the more messages share a call. One node only: on a Cluster a batch
//! is one script call per conversation anyway.
//!
//! Each message stays its own atomic step in the script, so merging callers changes no
//! result: every caller gets exactly the results for its own messages, in its order.

use super::{RedisStore, StoreError, StoreResult};
use crate::model::{Appended, NewMessage};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Script calls outstanding at once. Two keep Redis busy while the store encodes the next
/// call and decodes the last reply; more would only split the queue into smaller calls.
const IN_FLIGHT: usize = 2;

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
    /// Append calls outstanding, shared with the task. Tokio's semaphore hands a released
    /// permit to its waiters first, so the queue's task is served before a new caller.
    slots: Arc<Semaphore>,
}

impl Coalescer {
    /// Starts the task that drains the queue through `store`, which must be a store without a
    /// coalescer of its own (the task would otherwise keep itself alive). `None` outside a
    /// Tokio runtime: then appends go out directly.
    pub(super) fn start(store: RedisStore) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (queue, rx) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        runtime.spawn(drain(store, rx, slots.clone()));
        Some(Self { queue, slots })
    }

    /// Appends `batch` at once if a slot is free, else queues it and waits for its results.
    /// If the task is gone (its runtime shut down), `batch` is appended directly.
    pub(super) async fn append(
        &self,
        store: &RedisStore,
        batch: Vec<NewMessage>,
    ) -> Vec<StoreResult<Appended>> {
        if let Ok(_slot) = self.slots.try_acquire() {
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

/// Takes the queue's head, waits for a free slot (meanwhile more callers queue up), then sends
/// everything queued (up to [`MAX_MESSAGES`]) as one append.
async fn drain(store: RedisStore, mut rx: mpsc::UnboundedReceiver<Pending>, slots: Arc<Semaphore>) {
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut messages = first.batch.len();
        let mut callers = vec![first];
        while messages < MAX_MESSAGES {
            match rx.try_recv() {
                Ok(p) => {
                    messages += p.batch.len();
                    callers.push(p);
                }
                Err(_) => break,
            }
        }
        let store = store.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut sizes = Vec::with_capacity(callers.len());
            let mut all = Vec::with_capacity(messages);
            let mut replies = Vec::with_capacity(callers.len());
            for p in callers {
                sizes.push(p.batch.len());
                all.extend(p.batch);
                replies.push(p.reply);
            }
            let mut results = store.append_now(all).await.into_iter();
            for (reply, n) in replies.into_iter().zip(sizes) {
                // A caller that stopped waiting no longer needs its results.
                let _ = reply.send(results.by_ref().take(n).collect());
            }
        });
    }
}
