//! Brings an older file to [`CURRENT_SCHEMA`] when it is opened.
//!
//! * Version 1 → 2 built the expiry indexes (`session_expiry`, and `idempotency_age` from each
//!   record's message `sent_at`).
//! * Version 2 → 3 replaced five per-message tables with two: `conv_last_seq`, `read_marks`
//!   and `user_conversations` (+ its mirror `user_activity`) became one state row per
//!   conversation plus `member_conversations`, and `idempotency` + `idempotency_age` became
//!   `idempotency_buckets` keyed by the record's bucket. A send now writes 3 rows, not 10.
//!   One transaction, which also records version 3 (a crash half-way leaves version 2); the
//!   old state is read into memory first.
//! * Version 3 → 4 moves `conversations`, `idempotency_buckets` and `messages` into one table
//!   keyed by the conversation's members (`conv_rows.rs`), lists each (bucket, conversation)
//!   in `idempotency_windows`, and moves `last_seen` out of the user rows into its own table.
//!   It runs in **chunks** of [`CHUNK_ROWS`] rows, each its own durable transaction that
//!   inserts the new rows and removes the old ones (`pop_first`), so memory stays bounded and
//!   a crash half-way loses nothing and duplicates nothing: the file still says version 3,
//!   and the next open moves what is left. The last transaction moves `last_seen`, deletes the
//!   emptied tables and records version 4; until then nothing else runs on the file.

use super::conv_rows::{CONV_ROWS, ConvKey, ConvState, IDEMPOTENCY_WINDOWS, seq_bytes};
use super::tables::*;
use crate::model::{Message, Session};
use crate::store::{StoreError, StoreResult};
use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use std::collections::HashMap;

/// Version-3 tables that version 4 no longer has (folded into [`CONV_ROWS`]).
pub(super) mod v3 {
    use redb::TableDefinition;
    /// (conversation, seq) → message (JSON); also version 1's and 2's.
    pub const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
    /// (bucket start ms, conversation, sender, key) → seq.
    pub const IDEMPOTENCY: TableDefinition<(u64, &str, u128, &str), u64> =
        TableDefinition::new("idempotency_buckets");
    /// conversation → [`ConvRow`].
    pub const CONVERSATIONS: TableDefinition<&str, ConvRow> = TableDefinition::new("conversations");
    /// (last seq, lower member's read mark, higher member's read mark, activity stamp,
    /// idempotency bucket).
    pub type ConvRow = (u64, u64, u64, u64, u64);
}

/// Version-2 tables that version 3 no longer has.
pub(super) mod v2 {
    use redb::TableDefinition;
    pub const IDEMPOTENCY: TableDefinition<(&str, u128, &str), u64> =
        TableDefinition::new("idempotency");
    pub const CONV_LAST_SEQ: TableDefinition<&str, u64> = TableDefinition::new("conv_last_seq");
    pub const READ_MARKS: TableDefinition<(&str, u128), u64> = TableDefinition::new("read_marks");
    pub const USER_CONVS: TableDefinition<(u128, &str), u64> =
        TableDefinition::new("user_conversations");
    pub const USER_ACTIVITY: TableDefinition<(u128, u64), &str> =
        TableDefinition::new("user_activity");
    pub const IDEMPOTENCY_AGE: TableDefinition<(u64, &str, u128, &str), ()> =
        TableDefinition::new("idempotency_age");
}

/// Rows one version-4 migration transaction moves.
const CHUNK_ROWS: usize = 20_000;

/// Writes the current version into a fresh file and migrates an older one. `window_ms` is
/// the store's dedupe window (the idempotency bucket width).
pub(super) fn migrate(db: &Database, window_ms: u64) -> StoreResult<()> {
    migrate_in_chunks(db, window_ms, CHUNK_ROWS, usize::MAX).map(|_| ())
}

