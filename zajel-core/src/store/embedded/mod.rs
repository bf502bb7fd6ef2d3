//! The embedded persistent store on [redb](https://docs.rs/redb): the default backend when
//! no Redis is configured.
//!
//! # Why redb
//!
//! * Pure Rust: no C toolchain, nothing to link, cross-compiles like the rest of the crate.
//! * ACID with copy-on-write B-trees: a commit either happened entirely or not at all, and a
//!   crash (power loss included) leaves the last committed state; no repair step or WAL replay.
//! * One file, so backing up or moving a deployment is copying a file.
//! * Actively maintained, with a stable file format.
//!
//! SQLite would need a C build (and a bundled copy for wasm-adjacent targets) and brings a SQL
//! layer we do not need: every access here is a point lookup or an ordered range scan, which
//! is exactly what a typed B-tree gives.
//!
//! # Design
//!
//! * **Group commit.** redb allows one writer at a time and every durable commit costs an
//!   fsync. All writes therefore go through one writer thread: it takes whatever operations
//!   are queued (up to [`MAX_BATCH_OPS`]), applies them in one write
//!   transaction, commits once with [`redb::Durability::Immediate`], and only then answers
//!   each caller. Under load thousands of appends share a handful of fsyncs; when idle an
//!   operation commits alone, immediately. While senders are concurrent (the previous commit
//!   held more than one operation), commits start at most every
//!   [`EmbeddedOptions::commit_interval`], so more operations share each commit's fixed cost.
//! * **Isolation inside a batch.** Each operation validates against the transaction state
//!   before it mutates anything, so a refused operation (`NotAMember`, `UsernameTaken`, …)
//!   changes nothing and its neighbours commit. If a mutation or the commit itself fails, the
//!   transaction is aborted and every operation in it gets [`StoreError::Backend`].
//! * **Reads** run in redb read transactions (consistent snapshots, never blocked by the
//!   writer) on [`tokio::task::spawn_blocking`], queued so that reads arriving together share
//!   one trip to the blocking pool (see `reader.rs`); the small reads every connection makes
//!   (its session and user, a short friend list) run inline instead (see `read_inline`).
//! * **Backpressure.** At most [`EmbeddedOptions::queue_capacity`] operations wait for the
//!   writer; further writers wait (asynchronously) for a slot instead of growing memory.
//! * **Recovery.** After an I/O error redb refuses every write until the file is reopened.
//!   The writer then closes and reopens the file by itself (redb repairs it), retrying with
//!   backoff, and [`Store::health`] reports [`StoreHealth::Unavailable`] until the file's
//!   filesystem has 1 MiB free again and a probe commit succeeds; meanwhile operations fail fast with [`StoreError::Unavailable`]. If the
//!   file can no longer be opened at all, health becomes [`StoreHealth::Failed`] (exit and
//!   let a supervisor restart the process).
//!
//! The table layout is in `docs/storage-embedded.md`.

mod conv_rows;
mod identity;
mod migrate;
mod reader;
mod tables;
mod writer;

use super::*;
use crate::friends::{Edge, UserPair};
use crate::model::Message;
use conv_rows::{CONV_ROWS, ConvKey, conv_state, message_at};
use redb::{ReadTransaction, ReadableDatabase};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use tables::*;
use tokio::sync::{Semaphore, oneshot};
use writer::{Job, OpResult, OpenError, Pending, PreparedMessage, Shared, Tx};

/// Upper bound on operations the writer coalesces into one transaction, so one commit's
/// latency stays bounded under a flood and early callers are not held back by late ones.
/// (One [`MessageStore::append`] call is one operation, whatever its batch size.)
pub const MAX_BATCH_OPS: usize = 256;

/// Most relations [`FriendStore::relations`] reads inline (see `read_inline`): decoding
/// them costs about as much as the trip to the blocking pool that a longer list takes.
const INLINE_RELATIONS: usize = 32;

/// File name used when [`EmbeddedStore::open`] is given a directory.
pub const DEFAULT_FILE_NAME: &str = "zajel.redb";

/// Default of [`EmbeddedOptions::commit_interval`].
pub const DEFAULT_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1);

