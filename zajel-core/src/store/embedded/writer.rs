//! The single writer thread and the write operations it applies.
//!
//! Every operation validates against the transaction's current state (reads and decoding)
//! before it mutates anything, so a rejected operation leaves the transaction exactly as it
//! found it and its neighbours in the same group commit are unaffected. A failure *while*
//! mutating is fatal: the whole transaction is aborted and every operation in it reports
//! [`StoreError::Backend`].

use super::MAX_BATCH_OPS;
use super::conv_rows::{CONV_ROWS, ConvKey, IDEMPOTENCY_WINDOWS, conv_state};
use super::migrate::migrate;
use super::tables::*;
use crate::friends::{Edge, UserPair};
use crate::ids::{ConversationId, Timestamp, UserId};
use crate::model::{ReadMark, Relation, Session, User};
use crate::store::{Pruned, StoreHealth};
use crate::store::{RelationEntry, StoreError, StoreResult};
use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

mod append;
mod identity;

pub(super) use append::PreparedMessage;

/// Why an operation did not produce a value.
pub(super) enum OpError {
    /// Refused before mutating anything: only this operation fails.
    Reject(StoreError),
    /// Failed while mutating: the transaction is no longer trustworthy and is aborted.
    Fatal(StoreError),
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Reject(e)
    }
}

/// For mutations: any error poisons the transaction.
fn fatal(e: redb::StorageError) -> OpError {
    OpError::Fatal(be(e))
}

pub(super) type OpResult<T> = Result<T, OpError>;

/// Activity stamps reserved per write of the counter.
const ACTIVITY_BLOCK: u64 = 4096;

/// Activity stamps handed out from a reserved block, so a commit writes the counter (a leaf
/// of `counters` and that table's root: a page, its checksum and ~25,000 instructions per
/// commit) once per [`ACTIVITY_BLOCK`] stamps instead of every time. The stored counter is a
/// ceiling: no stamp handed out is above it once its transaction has committed. Opening a
/// file starts after the stored value, skipping what the last process left unused of its
/// block, which keeps stamps monotonic (they only order conversations; gaps mean nothing). A
/// file of an older version stored the last stamp, which is a ceiling too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ActivityLease {
    /// The last stamp handed out.
    last: u64,
    /// The reserved ceiling: stored in the file once the transaction that raised it commits.
    ceiling: u64,
}

/// Declares [`Tx`]'s tables: each is opened the first time an operation of the transaction
/// uses it (a steady-state batch of appends opens 2 of the 13), because opening a table costs a lookup in
/// redb's table tree now and another when the commit checks it for changes (~8,000
/// instructions per table and commit, measured with callgrind).
macro_rules! lazy_tables {
    ($($name:ident: $def:ident => ($k:ty, $v:ty),)*) => {
        /// The write transaction's tables, opened on first use, and what its operations defer.
        pub(super) struct Tx<'t> {
            txn: &'t WriteTransaction,
            $($name: Option<Table<'t, $k, $v>>,)*
            /// Where activity stamps come from: the writer's lease, carried from one
            /// transaction to the next (`None`: read the counter at the first send).
            activity: Option<ActivityLease>,
            /// The lease's ceiling moved on in this transaction: [`Tx::flush`] stores it.
            activity_dirty: bool,
        }

        impl<'t> Tx<'t> {
            pub(super) fn new(txn: &'t WriteTransaction) -> Self {
                Self::with_activity(txn, None)
            }

            /// A transaction that hands out activity stamps from `lease` (the previous
            /// transaction's [`Tx::activity_lease`]) instead of reading the counter.
            pub(super) fn with_activity(
                txn: &'t WriteTransaction,
                lease: Option<ActivityLease>,
            ) -> Self {
                Self {
                    txn,
                    $($name: None,)*
                    activity: lease,
                    activity_dirty: false,
                }
            }

            /// How many tables this transaction has opened.
            #[cfg(test)]
            fn opened(&self) -> usize {
                [$(self.$name.is_some(),)*].iter().filter(|open| **open).count()
            }

            /// Opens (creating) every table: used when the file is opened, so readers never
            /// meet a missing table.
            pub(super) fn open_all(&mut self) -> OpResult<()> {
                $(self.$name()?;)*
                Ok(())
            }

            $(
                /// The table, opened on first use. Failing to open it is fatal for the
                /// transaction: the operation may already have mutated other tables.
                fn $name(&mut self) -> OpResult<&mut Table<'t, $k, $v>> {
                    if self.$name.is_none() {
                        self.$name = Some(self.txn.open_table($def).map_err(|e| OpError::Fatal(be(e)))?);
                    }
                    self.$name
                        .as_mut()
                        .ok_or_else(|| OpError::Fatal(StoreError::Backend("table not open".into())))
                }
            )*
        }
    };
}