/// [`migrate`], moving `chunk_rows` rows per version-4 transaction and stopping after
/// `max_chunks` of them (tests stop half-way, as a crash would). Returns whether the file is
/// at [`CURRENT_SCHEMA`].
fn migrate_in_chunks(
    db: &Database,
    window_ms: u64,
    chunk_rows: usize,
    max_chunks: usize,
) -> StoreResult<bool> {
    let mut chunks = 0;
    loop {
        let txn = db.begin_write().map_err(be)?;
        let version = txn
            .open_table(COUNTERS)
            .map_err(be)?
            .get(SCHEMA_VERSION)
            .map_err(be)?
            .map(|v| v.value());
        let next = match version {
            Some(CURRENT_SCHEMA) => {
                txn.abort().map_err(be)?;
                return Ok(true);
            }
            None => CURRENT_SCHEMA,
            Some(v @ (1 | 2)) => {
                if v == 1 {
                    index_session_expiry(&txn)?;
                }
                to_v3(&txn, window_ms)?;
                3
            }
            Some(3) => {
                if chunks == max_chunks {
                    txn.abort().map_err(be)?;
                    return Ok(false);
                }
                chunks += 1;
                if v4_chunk(&txn, chunk_rows)? {
                    3
                } else {
                    finish_v4(&txn)?;
                    4
                }
            }
            Some(v) => {
                return Err(StoreError::Corrupt(format!(
                    "unsupported schema version {v} (this build reads {CURRENT_SCHEMA})"
                )));
            }
        };
        txn.open_table(COUNTERS)
            .map_err(be)?
            .insert(SCHEMA_VERSION, next)
            .map_err(be)?;
        txn.commit().map_err(be)?;
    }
}

/// Version 3 → 4, one chunk: moves up to `budget` rows of the version-3 conversation tables
/// into [`CONV_ROWS`] (each removed from its old table in the same transaction). Returns
/// whether rows may remain.
fn v4_chunk(txn: &WriteTransaction, budget: usize) -> StoreResult<bool> {
    let mut rows = txn.open_table(CONV_ROWS).map_err(be)?;
    let mut left = budget;
    {
        let mut old = txn.open_table(v3::CONVERSATIONS).map_err(be)?;
        while left > 0 {
            let Some((k, v)) = old.pop_first().map_err(be)? else {
                break;
            };
            let key = ConvKey::of(&parse_conversation(k.value())?)?;
            let (last_seq, lo, hi, activity, idem_bucket) = v.value();
            let state = ConvState {
                last_seq,
                marks: [lo, hi],
                activity,
                idem_bucket,
                // The first send re-lists its bucket (a duplicate entry is harmless).
                idem_indexed: false,
            };
            rows.insert(&key.meta()[..], &state.encode()[..])
                .map_err(be)?;
            left -= 1;
        }
    }
    {
        let mut old = txn.open_table(v3::IDEMPOTENCY).map_err(be)?;
        let mut windows = txn.open_table(IDEMPOTENCY_WINDOWS).map_err(be)?;
        while left > 0 {
            let Some((k, v)) = old.pop_first().map_err(be)? else {
                break;
            };
            let (bucket, conv, sender, idem) = k.value();
            let key = ConvKey::of(&parse_conversation(conv)?)?;
            rows.insert(
                key.idempotency(bucket, sender, idem).as_slice(),
                &seq_bytes(v.value())[..],
            )
            .map_err(be)?;
            let (lo, hi) = key.members();
            windows.insert((bucket, lo, hi), ()).map_err(be)?;
            left -= 1;
        }
    }
    {
        let mut old = txn.open_table(v3::MESSAGES).map_err(be)?;
        while left > 0 {
            let Some((k, v)) = old.pop_first().map_err(be)? else {
                break;
            };
            let (conv, seq) = k.value();
            let key = ConvKey::of(&parse_conversation(conv)?)?;
            rows.insert(&key.message(seq)[..], v.value()).map_err(be)?;
            left -= 1;
        }
    }
    Ok(left == 0)
}

