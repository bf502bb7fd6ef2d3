//! The single writer thread and the write operations it applies.
//!
//! Every operation validates against the transaction's current state (reads and decoding)
//! before it mutates anything, so a rejected operation leaves the transaction exactly as it
//! found it and its neighbours in the same group commit are unaffected. A failure *while*
//! mutating is fatal: the whole transaction is aborted and every operation in it reports
//! [`StoreError::Backend`].

use super::MAX_BATCH_OPS;
use super::tables::*;
use crate::friends::{Edge, UserPair};
use crate::ids::{ConversationId, MessageId, Timestamp, UserId};
use crate::model::{Appended, Message, NewMessage, ReadMark, Relation, Session, User};
use crate::store::{RelationEntry, StoreError, StoreResult};
use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use tokio::sync::oneshot;

mod identity;

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

/// All tables, opened once per transaction.
pub(super) struct Tx<'t> {
    users: Table<'t, u128, &'static [u8]>,
    usernames: Table<'t, &'static str, u128>,
    identities: Table<'t, (&'static str, &'static str), u128>,
    externals: Table<'t, (&'static str, &'static str), u128>,
    user_externals: Table<'t, (u128, &'static str, &'static str), i64>,
    sessions: Table<'t, (u128, &'static str), &'static [u8]>,
    edges: Table<'t, (u128, u128), &'static [u8]>,
    relations: Table<'t, (u128, u128), &'static [u8]>,
    messages: Table<'t, (&'static str, u64), &'static [u8]>,
    idempotency: Table<'t, (&'static str, u128, &'static str), u64>,
    conv_last_seq: Table<'t, &'static str, u64>,
    read_marks: Table<'t, (&'static str, u128), u64>,
    user_convs: Table<'t, (u128, &'static str), u64>,
    user_activity: Table<'t, (u128, u64), &'static str>,
    counters: Table<'t, &'static str, u64>,
}