/// Tuning for [`EmbeddedStore::open_with`].
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// How many write operations may wait for the writer thread (default 4096). When the queue
    /// is full, writers wait for a slot: backpressure instead of unbounded memory.
    pub queue_capacity: usize,
    /// How long an idempotency record deduplicates retries (default 24 h); [`Store::prune`]
    /// deletes older ones.
    pub dedupe_window_ms: u64,
    /// Shortest time between the starts of two commits while senders are concurrent
    /// (default 1 ms; `Duration::ZERO` turns pacing off). Each commit has a fixed cost (redb's
    /// system pages, checksums, one `fdatasync`) that dominated the CPU per message at
    /// moderate load, where the writer otherwise commits as soon as anything is queued (~5
    /// messages per commit at 5,000 msgs/s): pacing lets more messages share a commit, at
    /// most this much extra latency. A lone sender (one operation per commit) never waits.
    pub commit_interval: std::time::Duration,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 4096,
            dedupe_window_ms: DEFAULT_DEDUPE_WINDOW_MS,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
        }
    }
}

/// Most records one prune transaction deletes, so a big backlog does not make one commit
/// (and the appends queued behind it) slow; `prune` loops until everything is gone.
const PRUNE_CHUNK: usize = 10_000;

/// The embedded store: one redb file, one writer thread, reads on the blocking pool.
///
/// Cheap to clone (all clones share the file). When the last clone is dropped the writer
/// thread finishes what is queued and exits and the file is closed, so the same path can be
/// opened again right away. Dropping the last handle waits for that (at most one commit).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use zajel_core::{EmbeddedStore, Timestamp, UserStore, Username};
/// let dir = tempfile::tempdir().unwrap();
/// let store = EmbeddedStore::open(dir.path()).unwrap();
/// let u = store.create_user(&Username::parse("alice").unwrap(), None, Timestamp(0)).await.unwrap();
/// drop(store);
/// let store = EmbeddedStore::open(dir.path()).unwrap();
/// assert_eq!(store.user(u.id).await.unwrap().unwrap().username, "alice");
/// # });
/// ```
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
    queue: Arc<Semaphore>,
    readers: Arc<reader::Readers>,
    /// One-time tickets: in memory, as one process owns the file.
    tickets: crate::store::tickets::Tickets,
    options: EmbeddedOptions,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop once the queue is drained; joining makes
        // sure its database handle is gone before ours, so the file is closed on return.
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.shared.path)
            .finish_non_exhaustive()
    }
}

fn closed() -> StoreError {
    StoreError::Backend("the store's writer thread has stopped".into())
}

impl EmbeddedStore {
    /// Opens the store at `path`, creating it if needed.
    ///
    /// `path` is the database **file**; missing parent directories are created. If `path` is
    /// an existing directory, the file [`DEFAULT_FILE_NAME`] inside it is used. A file can be
    /// open by one store at a time (redb locks it): opening it twice gives
    /// [`StoreError::Backend`]. This call does blocking file I/O.
    pub fn open(path: impl AsRef<Path>) -> Result<EmbeddedStore, StoreError> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// [`EmbeddedStore::open`] with explicit [`EmbeddedOptions`].
    pub fn open_with(
        path: impl AsRef<Path>,
        options: EmbeddedOptions,
    ) -> Result<EmbeddedStore, StoreError> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path.push(DEFAULT_FILE_NAME);
        } else if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Backend(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        // Creates every table up front so read transactions never meet a missing one.
        let db = writer::open_database(&path, options.dedupe_window_ms).map_err(|e| {
            let (OpenError::Transient(e) | OpenError::Permanent(e)) = e;
            StoreError::Backend(format!("cannot open {}: {e}", path.display()))
        })?;
        let shared = Arc::new(Shared::new(db, path, options.dedupe_window_ms));
        let (jobs, rx) = mpsc::channel();
        let pacing = options.commit_interval;
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("zajel-redb-writer".into())
                .spawn(move || writer::run(shared, rx, pacing))
                .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?
        };
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                shared,
                jobs: Some(jobs),
                writer: Some(writer),
                queue: Arc::new(Semaphore::new(options.queue_capacity.max(1))),
                readers: Arc::default(),
                tickets: Default::default(),
                options,
            }),
        })
    }

    /// The database file in use.
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    /// How many write transactions this handle's writer has committed (each is one fsync).
    /// For tests and metrics: with concurrent writers it grows slower than the write count.
    #[doc(hidden)]
    pub fn commit_count(&self) -> u64 {
        self.inner.shared.commits.load(Ordering::Relaxed)
    }

    /// Free slots in the writer's queue (for tests and metrics).
    #[doc(hidden)]
    pub fn queue_free(&self) -> usize {
        self.inner.queue.available_permits()
    }

    /// Queues `op` for the writer and waits for it to be committed.
    async fn write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> OpResult<T> + Send + 'static,
    {
        // Waits here (not in memory) when the queue is full.
        let permit = self
            .inner
            .queue
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .jobs
            .as_ref()
            .ok_or_else(closed)?
            .send(Box::new(Pending::new(op, reply, Some(permit))))
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Runs `f` in a read transaction right here, on the calling task: for the reads every
    /// connection makes (its session and user, its friend list for the presence
    /// announcement), which are a few B-tree descents whose pages are nearly always cached.
    /// At ~10 µs that is cheaper than the hop to the blocking pool and back, which cost more
    /// CPU than the read (docs/storage-embedded.md, "Reads"). Only for reads of bounded size;
    /// a page that is not cached blocks this worker for one disk read.
    fn read_inline<T>(&self, f: impl FnOnce(&ReadTransaction) -> StoreResult<T>) -> StoreResult<T> {
        let db = self.inner.shared.db()?;
        let txn = db.begin_read().map_err(be)?;
        f(&txn)
    }

    /// Runs `f` in a read transaction on the blocking pool (queued: see `reader.rs`).
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: reader::ReadJob = Box::new(move |txn| {
            let answer = txn.and_then(f);
            Box::new(move || {
                let _ = reply.send(answer);
            })
        });
        // The drainer holds the shared file, so it stays open even if our caller goes away.
        self.inner.readers.submit(&self.inner.shared, job);
        answer
            .await
            .map_err(|_| StoreError::Backend("read task failed".into()))?
    }
}