/// Version 3 → 4, last step: `last_seen` out of the user rows, the emptied tables deleted.
fn finish_v4(txn: &WriteTransaction) -> StoreResult<()> {
    let mut seen_at = Vec::new();
    for entry in txn.open_table(USERS).map_err(be)?.iter().map_err(be)? {
        let (k, v) = entry.map_err(be)?;
        let row: UserRow = decode("user", v.value())?;
        if let Some(at) = row.last_seen {
            seen_at.push((k.value(), at));
        }
    }
    {
        let mut users = txn.open_table(USERS).map_err(be)?;
        let mut seen = txn.open_table(LAST_SEEN).map_err(be)?;
        for (id, at) in seen_at {
            let mut row: UserRow = match users.get(id).map_err(be)? {
                Some(v) => decode("user", v.value())?,
                None => continue,
            };
            row.last_seen = None;
            users.insert(id, encode(&row)?.as_slice()).map_err(be)?;
            seen.insert(id, at.0).map_err(be)?;
        }
    }
    delete(txn, v3::CONVERSATIONS)?;
    delete(txn, v3::IDEMPOTENCY)?;
    delete(txn, v3::MESSAGES)?;
    Ok(())
}

/// A version-3 message row (for version 1 and 2 idempotency records without an age).
fn v3_message(
    t: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    conversation: &str,
    seq: u64,
) -> StoreResult<Option<Message>> {
    match t.get((conversation, seq)).map_err(be)? {
        Some(v) => decode("message", v.value()).map(Some),
        None => Ok(None),
    }
}

/// A conversation's version-3 state.
#[derive(Default)]
struct V3State {
    last_seq: u64,
    marks: [u64; 2],
    activity: u64,
    idem_bucket: u64,
}

impl V3State {
    fn row(&self) -> v3::ConvRow {
        (
            self.last_seq,
            self.marks[0],
            self.marks[1],
            self.activity,
            self.idem_bucket,
        )
    }
}

/// Version 1 → 2, sessions half: the expiry index from the existing sessions.
fn index_session_expiry(txn: &WriteTransaction) -> StoreResult<()> {
    let mut index = Vec::new();
    for entry in txn.open_table(SESSIONS).map_err(be)?.iter().map_err(be)? {
        let (k, v) = entry.map_err(be)?;
        let (user, hash) = k.value();
        let session: Session = decode("session", v.value())?;
        index.push((ms(session.expires_at), user, hash.to_owned()));
    }
    let mut expiry = txn.open_table(SESSION_EXPIRY).map_err(be)?;
    for (at, user, hash) in &index {
        expiry.insert((*at, *user, hash.as_str()), ()).map_err(be)?;
    }
    Ok(())
}