lazy_tables! {
    users: USERS => (u128, &'static [u8]),
    usernames: USERNAMES => (&'static str, u128),
    externals: EXTERNALS => ((&'static str, &'static str), u128),
    user_externals: USER_EXTERNALS => ((u128, &'static str, &'static str), i64),
    sessions: SESSIONS => ((u128, &'static str), &'static [u8]),
    edges: EDGES => ((u128, u128), &'static [u8]),
    relations: RELATIONS => ((u128, u128), &'static [u8]),
    rows: CONV_ROWS => (&'static [u8], &'static [u8]),
    idem_windows: IDEMPOTENCY_WINDOWS => ((u64, u128, u128), ()),
    last_seen: LAST_SEEN => (u128, i64),
    member_convs: MEMBER_CONVERSATIONS => ((u128, &'static str), ()),
    counters: COUNTERS => (&'static str, u64),
    session_expiry: SESSION_EXPIRY => ((u64, u128, &'static str), ()),
}

impl OpError {
    /// The error to report, whichever kind it is.
    fn into_store(self) -> StoreError {
        match self {
            OpError::Reject(e) | OpError::Fatal(e) => e,
        }
    }
}

impl Tx<'_> {
    /// Writes what the transaction's operations deferred (a new activity ceiling). Called
    /// once, after the last operation and before the commit.
    pub(super) fn flush(&mut self) -> OpResult<()> {
        if let (Some(lease), true) = (self.activity, self.activity_dirty) {
            self.counters()?
                .insert(ACTIVITY_COUNTER, lease.ceiling)
                .map_err(be)?;
            self.activity_dirty = false;
        }
        Ok(())
    }

    /// The lease after this transaction's stamps: for the next transaction, once this one
    /// has committed.
    pub(super) fn activity_lease(&self) -> Option<ActivityLease> {
        self.activity
    }

    /// The next activity stamp (monotonic across the file).
    fn next_activity(&mut self) -> OpResult<u64> {
        let mut lease = match self.activity {
            Some(lease) => lease,
            None => {
                let stored = self
                    .counters()?
                    .get(ACTIVITY_COUNTER)
                    .map_err(be)?
                    .map_or(0, |v| v.value());
                ActivityLease {
                    last: stored,
                    ceiling: stored,
                }
            }
        };
        lease.last += 1;
        if lease.last > lease.ceiling {
            lease.ceiling = lease.last + ACTIVITY_BLOCK - 1;
            self.activity_dirty = true;
        }
        self.activity = Some(lease);
        Ok(lease.last)
    }

    /// Proves the file takes writes again (see the writer's recovery).
    pub(super) fn probe(&mut self) -> OpResult<()> {
        let n = self
            .counters()?
            .get(HEALTH_PROBE)
            .map_err(be)?
            .map_or(0, |v| v.value());
        self.counters()?
            .insert(HEALTH_PROBE, n.wrapping_add(1))
            .map_err(be)?;
        Ok(())
    }

    /// Deletes up to `limit` expired sessions and idempotency records in buckets that start
    /// before `idem_before` (ms). Returns what it deleted and whether more remain.
    pub(super) fn prune(
        &mut self,
        now: Timestamp,
        idem_before: Option<u64>,
        limit: usize,
    ) -> OpResult<(Pruned, bool)> {
        let mut pruned = Pruned::default();
        let upper = ms(now).saturating_add(1);
        let mut expired = Vec::new();
        for entry in self
            .session_expiry()?
            .range(..(upper, 0u128, ""))
            .map_err(be)?
            .take(limit + 1)
        {
            let (k, _) = entry.map_err(be)?;
            let (at, user, hash) = k.value();
            expired.push((at, user, hash.to_owned()));
        }
        let more_sessions = expired.len() > limit;
        expired.truncate(limit);
        for (at, user, hash) in &expired {
            self.session_expiry()?
                .remove((*at, *user, hash.as_str()))
                .map_err(fatal)?;
            // The index entry is removed whenever the session is replaced or deleted, but
            // check anyway: never delete a session that is still valid.
            let still_valid = match self.sessions()?.get((*user, hash.as_str())).map_err(be)? {
                Some(v) => {
                    decode::<Session>("session", v.value()).is_ok_and(|s| s.expires_at > now)
                }
                None => continue,
            };
            if !still_valid {
                self.sessions()?
                    .remove((*user, hash.as_str()))
                    .map_err(fatal)?;
                pruned.sessions += 1;
            }
        }
        let more_records = match idem_before.filter(|b| *b > 0) {
            Some(before) => self.prune_idempotency(before, limit, &mut pruned)?,
            None => false,
        };
        Ok((pruned, more_sessions || more_records))
    }

    /// Deletes up to `limit` idempotency records of buckets that start before `before`, found
    /// through [`IDEMPOTENCY_WINDOWS`] (one entry per conversation and bucket). Returns whether
    /// more remain.
    fn prune_idempotency(
        &mut self,
        before: u64,
        limit: usize,
        pruned: &mut Pruned,
    ) -> OpResult<bool> {
        let mut windows = Vec::new();
        for entry in self
            .idem_windows()?
            .range(..(before, 0u128, 0u128))
            .map_err(be)?
            .take(limit + 1)
        {
            let (k, _) = entry.map_err(be)?;
            windows.push(k.value());
        }
        let mut more = windows.len() > limit;
        windows.truncate(limit);
        let mut budget = limit;
        for (bucket, lo, hi) in windows {
            let conv = ConvKey::from_uids(lo, hi);
            let (start, end) = conv.idempotency_bucket(bucket);
            let mut keys = Vec::new();
            for entry in self
                .rows()?
                .range(start.as_slice()..end.as_slice())
                .map_err(be)?
                .take(budget + 1)
            {
                let (k, _) = entry.map_err(be)?;
                keys.push(k.value().to_vec());
            }
            let emptied = keys.len() <= budget;
            keys.truncate(budget);
            // Read before mutating: the conversation may still be writing into this bucket
            // (a clock stepped back); then its next record must list the bucket again.
            let mut state = conv_state(self.rows()?, &conv)?;
            for key in &keys {
                self.rows()?.remove(key.as_slice()).map_err(fatal)?;
            }
            budget -= keys.len();
            pruned.idempotency_records += keys.len() as u64;
            if !emptied {
                more = true;
                break;
            }
            self.idem_windows()?
                .remove((bucket, lo, hi))
                .map_err(fatal)?;
            if state.idem_indexed && state.idem_bucket == bucket {
                state.idem_indexed = false;
                self.rows()?
                    .insert(&conv.meta()[..], &state.encode()[..])
                    .map_err(fatal)?;
            }
        }
        Ok(more)
    }

    fn existing_user(&mut self, id: UserId) -> OpResult<UserRow> {
        Ok(user_row(self.users()?, id)?.ok_or(StoreError::UserNotFound)?)
    }

    fn put_user(&mut self, row: &UserRow) -> OpResult<()> {
        let bytes = encode(row)?;
        self.users()?
            .insert(uid(row.user.id), bytes.as_slice())
            .map_err(fatal)?;
        Ok(())
    }

    pub(super) fn create_user(
        &mut self,
        display: &str,
        canonical: &str,
        password_hash: Option<String>,
        at: Timestamp,
    ) -> OpResult<User> {
        if self.usernames()?.get(canonical).map_err(be)?.is_some() {
            return Err(StoreError::UsernameTaken.into());
        }
        // v4 collisions are astronomically unlikely, but checking costs one lookup.
        let mut id = UserId::new_random();
        while self.users()?.get(uid(id)).map_err(be)?.is_some() {
            id = UserId::new_random();
        }
        let row = UserRow {
            user: User {
                id,
                username: display.to_owned(),
                created_at: at,
            },
            password_hash,
            last_seen: None,
        };
        let bytes = encode(&row)?;
        self.usernames()?
            .insert(canonical, uid(id))
            .map_err(fatal)?;
        self.users()?
            .insert(uid(id), bytes.as_slice())
            .map_err(fatal)?;
        Ok(row.user)
    }

    pub(super) fn rename_user(
        &mut self,
        id: UserId,
        display: &str,
        canonical: &str,
    ) -> OpResult<User> {
        let mut row = self.existing_user(id)?;
        let owner = self
            .usernames()?
            .get(canonical)
            .map_err(be)?
            .map(|v| v.value());
        if owner.is_some_and(|o| o != uid(id)) {
            return Err(StoreError::UsernameTaken.into());
        }
        // The canonical form of a stored name (`Username::canonical`).
        let old = row.user.username.to_ascii_lowercase();
        self.usernames()?.remove(old.as_str()).map_err(fatal)?;
        self.usernames()?
            .insert(canonical, uid(id))
            .map_err(fatal)?;
        row.user.username = display.to_owned();
        self.put_user(&row)?;
        Ok(row.user)
    }

    pub(super) fn set_password_hash(&mut self, id: UserId, hash: String) -> OpResult<()> {
        let mut row = self.existing_user(id)?;
        row.password_hash = Some(hash);
        self.put_user(&row)
    }

    /// Moves `id`'s last-seen time forward (never back). A fixed-size row of its own: every
    /// connection's close writes it, and re-encoding the user row cost ~18,700 instructions.
    pub(super) fn set_last_seen(&mut self, id: UserId, at: Timestamp) -> OpResult<()> {
        if self.users()?.get(uid(id)).map_err(be)?.is_none() {
            return Err(StoreError::UserNotFound.into());
        }
        let seen = self
            .last_seen()?
            .get(uid(id))
            .map_err(be)?
            .map(|v| v.value());
        if seen.is_none_or(|t| t < at.0) {
            self.last_seen()?.insert(uid(id), at.0).map_err(fatal)?;
        }
        Ok(())
    }

    pub(super) fn create_session(&mut self, session: &Session) -> OpResult<()> {
        self.existing_user(session.user_id)?;
        let bytes = encode(session)?;
        let (user, hash) = (uid(session.user_id), session.token_hash.as_str());
        let replaced = self
            .sessions()?
            .insert((user, hash), bytes.as_slice())
            .map_err(fatal)?
            .and_then(|old| decode::<Session>("session", old.value()).ok());
        if let Some(old) = replaced {
            self.session_expiry()?
                .remove((ms(old.expires_at), user, hash))
                .map_err(fatal)?;
        }
        self.session_expiry()?
            .insert((ms(session.expires_at), user, hash), ())
            .map_err(fatal)?;
        Ok(())
    }

    pub(super) fn delete_session(&mut self, user: UserId, token_hash: &str) -> OpResult<bool> {
        let u = uid(user);
        let old = match self.sessions()?.remove((u, token_hash)).map_err(fatal)? {
            Some(old) => decode::<Session>("session", old.value()),
            None => return Ok(false),
        };
        // An undecodable session leaves a stale index entry; pruning skips it harmlessly.
        if let Ok(old) = old {
            self.session_expiry()?
                .remove((ms(old.expires_at), u, token_hash))
                .map_err(fatal)?;
        }
        Ok(true)
    }

    pub(super) fn delete_user_sessions(&mut self, user: UserId) -> OpResult<u64> {
        let u = uid(user);
        let mut removed = 0u64;
        // Every key with this user prefix: from (u, "") up to the next user id.
        let upper = match u.checked_add(1) {
            Some(next) => std::ops::Bound::Excluded((next, "")),
            None => std::ops::Bound::Unbounded,
        };
        let mut index = Vec::new();
        self.sessions()?
            .retain_in(
                (std::ops::Bound::Included((u, "")), upper),
                |(_, hash), v| {
                    removed += 1;
                    if let Ok(s) = decode::<Session>("session", v) {
                        index.push((ms(s.expires_at), hash.to_owned()));
                    }
                    false
                },
            )
            .map_err(fatal)?;
        for (at, hash) in &index {
            self.session_expiry()?
                .remove((*at, u, hash.as_str()))
                .map_err(fatal)?;
        }
        Ok(removed)
    }

    pub(super) fn swap_edge(
        &mut self,
        pair: UserPair,
        expected: Edge,
        new: Edge,
    ) -> OpResult<bool> {
        if edge(self.edges()?, pair)? != expected {
            return Ok(false);
        }
        // Encode everything first so nothing can fail between the mutations but I/O.
        let edge_bytes = encode(&new)?;
        let mut sides = Vec::with_capacity(2);
        for (me, peer, me_is_lo) in [(pair.lo, pair.hi, true), (pair.hi, pair.lo, false)] {
            let relation = new.relation(me_is_lo);
            let entry = if relation == Relation::None {
                None
            } else {
                Some(encode(&RelationEntry {
                    peer,
                    relation,
                    since: new.since_for(me_is_lo),
                })?)
            };
            sides.push(((uid(me), uid(peer)), entry));
        }
        self.edges()?
            .insert((uid(pair.lo), uid(pair.hi)), edge_bytes.as_slice())
            .map_err(fatal)?;
        for (key, entry) in sides {
            match entry {
                Some(bytes) => {
                    self.relations()?
                        .insert(key, bytes.as_slice())
                        .map_err(fatal)?;
                }
                None => {
                    self.relations()?.remove(key).map_err(fatal)?;
                }
            }
        }
        Ok(true)
    }

    /// `NotFriends` unless the pair's edge says friends. Read in the write transaction, so a
    /// `swap_edge` committed before it is seen and one after it orders after the write.
    fn require_friends(&mut self, a: UserId, b: UserId) -> OpResult<()> {
        let pair = UserPair::new(a, b).ok_or(StoreError::NotAMember)?;
        match edge(self.edges()?, pair)?.are_friends() {
            true => Ok(()),
            false => Err(StoreError::NotFriends.into()),
        }
    }

    pub(super) fn mark_read(
        &mut self,
        conversation: &ConversationId,
        user: UserId,
        seq: u64,
    ) -> OpResult<ReadMark> {
        let members = conversation.participants().ok_or(StoreError::NotAMember)?;
        let side = member_side(members, user).ok_or(StoreError::NotAMember)?;
        self.require_friends(members.0, members.1)?;
        let conv = ConvKey::new(members);
        let mut state = conv_state(self.rows()?, &conv)?;
        if seq > state.last_seq {
            return Err(StoreError::InvalidCursor(format!(
                "seq {seq} is past the last message ({})",
                state.last_seq
            ))
            .into());
        }
        let mark = state.marks[side];
        let changed = seq > mark;
        if changed {
            state.marks[side] = seq;
            self.rows()?
                .insert(&conv.meta()[..], &state.encode()[..])
                .map_err(fatal)?;
        }
        Ok(ReadMark {
            conversation: conversation.clone(),
            user,
            seq: mark.max(seq),
            changed,
        })
    }
}

/// A queued operation: applied inside the group transaction, answered after the commit.
pub(super) trait WriteOp: Send {
    /// Runs against the transaction. `Err` means the transaction must be aborted.
    fn apply(&mut self, tx: &mut Tx<'_>) -> Result<(), StoreError>;
    /// Sends the reply once the commit's outcome is known.
    fn finish(self: Box<Self>, commit: &StoreResult<()>);
}

/// A [`WriteOp`] from a closure and the channel its caller waits on. It holds its caller's
/// queue permit until it is answered, which is what bounds the queue.
pub(super) struct Pending<T, F> {
    op: Option<F>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<T, F> Pending<T, F> {
    pub(super) fn new(
        op: F,
        reply: oneshot::Sender<StoreResult<T>>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            op: Some(op),
            result: None,
            reply,
            _permit: permit,
        }
    }
}

impl<T, F> WriteOp for Pending<T, F>
where
    T: Send,
    F: FnOnce(&mut Tx<'_>) -> OpResult<T> + Send,
{
    fn apply(&mut self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        let Some(op) = self.op.take() else {
            return Ok(());
        };
        self.result = Some(match op(tx) {
            Ok(v) => Ok(v),
            Err(OpError::Reject(e)) => Err(e),
            Err(OpError::Fatal(e)) => return Err(e),
        });
        Ok(())
    }

    fn finish(self: Box<Self>, commit: &StoreResult<()>) {
        let Pending {
            result,
            reply,
            _permit: permit,
            ..
        } = *self;
        // Free the queue slot before answering, so an answered caller sees it free.
        drop(permit);
        let result = match commit {
            Ok(()) => result
                .unwrap_or_else(|| Err(StoreError::Backend("operation was not applied".into()))),
            Err(e) => Err(e.clone()),
        };
        // The caller may have gone away (cancelled future); the write stands regardless.
        let _ = reply.send(result);
    }
}

/// A boxed queued operation.
pub(super) type Job = Box<dyn WriteOp>;

/// State shared by the store handles (readers) and the writer thread.
pub(super) struct Shared {
    /// The open database; `None` while the writer is reopening it after a failure.
    db: RwLock<Option<Arc<Database>>>,
    pub(super) path: PathBuf,
    /// The dedupe window: the idempotency bucket width, needed to migrate an old file.
    pub(super) window_ms: u64,
    pub(super) commits: AtomicU64,
    health: Mutex<StoreHealth>,
}

impl Shared {
    pub(super) fn new(db: Database, path: PathBuf, window_ms: u64) -> Self {
        Self {
            db: RwLock::new(Some(Arc::new(db))),
            path,
            window_ms,
            commits: AtomicU64::new(0),
            health: Mutex::new(StoreHealth::Ok),
        }
    }

    /// The database for a read, or `Unavailable` while it is being reopened.
    pub(super) fn db(&self) -> StoreResult<Arc<Database>> {
        let slot = self.db.read().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some(db) => Ok(db.clone()),
            None => Err(self.unavailable()),
        }
    }

    pub(super) fn health(&self) -> StoreHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_health(&self, h: StoreHealth) {
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = h;
    }

    fn unavailable(&self) -> StoreError {
        match self.health() {
            StoreHealth::Unavailable {
                reason,
                retry_after_ms,
            } => StoreError::Unavailable {
                reason,
                retry_after_ms,
            },
            StoreHealth::Failed { reason } => StoreError::Backend(reason),
            StoreHealth::Ok => StoreError::unavailable("the database is being reopened", 100),
        }
    }
}

/// First and longest wait between recovery attempts.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long recovery waits for in-flight reads to release the old handle.
const READERS_GRACE: Duration = Duration::from_secs(2);

/// The writer's view of its own health.
enum State {
    Healthy,
    /// Broken since a failed commit: the next recovery attempt is due at `next`.
    Broken {
        next: Instant,
        backoff: Duration,
    },
    /// Recovery is impossible (the file cannot be opened any more).
    Failed(String),
}

/// The writer thread's loop: block for one op, drain whatever else is queued (bounded),
/// apply all of it in one transaction, commit once, answer everyone. After a failed commit
/// it recovers: first it tries a probe commit on the same handle, and if redb refuses (after
/// an I/O error redb refuses every write until the file is reopened) it closes the file and
/// opens it again (redb repairs it), retrying with backoff while that fails; meanwhile
/// operations fail fast with `Unavailable` and [`Shared::health`] says so. Ends when every
/// sender (every store handle) is gone.
pub(super) fn run(shared: Arc<Shared>, rx: Receiver<Job>, interval: Duration) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH_OPS);
    let mut state = State::Healthy;
    let mut pacing = Pacing::new(interval);
    // Only a committed lease is carried on; after any failure the counter is read again.
    let mut activity = None;
    loop {
        let first = match &state {
            State::Broken { next, .. } => {
                match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        state = recover(&shared, state);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            _ => match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        batch.push(first);
        drain(&rx, &mut batch);
        if matches!(state, State::Healthy) && batch.len() < MAX_BATCH_OPS && pacing.wait() {
            drain(&rx, &mut batch);
        }
        pacing.started(batch.len());
        if let State::Broken { next, .. } = &state
            && Instant::now() >= *next
        {
            state = recover(&shared, state);
        }
        let outcome = match &state {
            State::Healthy => match shared.db() {
                Ok(db) => commit_batch(&db, &mut batch, &mut activity),
                Err(e) => Err(e),
            },
            State::Broken { .. } => Err(shared.unavailable()),
            State::Failed(reason) => Err(StoreError::Backend(reason.clone())),
        };
        match &outcome {
            Ok(()) => {
                shared.commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if matches!(state, State::Healthy) => {
                state = State::Broken {
                    next: Instant::now(),
                    backoff: RETRY_MIN,
                };
                shared.set_health(StoreHealth::Unavailable {
                    reason: format!("a commit failed: {e}"),
                    retry_after_ms: 0,
                });
            }
            Err(_) => {}
        }
        for job in batch.drain(..) {
            job.finish(&outcome);
        }
        // Recover right away after a fresh failure, so a transient error costs one batch.
        if matches!(&state, State::Broken { next, .. } if Instant::now() >= *next) {
            state = recover(&shared, state);
        }
    }
}

/// Moves what is queued into `batch`, up to [`MAX_BATCH_OPS`], without blocking.
fn drain(rx: &Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH_OPS {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// Commit pacing: while senders are concurrent, commits start at most once per `interval`.
///
/// Under moderate load the writer otherwise commits as soon as anything is queued: at 5,000
/// msgs/s that was ~700-960 commits of ~5-7 messages each, so each message carried a fifth
/// of a commit's fixed cost (redb's system pages, checksums, ~20 KB written per message,
/// one `fdatasync`). Holding the commit until `interval` after the previous one started
/// lets the next messages join it. The writer *sleeps* for that rest instead of waiting on
/// the channel, so arrivals meanwhile do not wake it one by one.
///
/// Concurrency is judged by the previous commit: it held more than one operation. A lone
/// sender (each operation commits alone) and the first operation after an idle spell never
/// wait, and the wait is never longer than `interval` minus the previous commit's duration.
struct Pacing {
    interval: Duration,
    /// When the previous commit started, and how many operations it held.
    last: Option<(Instant, usize)>,
}

impl Pacing {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
        }
    }

    /// Sleeps out the rest of the interval if the previous commit shows concurrent
    /// senders; returns whether it slept (then more operations may be queued).
    fn wait(&self) -> bool {
        let Some((start, ops)) = self.last else {
            return false;
        };
        if ops < 2 || self.interval.is_zero() {
            return false;
        }
        let rest = self.interval.saturating_sub(start.elapsed());
        if rest.is_zero() {
            return false;
        }
        std::thread::sleep(rest);
        true
    }

    /// Records that a commit of `ops` operations starts now.
    fn started(&mut self, ops: usize) {
        self.last = Some((Instant::now(), ops));
    }
}

/// One recovery attempt; returns the new state and publishes it as the store's health.
fn recover(shared: &Shared, state: State) -> State {
    let backoff = match state {
        State::Broken { backoff, .. } => backoff,
        other => return other,
    };
    // 0. A failed commit frees pages inside the file, so on a full disk a tiny probe commit
    //    succeeds while every real write still fails: health would flap. Wait for headroom.
    if let Some(free) = free_space(&shared.path)
        && free < RECOVERY_MIN_FREE_BYTES
    {
        shared.set_health(StoreHealth::Unavailable {
            reason: format!(
                "the disk is full: {free} bytes free where the database lives, {RECOVERY_MIN_FREE_BYTES} needed to resume writing"
            ),
            retry_after_ms: backoff.as_millis() as u64,
        });
        return State::Broken {
            next: Instant::now() + backoff,
            backoff: (backoff * 2).min(RETRY_MAX),
        };
    }
    // 1. Maybe the handle is fine (the failure was not an I/O error): prove it with a commit.
    if let Ok(db) = shared.db()
        && probe(&db).is_ok()
    {
        shared.set_health(StoreHealth::Ok);
        return State::Healthy;
    }
    // 2. Close the file (wait for in-flight reads to let go of the handle; redb locks the file
    //    per handle, so the reopen fails while an old one lives) and open it again.
    let old = shared.db.write().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(old) = old {
        let deadline = Instant::now() + READERS_GRACE;
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(old);
    }
    let reason = match open_database(&shared.path, shared.window_ms) {
        Ok(db) => match probe(&db) {
            Ok(()) => {
                *shared.db.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
                shared.set_health(StoreHealth::Ok);
                return State::Healthy;
            }
            // Still failing (e.g. the disk is still full): close it again and wait.
            Err(e) => format!("the database cannot be written: {e}"),
        },
        Err(OpenError::Transient(e)) => format!("the database cannot be reopened: {e}"),
        Err(OpenError::Permanent(e)) => {
            let reason = format!("the database cannot be reopened: {e}");
            shared.set_health(StoreHealth::Failed {
                reason: reason.clone(),
            });
            return State::Failed(reason);
        }
    };
    shared.set_health(StoreHealth::Unavailable {
        reason,
        retry_after_ms: backoff.as_millis() as u64,
    });
    State::Broken {
        next: Instant::now() + backoff,
        backoff: (backoff * 2).min(RETRY_MAX),
    }
}

/// Free space the database's filesystem needs before writes resume after a failed commit.
const RECOVERY_MIN_FREE_BYTES: u64 = 1 << 20;

/// Bytes an unprivileged process may still write on the filesystem holding `path`; `None`
/// where that cannot be asked (then recovery relies on the probe commit alone).
fn free_space(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let st = rustix::fs::statvfs(dir.unwrap_or(path)).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Why [`open_database`] failed.
pub(super) enum OpenError {
    /// Worth retrying (I/O, the file still locked by a closing handle).
    Transient(String),
    /// Retrying cannot help (damaged beyond repair, wrong format or version).
    Permanent(String),
}

/// Opens (creating or repairing) the file and makes sure every table exists at the current
/// schema version (migrating an older file; `window_ms` is the dedupe window).
pub(super) fn open_database(path: &Path, window_ms: u64) -> Result<Database, OpenError> {
    use redb::DatabaseError as E;
    let db = Database::create(path).map_err(|e| match e {
        E::Storage(redb::StorageError::Io(_)) | E::DatabaseAlreadyOpen => {
            OpenError::Transient(e.to_string())
        }
        e => OpenError::Permanent(e.to_string()),
    })?;
    let init = || -> StoreResult<()> {
        // Its own transactions: a large file migrates in bounded chunks (see `migrate.rs`).
        migrate(&db, window_ms)?;
        let txn = db.begin_write().map_err(be)?;
        Tx::new(&txn).open_all().map_err(OpError::into_store)?;
        txn.commit().map_err(be)
    };
    match init() {
        Ok(()) => Ok(db),
        Err(e @ StoreError::Corrupt(_)) => Err(OpenError::Permanent(e.to_string())),
        Err(e) => Err(OpenError::Transient(e.to_string())),
    }
}

/// A durable commit that changes one counter: proves the handle takes writes.
fn probe(db: &Database) -> StoreResult<()> {
    let mut txn = db.begin_write().map_err(be)?;
    txn.set_durability(Durability::Immediate).map_err(be)?;
    Tx::new(&txn).probe().map_err(OpError::into_store)?;
    txn.commit().map_err(be)
}

/// Applies `batch` in one transaction and commits it. `activity` is the lease the previous
/// commit left: replaced by this transaction's when it commits, cleared when it fails (a
/// failed commit may still have reached the file, so the counter is read again).
fn commit_batch(
    db: &Database,
    batch: &mut [Job],
    activity: &mut Option<ActivityLease>,
) -> StoreResult<()> {
    let lease = activity.take();
    let mut txn = db.begin_write().map_err(be)?;
    // Acknowledged means fsynced: the reply is sent only after this commit returns.
    txn.set_durability(Durability::Immediate).map_err(be)?;
    // The tables (opened on first use) are closed when `tx` drops, before the commit.
    let applied = {
        let mut tx = Tx::with_activity(&txn, lease);
        batch
            .iter_mut()
            .try_for_each(|job| job.apply(&mut tx))
            .and_then(|()| tx.flush().map_err(OpError::into_store))
            .map(|()| tx.activity_lease())
    };
    match applied {
        Ok(lease) => {
            txn.commit()
                .map_err(|e| StoreError::Backend(format!("commit failed: {e}")))?;
            *activity = lease;
            Ok(())
        }
        Err(e) => {
            // Dropping would abort too; aborting explicitly surfaces nothing new but is clear.
            let _ = txn.abort();
            Err(StoreError::Backend(format!("transaction aborted: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_waits_only_after_a_commit_of_several_operations() {
        let interval = Duration::from_millis(30);
        let mut p = Pacing::new(interval);
        assert!(!p.wait(), "nothing committed yet: no reason to wait");
        p.started(1);
        assert!(!p.wait(), "a lone sender never waits");
        p.started(2);
        let start = p.last.map(|(t, _)| t).unwrap();
        assert!(p.wait(), "concurrent senders: wait for more");
        assert!(start.elapsed() >= interval, "slept out the interval");
        assert!(!p.wait(), "the interval is over: commit at once");
        let mut off = Pacing::new(Duration::ZERO);
        off.started(100);
        assert!(!off.wait(), "a zero interval turns pacing off");
    }
    use crate::limits::{Body, IdempotencyKey};
    use crate::model::NewMessage;

    const W: u64 = crate::store::DEFAULT_DEDUPE_WINDOW_MS;

    fn job<T: Send + 'static>(
        op: impl FnOnce(&mut Tx<'_>) -> OpResult<T> + Send + 'static,
    ) -> (Job, oneshot::Receiver<StoreResult<T>>) {
        let (reply, answer) = oneshot::channel();
        (Box::new(Pending::new(op, reply, None)), answer)
    }

    fn msg(conv: &ConversationId, sender: UserId, key: &str) -> StoreResult<PreparedMessage> {
        let new = NewMessage {
            conversation: conv.clone(),
            sender,
            body: Body::parse("m").unwrap(),
            idempotency_key: IdempotencyKey::parse(key).unwrap(),
            sent_at: Timestamp(1),
        };
        PreparedMessage::new(new, W)
    }

    /// Refused operations in one transaction change nothing; their neighbours commit.
    #[test]
    fn rejected_ops_do_not_poison_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let (a, b, c) = (
            UserId::new_random(),
            UserId::new_random(),
            UserId::new_random(),
        );
        let conv = ConversationId::direct(a, b);
        let (c1, conv1) = (conv.clone(), conv.clone());
        let friends = Edge {
            link: crate::friends::Link::Friends,
            ..Edge::default()
        };
        let pair = UserPair::new(a, b).unwrap();
        let (j0, r0) = job(move |tx| tx.swap_edge(pair, Edge::default(), friends));
        let (j1, r1) = job(|tx| tx.create_user("Alice", "alice", None, Timestamp(1)));
        let (j2, r2) = job(|tx| tx.create_user("ALICE", "alice", None, Timestamp(1)));
        let (j3, r3) = job(move |tx| tx.append(vec![msg(&c1, c, "k"), msg(&c1, a, "k")], W));
        let (j4, r4) = job(move |tx| tx.mark_read(&conv1, b, 5));
        let (j5, r5) = job(move |tx| tx.append(vec![msg(&conv, a, "k"), msg(&conv, b, "k")], W));
        let mut batch = vec![j0, j1, j2, j3, j4, j5];
        let outcome = commit_batch(&db, &mut batch, &mut None);
        assert_eq!(outcome, Ok(()));
        for j in batch {
            j.finish(&outcome);
        }
        assert_eq!(r0.blocking_recv().unwrap(), Ok(true));
        let alice = r1.blocking_recv().unwrap().unwrap();
        assert_eq!(alice.username, "Alice");
        assert_eq!(r2.blocking_recv().unwrap(), Err(StoreError::UsernameTaken));
        let appended = r3.blocking_recv().unwrap().unwrap();
        assert_eq!(appended[0], Err(StoreError::NotAMember));
        let first = appended[1].as_ref().unwrap();
        assert_eq!((first.message.seq, first.duplicate), (1, false));
        assert!(matches!(
            r4.blocking_recv().unwrap(),
            Err(StoreError::InvalidCursor(_))
        ));
        let later = r5.blocking_recv().unwrap().unwrap();
        let dup = later[0].as_ref().unwrap();
        assert_eq!((dup.message.id, dup.duplicate), (first.message.id, true));
        assert_eq!(later[1].as_ref().unwrap().message.seq, 2);
    }

    /// A transaction opens only the tables its operations use: appends between friends read
    /// the edge and the conversation's rows and write into those rows; the first send of a
    /// process also reserves a block of activity stamps in `counters` (a conversation's first
    /// message also lists its bucket in `idempotency_windows` and adds it to both members'
    /// lists).
    #[test]
    fn appends_open_only_their_tables() {
        let dir = tempfile::tempdir().unwrap();
        let Ok(db) = open_database(&dir.path().join("t.redb"), W) else {
            panic!("open")
        };
        let (a, b) = (UserId::new_random(), UserId::new_random());
        let conv = ConversationId::direct(a, b);
        let friends = Edge {
            link: crate::friends::Link::Friends,
            ..Edge::default()
        };
        let txn = db.begin_write().unwrap();
        {
            let mut tx = Tx::new(&txn);
            let pair = UserPair::new(a, b).unwrap();
            assert!(matches!(
                tx.swap_edge(pair, Edge::default(), friends),
                Ok(true)
            ));
            assert_eq!(tx.opened(), 2, "edges and relations");
        }
        txn.commit().unwrap();
        let mut lease = None;
        for (first, tables) in [(true, 5), (false, 2)] {
            let txn = db.begin_write().unwrap();
            {
                let mut tx = Tx::with_activity(&txn, lease);
                let sent = tx.append(vec![msg(&conv, a, &format!("k{first}"))], W);
                assert!(matches!(sent.as_deref(), Ok([Ok(_)])));
                assert!(tx.flush().is_ok());
                assert_eq!(tx.opened(), tables, "first message: {first}");
                lease = tx.activity_lease();
            }
            txn.commit().unwrap();
        }
        let txn = db.begin_write().unwrap();
        let mut tx = Tx::new(&txn);
        assert!(tx.open_all().is_ok());
        assert_eq!(tx.opened(), 13);
    }

    /// Draws `n` activity stamps in one batch (failing it after them if `fail`).
    fn stamps(
        db: &Database,
        n: u64,
        fail: bool,
        lease: &mut Option<ActivityLease>,
    ) -> (StoreResult<()>, StoreResult<u64>) {
        let (j, r) = job(move |tx| {
            let mut last = 0;
            for _ in 0..n {
                last = tx.next_activity()?;
            }
            match fail {
                true => Err(OpError::Fatal(StoreError::Backend("disk on fire".into()))),
                false => Ok(last),
            }
        });
        let mut batch = vec![j];
        let outcome = commit_batch(db, &mut batch, lease);
        for j in batch {
            j.finish(&outcome);
        }
        (outcome, r.blocking_recv().unwrap())
    }

    /// Activity stamps come from a reserved block: they keep rising across commits, across a
    /// failed commit (the lease is dropped and the counter read again), across blocks and
    /// across reopening the file; the stored counter is never below a committed stamp; a file
    /// whose counter holds the last stamp (older versions) continues after it.
    #[test]
    fn activity_stamps_rise_across_commits_failures_blocks_and_reopens() {
        use redb::ReadableDatabase;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let open = || match open_database(&path, W) {
            Ok(db) => db,
            Err(_) => panic!("open"),
        };
        let stored = |db: &Database| {
            let txn = db.begin_read().unwrap();
            let t = txn.open_table(COUNTERS).unwrap();
            t.get(ACTIVITY_COUNTER).unwrap().map(|v| v.value())
        };
        let db = open();
        // An older file: the counter is the last stamp handed out.
        let txn = db.begin_write().unwrap();
        txn.open_table(COUNTERS)
            .unwrap()
            .insert(ACTIVITY_COUNTER, 7)
            .unwrap();
        txn.commit().unwrap();
        let mut lease = None;
        assert_eq!(stamps(&db, 3, false, &mut lease), (Ok(()), Ok(10)));
        assert_eq!(stored(&db), Some(7 + ACTIVITY_BLOCK));
        assert_eq!(stamps(&db, 2, false, &mut lease), (Ok(()), Ok(12)));
        // Within the block nothing is written: the transaction never opened `counters`.
        let txn = db.begin_write().unwrap();
        {
            let mut tx = Tx::with_activity(&txn, lease);
            assert!(matches!(tx.next_activity(), Ok(13)));
            assert!(tx.flush().is_ok());
            assert_eq!(tx.opened(), 0);
        }
        drop(txn);
        // A failed commit drops the lease: the next stamp starts after the stored ceiling.
        let (outcome, _) = stamps(&db, 1, true, &mut lease);
        assert!(outcome.is_err());
        assert_eq!(lease, None);
        let after_failure = 7 + ACTIVITY_BLOCK + 1;
        assert_eq!(
            stamps(&db, 1, false, &mut lease),
            (Ok(()), Ok(after_failure))
        );
        // Past the end of a block in one transaction: a new ceiling is stored with it.
        let crossed = after_failure + ACTIVITY_BLOCK;
        assert_eq!(
            stamps(&db, ACTIVITY_BLOCK, false, &mut lease),
            (Ok(()), Ok(crossed))
        );
        assert!(stored(&db).is_some_and(|c| c >= crossed));
        // Reopened: the rest of the last block is skipped, stamps still rise.
        let ceiling = stored(&db).unwrap();
        drop(db);
        let db = open();
        assert_eq!(stamps(&db, 1, false, &mut None), (Ok(()), Ok(ceiling + 1)));
    }

    /// The writer loop answers every waiter of a batch whose transaction failed mid-way with
    /// the typed error (none is left hanging, none gets a success for a write that is not on
    /// disk), recovers by itself, and the next operation commits.
    #[test]
    fn a_failure_mid_batch_answers_every_waiter_and_the_writer_recovers() {
        use redb::ReadableDatabase;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let Ok(db) = open_database(&path, W) else {
            panic!("open")
        };
        let shared = Arc::new(Shared::new(db, path, W));
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        // Queued before the writer starts, so its first drain takes all three into one batch.
        let (j1, r1) = job(|tx| tx.create_user("bob", "bob", None, Timestamp(1)));
        let (j2, r2) = job(|tx| {
            tx.create_user("carol", "carol", None, Timestamp(1))?;
            Err::<(), _>(OpError::Fatal(StoreError::Backend("disk on fire".into())))
        });
        let (j3, r3) = job(|tx| tx.create_user("dan", "dan", None, Timestamp(1)));
        for j in [j1, j2, j3] {
            jobs.send(j).unwrap();
        }
        let writer = {
            let shared = shared.clone();
            std::thread::spawn(move || run(shared, rx, Duration::from_millis(1)))
        };
        for (who, r) in [("bob", r1), ("dan", r3)] {
            let answer = r.blocking_recv().expect("answered");
            assert!(
                matches!(answer, Err(StoreError::Backend(ref m)) if m.contains("disk on fire")),
                "{who}: {answer:?}"
            );
        }
        assert!(matches!(
            r2.blocking_recv().expect("answered"),
            Err(StoreError::Backend(_))
        ));
        // The failure was not an I/O error: the probe commit on the same handle succeeds and
        // the next operation goes through.
        let (j4, r4) = job(|tx| tx.create_user("bob", "bob", None, Timestamp(2)));
        jobs.send(j4).unwrap();
        let bob = r4.blocking_recv().expect("answered").expect("stored");
        assert_eq!(bob.created_at, Timestamp(2));
        assert_eq!(shared.health(), StoreHealth::Ok);
        drop(jobs);
        writer.join().unwrap();
        // Nothing of the failed batch is stored.
        let db = shared.db().unwrap();
        let txn = db.begin_read().unwrap();
        let names = txn.open_table(USERNAMES).unwrap();
        for gone in ["carol", "dan"] {
            assert!(names.get(gone).unwrap().is_none(), "{gone}");
        }
        assert!(names.get("bob").unwrap().is_some());
    }

    /// Recovery closes and reopens the file; while an old handle is still in use the reopen is
    /// retried (health says `Unavailable`), and once it is released the store is healthy.
    #[test]
    fn recovery_reopens_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let Ok(db) = open_database(&path, W) else {
            panic!("open")
        };
        let shared = Shared::new(db, path, W);
        // A reader that outlives the grace period keeps the old handle (and the file lock).
        let reader = shared.db().unwrap();
        let broken = State::Broken {
            next: Instant::now(),
            backoff: RETRY_MIN,
        };
        // Simulate a handle redb refuses: recovery must go the close-and-reopen way.
        let old = shared.db.write().unwrap().take();
        *shared.db.write().unwrap() = None;
        let state = recover(&shared, broken);
        assert!(matches!(state, State::Broken { .. }));
        assert!(matches!(shared.health(), StoreHealth::Unavailable { .. }));
        assert!(matches!(shared.db(), Err(StoreError::Unavailable { .. })));
        drop((reader, old));
        let state = recover(&shared, state);
        assert!(matches!(state, State::Healthy));
        assert_eq!(shared.health(), StoreHealth::Ok);
        let db = shared.db().unwrap();
        probe(&db).unwrap();
    }

    /// A failure while mutating aborts the whole transaction: everyone gets `Backend` and
    /// nothing from the batch is stored.
    #[test]
    fn fatal_error_aborts_everything() {
        use redb::ReadableDatabase;
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let (j1, r1) = job(|tx| tx.create_user("bob", "bob", None, Timestamp(1)));
        let (j2, r2) = job(|tx| {
            tx.create_user("carol", "carol", None, Timestamp(1))?;
            Err::<(), _>(OpError::Fatal(StoreError::Backend("disk on fire".into())))
        });
        let mut batch = vec![j1, j2];
        let outcome = commit_batch(&db, &mut batch, &mut None);
        assert!(matches!(outcome, Err(StoreError::Backend(_))));
        for j in batch {
            j.finish(&outcome);
        }
        assert!(matches!(
            r1.blocking_recv().unwrap(),
            Err(StoreError::Backend(_))
        ));
        assert!(matches!(
            r2.blocking_recv().unwrap(),
            Err(StoreError::Backend(_))
        ));
        let txn = db.begin_read().unwrap();
        // The tables were never committed either.
        assert!(txn.open_table(USERNAMES).is_err());
    }
}