impl<'t> Tx<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> StoreResult<Self> {
        Ok(Self {
            users: txn.open_table(USERS).map_err(be)?,
            usernames: txn.open_table(USERNAMES).map_err(be)?,
            identities: txn.open_table(IDENTITIES).map_err(be)?,
            externals: txn.open_table(EXTERNALS).map_err(be)?,
            user_externals: txn.open_table(USER_EXTERNALS).map_err(be)?,
            sessions: txn.open_table(SESSIONS).map_err(be)?,
            edges: txn.open_table(EDGES).map_err(be)?,
            relations: txn.open_table(RELATIONS).map_err(be)?,
            messages: txn.open_table(MESSAGES).map_err(be)?,
            idempotency: txn.open_table(IDEMPOTENCY).map_err(be)?,
            conv_last_seq: txn.open_table(CONV_LAST_SEQ).map_err(be)?,
            read_marks: txn.open_table(READ_MARKS).map_err(be)?,
            user_convs: txn.open_table(USER_CONVS).map_err(be)?,
            user_activity: txn.open_table(USER_ACTIVITY).map_err(be)?,
            counters: txn.open_table(COUNTERS).map_err(be)?,
        })
    }

    /// The schema version, writing the current one into a fresh file.
    pub(super) fn check_schema(&mut self) -> StoreResult<()> {
        let version = self
            .counters
            .get(SCHEMA_VERSION)
            .map_err(be)?
            .map(|v| v.value());
        match version {
            Some(CURRENT_SCHEMA) => Ok(()),
            Some(v) => Err(StoreError::Corrupt(format!(
                "unsupported schema version {v} (this build reads {CURRENT_SCHEMA})"
            ))),
            None => {
                self.counters
                    .insert(SCHEMA_VERSION, CURRENT_SCHEMA)
                    .map_err(be)?;
                Ok(())
            }
        }
    }

    fn existing_user(&self, id: UserId) -> OpResult<UserRow> {
        Ok(user_row(&self.users, id)?.ok_or(StoreError::UserNotFound)?)
    }

    fn put_user(&mut self, row: &UserRow) -> OpResult<()> {
        let bytes = encode(row)?;
        self.users
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
        if self.usernames.get(canonical).map_err(be)?.is_some() {
            return Err(StoreError::UsernameTaken.into());
        }
        // v4 collisions are astronomically unlikely, but checking costs one lookup.
        let mut id = UserId::new_random();
        while self.users.get(uid(id)).map_err(be)?.is_some() {
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
        self.usernames.insert(canonical, uid(id)).map_err(fatal)?;
        self.users
            .insert(uid(id), bytes.as_slice())
            .map_err(fatal)?;
        Ok(row.user)
    }

    pub(super) fn set_password_hash(&mut self, id: UserId, hash: String) -> OpResult<()> {
        let mut row = self.existing_user(id)?;
        row.password_hash = Some(hash);
        self.put_user(&row)
    }

    pub(super) fn set_last_seen(&mut self, id: UserId, at: Timestamp) -> OpResult<()> {
        let mut row = self.existing_user(id)?;
        row.last_seen = Some(row.last_seen.map_or(at, |t| t.max(at)));
        self.put_user(&row)
    }

    pub(super) fn link_identity(
        &mut self,
        issuer: &str,
        subject: &str,
        user: UserId,
    ) -> OpResult<()> {
        self.existing_user(user)?;
        let linked = self
            .identities
            .get((issuer, subject))
            .map_err(be)?
            .map(|v| v.value());
        match linked {
            Some(existing) if existing == uid(user) => Ok(()),
            Some(_) => Err(StoreError::IdentityTaken.into()),
            None => {
                self.identities
                    .insert((issuer, subject), uid(user))
                    .map_err(fatal)?;
                Ok(())
            }
        }
    }

    pub(super) fn create_session(&mut self, session: &Session) -> OpResult<()> {
        self.existing_user(session.user_id)?;
        let bytes = encode(session)?;
        self.sessions
            .insert(
                (uid(session.user_id), session.token_hash.as_str()),
                bytes.as_slice(),
            )
            .map_err(fatal)?;
        Ok(())
    }

    pub(super) fn delete_session(&mut self, user: UserId, token_hash: &str) -> OpResult<bool> {
        Ok(self
            .sessions
            .remove((uid(user), token_hash))
            .map_err(fatal)?
            .is_some())
    }

    pub(super) fn delete_user_sessions(&mut self, user: UserId) -> OpResult<u64> {
        let u = uid(user);
        let mut removed = 0u64;
        // Every key with this user prefix: from (u, "") up to the next user id.
        let upper = match u.checked_add(1) {
            Some(next) => std::ops::Bound::Excluded((next, "")),
            None => std::ops::Bound::Unbounded,
        };
        self.sessions
            .retain_in((std::ops::Bound::Included((u, "")), upper), |_, _| {
                removed += 1;
                false
            })
            .map_err(fatal)?;
        Ok(removed)
    }

    pub(super) fn swap_edge(
        &mut self,
        pair: UserPair,
        expected: Edge,
        new: Edge,
    ) -> OpResult<bool> {
        if edge(&self.edges, pair)? != expected {
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
                    since: new.since,
                })?)
            };
            sides.push(((uid(me), uid(peer)), entry));
        }
        self.edges
            .insert((uid(pair.lo), uid(pair.hi)), edge_bytes.as_slice())
            .map_err(fatal)?;
        for (key, entry) in sides {
            match entry {
                Some(bytes) => {
                    self.relations
                        .insert(key, bytes.as_slice())
                        .map_err(fatal)?;
                }
                None => {
                    self.relations.remove(key).map_err(fatal)?;
                }
            }
        }
        Ok(true)
    }

    /// Appends each message; per-message refusals are values, I/O failures abort the batch.
    pub(super) fn append(
        &mut self,
        batch: Vec<NewMessage>,
    ) -> OpResult<Vec<StoreResult<Appended>>> {
        batch
            .into_iter()
            .map(|m| match self.append_one(m) {
                Ok(a) => Ok(Ok(a)),
                Err(OpError::Reject(e)) => Ok(Err(e)),
                Err(fatal) => Err(fatal),
            })
            .collect()
    }

    fn append_one(&mut self, m: NewMessage) -> OpResult<Appended> {
        let Some((lo, hi)) = m.conversation.participants() else {
            return Err(StoreError::NotAMember.into());
        };
        if m.sender != lo && m.sender != hi {
            return Err(StoreError::NotAMember.into());
        }
        let conv = m.conversation.as_str();
        let key = m.idempotency_key.as_str();
        // Sees earlier messages of this same transaction, so in-batch duplicates are caught.
        let first = self
            .idempotency
            .get((conv, uid(m.sender), key))
            .map_err(be)?
            .map(|v| v.value());
        if let Some(seq) = first {
            let message = message(&self.messages, conv, seq)?.ok_or_else(|| {
                StoreError::Corrupt(format!("idempotency key points at missing {conv}#{seq}"))
            })?;
            return Ok(Appended {
                message,
                duplicate: true,
            });
        }
        let seq = last_seq(&self.conv_last_seq, conv)? + 1;
        let own_mark = read_mark(&self.read_marks, conv, m.sender)?;
        let activity = self
            .counters
            .get(ACTIVITY_COUNTER)
            .map_err(be)?
            .map_or(0, |v| v.value())
            + 1;
        let mut previous = Vec::with_capacity(2);
        for member in [lo, hi] {
            let old = self
                .user_convs
                .get((uid(member), conv))
                .map_err(be)?
                .map(|v| v.value());
            previous.push((uid(member), old));
        }
        let message = Message {
            id: MessageId::new_v7(),
            conversation: m.conversation.clone(),
            seq,
            sender: m.sender,
            body: m.body.as_str().to_owned(),
            sent_at: m.sent_at,
            idempotency_key: key.to_owned(),
        };
        let bytes = encode(&message)?;

        self.messages
            .insert((conv, seq), bytes.as_slice())
            .map_err(fatal)?;
        self.idempotency
            .insert((conv, uid(m.sender), key), seq)
            .map_err(fatal)?;
        self.conv_last_seq.insert(conv, seq).map_err(fatal)?;
        // Sending advances the sender's own read mark.
        self.read_marks
            .insert((conv, uid(m.sender)), own_mark.max(seq))
            .map_err(fatal)?;
        self.counters
            .insert(ACTIVITY_COUNTER, activity)
            .map_err(fatal)?;
        for (member, old) in previous {
            if let Some(old) = old {
                self.user_activity.remove((member, old)).map_err(fatal)?;
            }
            self.user_activity
                .insert((member, activity), conv)
                .map_err(fatal)?;
            self.user_convs
                .insert((member, conv), activity)
                .map_err(fatal)?;
        }
        Ok(Appended {
            message,
            duplicate: false,
        })
    }

    pub(super) fn mark_read(
        &mut self,
        conversation: &ConversationId,
        user: UserId,
        seq: u64,
    ) -> OpResult<ReadMark> {
        if !conversation.has_member(user) {
            return Err(StoreError::NotAMember.into());
        }
        let conv = conversation.as_str();
        let last = last_seq(&self.conv_last_seq, conv)?;
        if seq > last {
            return Err(StoreError::InvalidCursor(format!(
                "seq {seq} is past the last message ({last})"
            ))
            .into());
        }
        let mark = read_mark(&self.read_marks, conv, user)?;
        let changed = seq > mark;
        if changed {
            self.read_marks
                .insert((conv, uid(user)), seq)
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

/// A [`WriteOp`] from a closure and the channel its caller waits on.
pub(super) struct Pending<T, F> {
    op: Option<F>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Pending<T, F> {
    pub(super) fn new(op: F, reply: oneshot::Sender<StoreResult<T>>) -> Self {
        Self {
            op: Some(op),
            result: None,
            reply,
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
        let result = match commit {
            Ok(()) => self
                .result
                .unwrap_or_else(|| Err(StoreError::Backend("operation was not applied".into()))),
            Err(e) => Err(e.clone()),
        };
        // The caller may have gone away (cancelled future); the write stands regardless.
        let _ = self.reply.send(result);
    }
}

/// A boxed queued operation.
pub(super) type Job = Box<dyn WriteOp>;

/// The writer thread's loop: block for one op, drain whatever else is queued (bounded),
/// apply all of it in one transaction, commit once, answer everyone. Ends when every sender
/// (every store handle) is gone.
pub(super) fn run(db: Arc<Database>, rx: Receiver<Job>, commits: Arc<AtomicU64>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH_OPS);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = commit_batch(&db, &mut batch);
        if outcome.is_ok() {
            commits.fetch_add(1, Ordering::Relaxed);
        }
        for job in batch.drain(..) {
            job.finish(&outcome);
        }
    }
}

fn commit_batch(db: &Database, batch: &mut [Job]) -> StoreResult<()> {
    let mut txn = db.begin_write().map_err(be)?;
    // Acknowledged means fsynced: the reply is sent only after this commit returns.
    txn.set_durability(Durability::Immediate).map_err(be)?;
    let applied =
        Tx::open(&txn).and_then(|mut tx| batch.iter_mut().try_for_each(|job| job.apply(&mut tx)));
    match applied {
        Ok(()) => txn
            .commit()
            .map_err(|e| StoreError::Backend(format!("commit failed: {e}"))),
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
    use crate::limits::{Body, IdempotencyKey};

    fn job<T: Send + 'static>(
        op: impl FnOnce(&mut Tx<'_>) -> OpResult<T> + Send + 'static,
    ) -> (Job, oneshot::Receiver<StoreResult<T>>) {
        let (reply, answer) = oneshot::channel();
        (Box::new(Pending::new(op, reply)), answer)
    }

    fn msg(conv: &ConversationId, sender: UserId, key: &str) -> NewMessage {
        NewMessage {
            conversation: conv.clone(),
            sender,
            body: Body::parse("m").unwrap(),
            idempotency_key: IdempotencyKey::parse(key).unwrap(),
            sent_at: Timestamp(1),
        }
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
        let (j1, r1) = job(|tx| tx.create_user("Alice", "alice", None, Timestamp(1)));
        let (j2, r2) = job(|tx| tx.create_user("ALICE", "alice", None, Timestamp(1)));
        let (j3, r3) = job(move |tx| tx.append(vec![msg(&c1, c, "k"), msg(&c1, a, "k")]));
        let (j4, r4) = job(move |tx| tx.mark_read(&conv1, b, 5));
        let (j5, r5) = job(move |tx| tx.append(vec![msg(&conv, a, "k"), msg(&conv, b, "k")]));
        let mut batch = vec![j1, j2, j3, j4, j5];
        let outcome = commit_batch(&db, &mut batch);
        assert_eq!(outcome, Ok(()));
        for j in batch {
            j.finish(&outcome);
        }
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
        let outcome = commit_batch(&db, &mut batch);
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