#[async_trait]
impl UserStore for EmbeddedStore {
    async fn create_user(
        &self,
        username: &Username,
        password_hash: Option<&str>,
        at: Timestamp,
    ) -> StoreResult<User> {
        let (display, canonical) = (username.as_str().to_owned(), username.canonical());
        let hash = password_hash.map(str::to_owned);
        self.write(move |tx| tx.create_user(&display, &canonical, hash, at))
            .await
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        self.read(move |txn| user_profile(&txn.open_table(USERS).map_err(be)?, id))
            .await
    }

    async fn user_by_username(&self, username: &Username) -> StoreResult<Option<User>> {
        let canonical = username.canonical();
        self.read(move |txn| {
            let names = txn.open_table(USERNAMES).map_err(be)?;
            let Some(id) = names
                .get(canonical.as_str())
                .map_err(be)?
                .map(|v| v.value())
            else {
                return Ok(None);
            };
            let users = txn.open_table(USERS).map_err(be)?;
            match user_row(&users, from_uid(id))? {
                Some(row) => Ok(Some(row.user)),
                None => Err(StoreError::Corrupt(format!(
                    "username {canonical:?} points at missing user {}",
                    from_uid(id)
                ))),
            }
        })
        .await
    }

    async fn password_hash(&self, id: UserId) -> StoreResult<Option<String>> {
        self.read(move |txn| {
            let users = txn.open_table(USERS).map_err(be)?;
            Ok(user_row(&users, id)?.and_then(|r| r.password_hash))
        })
        .await
    }

    async fn rename_user(&self, id: UserId, new: &Username) -> StoreResult<User> {
        let (display, canonical) = (new.as_str().to_owned(), new.canonical());
        self.write(move |tx| tx.rename_user(id, &display, &canonical))
            .await
    }

    async fn set_password_hash(&self, id: UserId, hash: &str) -> StoreResult<()> {
        let hash = hash.to_owned();
        self.write(move |tx| tx.set_password_hash(id, hash)).await
    }

    async fn set_last_seen(&self, id: UserId, at: Timestamp) -> StoreResult<()> {
        self.write(move |tx| tx.set_last_seen(id, at)).await
    }

    async fn last_seen(&self, id: UserId) -> StoreResult<Option<Timestamp>> {
        self.read(move |txn| {
            let seen = txn.open_table(LAST_SEEN).map_err(be)?;
            Ok(seen.get(uid(id)).map_err(be)?.map(|v| Timestamp(v.value())))
        })
        .await
    }
}

