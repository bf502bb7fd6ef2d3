//! Embedded-store behaviour beyond the shared suite: durability across reopen, group commit,
//! and corrupt data surfacing as a typed error.
use std::sync::Arc;
use zajel_core::friends::UserPair;
use zajel_core::store::IdentityStore;
use zajel_core::{
    ConversationId, EmbeddedStore, ExternalIdentity, FriendGraph, FriendOp, FriendStore,
    HistoryQuery, MessageStore, NewMessage, Relation, Session, SessionStore, StoreError, Timestamp,
    UserId, UserStore, Username,
};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn name(s: &str) -> Username {
    Username::parse(s).unwrap()
}

use zajel_core::testing::message as msg;

fn all(limit: u32) -> HistoryQuery {
    HistoryQuery {
        before: None,
        after: Some(0),
        limit,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_reopen_and_sequences_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/zajel.redb");
    let store = EmbeddedStore::open(&path).unwrap();
    let a = store
        .create_user(&name("Alice"), Some("$argon2id$a"), T0)
        .await
        .unwrap();
    let b = store.create_user(&name("bob"), None, T0).await.unwrap();
    let c = store.create_user(&name("carol"), None, T0).await.unwrap();
    let d = store.create_user(&name("dave"), None, T0).await.unwrap();
    let idp = ExternalIdentity::oidc("https://idp", "sub-a").unwrap();
    store.link_external(&idp, a.id, T0).await.unwrap();
    store.set_last_seen(b.id, Timestamp(42)).await.unwrap();
    let session = Session {
        user_id: a.id,
        token_hash: "hash-a".into(),
        created_at: T0,
        expires_at: T0.plus_millis(60_000),
    };
    store.create_session(&session).await.unwrap();
    let g = FriendGraph::new(&store);
    g.apply(a.id, b.id, FriendOp::Request, T0).await.unwrap();
    g.apply(b.id, a.id, FriendOp::Accept, T0).await.unwrap();
    g.apply(c.id, a.id, FriendOp::Request, T0).await.unwrap();
    g.apply(d.id, a.id, FriendOp::Request, T0).await.unwrap();
    g.apply(a.id, d.id, FriendOp::Accept, T0).await.unwrap();
    let ab = ConversationId::direct(a.id, b.id);
    let ad = ConversationId::direct(a.id, d.id);
    let batch: Vec<_> = (1..=5)
        .map(|i| msg(&ab, a.id, &format!("m{i}"), &format!("k{i}")))
        .collect();
    for r in store.append(batch).await {
        r.unwrap();
    }
    store.append(vec![msg(&ad, d.id, "hey", "d1")]).await[0]
        .clone()
        .unwrap();
    store.mark_read(&ab, b.id, 3).await.unwrap();
    let edge_before = store
        .edge(UserPair::new(a.id, b.id).unwrap())
        .await
        .unwrap();
    let history_before = store.history(&ab, all(50)).await.unwrap();
    drop(store);

    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(store.user(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(
        store.user_by_username(&name("ALICE")).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.password_hash(a.id).await.unwrap().as_deref(),
        Some("$argon2id$a")
    );
    assert_eq!(store.external_user(&idp).await.unwrap(), Some(a.id));
    assert_eq!(store.last_seen(b.id).await.unwrap(), Some(Timestamp(42)));
    assert_eq!(
        store.session(a.id, "hash-a", T0).await.unwrap(),
        Some(session)
    );
    assert_eq!(
        store
            .edge(UserPair::new(a.id, b.id).unwrap())
            .await
            .unwrap(),
        edge_before
    );
    let rel: Vec<_> = store
        .relations(a.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.peer, e.relation))
        .collect();
    let mut expected = vec![
        (b.id, Relation::Friends),
        (c.id, Relation::RequestReceived),
        (d.id, Relation::Friends),
    ];
    expected.sort();
    assert_eq!(rel, expected);
    assert_eq!(store.history(&ab, all(50)).await.unwrap(), history_before);
    assert_eq!(store.last_seq(&ab).await.unwrap(), 5);

    // Sequences continue without a gap; idempotency survives too.
    let next = store
        .append(vec![msg(&ab, b.id, "after restart", "kb")])
        .await;
    assert_eq!(next[0].as_ref().unwrap().message.seq, 6);
    let retry = store.append(vec![msg(&ab, a.id, "m1 again", "k1")]).await;
    let retry = retry[0].as_ref().unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.message.seq, 1);

    // Activity order survives: the reply moves ab back above ad.
    let list = store.conversations(a.id, 10).await.unwrap();
    assert_eq!(
        list.iter()
            .map(|s| s.conversation.clone())
            .collect::<Vec<_>>(),
        vec![ab.clone(), ad.clone()]
    );
    assert_eq!((list[0].last_seq, list[0].unread), (6, 1));
    let bob = store.conversations(b.id, 10).await.unwrap();
    assert_eq!((bob[0].read_seq, bob[0].unread), (6, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    assert_eq!(store.path(), dir.path().join("zajel.redb"));
    let a = store.create_user(&name("alice"), None, T0).await.unwrap();
    let b = store.create_user(&name("bob"), None, T0).await.unwrap();
    zajel_core::testing::befriend(&*store, a.id, b.id).await;
    let conv = ConversationId::direct(a.id, b.id);
    let before = store.commit_count();
    const N: u64 = 500;
    let barrier = Arc::new(tokio::sync::Barrier::new(N as usize));
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (store, conv, barrier) = (store.clone(), conv.clone(), barrier.clone());
            let sender = if i % 2 == 0 { a.id } else { b.id };
            tokio::spawn(async move {
                barrier.wait().await;
                let mut r = store
                    .append(vec![msg(&conv, sender, "m", &format!("k{i}"))])
                    .await;
                r.pop().unwrap().unwrap().message.seq
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>());
    let commits = store.commit_count() - before;
    assert!(
        commits < N,
        "expected group commit to coalesce {N} appends, got {commits} commits"
    );
    let page = store.history(&conv, all(500)).await.unwrap();
    assert_eq!(page.messages.len(), N as usize);
    eprintln!("{N} concurrent appends committed in {commits} transactions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_values_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zajel.redb");
    let store = EmbeddedStore::open(&path).unwrap();
    let a = store.create_user(&name("alice"), None, T0).await.unwrap();
    let b = store.create_user(&name("bob"), None, T0).await.unwrap();
    let c = store.create_user(&name("carol"), None, T0).await.unwrap();
    zajel_core::testing::befriend(&store, a.id, b.id).await;
    zajel_core::testing::befriend(&store, a.id, c.id).await;
    let conv = ConversationId::direct(a.id, b.id);
    let other = ConversationId::direct(a.id, c.id);
    store.append(vec![msg(&other, c.id, "m", "k")]).await[0]
        .clone()
        .unwrap();
    for i in 1..=3 {
        store
            .append(vec![msg(&conv, a.id, "m", &format!("k{i}"))])
            .await[0]
            .clone()
            .unwrap();
    }
    drop(store);

    // Scribble over alice's row, message 2 and the other conversation's state directly with
    // redb, as a damaged file would (layout v4: `lo | hi | tag | ...`, messages newest first).
    {
        const USERS: redb::TableDefinition<u128, &[u8]> = redb::TableDefinition::new("users");
        const ROWS: redb::TableDefinition<&[u8], &[u8]> =
            redb::TableDefinition::new("conversation_rows");
        let prefix = |c: &ConversationId| {
            let (lo, hi) = c.participants().unwrap();
            [lo.0.as_u128().to_be_bytes(), hi.0.as_u128().to_be_bytes()].concat()
        };
        let message_2 = [
            prefix(&conv),
            vec![3],
            (u64::MAX - 2).to_be_bytes().to_vec(),
        ]
        .concat();
        let other_meta = [prefix(&other), vec![2]].concat();
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(USERS)
            .unwrap()
            .insert(a.id.0.as_u128(), b"\xffnot json".as_slice())
            .unwrap();
        let mut rows = txn.open_table(ROWS).unwrap();
        rows.insert(message_2.as_slice(), b"{\"half\":".as_slice())
            .unwrap();
        rows.insert(other_meta.as_slice(), b"short".as_slice())
            .unwrap();
        drop(rows);
        txn.commit().unwrap();
    }

    let store = EmbeddedStore::open(&path).unwrap();
    let corrupt = |r: Result<_, StoreError>| matches!(r, Err(StoreError::Corrupt(_)));
    assert!(corrupt(store.user(a.id).await.map(|_| ())));
    assert!(corrupt(
        store.user_by_username(&name("alice")).await.map(|_| ())
    ));
    assert!(corrupt(store.password_hash(a.id).await.map(|_| ())));
    assert!(corrupt(store.history(&conv, all(10)).await.map(|_| ())));
    assert!(corrupt(store.last_seq(&other).await.map(|_| ())));
    assert!(corrupt(store.conversations(c.id, 10).await.map(|_| ())));
    let refused = store.append(vec![msg(&other, c.id, "m", "k2")]).await;
    assert!(
        corrupt(refused[0].clone().map(|_| ())),
        "a damaged state refuses the send"
    );
    // A write that has to decode the bad row is refused alone; its neighbours commit.
    let (bad, good) = tokio::join!(
        store.set_password_hash(a.id, "$new"),
        store.set_last_seen(b.id, Timestamp(7)),
    );
    assert!(corrupt(bad), "decoding failure is Corrupt");
    good.unwrap();
    assert_eq!(store.last_seen(b.id).await.unwrap(), Some(Timestamp(7)));
    // Pages that avoid the damaged message still read, and appends continue.
    let p = store
        .history(
            &conv,
            HistoryQuery {
                before: None,
                after: Some(2),
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(p.messages.len(), 1);
    let r = store
        .append(vec![msg(&conv, b.id, "still works", "kb")])
        .await;
    assert_eq!(r[0].as_ref().unwrap().message.seq, 4);
}

#[tokio::test]
async fn one_store_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let first = EmbeddedStore::open(dir.path()).unwrap();
    assert!(matches!(
        EmbeddedStore::open(dir.path()),
        Err(StoreError::Backend(_))
    ));
    let clone = first.clone();
    drop(first);
    // A clone keeps the file open; dropping the last handle releases it.
    assert!(EmbeddedStore::open(dir.path()).is_err());
    drop(clone);
    EmbeddedStore::open(dir.path()).unwrap();
}

/// `prune` deletes exactly the expired sessions and the idempotency records older than the
/// configured window, in chunks, and the result survives a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_expired_records() {
    use zajel_core::Store;
    use zajel_core::store::embedded::EmbeddedOptions;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zajel.redb");
    let options = EmbeddedOptions {
        dedupe_window_ms: 1_000,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with(&path, options.clone()).unwrap();
    let a = store.create_user(&name("alice"), None, T0).await.unwrap();
    let b = store.create_user(&name("bob"), None, T0).await.unwrap();
    let session = |hash: &str, life: i64| Session {
        user_id: a.id,
        token_hash: hash.into(),
        created_at: T0,
        expires_at: T0.plus_millis(life),
    };
    for s in [session("short", 10), session("long", 60_000)] {
        store.create_session(&s).await.unwrap();
    }
    // Replacing a session moves its expiry: the old index entry must not delete it.
    store.create_session(&session("moved", 10)).await.unwrap();
    store
        .create_session(&session("moved", 60_000))
        .await
        .unwrap();
    zajel_core::testing::befriend(&store, a.id, b.id).await;
    let conv = ConversationId::direct(a.id, b.id);
    let at = |key: &str, t: Timestamp| NewMessage {
        sent_at: t,
        ..msg(&conv, a.id, "m", key)
    };
    for k in ["k1", "k2", "k3"] {
        store.append(vec![at(k, T0)]).await[0].clone().unwrap();
    }
    store.append(vec![at("k4", T0.plus_millis(5_000))]).await[0]
        .clone()
        .unwrap();
    let now = T0.plus_millis(3_000);
    let pruned = store.prune(now).await.unwrap();
    assert_eq!((pruned.sessions, pruned.idempotency_records), (1, 3));
    assert!(store.session(a.id, "moved", now).await.unwrap().is_some());
    assert!(store.session(a.id, "long", now).await.unwrap().is_some());
    drop(store);
    let store = EmbeddedStore::open_with(&path, options).unwrap();
    assert_eq!(store.prune(now).await.unwrap(), Default::default());
    assert_eq!(store.session(a.id, "short", T0).await.unwrap(), None);
    let again = store.append(vec![at("k1", now)]).await[0].clone().unwrap();
    assert_eq!((again.duplicate, again.message.seq), (false, 5));
    let dup = store.append(vec![at("k4", now)]).await[0].clone().unwrap();
    assert_eq!((dup.duplicate, dup.message.seq), (true, 4));
    // Sessions deleted one by one or all together leave no index entries behind.
    assert!(store.delete_session(a.id, "long").await.unwrap());
    assert_eq!(store.delete_user_sessions(a.id).await.unwrap(), 1);
    let far = T0.plus_millis(1_000_000);
    assert_eq!(store.prune(far).await.unwrap().sessions, 0);
}

/// Pruning finds records through the per-(bucket, conversation) index, written once per bucket,
/// not per message. A record written into a bucket after pruning emptied it (the clock stepped
/// back, so the conversation keeps writing into its bucket) lists the bucket again and is
/// pruned the next time, not leaked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_finds_records_written_after_a_prune() {
    use zajel_core::Store;
    use zajel_core::store::embedded::EmbeddedOptions;
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        dedupe_window_ms: 1_000,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with(dir.path().join("z.redb"), options).unwrap();
    let (a, b) = (UserId::new_random(), UserId::new_random());
    zajel_core::testing::befriend(&store, a, b).await;
    let conv = ConversationId::direct(a, b);
    let at = |key: &str, t: i64| NewMessage {
        sent_at: Timestamp(t),
        ..msg(&conv, a, "m", key)
    };
    for k in ["k1", "k2"] {
        store.append(vec![at(k, 5_000)]).await[0].clone().unwrap();
    }
    let now = Timestamp(8_000);
    assert_eq!(store.prune(now).await.unwrap().idempotency_records, 2);
    assert_eq!(store.prune(now).await.unwrap().idempotency_records, 0);
    // The clock stepped back: still the bucket that starts at 5,000.
    store.append(vec![at("k3", 5_500)]).await[0]
        .clone()
        .unwrap();
    store.append(vec![at("k4", 5_600)]).await[0]
        .clone()
        .unwrap();
    assert_eq!(store.prune(now).await.unwrap().idempotency_records, 2);
    // A later bucket is listed as it starts.
    store.append(vec![at("k5", 9_000)]).await[0]
        .clone()
        .unwrap();
    assert_eq!(store.prune(now).await.unwrap().idempotency_records, 0);
    assert_eq!(
        store
            .prune(Timestamp(20_000))
            .await
            .unwrap()
            .idempotency_records,
        1
    );
    assert_eq!(store.last_seq(&conv).await.unwrap(), 5);
}

/// An account with 5,000 conversations: its list is one meta-row read per conversation plus
/// one message read per listed entry (`limit`), newest activity first, and each peer sees its
/// one conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_list_of_five_thousand() {
    const N: usize = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let me = UserId::new_random();
    let peers: Vec<UserId> = (0..N).map(|_| UserId::new_random()).collect();
    // Concurrent, so group commit packs them into few transactions.
    let tasks: Vec<_> = peers
        .iter()
        .map(|&peer| {
            let store = store.clone();
            tokio::spawn(async move {
                zajel_core::testing::befriend(&*store, me, peer).await;
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // One message per conversation, in order, so the activity order is the peers' order.
    for chunk in peers.chunks(500) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|&peer| msg(&ConversationId::direct(me, peer), peer, "hi", "k"))
            .collect();
        for r in store.append(batch).await {
            assert_eq!(r.unwrap().message.seq, 1);
        }
    }
    let list = store.conversations(me, 20).await.unwrap();
    let listed: Vec<_> = list.iter().map(|s| s.peer.unwrap()).collect();
    let newest: Vec<_> = peers.iter().rev().take(20).copied().collect();
    assert_eq!(listed, newest);
    assert!(list.iter().all(|s| s.unread == 1 && s.last_seq == 1));
    assert_eq!(store.conversations(me, 10_000).await.unwrap().len(), N);
    let theirs = store.conversations(peers[17], 20).await.unwrap();
    assert_eq!((theirs.len(), theirs[0].read_seq), (1, 1));
}

/// Group commit groups: 1,000 concurrent senders, each sending its next message as soon as the
/// previous one is acknowledged (like a client with one message in flight), share fsyncs
/// instead of queueing behind one fsync each. Counted, not timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_senders_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    const SENDERS: usize = 1_000;
    const EACH: usize = 5;
    let users: Vec<UserId> = (0..SENDERS).map(|_| UserId::new_random()).collect();
    for pair in users.chunks(2) {
        zajel_core::testing::befriend(&*store, pair[0], pair[1]).await;
    }
    let before = store.commit_count();
    let barrier = Arc::new(tokio::sync::Barrier::new(SENDERS));
    let tasks: Vec<_> = (0..SENDERS)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            let (me, peer) = (users[i], users[i ^ 1]);
            tokio::spawn(async move {
                let conv = ConversationId::direct(me, peer);
                barrier.wait().await;
                for j in 0..EACH {
                    let m = msg(&conv, me, "m", &format!("{i}-{j}"));
                    store.append(vec![m]).await.pop().unwrap().unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let appends = (SENDERS * EACH) as u64;
    let commits = store.commit_count() - before;
    eprintln!(
        "{appends} appends from {SENDERS} concurrent senders: {commits} commits ({:.1} appends per fsync)",
        appends as f64 / commits as f64
    );
    // Every round of 1,000 in-flight sends should take a handful of commits, not 1,000.
    assert!(
        commits * 50 <= appends,
        "{commits} commits for {appends} appends"
    );
    let conv = ConversationId::direct(users[0], users[1]);
    assert_eq!(store.last_seq(&conv).await.unwrap(), 2 * EACH as u64);
}

/// Commit pacing (`EmbeddedOptions::commit_interval`): senders that trickle in while others
/// are in flight share commits, and a lone sender never waits for the interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_commits_group_trickling_senders_and_never_delay_a_lone_one() {
    use std::time::Duration;
    use zajel_core::store::embedded::EmbeddedOptions;
    let dir = tempfile::tempdir().unwrap();
    // Long enough that one commit plus a sender's stagger always fits inside it.
    let interval = Duration::from_millis(400);
    let options = EmbeddedOptions {
        commit_interval: interval,
        ..EmbeddedOptions::default()
    };
    let store = Arc::new(EmbeddedStore::open_with(dir.path(), options).unwrap());
    let a = store.create_user(&name("alice"), None, T0).await.unwrap();
    let b = store.create_user(&name("bob"), None, T0).await.unwrap();
    zajel_core::testing::befriend(&*store, a.id, b.id).await;
    let conv = ConversationId::direct(a.id, b.id);

    // A lone sender: each append commits alone, so pacing never holds one back. Twenty in a
    // row would take 8 s if it did; the timeout is far below that.
    let lone = async {
        for i in 0..20 {
            let m = msg(&conv, a.id, "lone", &format!("lone{i}"));
            store.append(vec![m]).await.pop().unwrap().unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(4), lone)
        .await
        .expect("a lone sender was held back by commit pacing");

    // Ten appends at once (the writer commits the first and then a batch of the rest: a
    // commit of several operations means concurrent senders), then twenty more trickling in
    // 5 ms apart, each without waiting for the previous. Unpaced, each trickling append finds
    // the writer idle and commits alone (~22 commits); paced, they wait for the next commit,
    // which starts at most every 400 ms.
    let before = store.commit_count();
    let barrier = Arc::new(tokio::sync::Barrier::new(30));
    let tasks: Vec<_> = (0..30u64)
        .map(|i| {
            let (store, conv, barrier) = (store.clone(), conv.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                tokio::time::sleep(Duration::from_millis(5 * i.saturating_sub(9))).await;
                let m = msg(&conv, b.id, "burst", &format!("t{i}"));
                store
                    .append(vec![m])
                    .await
                    .pop()
                    .unwrap()
                    .unwrap()
                    .message
                    .seq
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    let commits = store.commit_count() - before;
    assert!(
        commits <= 5,
        "10 appends at once and 20 trickling in over 100 ms took {commits} commits"
    );
    // Nothing lost, nothing doubled: every acknowledged append is in the history, in order.
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs, (21..=50).collect::<Vec<_>>());
    let page = store.history(&conv, all(100)).await.unwrap();
    let listed: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(listed, (1..=50).collect::<Vec<_>>());
}

/// Replies answered a commit at a time reach their own callers: many senders in many
/// conversations, retries of earlier sends and sends to strangers all share paced commits,
/// and each caller gets back exactly its own outcome (its message, its duplicate, its typed
/// refusal), never a neighbour's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_replies_reach_their_own_senders() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    const PAIRS: usize = 100;
    let users: Vec<UserId> = (0..PAIRS * 2).map(|_| UserId::new_random()).collect();
    for pair in users.chunks(2) {
        zajel_core::testing::befriend(&*store, pair[0], pair[1]).await;
    }
    // Round 1 stores one message per sender; round 2 sends, all at once, a new message, a
    // retry of round 1's (same key, different body) and a message to a stranger.
    let mut first = Vec::new();
    for (i, &me) in users.iter().enumerate() {
        let conv = ConversationId::direct(me, users[i ^ 1]);
        let sent = store
            .append(vec![msg(
                &conv,
                me,
                &format!("first {i}"),
                &format!("a{i}"),
            )])
            .await
            .pop()
            .unwrap()
            .unwrap();
        first.push(sent.message);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(users.len() * 3));
    let mut tasks = Vec::new();
    for (i, &me) in users.iter().enumerate() {
        let friend = ConversationId::direct(me, users[i ^ 1]);
        let stranger = ConversationId::direct(me, users[(i + 2) % users.len()]);
        for (kind, conv, body, key) in [
            (0, friend.clone(), format!("second {i}"), format!("b{i}")),
            (1, friend, format!("retry {i}"), format!("a{i}")),
            (2, stranger, format!("stranger {i}"), format!("c{i}")),
        ] {
            let (store, barrier) = (store.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let reply = store.append(vec![msg(&conv, me, &body, &key)]).await;
                (i, kind, conv, body, key, reply)
            }));
        }
    }
    for t in tasks {
        let (i, kind, conv, body, key, mut reply) = t.await.unwrap();
        assert_eq!(reply.len(), 1);
        let reply = reply.pop().unwrap();
        match kind {
            0 => {
                let a = reply.unwrap();
                assert!(!a.duplicate);
                assert_eq!(
                    (&a.message.conversation, a.message.sender, &a.message.body),
                    (&conv, users[i], &body)
                );
                assert_eq!(a.message.idempotency_key, key);
            }
            1 => {
                let a = reply.unwrap();
                assert!(a.duplicate, "sender {i}'s retry");
                assert_eq!(a.message, first[i], "sender {i}'s retry");
            }
            _ => assert_eq!(reply, Err(StoreError::NotFriends), "sender {i}"),
        }
    }
    // Each conversation holds its two first messages and its two second ones, nothing else.
    for pair in users.chunks(2) {
        let conv = ConversationId::direct(pair[0], pair[1]);
        let page = store.history(&conv, all(10)).await.unwrap();
        let bodies: Vec<&str> = page.messages.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies.len(), 4, "{bodies:?}");
        assert!(
            bodies
                .iter()
                .all(|b| b.starts_with("first ") || b.starts_with("second "))
        );
    }
}