/// Version 2 (or 1) → 3, in one transaction.
fn to_v3(txn: &WriteTransaction, window_ms: u64) -> StoreResult<()> {
    // When each idempotency record was made: the age index (v2), else its message (v1).
    let mut ages: HashMap<(String, u128, String), u64> = HashMap::new();
    for entry in txn
        .open_table(v2::IDEMPOTENCY_AGE)
        .map_err(be)?
        .iter()
        .map_err(be)?
    {
        let (k, _) = entry.map_err(be)?;
        let (at, conv, sender, key) = k.value();
        ages.insert((conv.to_owned(), sender, key.to_owned()), at);
    }
    let mut states: HashMap<String, V3State> = HashMap::new();
    let mut records = Vec::new();
    {
        let messages = txn.open_table(v3::MESSAGES).map_err(be)?;
        for entry in txn
            .open_table(v2::IDEMPOTENCY)
            .map_err(be)?
            .iter()
            .map_err(be)?
        {
            let (k, v) = entry.map_err(be)?;
            let (conv, sender, key) = k.value();
            let seq = v.value();
            let id = (conv.to_owned(), sender, key.to_owned());
            let at = match ages.get(&id) {
                Some(at) => *at,
                None => v3_message(&messages, conv, seq)?.map_or(0, |m| ms(m.sent_at)),
            };
            let bucket = bucket_of(crate::ids::Timestamp(at as i64), window_ms);
            let state = states.entry(id.0.clone()).or_default();
            state.idem_bucket = state.idem_bucket.max(bucket);
            records.push((bucket, id, seq));
        }
    }
    for entry in txn
        .open_table(v2::CONV_LAST_SEQ)
        .map_err(be)?
        .iter()
        .map_err(be)?
    {
        let (k, v) = entry.map_err(be)?;
        states.entry(k.value().to_owned()).or_default().last_seq = v.value();
    }
    for entry in txn
        .open_table(v2::READ_MARKS)
        .map_err(be)?
        .iter()
        .map_err(be)?
    {
        let (k, v) = entry.map_err(be)?;
        let (conv, user) = k.value();
        let Some(side) = parse_conversation(conv)?
            .participants()
            .and_then(|members| member_side(members, from_uid(user)))
        else {
            continue;
        };
        states.entry(conv.to_owned()).or_default().marks[side] = v.value();
    }
    let mut members: Vec<(u128, String)> = Vec::new();
    for entry in txn
        .open_table(v2::USER_CONVS)
        .map_err(be)?
        .iter()
        .map_err(be)?
    {
        let (k, v) = entry.map_err(be)?;
        let (user, conv) = k.value();
        let state = states.entry(conv.to_owned()).or_default();
        state.activity = state.activity.max(v.value());
        members.push((user, conv.to_owned()));
    }
    {
        let mut idem = txn.open_table(v3::IDEMPOTENCY).map_err(be)?;
        for (bucket, (conv, sender, key), seq) in &records {
            idem.insert((*bucket, conv.as_str(), *sender, key.as_str()), *seq)
                .map_err(be)?;
        }
        let mut convs = txn.open_table(v3::CONVERSATIONS).map_err(be)?;
        for (conv, state) in &states {
            convs.insert(conv.as_str(), state.row()).map_err(be)?;
        }
        let mut member = txn.open_table(MEMBER_CONVERSATIONS).map_err(be)?;
        for (user, conv) in &members {
            member.insert((*user, conv.as_str()), ()).map_err(be)?;
        }
        // Every conversation with messages is in both members' lists, even if an old file
        // missed an entry.
        for (conv, state) in &states {
            if state.last_seq == 0 {
                continue;
            }
            if let Some((lo, hi)) = parse_conversation(conv)?.participants() {
                for u in [lo, hi] {
                    member.insert((uid(u), conv.as_str()), ()).map_err(be)?;
                }
            }
        }
    }
    delete(txn, v2::IDEMPOTENCY)?;
    delete(txn, v2::IDEMPOTENCY_AGE)?;
    delete(txn, v2::CONV_LAST_SEQ)?;
    delete(txn, v2::READ_MARKS)?;
    delete(txn, v2::USER_CONVS)?;
    delete(txn, v2::USER_ACTIVITY)?;
    Ok(())
}