/// `user`'s session with this token hash, if it exists and has not expired at `now`.
fn live_session(
    txn: &ReadTransaction,
    user: UserId,
    token_hash: &str,
    now: Timestamp,
) -> StoreResult<Option<Session>> {
    let sessions = txn.open_table(SESSIONS).map_err(be)?;
    let Some(v) = sessions.get((uid(user), token_hash)).map_err(be)? else {
        return Ok(None);
    };
    let session: Session = decode("session", v.value())?;
    Ok(Some(session).filter(|s| s.expires_at > now))
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn create_session(&self, session: &Session) -> StoreResult<()> {
        let session = session.clone();
        self.write(move |tx| tx.create_session(&session)).await
    }

    async fn session(
        &self,
        user: UserId,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<Session>> {
        self.read_inline(|txn| live_session(txn, user, token_hash, now))
    }

    async fn session_with_user(
        &self,
        user: UserId,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<(Session, User)>> {
        // One read transaction, inline, for both rows.
        self.read_inline(|txn| {
            let Some(session) = live_session(txn, user, token_hash, now)? else {
                return Ok(None);
            };
            let users = txn.open_table(USERS).map_err(be)?;
            Ok(user_profile(&users, user)?.map(|u| (session, u)))
        })
    }

    async fn delete_session(&self, user: UserId, token_hash: &str) -> StoreResult<bool> {
        let token_hash = token_hash.to_owned();
        self.write(move |tx| tx.delete_session(user, &token_hash))
            .await
    }

    async fn delete_user_sessions(&self, user: UserId) -> StoreResult<u64> {
        self.write(move |tx| tx.delete_user_sessions(user)).await
    }
}

#[async_trait]
impl FriendStore for EmbeddedStore {
    async fn edge(&self, pair: UserPair) -> StoreResult<Edge> {
        self.read(move |txn| edge(&txn.open_table(EDGES).map_err(be)?, pair))
            .await
    }

    async fn swap_edge(&self, pair: UserPair, expected: Edge, new: Edge) -> StoreResult<bool> {
        self.write(move |tx| tx.swap_edge(pair, expected, new))
            .await
    }

    async fn relations(&self, user: UserId) -> StoreResult<Vec<RelationEntry>> {
        // Inline when the list is short (every connection's presence announcement reads it);
        // a long one is read on the blocking pool, after at most `INLINE_RELATIONS + 1`
        // entries read here.
        let short = self.read_inline(|txn| {
            relation_entries_upto(
                &txn.open_table(RELATIONS).map_err(be)?,
                user,
                INLINE_RELATIONS,
            )
        })?;
        match short {
            Some(entries) => Ok(entries),
            None => {
                self.read(move |txn| {
                    relation_entries(&txn.open_table(RELATIONS).map_err(be)?, user)
                })
                .await
            }
        }
    }
}

#[async_trait]
impl MessageStore for EmbeddedStore {
    async fn append(&self, batch: Vec<NewMessage>) -> Vec<StoreResult<Appended>> {
        if batch.is_empty() {
            return Vec::new();
        }
        let n = batch.len();
        let window = self.inner.options.dedupe_window_ms;
        // Ids, rows and keys are made here, on the caller's task: the writer thread, which
        // every send queues behind, only reads, checks and inserts.
        let batch: Vec<_> = batch
            .into_iter()
            .map(|m| PreparedMessage::new(m, window))
            .collect();
        match self.write(move |tx| tx.append(batch, window)).await {
            Ok(results) => results,
            Err(e) => vec![Err(e); n],
        }
    }

    async fn history(
        &self,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> StoreResult<HistoryPage> {
        let conversation = conversation.clone();
        self.read(move |txn| {
            let key = ConvKey::of(&conversation)?;
            let rows = txn.open_table(CONV_ROWS).map_err(be)?;
            let last = conv_state(&rows, &key)?.last_seq;
            let range = plan_page(query, last)?;
            let mut messages = Vec::new();
            if !range.is_empty() {
                // Messages are keyed newest first: the page is the reversed key range.
                let (from, to) = (key.message(range.last), key.message(range.first));
                for entry in rows.range(&from[..]..=&to[..]).map_err(be)?.rev() {
                    let (_, v) = entry.map_err(be)?;
                    messages.push(decode::<Message>("message", v.value())?);
                }
                // Sequences are gap-free by construction; a hole means the file is damaged.
                let expected = range.last - range.first + 1;
                if messages.len() as u64 != expected {
                    return Err(StoreError::Corrupt(format!(
                        "{conversation}: expected {expected} messages in {}..={}, found {}",
                        range.first,
                        range.last,
                        messages.len()
                    )));
                }
            }
            Ok(HistoryPage {
                messages,
                has_more: range.has_more,
            })
        })
        .await
    }

    async fn last_seq(&self, conversation: &ConversationId) -> StoreResult<u64> {
        let key = ConvKey::of(conversation)?;
        self.read(
            move |txn| Ok(conv_state(&txn.open_table(CONV_ROWS).map_err(be)?, &key)?.last_seq),
        )
        .await
    }

    async fn conversations(
        &self,
        user: UserId,
        limit: u32,
    ) -> StoreResult<Vec<ConversationSummary>> {
        self.read(move |txn| {
            let members = txn.open_table(MEMBER_CONVERSATIONS).map_err(be)?;
            let rows = txn.open_table(CONV_ROWS).map_err(be)?;
            let u = uid(user);
            // The user's conversations, newest activity first. Sorting here (one row read per
            // conversation the user has) keeps the send path free of a per-user activity
            // index, which cost two removes and two inserts per message.
            let mut listed = Vec::new();
            for entry in members.range((u, "")..).map_err(be)? {
                let (k, _) = entry.map_err(be)?;
                let (member, conv) = k.value();
                if member != u {
                    break;
                }
                let conversation = parse_conversation(conv)?;
                let key = ConvKey::of(&conversation)?;
                listed.push((conv_state(&rows, &key)?, key, conversation));
            }
            listed.sort_unstable_by_key(|(state, _, _)| std::cmp::Reverse(state.activity));
            listed.truncate(limit as usize);
            let mut out = Vec::with_capacity(listed.len());
            for (state, key, conversation) in listed {
                let last_seq = state.last_seq;
                let last_message = if last_seq == 0 {
                    None
                } else {
                    Some(message_at(&rows, &key, last_seq)?.ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "{conversation}: newest message {last_seq} missing"
                        ))
                    })?)
                };
                let read_seq = state.mark(&conversation, user);
                let peer = conversation.peer_of(user);
                let peer_read_seq = peer.map_or(0, |p| state.mark(&conversation, p));
                out.push(ConversationSummary {
                    peer,
                    last_message,
                    last_seq,
                    unread: last_seq.saturating_sub(read_seq),
                    read_seq,
                    peer_read_seq,
                    conversation,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn mark_read(
        &self,
        conversation: &ConversationId,
        user: UserId,
        seq: u64,
    ) -> StoreResult<ReadMark> {
        if !conversation.has_member(user) {
            return Err(StoreError::NotAMember);
        }
        let conversation = conversation.clone();
        self.write(move |tx| tx.mark_read(&conversation, user, seq))
            .await
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn health(&self) -> StoreHealth {
        self.inner.shared.health()
    }

    fn commits_total(&self) -> Option<u64> {
        Some(self.commit_count())
    }

    async fn prune(&self, now: Timestamp) -> StoreResult<Pruned> {
        // A bucket is looked up while it is the current one or the one before: once `now` is
        // two windows past its start it is never read again (and everything in it was
        // recorded more than one window ago).
        let window = self.inner.options.dedupe_window_ms.max(1);
        let idem_before = ms(now)
            .saturating_add(1)
            .checked_sub(window.saturating_mul(2));
        let mut total = Pruned::default();
        loop {
            let (pruned, more) = self
                .write(move |tx| tx.prune(now, idem_before, PRUNE_CHUNK))
                .await?;
            total.sessions += pruned.sessions;
            total.idempotency_records += pruned.idempotency_records;
            if !more {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A full queue makes writers wait (no unbounded growth); they proceed once it drains.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_queue_applies_backpressure() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with(
            dir.path().join("t.redb"),
            EmbeddedOptions {
                queue_capacity: 2,
                ..EmbeddedOptions::default()
            },
        )
        .unwrap();
        // Park the writer thread inside an operation until we let it go.
        let (release, parked) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = oneshot::channel();
        let blocker = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |_tx| {
                        let _ = started_tx.send(());
                        let _ = parked.recv();
                        Ok(())
                    })
                    .await
            })
        };
        started.await.unwrap();
        let second = {
            let store = store.clone();
            tokio::spawn(async move { store.write(|_tx| Ok(2)).await })
        };
        while store.queue_free() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The queue is full: a third writer waits instead of being queued.
        let third = store.write(|_tx| Ok(3));
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut third)
                .await
                .is_err()
        );
        assert_eq!(store.queue_free(), 0);
        release.send(()).unwrap();
        assert_eq!(third.await, Ok(3));
        assert_eq!(second.await.unwrap(), Ok(2));
        assert_eq!(blocker.await.unwrap(), Ok(()));
        assert_eq!(store.queue_free(), 2);
    }
}
