//! Brings an older file to [`CURRENT_SCHEMA`] when it is opened, in the transaction that
//! records the new version (so a crash half-way leaves the old layout, untouched).
//!
//! * Version 1 → 2 built the expiry indexes (`session_expiry`, and `idempotency_age` from each
//!   record's message `sent_at`).
//! * Version 2 → 3 replaced five per-message tables with two: `conv_last_seq`, `read_marks`
//!   and `user_conversations` (+ its mirror `user_activity`) became one [`ConvState`] row per
//!   conversation plus `member_conversations`, and `idempotency` + `idempotency_age` became
//!   `idempotency_buckets` keyed by the record's bucket. A send now writes 3 rows, not 10.
//!
//! Both steps run from either old version; the whole old state is read into memory first
//! (a one-off cost proportional to the number of conversations and idempotency records).

use super::tables::*;
use crate::model::Session;
use crate::store::{StoreError, StoreResult};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use std::collections::HashMap;

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

/// Writes the current version into a fresh file and migrates an older one. `window_ms` is
/// the store's dedupe window (the idempotency bucket width).
pub(super) fn migrate(txn: &WriteTransaction, window_ms: u64) -> StoreResult<()> {
    let version = txn
        .open_table(COUNTERS)
        .map_err(be)?
        .get(SCHEMA_VERSION)
        .map_err(be)?
        .map(|v| v.value());
    match version {
        Some(CURRENT_SCHEMA) => return Ok(()),
        None => {}
        Some(v @ (1 | 2)) => {
            if v == 1 {
                index_session_expiry(txn)?;
            }
            to_v3(txn, window_ms)?;
        }
        Some(v) => {
            return Err(StoreError::Corrupt(format!(
                "unsupported schema version {v} (this build reads {CURRENT_SCHEMA})"
            )));
        }
    }
    txn.open_table(COUNTERS)
        .map_err(be)?
        .insert(SCHEMA_VERSION, CURRENT_SCHEMA)
        .map_err(be)?;
    Ok(())
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

/// Version 2 (or 1) → 3.
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
    let mut states: HashMap<String, ConvState> = HashMap::new();
    let mut records = Vec::new();
    {
        let messages = txn.open_table(MESSAGES).map_err(be)?;
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
                None => message(&messages, conv, seq)?.map_or(0, |m| ms(m.sent_at)),
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
        let mut idem = txn.open_table(IDEMPOTENCY).map_err(be)?;
        for (bucket, (conv, sender, key), seq) in &records {
            idem.insert((*bucket, conv.as_str(), *sender, key.as_str()), *seq)
                .map_err(be)?;
        }
        let mut convs = txn.open_table(CONVERSATIONS).map_err(be)?;
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
    use crate::store::{FriendStore, HistoryQuery, MessageStore, SessionStore, Store};
    use redb::{Database, ReadableDatabase};

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
            let mut messages = txn.open_table(MESSAGES).unwrap();
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
}