fn delete<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &WriteTransaction,
    table: TableDefinition<K, V>,
) -> StoreResult<()> {
    txn.delete_table(table).map_err(be)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ConversationId, MessageId, Timestamp, UserId};
    use crate::limits::{Body, IdempotencyKey};
    use crate::model::{Message, NewMessage};
    use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
    use crate::store::{FriendStore, HistoryQuery, MessageStore, SessionStore, Store, UserStore};
    use redb::{Database, ReadableDatabase, ReadableTableMetadata};

    const W: u64 = 1_000;

    /// Writes a file in the version-1 or version-2 layout, as those versions did: conversation
    /// `ab` with 3 messages (a read up to 3, b up to 1, activity 7), conversation `ac` with 1
    /// (activity 5), one session expiring at 50.
    fn legacy_file(path: &std::path::Path, version: u64, a: UserId, b: UserId, c: UserId) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let ab = ConversationId::direct(a, b);
            let ac = ConversationId::direct(a, c);
            let mut messages = txn.open_table(v3::MESSAGES).unwrap();
            let mut idem = txn.open_table(v2::IDEMPOTENCY).unwrap();
            let mut age = txn.open_table(v2::IDEMPOTENCY_AGE).unwrap();
            let mut put = |conv: &ConversationId, seq: u64, at: i64| {
                let key = format!("k{seq}");
                let m = Message {
                    id: MessageId::new_v7(),
                    conversation: conv.clone(),
                    seq,
                    sender: a,
                    body: "m".into(),
                    sent_at: Timestamp(at),
                    idempotency_key: key.clone(),
                };
                let bytes = encode(&m).unwrap();
                messages
                    .insert((conv.as_str(), seq), bytes.as_slice())
                    .unwrap();
                idem.insert((conv.as_str(), uid(a), key.as_str()), seq)
                    .unwrap();
                if version >= 2 {
                    age.insert((at as u64, conv.as_str(), uid(a), key.as_str()), ())
                        .unwrap();
                }
            };
            for seq in 1..=3 {
                put(&ab, seq, 1_000 * seq as i64);
            }
            put(&ac, 1, 500);
            let mut last = txn.open_table(v2::CONV_LAST_SEQ).unwrap();
            last.insert(ab.as_str(), 3).unwrap();
            last.insert(ac.as_str(), 1).unwrap();
            let mut marks = txn.open_table(v2::READ_MARKS).unwrap();
            marks.insert((ab.as_str(), uid(a)), 3).unwrap();
            marks.insert((ab.as_str(), uid(b)), 1).unwrap();
            marks.insert((ac.as_str(), uid(a)), 1).unwrap();
            let mut convs = txn.open_table(v2::USER_CONVS).unwrap();
            let mut activity = txn.open_table(v2::USER_ACTIVITY).unwrap();
            for (u, conv, stamp) in [(a, &ab, 7), (b, &ab, 7), (a, &ac, 5), (c, &ac, 5)] {
                convs.insert((uid(u), conv.as_str()), stamp).unwrap();
                activity.insert((uid(u), stamp), conv.as_str()).unwrap();
            }
            let session = Session {
                user_id: a,
                token_hash: "h".into(),
                created_at: Timestamp(1),
                expires_at: Timestamp(50),
            };
            txn.open_table(SESSIONS)
                .unwrap()
                .insert((uid(a), "h"), encode(&session).unwrap().as_slice())
                .unwrap();
            if version >= 2 {
                txn.open_table(SESSION_EXPIRY)
                    .unwrap()
                    .insert((50, uid(a), "h"), ())
                    .unwrap();
            }
            let mut counters = txn.open_table(COUNTERS).unwrap();
            counters.insert(SCHEMA_VERSION, version).unwrap();
            counters.insert(ACTIVITY_COUNTER, 7).unwrap();
        }
        txn.commit().unwrap();
    }

    fn send(conv: &ConversationId, sender: UserId, key: &str, at: i64) -> NewMessage {
        NewMessage {
            conversation: conv.clone(),
            sender,
            body: Body::parse("new").unwrap(),
            idempotency_key: IdempotencyKey::parse(key).unwrap(),
            sent_at: Timestamp(at),
        }
    }

    /// A version-1 or version-2 file opens as version 3 with everything it held: history,
    /// sequences, read marks, the conversation order and the activity counter, idempotency
    /// records (still deduplicating), the session expiry index; the old tables are gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrates_older_layouts() {
        for version in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.redb");
            let (a, b, c) = (
                UserId::new_random(),
                UserId::new_random(),
                UserId::new_random(),
            );
            let (ab, ac) = (ConversationId::direct(a, b), ConversationId::direct(a, c));
            legacy_file(&path, version, a, b, c);
            let options = EmbeddedOptions {
                dedupe_window_ms: W,
                ..EmbeddedOptions::default()
            };
            let store = EmbeddedStore::open_with(&path, options.clone()).unwrap();
            // Messages are only stored between friends.
            let friends = crate::friends::Edge {
                link: crate::friends::Link::Friends,
                ..Default::default()
            };
            for peer in [b, c] {
                let pair = crate::friends::UserPair::new(a, peer).unwrap();
                assert!(
                    store
                        .swap_edge(pair, Default::default(), friends)
                        .await
                        .unwrap()
                );
            }
            assert_eq!(store.last_seq(&ab).await.unwrap(), 3);
            let page = store
                .history(
                    &ab,
                    HistoryQuery {
                        before: None,
                        after: Some(0),
                        limit: 10,
                    },
                )
                .await
                .unwrap();
            assert_eq!(page.messages.len(), 3, "v{version}");
            let list = store.conversations(a, 10).await.unwrap();
            let order: Vec<_> = list.iter().map(|s| s.conversation.clone()).collect();
            assert_eq!(order, vec![ab.clone(), ac.clone()], "v{version}");
            assert_eq!((list[0].read_seq, list[0].peer_read_seq), (3, 1));
            let theirs = store.conversations(b, 10).await.unwrap();
            assert_eq!((theirs.len(), theirs[0].unread), (1, 2), "v{version}");
            // A retry of k2 (recorded at 2,000) inside its window is still a duplicate.
            let dup = store.append(vec![send(&ab, a, "k2", 2_500)]).await;
            let dup = dup[0].as_ref().unwrap();
            assert_eq!((dup.duplicate, dup.message.seq), (true, 2), "v{version}");
            // The activity counter carried over: a new message in `ac` puts it first.
            let fresh = store.append(vec![send(&ac, c, "n1", 2_600)]).await;
            assert_eq!(fresh[0].as_ref().unwrap().message.seq, 2);
            let order: Vec<_> = store
                .conversations(a, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.conversation)
                .collect();
            assert_eq!(order, vec![ac.clone(), ab.clone()], "v{version}");
            // The session expiry index exists (built for v1) and the 5 idempotency records (4
            // migrated, 1 new) are prunable.
            let pruned = store.prune(Timestamp(10_000)).await.unwrap();
            assert_eq!(
                (pruned.sessions, pruned.idempotency_records),
                (1, 5),
                "v{version}"
            );
            assert_eq!(store.session(a, "h", Timestamp(0)).await.unwrap(), None);
            drop(store);
            let db = Database::open(&path).unwrap();
            let names: Vec<String> = db
                .begin_read()
                .unwrap()
                .list_tables()
                .unwrap()
                .map(|t| redb::TableHandle::name(&t).to_owned())
                .collect();
            for old in [
                "idempotency",
                "idempotency_age",
                "conv_last_seq",
                "read_marks",
                "user_conversations",
                "user_activity",
            ] {
                assert!(!names.iter().any(|n| n == old), "v{version}: {old} left");
            }
        }
    }

    /// Writes a file in the version-3 layout with redb directly, as version 3 wrote it: users
    /// a (last seen 123), b, c; a and b friends, a and c not; conversation `ab` with 3
    /// messages (a read up to 3, b up to 1, activity 7, records k1..k3 in bucket 2,000 and
    /// the one before), conversation `ac` with 1 (activity 5); activity counter 7.
    fn v3_file(path: &std::path::Path, a: UserId, b: UserId, c: UserId) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let (ab, ac) = (ConversationId::direct(a, b), ConversationId::direct(a, c));
            let mut users = txn.open_table(USERS).unwrap();
            let mut names = txn.open_table(USERNAMES).unwrap();
            for (u, name, seen) in [
                (a, "a", Some(Timestamp(123))),
                (b, "b", None),
                (c, "c", None),
            ] {
                let row = UserRow {
                    user: crate::model::User {
                        id: u,
                        username: name.into(),
                        created_at: Timestamp(1),
                    },
                    password_hash: None,
                    last_seen: seen,
                };
                // Version 3 always wrote the field.
                let mut json = serde_json::to_value(&row).unwrap();
                json["last_seen"] = serde_json::to_value(seen).unwrap();
                users
                    .insert(uid(u), serde_json::to_vec(&json).unwrap().as_slice())
                    .unwrap();
                names.insert(name, uid(u)).unwrap();
            }
            let friends = crate::friends::Edge {
                link: crate::friends::Link::Friends,
                ..Default::default()
            };
            let pair = crate::friends::UserPair::new(a, b).unwrap();
            txn.open_table(EDGES)
                .unwrap()
                .insert(
                    (uid(pair.lo), uid(pair.hi)),
                    encode(&friends).unwrap().as_slice(),
                )
                .unwrap();
            let mut messages = txn.open_table(v3::MESSAGES).unwrap();
            let mut idem = txn.open_table(v3::IDEMPOTENCY).unwrap();
            let mut put = |conv: &ConversationId, seq: u64, at: i64| {
                let key = format!("k{seq}");
                let m = Message {
                    id: MessageId::new_v7(),
                    conversation: conv.clone(),
                    seq,
                    sender: a,
                    body: format!("m{seq}"),
                    sent_at: Timestamp(at),
                    idempotency_key: key.clone(),
                };
                messages
                    .insert((conv.as_str(), seq), encode(&m).unwrap().as_slice())
                    .unwrap();
                let bucket = bucket_of(Timestamp(at), W);
                idem.insert((bucket, conv.as_str(), uid(a), key.as_str()), seq)
                    .unwrap();
            };
            for (seq, at) in [(1, 1_500), (2, 2_000), (3, 2_100)] {
                put(&ab, seq, at);
            }
            put(&ac, 1, 500);
            let mut convs = txn.open_table(v3::CONVERSATIONS).unwrap();
            let (a_lo, c_a_lo) = (a < b, a < c);
            let marks =
                |mine: u64, theirs: u64, lo: bool| if lo { (mine, theirs) } else { (theirs, mine) };
            let (x, y) = marks(3, 1, a_lo);
            convs.insert(ab.as_str(), (3, x, y, 7, 2_000)).unwrap();
            let (x, y) = marks(1, 0, c_a_lo);
            convs.insert(ac.as_str(), (1, x, y, 5, 0)).unwrap();
            let mut member = txn.open_table(MEMBER_CONVERSATIONS).unwrap();
            for (u, conv) in [(a, &ab), (b, &ab), (a, &ac), (c, &ac)] {
                member.insert((uid(u), conv.as_str()), ()).unwrap();
            }
            let mut counters = txn.open_table(COUNTERS).unwrap();
            counters.insert(SCHEMA_VERSION, 3).unwrap();
            counters.insert(ACTIVITY_COUNTER, 7).unwrap();
        }
        txn.commit().unwrap();
    }

    /// What a version-3 file held, checked through the store right after the upgrade.
    async fn check_upgraded(store: &EmbeddedStore, a: UserId, b: UserId, c: UserId) {
        let (ab, ac) = (ConversationId::direct(a, b), ConversationId::direct(a, c));
        let page = |before, after, limit| HistoryQuery {
            before,
            after,
            limit,
        };
        // History, oldest first, and resuming after a seq.
        let all = store.history(&ab, page(None, Some(0), 10)).await.unwrap();
        let seqs: Vec<_> = all
            .messages
            .iter()
            .map(|m| (m.seq, m.body.clone()))
            .collect();
        assert_eq!(
            seqs,
            vec![(1, "m1".into()), (2, "m2".into()), (3, "m3".into())]
        );
        let resumed = store.history(&ab, page(None, Some(1), 10)).await.unwrap();
        assert_eq!(
            resumed.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [2, 3]
        );
        let older = store.history(&ab, page(Some(3), None, 1)).await.unwrap();
        assert_eq!((older.messages[0].seq, older.has_more), (2, true));
        assert_eq!(store.last_seq(&ab).await.unwrap(), 3);
        assert_eq!(store.last_seq(&ac).await.unwrap(), 1);
        // Read marks and conversation lists.
        let list = store.conversations(a, 10).await.unwrap();
        let order: Vec<_> = list.iter().map(|s| s.conversation.clone()).collect();
        assert_eq!(order, vec![ab.clone(), ac.clone()]);
        assert_eq!((list[0].read_seq, list[0].peer_read_seq), (3, 1));
        assert_eq!(list[0].last_message.as_ref().unwrap().body, "m3");
        let theirs = store.conversations(b, 10).await.unwrap();
        assert_eq!((theirs.len(), theirs[0].unread), (1, 2));
        // Duplicates: k3 (bucket 2,000) and k1 (the bucket before) are still recorded.
        for (key, seq) in [("k3", 3), ("k1", 1)] {
            let dup = store.append(vec![send(&ab, a, key, 2_500)]).await;
            let dup = dup[0].as_ref().unwrap();
            assert_eq!((dup.duplicate, dup.message.seq), (true, seq), "{key}");
            assert_eq!(dup.message.id, all.messages[seq as usize - 1].id);
        }
        // Friend checks: a and c are not friends, a and b are.
        let refused = store.append(vec![send(&ac, a, "n0", 2_600)]).await;
        assert_eq!(refused[0], Err(StoreError::NotFriends));
        let fresh = store.append(vec![send(&ab, b, "n1", 2_600)]).await;
        assert_eq!(fresh[0].as_ref().unwrap().message.seq, 4);
        // Sending moved b's own mark; a's moves from its migrated 3.
        assert_eq!(store.conversations(b, 1).await.unwrap()[0].read_seq, 4);
        assert_eq!(store.conversations(a, 1).await.unwrap()[0].unread, 1);
        let mark = store.mark_read(&ab, a, 4).await.unwrap();
        assert!(mark.changed);
        // The activity counter carried over: `ab` is still first for a.
        assert_eq!(store.conversations(a, 1).await.unwrap()[0].conversation, ab);
        // last_seen moved to its own table and still only moves forward.
        assert_eq!(store.last_seen(a).await.unwrap(), Some(Timestamp(123)));
        store.set_last_seen(a, Timestamp(100)).await.unwrap();
        assert_eq!(store.last_seen(a).await.unwrap(), Some(Timestamp(123)));
        assert_eq!(store.last_seen(b).await.unwrap(), None);
        assert_eq!(store.user(a).await.unwrap().unwrap().username, "a");
        // Every idempotency record (4 migrated, 1 new) is found by pruning, once.
        let pruned = store.prune(Timestamp(100_000)).await.unwrap();
        assert_eq!(pruned.idempotency_records, 5);
    }

    fn tables(path: &std::path::Path) -> Vec<String> {
        let db = Database::open(path).unwrap();
        let txn = db.begin_read().unwrap();
        txn.list_tables()
            .unwrap()
            .map(|t| redb::TableHandle::name(&t).to_owned())
            .collect()
    }

    /// A version-3 file written with redb directly opens as version 4 with everything it held
    /// (history, resume from a seq, duplicates, read marks, lists, friend checks, last seen);
    /// the version-3 tables are gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrates_raw_v3() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.redb");
        let (a, b, c) = (
            UserId::new_random(),
            UserId::new_random(),
            UserId::new_random(),
        );
        v3_file(&path, a, b, c);
        let options = EmbeddedOptions {
            dedupe_window_ms: W,
            ..EmbeddedOptions::default()
        };
        let store = EmbeddedStore::open_with(&path, options).unwrap();
        check_upgraded(&store, a, b, c).await;
        drop(store);
        let names = tables(&path);
        for old in ["messages", "idempotency_buckets", "conversations"] {
            assert!(!names.iter().any(|n| n == old), "{old} left");
        }
    }

    /// The version-4 migration stopped half-way (as by a crash between its chunk
    /// transactions) leaves a version-3 file with some rows moved; the next open moves the
    /// rest, and nothing is lost or duplicated.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interrupted_v4_migration_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.redb");
        let (a, b, c) = (
            UserId::new_random(),
            UserId::new_random(),
            UserId::new_random(),
        );
        v3_file(&path, a, b, c);
        {
            let db = Database::create(&path).unwrap();
            // 2 chunks of 3 rows: both conversations' rows and 4 of the records moved.
            assert_eq!(migrate_in_chunks(&db, W, 3, 2), Ok(false));
            let txn = db.begin_read().unwrap();
            let version = txn
                .open_table(COUNTERS)
                .unwrap()
                .get(SCHEMA_VERSION)
                .unwrap();
            assert_eq!(version.map(|v| v.value()), Some(3));
            let moved = txn.open_table(CONV_ROWS).unwrap().len().unwrap();
            let left = txn.open_table(v3::MESSAGES).unwrap().len().unwrap()
                + txn.open_table(v3::IDEMPOTENCY).unwrap().len().unwrap()
                + txn.open_table(v3::CONVERSATIONS).unwrap().len().unwrap();
            assert_eq!((moved, left), (6, 4));
        }
        let options = EmbeddedOptions {
            dedupe_window_ms: W,
            ..EmbeddedOptions::default()
        };
        let store = EmbeddedStore::open_with(&path, options).unwrap();
        check_upgraded(&store, a, b, c).await;
    }
}
