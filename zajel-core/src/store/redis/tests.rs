//! Unit tests against a throwaway redis-server: damaged data is `Corrupt` (never a panic),
//! prefixes isolate, and an emptied script cache is reloaded transparently.

use super::*;
use crate::friends::Link;
use crate::testing::RedisServer;

const T0: Timestamp = Timestamp(1_700_000_000_000);

async fn setup() -> (RedisStore, RedisServer) {
    let server = RedisServer::start().expect("redis-server");
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    (store, server)
}

async fn raw(store: &RedisStore, cmd: &Cmd) {
    store.query(cmd).await.expect("raw command");
}

/// A "hi" from `sender` with idempotency key `key`.
fn msg(conv: &ConversationId, sender: UserId, key: &str) -> NewMessage {
    crate::testing::message(conv, sender, "hi", key)
}

fn is_corrupt<T: std::fmt::Debug>(r: StoreResult<T>) -> bool {
    matches!(r, Err(StoreError::Corrupt(_)))
}

#[tokio::test]
async fn garbage_edge_is_corrupt() {
    let (store, _server) = setup().await;
    let pair = UserPair::new(UserId::new_random(), UserId::new_random()).unwrap();
    raw(
        &store,
        ::redis::cmd("HSET")
            .arg(store.keys.pair(pair))
            .arg("edge")
            .arg("{not json"),
    )
    .await;
    assert!(is_corrupt(store.edge(pair).await));
    let new = Edge {
        link: Link::RequestedByLo,
        ..Edge::default()
    };
    assert!(is_corrupt(
        store.swap_edge(pair, Edge::default(), new).await
    ));
    // The failed swap changed nothing.
    assert!(store.relations(pair.lo).await.unwrap().is_empty());
}

#[tokio::test]
async fn garbage_records_are_corrupt() {
    let (store, _server) = setup().await;
    let u = UserId::new_random();
    raw(
        &store,
        ::redis::cmd("HSET")
            .arg(store.keys.relations(u))
            .arg("x")
            .arg("[1,2"),
    )
    .await;
    assert!(is_corrupt(store.relations(u).await));
    assert!(is_corrupt(store.friend_ids(u).await));
    // A user hash without its name.
    raw(
        &store,
        ::redis::cmd("HSET")
            .arg(store.keys.user(u))
            .arg("pw")
            .arg("x"),
    )
    .await;
    assert!(is_corrupt(store.user(u).await));
    // The session read (one pipeline) finds the same damage behind a valid session.
    let session = Session {
        user_id: u,
        token_hash: "ok".into(),
        created_at: T0,
        expires_at: T0.plus_millis(1000),
    };
    raw(
        &store,
        ::redis::cmd("HSET")
            .arg(store.keys.sessions(u))
            .arg("ok")
            .arg(to_json(&session).unwrap()),
    )
    .await;
    assert!(is_corrupt(store.session_with_user(u, "ok", T0).await));
    assert!(is_corrupt(store.session_with_friends(u, "ok", T0).await));
    // A name without its creation time, and a creation time that is no number.
    let v = UserId::new_random();
    raw(
        &store,
        ::redis::cmd("HSET")
            .arg(store.keys.user(v))
            .arg("username")
            .arg("victor"),
    )
    .await;
    assert!(is_corrupt(store.user(v).await));
    raw(
        &store,
        ::redis::cmd("HSET")
            .arg(store.keys.user(v))
            .arg("created_at")
            .arg("noon"),
    )
    .await;
    assert!(is_corrupt(store.user(v).await));
    raw(
        &store,
        ::redis::cmd("HSET")
            .arg(store.keys.user(u))
            .arg("last_seen")
            .arg("yesterday"),
    )
    .await;
    assert!(is_corrupt(store.last_seen(u).await));
    raw(
        &store,
        ::redis::cmd("HSET")
            .arg(store.keys.sessions(u))
            .arg("h")
            .arg("nope"),
    )
    .await;
    assert!(is_corrupt(store.session(u, "h", T0).await));
    // A key of the wrong type.
    raw(
        &store,
        ::redis::cmd("SET").arg(store.keys.sessions(u)).arg("x"),
    )
    .await;
    assert!(is_corrupt(store.session(u, "h", T0).await));
    // A username claim pointing at no user.
    let name = Username::parse("ghost").unwrap();
    raw(
        &store,
        ::redis::cmd("SET")
            .arg(store.keys.username("ghost"))
            .arg("not-a-uuid"),
    )
    .await;
    assert!(is_corrupt(store.user_by_username(&name).await));
}

#[tokio::test]
async fn damaged_log_is_corrupt() {
    let (store, _server) = setup().await;
    let (a, b) = (UserId::new_random(), UserId::new_random());
    crate::testing::befriend(&store, a, b).await;
    let conv = ConversationId::direct(a, b);
    for k in ["1", "2"] {
        store.append(vec![msg(&conv, a, k)]).await[0]
            .as_ref()
            .unwrap();
    }
    // Claim a third message that the log does not have.
    raw(
        &store,
        ::redis::cmd("HSET")
            .arg(store.keys.meta(&conv))
            .arg("seq")
            .arg(3),
    )
    .await;
    assert!(is_corrupt(
        store.history(&conv, HistoryQuery::default()).await
    ));
    // An entry with a broken sender.
    raw(
        &store,
        ::redis::cmd("XADD")
            .arg(store.keys.log(&conv))
            .arg("3-0")
            .arg("id")
            .arg("x")
            .arg("sender")
            .arg("y"),
    )
    .await;
    assert!(is_corrupt(store.conversations(a, 10).await));
    // A repeat whose idempotency record points at nothing.
    raw(
        &store,
        ::redis::cmd("HSET")
            .arg(store.keys.meta(&conv))
            .arg(idem_field(T0, a, "gone"))
            .arg(99),
    )
    .await;
    assert!(is_corrupt(
        store.append(vec![msg(&conv, a, "gone")]).await.remove(0)
    ));
    // Packed entries (layout 3) that do not decode: too short, a key length past the end, a
    // bad number, a length cutting a character in two.
    let mut packed = String::new();
    pack_entry(&mut packed, MessageId::new_v7(), a, T0.0, "kk", "é");
    for bad in [
        packed[..50].to_owned(),
        packed.replace(":2:", ":9:"),
        packed.replace(":2:", ":x:"),
        packed.replace(":2:", ":3:"),
    ] {
        assert!(is_corrupt(unpack_entry(&conv, 1, &bad)), "{bad}");
    }
    assert_eq!(
        unpack_entry(&conv, 1, &packed).map(|m| (m.idempotency_key, m.body)),
        Ok(("kk".into(), "é".into()))
    );
}

#[test]
fn packed_entries_and_fields_spell_numbers_exactly() {
    let mut out = String::new();
    for n in [0, 7, 10, 19_675, u64::MAX] {
        out.clear();
        push_decimal(&mut out, n);
        assert_eq!(out, n.to_string());
    }
    let conv = ConversationId::direct(UserId::new_random(), UserId::new_random());
    let (id, sender) = (MessageId::new_v7(), UserId::new_random());
    for sent_at in [i64::MIN, -1, 0, 1_700_000_000_000, i64::MAX] {
        pack_entry(&mut out, id, sender, sent_at, "key:1", "a:b");
        let m = unpack_entry(&conv, 3, &out).unwrap();
        assert_eq!(
            (
                m.id,
                m.sender,
                m.sent_at,
                m.idempotency_key.as_str(),
                m.body.as_str()
            ),
            (id, sender, Timestamp(sent_at), "key:1", "a:b")
        );
    }
    idempotency_field(&mut out, 12, sender, "k");
    assert_eq!(out, format!("12:{sender}:k"));
}

/// The meta-hash field of an idempotency record sent at `t` (default window).
fn idem_field(t: Timestamp, sender: UserId, key: &str) -> String {
    let mut f = String::new();
    idempotency_field(&mut f, t.0 as u64 / DEFAULT_DEDUPE_WINDOW_MS, sender, key);
    f
}

async fn history_of(store: &RedisStore, conv: &ConversationId) -> Vec<Message> {
    let query = HistoryQuery {
        before: None,
        after: Some(0),
        limit: 100,
    };
    store.history(conv, query).await.unwrap().messages
}

/// A hash's fields and values as strings.
async fn hash(store: &RedisStore, key: String) -> HashMap<String, String> {
    let reply = store.query(::redis::cmd("HGETALL").arg(key)).await.unwrap();
    fields(reply)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, string(v).unwrap()))
        .collect()
}

/// `append.lua` derives its keys from the prefix and the conversation id; they must be exactly
/// the keys the rest of the store (history, summaries, read marks, friend checks) reads:
/// after appends, Redis holds these keys and no others, with the values the readers expect.
#[tokio::test]
async fn append_writes_the_documented_keys() {
    let server = RedisServer::start().expect("redis-server");
    // Characters that are special in Lua patterns and in SCAN globs must not matter.
    let prefix = "t%1.*[x]";
    let store = RedisStore::connect_with_prefix(&server.url(), prefix)
        .await
        .expect("connect");
    let (a, b) = (UserId::new_random(), UserId::new_random());
    crate::testing::befriend(&store, a, b).await;
    let conv = ConversationId::direct(a, b);
    let before: std::collections::BTreeSet<String> = all_keys(&store).await;
    // Befriending wrote the pair hash and the friends flag into the meta hash (layout 3).
    assert!(before.contains(&store.keys.pair_of(&conv)));
    assert_eq!(
        hash(&store, store.keys.meta(&conv)).await,
        HashMap::from([("f".into(), "1".into())])
    );
    let mine = store
        .append(vec![msg(&conv, b, "k")])
        .await
        .remove(0)
        .unwrap();
    let system = store
        .append(vec![msg(&conv, UserId::SYSTEM, "s")])
        .await
        .remove(0)
        .unwrap();
    assert_eq!((mine.message.seq, system.message.seq), (1, 2));
    let bucket = T0.0 as u64 / DEFAULT_DEDUPE_WINDOW_MS;
    let written: std::collections::BTreeSet<String> = all_keys(&store)
        .await
        .difference(&before)
        .cloned()
        .collect();
    let expected: std::collections::BTreeSet<String> = [
        store.keys.log(&conv),
        store.keys.conversations(a),
        store.keys.conversations(b),
    ]
    .into_iter()
    .collect();
    assert_eq!(written, expected);
    // The records are where the readers look: the idempotency records, the sequence, the
    // sender's read mark (none for the system) in the meta hash; the lists' members; the log
    // entries, one packed field each.
    assert_eq!(
        hash(&store, store.keys.meta(&conv)).await,
        HashMap::from([
            ("f".into(), "1".into()),
            ("seq".into(), "2".into()),
            (read_field(b), "1".into()),
            ("ib".into(), bucket.to_string()),
            (idem_field(T0, b, "k"), "1".into()),
            (idem_field(T0, UserId::SYSTEM, "s"), "2".into()),
        ])
    );
    for u in [a, b] {
        let list = store.conversations(u, 10).await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].last_message.as_ref(), Some(&system.message));
    }
    let entries = store
        .query(
            ::redis::cmd("XRANGE")
                .arg(store.keys.log(&conv))
                .arg("-")
                .arg("+"),
        )
        .await
        .unwrap();
    for (entry, message) in array(entries).unwrap().into_iter().zip([&mine, &system]) {
        let mut packed = String::new();
        let m = &message.message;
        pack_entry(
            &mut packed,
            m.id,
            m.sender,
            m.sent_at.0,
            &m.idempotency_key,
            &m.body,
        );
        let fields = array(entry).unwrap().remove(1);
        assert_eq!(
            fields,
            Value::Array(vec![
                Value::BulkString(b"m".to_vec()),
                Value::BulkString(packed.into_bytes())
            ])
        );
    }
    assert_eq!(
        history_of(&store, &conv).await,
        vec![mine.message, system.message]
    );
}

async fn all_keys(store: &RedisStore) -> std::collections::BTreeSet<String> {
    let keys = store.query(::redis::cmd("KEYS").arg("*")).await.unwrap();
    array(keys)
        .unwrap()
        .into_iter()
        .map(|k| string(k).unwrap())
        .collect()
}

#[tokio::test]
async fn prefixes_isolate_and_are_validated() {
    let (store, server) = setup().await;
    let other = RedisStore::connect_with_prefix(&server.url(), "other")
        .await
        .unwrap();
    let name = Username::parse("alice").unwrap();
    store.create_user(&name, None, T0).await.unwrap();
    assert_eq!(other.user_by_username(&name).await.unwrap(), None);
    other.create_user(&name, None, T0).await.unwrap();
    assert!(matches!(
        RedisStore::connect_with_prefix(&server.url(), "a{b}").await,
        Err(StoreError::Backend(_))
    ));
}

/// Layout 3 keeps idempotency records in the meta hash and deletes them after 3 windows: a
/// repeat in the next window is still a `duplicate`, records of the window before last are
/// kept (clock skew between nodes), older ones are swept by the first message of a later
/// window, and a big sweep is spread over the following messages in bounded steps.
#[tokio::test]
async fn idempotency_records_are_swept_after_three_windows() {
    let (store, _server) = setup().await;
    let (a, b) = (UserId::new_random(), UserId::new_random());
    crate::testing::befriend(&store, a, b).await;
    let conv = ConversationId::direct(a, b);
    const W: i64 = DEFAULT_DEDUPE_WINDOW_MS as i64;
    let at = |sender: UserId, key: &str, t: Timestamp| NewMessage {
        sent_at: t,
        ..msg(&conv, sender, key)
    };
    let send = |m: NewMessage| {
        let store = store.clone();
        async move { store.append(vec![m]).await.remove(0).unwrap() }
    };
    // Records of window 0 (relative to T0), more than one sweep step reads (and than a
    // listpack-encoded hash holds: that one comes back whole from one HSCAN).
    let many: Vec<NewMessage> = (0..600).map(|i| at(a, &format!("m{i}"), T0)).collect();
    for chunk in many.chunks(64) {
        for r in store.append(chunk.to_vec()).await {
            assert!(!r.unwrap().duplicate);
        }
    }
    let records = |meta: &HashMap<String, String>, t: Timestamp| {
        let window = format!("{}:", t.0 as u64 / DEFAULT_DEDUPE_WINDOW_MS);
        meta.keys().filter(|k| k.starts_with(&window)).count()
    };
    let meta = || hash(&store, store.keys.meta(&conv));
    assert_eq!(records(&meta().await, T0), 600);
    // Window 1: a repeat of window 0 is found. Window 2: window 0 is kept.
    let t1 = T0.plus_millis(W);
    let again = send(at(a, "m7", t1)).await;
    assert!(again.duplicate);
    assert_eq!(again.message.seq, 8);
    let t2 = T0.plus_millis(2 * W);
    assert!(!send(at(b, "x2", t2)).await.duplicate);
    assert_eq!(records(&meta().await, T0), 600);
    // Window 3 (a system message: no read mark): window 0 goes, in steps of ~64 fields per
    // message, so no single call walks the whole hash.
    let t3 = T0.plus_millis(3 * W);
    let system = send(at(UserId::SYSTEM, "s", t3)).await;
    assert_eq!(system.message.seq, 602);
    // A sweep under way: 'ib' = '<window>:<cursor>'.
    let pending = |meta: &HashMap<String, String>| meta["ib"].contains(':');
    let after_one = meta().await;
    assert!(pending(&after_one), "the sweep is not done in one step");
    let left = records(&after_one, T0);
    assert!(
        (450..600).contains(&left),
        "{left} records of window 0 left"
    );
    let mut steps = 1;
    while pending(&meta().await) {
        assert!(!send(at(b, &format!("y{steps}"), t3)).await.duplicate);
        steps += 1;
        assert!(steps < 40, "the sweep does not end");
    }
    let after = meta().await;
    assert_eq!(records(&after, T0), 0);
    assert_eq!(records(&after, t2), 1);
    assert_eq!(
        after.get("ib"),
        Some(&(t3.0 as u64 / DEFAULT_DEDUPE_WINDOW_MS).to_string())
    );
    assert_eq!(after.get(&read_field(a)), Some(&"600".to_string()));
    // The exact field: a prefix such as "r:0" also matches a random user whose id starts
    // with 0 (1 run in 8 with two users).
    assert_eq!(
        after.get(&read_field(UserId::SYSTEM)),
        None,
        "no system read mark"
    );
    // Past its two windows a key is new again.
    let late = send(at(a, "m7", t3)).await;
    assert!(!late.duplicate);
    assert_eq!(late.message.seq, 602 + steps);
    assert_eq!(store.last_seq(&conv).await.unwrap(), 602 + steps);
}

#[tokio::test]
async fn scripts_reload_after_cache_flush() {
    let (store, _server) = setup().await;
    let (a, b) = (UserId::new_random(), UserId::new_random());
    crate::testing::befriend(&store, a, b).await;
    let conv = ConversationId::direct(a, b);
    store.append(vec![msg(&conv, a, "1")]).await[0]
        .as_ref()
        .unwrap();
    raw(&store, ::redis::cmd("SCRIPT").arg("FLUSH")).await;
    let batch = vec![msg(&conv, a, "2"), msg(&conv, b, "3"), msg(&conv, a, "1")];
    let r: Vec<_> = store
        .append(batch)
        .await
        .into_iter()
        .map(|r| r.map(|x| (x.message.seq, x.duplicate)))
        .collect();
    assert_eq!(r, vec![Ok((2, false)), Ok((3, false)), Ok((1, true))]);
    raw(&store, ::redis::cmd("SCRIPT").arg("FLUSH")).await;
    assert_eq!(store.mark_read(&conv, b, 3).await.unwrap().seq, 3);
}

/// Calls of `EVALSHA` so far, from `INFO commandstats`.
async fn evalsha_calls(store: &RedisStore) -> u64 {
    let info = store
        .query(::redis::cmd("INFO").arg("commandstats"))
        .await
        .unwrap();
    let text = match info {
        Value::BulkString(b) => String::from_utf8(b).unwrap(),
        Value::VerbatimString { text, .. } => text,
        other => panic!("INFO answered {other:?}"),
    };
    text.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Issue 13: the server appends one message per `send`; concurrent calls are merged into a
/// few script calls (not one each), and every caller still gets exactly its own results, in
/// its own order: friends their new sequences, strangers `NotFriends`, a repeat its original.
#[tokio::test]
async fn concurrent_appends_share_script_calls_and_keep_their_results() {
    let (store, _server) = setup().await;
    let mut convs = Vec::new();
    for i in 0..40 {
        let (a, b) = (UserId::new_random(), UserId::new_random());
        let friends = i % 2 == 0;
        if friends {
            crate::testing::befriend(&store, a, b).await;
        }
        convs.push((ConversationId::direct(a, b), a, b, friends));
    }
    // One message stored before, so one caller below repeats it.
    let (c0, a0, _, _) = &convs[0];
    let first = store
        .append(vec![msg(c0, *a0, "k")])
        .await
        .remove(0)
        .unwrap();
    let before = evalsha_calls(&store).await;
    let mut tasks = Vec::new();
    for (c, a, b, _) in &convs {
        let store = store.clone();
        // Each caller: its own message, the friend's answer, and a repeat of its own.
        let batch = vec![msg(c, *a, "k2"), msg(c, *b, "k3"), msg(c, *a, "k2")];
        tasks.push(tokio::spawn(async move { store.append(batch).await }));
    }
    let repeat = {
        let store = store.clone();
        let batch = vec![msg(c0, *a0, "k")];
        tokio::spawn(async move { store.append(batch).await })
    };
    for ((c, a, b, friends), task) in convs.iter().zip(tasks) {
        let results = task.await.unwrap();
        assert_eq!(results.len(), 3, "{c}");
        if !friends {
            assert!(
                results.iter().all(|r| r == &Err(StoreError::NotFriends)),
                "{c}: {results:?}"
            );
            assert_eq!(store.last_seq(c).await.unwrap(), 0);
            continue;
        }
        let got: Vec<_> = results
            .into_iter()
            .map(|r| {
                let r = r.unwrap();
                let m = r.message;
                (m.conversation, m.sender, m.idempotency_key, r.duplicate)
            })
            .collect();
        let base = u64::from(c == c0);
        assert_eq!(
            got,
            vec![
                (c.clone(), *a, "k2".to_owned(), false),
                (c.clone(), *b, "k3".to_owned(), false),
                (c.clone(), *a, "k2".to_owned(), true),
            ],
        );
        assert_eq!(store.last_seq(c).await.unwrap(), base + 2, "{c}");
    }
    let repeat = repeat.await.unwrap().remove(0).unwrap();
    assert!(repeat.duplicate);
    assert_eq!(repeat.message, first.message);
    let calls = evalsha_calls(&store).await - before;
    // One call per caller (41) before coalescing.
    assert!(
        calls <= 10,
        "{calls} script calls for 41 concurrent appends"
    );
}

/// Session 9: at most one append call is in flight. While Redis holds the first caller's call
/// (paused for writes), 30 more callers arrive: the first call is not joined by a second one
/// beside it (with two in flight the next caller went out alone, 3 calls here), and all 30
/// share the next call (2 in all), each still getting its own results.
#[tokio::test]
async fn sends_during_a_call_in_flight_share_the_next_call() {
    let (store, server) = setup().await;
    let mut pairs = Vec::new();
    for _ in 0..31 {
        let (a, b) = (UserId::new_random(), UserId::new_random());
        crate::testing::befriend(&store, a, b).await;
        pairs.push((ConversationId::direct(a, b), a, b));
    }
    // Loads the script, so the calls below are one `EVALSHA` each.
    let (c0, a0, b0) = pairs[0].clone();
    let warm = store.append(vec![msg(&c0, a0, "warm")]).await.remove(0);
    assert_eq!(warm.map(|r| r.message.seq), Ok(1));
    let before = evalsha_calls(&store).await;
    let mut admin = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Bounded: Redis lifts the pause by itself after 5 s should the test stop early.
    let paused = crate::testing::redis_cmd(&mut admin, &["CLIENT", "PAUSE", "5000", "WRITE"]);
    assert_eq!(paused.await, Ok(Value::Okay));
    let first = {
        let store = store.clone();
        tokio::spawn(async move { store.append(vec![msg(&c0, b0, "first")]).await })
    };
    // The test runtime has one thread: each yield lets every spawned task run until it waits.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let mut tasks = Vec::new();
    for (c, a, b) in pairs.iter().skip(1).cloned() {
        let store = store.clone();
        let batch = vec![msg(&c, a, "k1"), msg(&c, b, "k2")];
        tasks.push(tokio::spawn(async move { store.append(batch).await }));
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!first.is_finished(), "Redis answered during its pause");
    let unpaused = crate::testing::redis_cmd(&mut admin, &["CLIENT", "UNPAUSE"]).await;
    assert_eq!(unpaused, Ok(Value::Okay));
    let first = first.await.unwrap().remove(0).map(|r| r.message.seq);
    assert_eq!(first, Ok(2));
    for ((c, a, b), task) in pairs.iter().skip(1).zip(tasks) {
        let got: Vec<_> = task
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.map(|r| (r.message.sender, r.message.seq, r.duplicate)))
            .collect();
        assert_eq!(got, vec![Ok((*a, 1, false)), Ok((*b, 2, false))], "{c}");
    }
    let calls = evalsha_calls(&store).await - before;
    assert_eq!(
        calls, 2,
        "the paused call, then one for the 30 callers that queued"
    );
}

/// Issue 7 item 7 on Redis, two nodes: node 1 runs the old send path's friendship check (a
/// read of the edge: friends), node 2 then blocks and is acknowledged, and node 1's append
/// comes after. The check inside the append script refuses it and writes nothing (on the
/// two-step layout the append went through and the message was delivered after the block).
#[tokio::test]
async fn block_on_another_node_between_check_and_append_is_refused() {
    let (node1, server) = setup().await;
    let node2 = RedisStore::connect(&server.url()).await.unwrap();
    let user = |n: &str| {
        let node1 = node1.clone();
        let name = Username::parse(n).unwrap();
        async move { node1.create_user(&name, None, T0).await.unwrap().id }
    };
    let (a, b) = (user("alice").await, user("bob").await);
    crate::testing::befriend(&node1, a, b).await;
    let (pair, conv) = (UserPair::new(a, b).unwrap(), ConversationId::direct(a, b));
    assert!(
        node1.edge(pair).await.unwrap().are_friends(),
        "check passed"
    );
    crate::FriendGraph::new(&node2)
        .apply(b, a, crate::FriendOp::Block, T0)
        .await
        .unwrap();
    let sent = node1.append(vec![msg(&conv, a, "k1")]).await.remove(0);
    assert_eq!(sent, Err(StoreError::NotFriends));
    assert_eq!(node2.last_seq(&conv).await.unwrap(), 0);
    // The meta hash holds only the (cleared) friends flag: no record, no sequence.
    assert_eq!(
        hash(&node1, node1.keys.meta(&conv)).await,
        HashMap::from([("f".into(), "0".into())])
    );
    for key in [
        node1.keys.log(&conv),
        node1.keys.conversations(a),
        node1.keys.conversations(b),
    ] {
        let exists = node1.query(::redis::cmd("EXISTS").arg(&key)).await;
        assert_eq!(exists, Ok(Value::Int(0)), "{key} was written");
    }
    assert_eq!(
        node1.mark_read(&conv, b, 0).await,
        Err(StoreError::NotFriends)
    );
}

/// Writes one pair's edge in layout 1, as versions before layout 2 did: the edge and its
/// version under the pair's own tag, and both users' derived relation entries.
async fn write_layout_1(store: &RedisStore, pair: UserPair, edge: &Edge, version: u64) {
    let mut mset = ::redis::cmd("MSET");
    mset.arg(store.keys.legacy_edge(pair))
        .arg(serde_json::to_string(edge).unwrap())
        .arg(store.keys.legacy_edge_version(pair))
        .arg(version);
    raw(store, &mset).await;
    for (me, peer, me_is_lo) in [(pair.lo, pair.hi, true), (pair.hi, pair.lo, false)] {
        let relation = edge.relation(me_is_lo);
        if relation == Relation::None {
            continue;
        }
        let entry = RelationEntry {
            peer,
            relation,
            since: edge.since_for(me_is_lo),
        };
        for (key, value) in [
            (
                store.keys.relations(me),
                serde_json::to_string(&entry).unwrap(),
            ),
            (store.keys.relation_versions(me), version.to_string()),
        ] {
            let mut hset = ::redis::cmd("HSET");
            hset.arg(key).arg(peer.to_string()).arg(value);
            raw(store, &hset).await;
        }
    }
}

/// Writes one conversation in layout 2 with plain commands, as versions before layout 3 did:
/// the log with five fields per entry, the meta hash (`seq`, read marks, `ib`), the
/// idempotency records in one expiring hash per window; no `f` in the meta hash. Returns the
/// messages as they were stored.
async fn write_layout_2_conversation(
    store: &RedisStore,
    pair: UserPair,
    keys: &[(bool, &str)],
) -> Vec<Message> {
    let conv = ConversationId::direct(pair.lo, pair.hi);
    let window = T0.0 as u64 / DEFAULT_DEDUPE_WINDOW_MS;
    let mut out = Vec::new();
    for (i, (from_lo, key)) in keys.iter().enumerate() {
        let sender = if *from_lo { pair.lo } else { pair.hi };
        let m = Message {
            id: MessageId::new_v7(),
            conversation: conv.clone(),
            seq: i as u64 + 1,
            sender,
            body: format!("old {i}"),
            sent_at: T0,
            idempotency_key: (*key).into(),
        };
        let mut xadd = ::redis::cmd("XADD");
        xadd.arg(store.keys.log(&conv))
            .arg(format!("{}-0", m.seq))
            .arg("id")
            .arg(m.id.0.to_string())
            .arg("sender")
            .arg(sender.to_string())
            .arg("body")
            .arg(&m.body)
            .arg("sent_at")
            .arg(m.sent_at.0)
            .arg("key")
            .arg(*key);
        raw(store, &xadd).await;
        let bucket = store.keys.legacy_idempotency(&conv, window);
        raw(
            store,
            ::redis::cmd("HSET")
                .arg(&bucket)
                .arg(format!("{sender}:{key}"))
                .arg(m.seq),
        )
        .await;
        raw(
            store,
            ::redis::cmd("PEXPIRE")
                .arg(&bucket)
                .arg(3 * DEFAULT_DEDUPE_WINDOW_MS),
        )
        .await;
        raw(
            store,
            ::redis::cmd("HSET")
                .arg(store.keys.meta(&conv))
                .arg("seq")
                .arg(m.seq)
                .arg(read_field(sender))
                .arg(m.seq)
                .arg("ib")
                .arg(window),
        )
        .await;
        out.push(m);
    }
    out
}

/// Writes one pair's relation in layout 2 (the pair hash only; layout 3 also sets `f` in the
/// meta hash), after a layout-3 store's own writes have been undone.
async fn write_layout_2_pair(store: &RedisStore, pair: UserPair, edge: &Edge) {
    let conv = ConversationId::direct(pair.lo, pair.hi);
    raw(
        store,
        ::redis::cmd("HSET")
            .arg(store.keys.pair(pair))
            .arg("edge")
            .arg(serde_json::to_string(edge).unwrap())
            .arg("ver")
            .arg(1)
            .arg("friends")
            .arg(friends_flag(edge)),
    )
    .await;
    raw(
        store,
        ::redis::cmd("HDEL").arg(store.keys.meta(&conv)).arg("f"),
    )
    .await;
}

/// Layout 2 (written with plain commands) is brought to layout 3 when stores connect, by two
/// nodes starting together, over more keys than one SCAN page: old entries read back as they
/// were, a retry of an old message is a `duplicate` answered with the original, the friend
/// check follows the migrated flags (for sends and read marks), a block made after the
/// upgrade holds, and a rerun after a crash mid-migration changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_2_is_migrated_on_start() {
    let (old, server) = setup().await;
    let pair = || UserPair::new(UserId::new_random(), UserId::new_random()).unwrap();
    let (friends, blocked) = (pair(), pair());
    write_layout_2_pair(&old, friends, &edge_with(Link::Friends, false)).await;
    write_layout_2_pair(&old, blocked, &edge_with(Link::Friends, true)).await;
    let stored =
        write_layout_2_conversation(&old, friends, &[(true, "k1"), (false, "k2"), (true, "k3")])
            .await;
    write_layout_2_conversation(&old, blocked, &[(true, "b1")]).await;
    // Enough pairs and buckets for several SCAN pages.
    let mut others = Vec::new();
    for _ in 0..600 {
        let p = pair();
        write_layout_2_pair(&old, p, &edge_with(Link::Friends, false)).await;
        write_layout_2_conversation(&old, p, &[(true, "o1")]).await;
        others.push(p);
    }
    raw(&old, ::redis::cmd("SET").arg(old.keys.layout()).arg(2)).await;

    let url = server.url();
    let (n1, n2) = tokio::join!(RedisStore::connect(&url), RedisStore::connect(&url));
    let (n1, n2) = (n1.unwrap(), n2.unwrap());
    check_layout_2_migrated(&n1, friends, blocked, &stored).await;
    let window = T0.0 as u64 / DEFAULT_DEDUPE_WINDOW_MS;
    for p in [others[0], others[599]] {
        let conv = ConversationId::direct(p.lo, p.hi);
        let again = n2
            .append(vec![msg(&conv, p.lo, "o1")])
            .await
            .remove(0)
            .unwrap();
        assert!(again.duplicate);
        assert_eq!(again.message.body, "old 0");
    }
    let leftovers = n1
        .query(::redis::cmd("KEYS").arg(format!("{}:*:idem:*", n1.prefix())))
        .await
        .unwrap();
    assert_eq!(array(leftovers).unwrap(), Vec::<Value>::new());

    // A crash after some buckets moved, before the version was raised: a bucket still there
    // and a flag not yet copied. The rerun finishes the job and changes nothing else.
    let conv = ConversationId::direct(friends.lo, friends.hi);
    raw(
        &n1,
        ::redis::cmd("HSET")
            .arg(n1.keys.legacy_idempotency(&conv, window))
            .arg(format!("{}:k1", friends.lo))
            .arg(1),
    )
    .await;
    let other = others[1];
    let other_conv = ConversationId::direct(other.lo, other.hi);
    raw(
        &n1,
        ::redis::cmd("HDEL").arg(n1.keys.meta(&other_conv)).arg("f"),
    )
    .await;
    raw(&n1, ::redis::cmd("SET").arg(n1.keys.layout()).arg(2)).await;
    let again = RedisStore::connect(&url).await.unwrap();
    assert_eq!(layout_of(&again).await, Value::BulkString(b"3".to_vec()));
    let repeat = again
        .append(vec![msg(&conv, friends.lo, "k1")])
        .await
        .remove(0);
    assert_eq!(
        repeat.map(|r| (r.duplicate, r.message)),
        Ok((true, stored[0].clone()))
    );
    assert_eq!(again.last_seq(&conv).await.unwrap(), 4);
    assert!(
        !again
            .append(vec![msg(&other_conv, other.hi, "n")])
            .await
            .remove(0)
            .unwrap()
            .duplicate
    );
    // A node finishing a step late never moves the version back.
    again.raise_layout(2).await.unwrap();
    assert_eq!(layout_of(&again).await, Value::BulkString(b"3".to_vec()));
}

/// What `layout_2_is_migrated_on_start` (and the Cluster variant) check right after the
/// upgrade: history, duplicates, friend checks, read marks, the list, a block.
async fn check_layout_2_migrated(
    store: &RedisStore,
    friends: UserPair,
    blocked: UserPair,
    stored: &[Message],
) {
    assert_eq!(layout_of(store).await, Value::BulkString(b"3".to_vec()));
    let conv = ConversationId::direct(friends.lo, friends.hi);
    assert_eq!(history_of(store, &conv).await, stored);
    // A retry of an old message is answered with the original, not stored again.
    let repeat = store
        .append(vec![msg(&conv, friends.hi, "k2")])
        .await
        .remove(0);
    assert_eq!(
        repeat.map(|r| (r.duplicate, r.message)),
        Ok((true, stored[1].clone()))
    );
    // A new message follows the old ones; the log now holds both entry shapes.
    let new = store
        .append(vec![msg(&conv, friends.hi, "k4")])
        .await
        .remove(0)
        .unwrap();
    assert_eq!((new.duplicate, new.message.seq), (false, 4));
    let mut all = stored.to_vec();
    all.push(new.message.clone());
    assert_eq!(history_of(store, &conv).await, all);
    let list = store.conversations(friends.lo, 10).await.unwrap();
    assert_eq!(list[0].last_message.as_ref(), Some(&new.message));
    assert_eq!((list[0].read_seq, list[0].unread), (3, 1));
    let read = store.mark_read(&conv, friends.lo, 4).await.unwrap();
    assert_eq!((read.seq, read.changed), (4, true));
    // The blocked pair stays blocked, for sends (even a retry of its old key) and read marks.
    let bconv = ConversationId::direct(blocked.lo, blocked.hi);
    for key in ["b1", "b2"] {
        assert_eq!(
            store
                .append(vec![msg(&bconv, blocked.lo, key)])
                .await
                .remove(0),
            Err(StoreError::NotFriends)
        );
    }
    assert_eq!(
        store.mark_read(&bconv, blocked.lo, 1).await,
        Err(StoreError::NotFriends)
    );
    // A block after the upgrade holds (the swap writes the meta hash's flag too).
    let current = store.edge(friends).await.unwrap();
    let (now_blocked, _) = current.apply(true, crate::FriendOp::Block, T0).unwrap();
    assert!(
        store
            .swap_edge(friends, current, now_blocked)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .append(vec![msg(&conv, friends.hi, "k5")])
            .await
            .remove(0),
        Err(StoreError::NotFriends)
    );
    // Unblock again for the checks that follow.
    assert!(
        store
            .swap_edge(friends, now_blocked, current)
            .await
            .unwrap()
    );
}

fn edge_with(link: Link, hi_blocks: bool) -> Edge {
    Edge {
        link,
        hi_blocks,
        since: T0,
        ..Edge::default()
    }
}

async fn layout_of(store: &RedisStore) -> Value {
    store
        .query(::redis::cmd("GET").arg(store.keys.layout()))
        .await
        .unwrap()
}

/// Checks a migrated store: every pair reads its layout-1 edge, none of the old keys is left,
/// the decisions follow the migrated edges, and the version counters carried over (the next
/// change of a pair reaches both users' lists, whose entries are stamped with the old
/// version).
async fn check_migrated(store: &RedisStore, pairs: &[(UserPair, Edge)]) {
    assert_eq!(layout_of(store).await, Value::BulkString(b"3".to_vec()));
    for (pair, edge) in pairs {
        assert_eq!(store.edge(*pair).await.unwrap(), *edge);
        for key in [
            store.keys.legacy_edge(*pair),
            store.keys.legacy_edge_version(*pair),
        ] {
            let exists = store.query(::redis::cmd("EXISTS").arg(&key)).await;
            assert_eq!(exists, Ok(Value::Int(0)), "{key} left behind");
        }
    }
    let (friends, blocked) = (pairs[0].0, pairs[1].0);
    let send = |pair: UserPair, key: &str| {
        vec![msg(&ConversationId::direct(pair.lo, pair.hi), pair.lo, key)]
    };
    assert_eq!(
        store.append(send(friends, "m1")).await[0]
            .as_ref()
            .map(|x| x.message.seq),
        Ok(1)
    );
    assert_eq!(
        store.append(send(blocked, "m1")).await.remove(0),
        Err(StoreError::NotFriends)
    );
    let current = store.edge(friends).await.unwrap();
    let (removed, _) = current.apply(true, crate::FriendOp::Remove, T0).unwrap();
    assert!(store.swap_edge(friends, current, removed).await.unwrap());
    assert!(
        store
            .relations(friends.lo)
            .await
            .unwrap()
            .iter()
            .all(|r| r.peer != friends.hi),
        "the removal reached the list: the version counter carried over"
    );
}

/// Layout 1 (no layout key, edges under `{p:}`) is migrated when a store connects, by two
/// nodes starting together, over more edges than one SCAN page; a rerun after a crash
/// between writing the pair hashes and deleting the old keys changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_1_is_migrated_on_start() {
    let (old, server) = setup().await;
    assert_eq!(layout_of(&old).await, Value::BulkString(b"3".to_vec()));
    let pair = || UserPair::new(UserId::new_random(), UserId::new_random()).unwrap();
    let mut pairs = vec![
        (pair(), edge_with(Link::Friends, false)),
        (pair(), edge_with(Link::None, true)),
        (pair(), edge_with(Link::RequestedByLo, false)),
    ];
    for (i, (p, e)) in pairs.clone().into_iter().enumerate() {
        write_layout_1(&old, p, &e, 3 + i as u64).await;
    }
    let mut many = ::redis::pipe();
    for _ in 0..1_200 {
        let (p, e) = (pair(), edge_with(Link::Friends, false));
        many.cmd("SET")
            .arg(old.keys.legacy_edge(p))
            .arg(serde_json::to_string(&e).unwrap())
            .cmd("SET")
            .arg(old.keys.legacy_edge_version(p))
            .arg(1);
        pairs.push((p, e));
    }
    let mut con = old.con.clone();
    many.query_async::<()>(&mut con).await.unwrap();
    raw(&old, ::redis::cmd("DEL").arg(old.keys.layout())).await;

    let url = server.url();
    let (n1, n2) = tokio::join!(RedisStore::connect(&url), RedisStore::connect(&url));
    let (n1, n2) = (n1.unwrap(), n2.unwrap());
    check_migrated(&n1, &pairs).await;
    assert_eq!(n2.edge(pairs[5].0).await.unwrap(), pairs[5].1);

    // A crash after the pair hashes were written but before the old keys went: the stale
    // edge (friends, version 3) must not overwrite the newer one (removed, version 4).
    let (friends, _) = pairs[0];
    let current = n1.edge(friends).await.unwrap();
    write_layout_1(&n1, friends, &edge_with(Link::Friends, false), 3).await;
    raw(&n1, ::redis::cmd("DEL").arg(n1.keys.layout())).await;
    let again = RedisStore::connect(&url).await.unwrap();
    assert_eq!(again.edge(friends).await.unwrap(), current);
    assert_eq!(layout_of(&again).await, Value::BulkString(b"3".to_vec()));
    let version = again
        .query(
            ::redis::cmd("HGET")
                .arg(again.keys.pair(friends))
                .arg("ver"),
        )
        .await;
    assert_eq!(version, Ok(Value::BulkString(b"4".to_vec())));

    // A layout newer than this code is refused, not overwritten.
    raw(&n1, ::redis::cmd("SET").arg(n1.keys.layout()).arg(4)).await;
    assert!(matches!(
        RedisStore::connect(&url).await,
        Err(StoreError::Backend(_))
    ));
}

/// The same migration on a Redis Cluster: the old edges sit on every primary; each is
/// scanned and moved into its conversation's slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_1_is_migrated_on_a_cluster() {
    let cluster = crate::testing::RedisCluster::start(3, 0).expect("cluster");
    let old = RedisStore::connect_cluster(&cluster.urls(), RedisOptions::default())
        .await
        .unwrap();
    let pair = || UserPair::new(UserId::new_random(), UserId::new_random()).unwrap();
    let mut pairs = vec![
        (pair(), edge_with(Link::Friends, false)),
        (pair(), edge_with(Link::Friends, true)),
    ];
    for _ in 0..60 {
        pairs.push((pair(), edge_with(Link::RequestedByHi, false)));
    }
    for (p, e) in &pairs {
        write_layout_1(&old, *p, e, 2).await;
    }
    // Conversations written before layout 3 (idempotency buckets, five-field entries), in
    // slots spread over the primaries; the friend flags come from the layout-1 edges.
    let (f2, b2) = (pair(), pair());
    write_layout_1(&old, f2, &edge_with(Link::Friends, false), 2).await;
    write_layout_1(&old, b2, &edge_with(Link::Friends, true), 2).await;
    let three = [(true, "k1"), (false, "k2"), (true, "k3")];
    let stored = write_layout_2_conversation(&old, f2, &three).await;
    write_layout_2_conversation(&old, b2, &three).await;
    let mut others = Vec::new();
    for (p, _) in &pairs[2..20] {
        others.push((*p, write_layout_2_conversation(&old, *p, &three).await));
    }
    raw(&old, ::redis::cmd("DEL").arg(old.keys.layout())).await;
    let store = RedisStore::connect_cluster(&cluster.urls(), RedisOptions::default())
        .await
        .unwrap();
    check_layout_2_migrated(&store, f2, b2, &stored).await;
    for (p, stored) in &others {
        let conv = ConversationId::direct(p.lo, p.hi);
        // Pending requests: no messaging, and the old records went into the meta hash.
        let meta = hash(&store, store.keys.meta(&conv)).await;
        assert_eq!(meta.get("f"), Some(&"0".to_string()));
        assert_eq!(
            meta.get(&idem_field(T0, p.hi, "k2")),
            Some(&"2".to_string())
        );
        assert_eq!(history_of(&store, &conv).await, *stored);
    }
    check_migrated(&store, &pairs).await;
}

/// A reply as Redis sends it, as the error redis-rs makes of it.
fn server_error(reply: &str) -> RedisError {
    match ::redis::parse_redis_value(format!("-{reply}\r\n").as_bytes()).map(Value::extract_error) {
        Ok(Err(e)) | Err(e) => e,
        Ok(Ok(v)) => panic!("not an error: {v:?}"),
    }
}

#[test]
fn refusals_are_classified_and_unavailable() {
    let cases = [
        (
            "OOM command not allowed when used memory > 'maxmemory'.",
            Some(Refusal::Writes),
        ),
        (
            "READONLY You can't write against a read only replica.",
            Some(Refusal::Writes),
        ),
        (
            "MISCONF Redis is configured to save RDB snapshots",
            Some(Refusal::Writes),
        ),
        (
            "NOREPLICAS Not enough good replicas to write.",
            Some(Refusal::Writes),
        ),
        (
            "LOADING Redis is loading the dataset in memory",
            Some(Refusal::Server),
        ),
        (
            "BUSY Redis is busy running a script.",
            Some(Refusal::Server),
        ),
        ("MASTERDOWN Link with MASTER is down", Some(Refusal::Server)),
        ("CLUSTERDOWN The cluster is down", Some(Refusal::Server)),
        (
            "TRYAGAIN Multiple keys request during rehashing of slot",
            Some(Refusal::Retry),
        ),
        ("ERR unknown command", None),
        ("BUSYKEY Target key name already exists.", None),
    ];
    for (reply, expected) in cases {
        let e = server_error(reply);
        assert_eq!(refusal(&e), expected, "{reply}");
        let mapped = redis_err(e);
        assert_eq!(
            matches!(mapped, StoreError::Unavailable { .. }),
            expected.is_some(),
            "{reply}: {mapped:?}"
        );
    }
    assert!(matches!(
        redis_err(server_error("WRONGTYPE Operation against a key")),
        StoreError::Corrupt(_)
    ));
}

#[test]
fn the_write_probe_wants_room_below_maxmemory() {
    let info = |used: u64, not_counted: u64, max: u64| {
        format!(
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:x\r\nmaxmemory:{max}\r\n\
             maxmemory_policy:noeviction\r\nmem_not_counted_for_evict:{not_counted}\r\n"
        )
    };
    // No limit: always room.
    assert_eq!(memory_too_full(&info(5 << 30, 0, 0)), None);
    // 4 MB limit: the margin is a tenth (400 KB).
    assert!(memory_too_full(&info(3_900_000, 0, 4_000_000)).is_some());
    assert_eq!(memory_too_full(&info(3_500_000, 0, 4_000_000)), None);
    // Replica/AOF buffers do not count, as for Redis itself.
    assert_eq!(memory_too_full(&info(3_900_000, 500_000, 4_000_000)), None);
    // 1 GB limit: the margin is 1 MiB.
    assert!(memory_too_full(&info((1 << 30) - 1000, 0, 1 << 30)).is_some());
    assert_eq!(
        memory_too_full(&info((1 << 30) - (2 << 20), 0, 1 << 30)),
        None
    );
}

/// What a process that died right after swapping the pair's edge leaves behind: the pair hash
/// changed (edge, version + 1, friends flag), both pending tokens (`began` ms), the lists not.
async fn crash_after_swap(store: &RedisStore, pair: UserPair, new: &Edge, began: i64) {
    let op = ::uuid::Uuid::new_v4().simple().to_string();
    for (me, peer) in [(pair.lo, pair.hi), (pair.hi, pair.lo)] {
        raw(
            store,
            ::redis::cmd("HSET")
                .arg(store.keys.relations_pending(me))
                .arg(format!("{peer}:{op}"))
                .arg(began),
        )
        .await;
    }
    raw(
        store,
        ::redis::cmd("HSET")
            .arg(store.keys.pair(pair))
            .arg("edge")
            .arg(serde_json::to_string(new).unwrap())
            .arg("friends")
            .arg(friends_flag(new)),
    )
    .await;
    raw(
        store,
        ::redis::cmd("HSET")
            .arg(store.keys.meta(&ConversationId::direct(pair.lo, pair.hi)))
            .arg("f")
            .arg(friends_flag(new)),
    )
    .await;
    raw(
        store,
        ::redis::cmd("HINCRBY")
            .arg(store.keys.pair(pair))
            .arg("ver")
            .arg(1),
    )
    .await;
}

async fn pending_count(store: &RedisStore, user: UserId) -> i64 {
    let v = store
        .query(::redis::cmd("HLEN").arg(store.keys.relations_pending(user)))
        .await
        .unwrap();
    int(v, "HLEN").unwrap()
}

/// The lists as `Edge::relation` derives them from the pair's edge.
async fn assert_lists_follow_the_edge(store: &RedisStore, pair: UserPair) {
    let edge = store.edge(pair).await.unwrap();
    for (me, peer, me_is_lo) in [(pair.lo, pair.hi, true), (pair.hi, pair.lo, false)] {
        let list = store.relations(me).await.unwrap();
        let found = list.iter().find(|e| e.peer == peer).map(|e| e.relation);
        let expected = match edge.relation(me_is_lo) {
            Relation::None => None,
            r => Some(r),
        };
        assert_eq!(found, expected, "{me}'s list vs the edge {edge:?}");
    }
}

async fn crash_is_repaired_by_a_read(store: &RedisStore) {
    let (a, b) = (UserId::new_random(), UserId::new_random());
    let pair = UserPair::new(a, b).unwrap();
    crate::testing::befriend(store, a, b).await;
    assert_eq!(
        pending_count(store, a).await,
        0,
        "a completed change leaves no token"
    );
    let friends = store.edge(pair).await.unwrap();
    let blocked = Edge {
        lo_blocks: true,
        ..friends
    };
    // A fresh token: maybe an operation still in flight; the list is left as it is.
    crash_after_swap(store, pair, &blocked, now_ms()).await;
    assert_eq!(
        store.relations(pair.lo).await.unwrap()[0].relation,
        Relation::Friends
    );
    assert_eq!(pending_count(store, pair.lo).await, 1);
    // Past the grace period: the operation is dead; a read re-derives both sides' entries.
    let blocked_twice = Edge {
        hi_blocks: true,
        ..blocked
    };
    crash_after_swap(store, pair, &blocked_twice, now_ms() - 2 * PENDING_GRACE_MS).await;
    // The online announcements' read (friend ids) repairs too: hi no longer counts lo as a
    // friend (it would have told a blocked user that hi came online).
    assert_eq!(
        store.friend_ids(pair.hi).await.unwrap(),
        Vec::<UserId>::new()
    );
    assert_eq!(
        store.relations(pair.hi).await.unwrap()[0].relation,
        Relation::Blocked
    );
    assert_eq!(
        store.relations(pair.lo).await.unwrap()[0].relation,
        Relation::Blocked
    );
    // The stale tokens are gone; the fresh one stays until it is stale.
    assert_eq!(pending_count(store, pair.lo).await, 1);
    assert_eq!(pending_count(store, pair.hi).await, 1);
    assert_lists_follow_the_edge(store, pair).await;
    // And the next real change clears nothing it should not and keeps the lists right.
    assert!(
        store
            .swap_edge(pair, blocked_twice, Edge::default())
            .await
            .unwrap()
    );
    assert_lists_follow_the_edge(store, pair).await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

use super::relations::PENDING_GRACE_MS;

#[tokio::test]
async fn a_crash_between_the_swap_and_the_lists_is_repaired_by_a_read() {
    let (store, _server) = setup().await;
    crash_is_repaired_by_a_read(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_swap_and_the_lists_is_repaired_on_a_cluster() {
    let cluster = crate::testing::RedisCluster::start(3, 0).expect("cluster");
    let store = RedisStore::connect_cluster(&cluster.urls(), RedisOptions::default())
        .await
        .unwrap();
    crash_is_repaired_by_a_read(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_from_two_stores_keep_the_lists_right() {
    let (one, server) = setup().await;
    let two = RedisStore::connect(&server.url()).await.unwrap();
    let pair = UserPair::new(UserId::new_random(), UserId::new_random()).unwrap();
    let run = |store: RedisStore, seed: u64| async move {
        let links = [Link::RequestedByLo, Link::RequestedByHi, Link::Friends];
        for i in 0..40u64 {
            let current = store.edge(pair).await.unwrap();
            let k = (i * 7 + seed) as usize;
            let new = Edge {
                link: links[k % 3],
                lo_blocks: k.is_multiple_of(5),
                hi_blocks: k % 4 == 1,
                since: Timestamp(T0.0 + i as i64),
                ..current
            };
            store.swap_edge(pair, current, new).await.unwrap();
        }
    };
    let (x, y) = tokio::join!(
        tokio::spawn(run(one.clone(), 1)),
        tokio::spawn(run(two.clone(), 2))
    );
    x.unwrap();
    y.unwrap();
    assert_lists_follow_the_edge(&one, pair).await;
    assert_eq!(pending_count(&one, pair.lo).await, 0);
    assert_eq!(pending_count(&one, pair.hi).await, 0);
}

/// Who sent what in a batch test: results reduced to (seq, duplicate), errors kept.
fn seqs(results: Vec<StoreResult<Appended>>) -> Vec<StoreResult<(u64, bool)>> {
    results
        .into_iter()
        .map(|r| r.map(|a| (a.message.seq, a.duplicate)))
        .collect()
}

/// The conversations listed for `user`, newest first.
async fn listed(store: &RedisStore, user: UserId) -> Vec<ConversationId> {
    let list = store.conversations(user, 100).await.unwrap();
    list.into_iter().map(|s| s.conversation).collect()
}

/// Issue 13 (session 8): on one node a batch is one script call carrying messages of several
/// conversations, and each message is its own step: a message whose friend check fails gets
/// `NotFriends` and writes nothing (no sequence, no record, no list entry, no read mark)
/// while the others commit; the same idempotency key twice in the call stores once and the
/// second answers with the first's sequence; a conversation's messages keep their order.
#[tokio::test]
async fn one_script_call_carries_several_conversations_and_refuses_per_message() {
    let (store, _server) = setup().await;
    let (a, b, c, d) = (
        UserId::new_random(),
        UserId::new_random(),
        UserId::new_random(),
        UserId::new_random(),
    );
    crate::testing::befriend(&store, a, b).await;
    crate::testing::befriend(&store, a, d).await;
    let (ab, ac, ad) = (
        ConversationId::direct(a, b),
        ConversationId::direct(a, c),
        ConversationId::direct(a, d),
    );
    let before = evalsha_calls(&store).await;
    let results = store
        .append(vec![
            msg(&ab, a, "k1"),
            msg(&ac, a, "k1"),
            msg(&ad, d, "k1"),
            msg(&ab, a, "k1"),
            msg(&ab, b, "k1"),
            msg(&ac, c, "k2"),
            msg(&ad, a, "k2"),
        ])
        .await;
    assert_eq!(
        evalsha_calls(&store).await - before,
        1,
        "one script call for the batch"
    );
    assert_eq!(
        seqs(results),
        vec![
            Ok((1, false)),
            Err(StoreError::NotFriends),
            Ok((1, false)),
            Ok((1, true)),
            Ok((2, false)),
            Err(StoreError::NotFriends),
            Ok((2, false)),
        ]
    );
    let senders: Vec<_> = history_of(&store, &ab)
        .await
        .iter()
        .map(|m| m.sender)
        .collect();
    assert_eq!(senders, vec![a, b], "in the batch's order, stored once");
    assert_eq!(store.last_seq(&ad).await.unwrap(), 2);
    // The refused conversation: nothing at all under its keys, in nobody's list.
    assert_eq!(store.last_seq(&ac).await.unwrap(), 0);
    assert!(hash(&store, store.keys.meta(&ac)).await.is_empty());
    assert!(!listed(&store, a).await.contains(&ac));
    assert!(listed(&store, c).await.is_empty());
    // The stored ones moved both members' lists, newest first.
    assert_eq!(listed(&store, a).await, vec![ad.clone(), ab.clone()]);
    assert_eq!(listed(&store, b).await, vec![ab.clone()]);
    // Once friends, the refused keys are fresh: they were never recorded.
    crate::testing::befriend(&store, a, c).await;
    let again = store
        .append(vec![msg(&ac, a, "k1"), msg(&ac, c, "k2")])
        .await;
    assert_eq!(seqs(again), vec![Ok((1, false)), Ok((2, false))]);
}

/// Issue 13 (session 8): on a Cluster a batch spanning every primary is one script call per
/// conversation (a script touches one slot), all sent together; each message still gets its
/// own result in the batch's order, a refused one writes nothing, a repeat inside the batch is
/// a duplicate, and the lists (other slots) move for the accepted messages only.
#[tokio::test]
async fn a_batch_across_slots_keeps_every_result_on_a_cluster() {
    let cluster = crate::testing::RedisCluster::start(3, 0).expect("cluster");
    let store = RedisStore::connect_cluster(&cluster.urls(), RedisOptions::default())
        .await
        .unwrap();
    // Conversations until each third of the slot space (one primary each) has two.
    let mut convs = Vec::new();
    let mut per_third = [0; 3];
    while per_third.iter().any(|n| *n < 2) {
        let (a, b) = (UserId::new_random(), UserId::new_random());
        let c = ConversationId::direct(a, b);
        let slot = match store
            .query(
                ::redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(store.keys.meta(&c)),
            )
            .await
        {
            Ok(Value::Int(slot)) => slot,
            other => panic!("CLUSTER KEYSLOT answered {other:?}"),
        };
        let third = (slot as usize * 3 / 16384).min(2);
        if per_third[third] < 2 {
            per_third[third] += 1;
            // One pair per third stays strangers.
            let friends = per_third[third] == 1;
            if friends {
                crate::testing::befriend(&store, a, b).await;
            }
            convs.push((c, a, b, friends));
        }
    }
    let mut batch = Vec::new();
    for (c, a, b, _) in &convs {
        batch.extend([msg(c, *a, "k1"), msg(c, *b, "k2"), msg(c, *a, "k1")]);
    }
    let results = seqs(store.append(batch).await);
    assert_eq!(results.len(), 3 * convs.len());
    for ((c, a, b, friends), got) in convs.iter().zip(results.chunks(3)) {
        if *friends {
            assert_eq!(got, [Ok((1, false)), Ok((2, false)), Ok((1, true))], "{c}");
            assert_eq!(store.last_seq(c).await.unwrap(), 2);
            assert_eq!(listed(&store, *a).await, vec![c.clone()]);
            assert_eq!(listed(&store, *b).await, vec![c.clone()]);
        } else {
            assert!(got.iter().all(|r| r == &Err(StoreError::NotFriends)), "{c}");
            assert_eq!(store.last_seq(c).await.unwrap(), 0);
            assert!(hash(&store, store.keys.meta(c)).await.is_empty());
            assert!(listed(&store, *a).await.is_empty());
            assert!(listed(&store, *b).await.is_empty());
        }
    }
}

/// The append script's flat reply (one integer per message, a repeat's entry after its
/// `-seq`): a reply that does not spell exactly one answer per message, or spells one with
/// a non-integer, is `Corrupt` for the whole call, never a panic or a shifted answer.
#[test]
fn a_malformed_append_reply_is_corrupt() {
    let c = ConversationId::direct(UserId::new_random(), UserId::new_random());
    let message = |k: usize| {
        (
            k,
            unsequenced(MessageId::new_v7(), msg(&c, UserId::new_random(), "k")),
        )
    };
    let group = vec![message(0), message(1)];
    let ok = decode_appends(&group, vec![Value::Int(3), Value::Int(0)]).unwrap();
    assert!(matches!(
        ok[..],
        [AppendAnswer::New(3), AppendAnswer::NotFriends]
    ));
    for bad in [
        vec![Value::Int(3)],
        vec![Value::Int(3), Value::Int(4), Value::Int(5)],
        vec![Value::Int(3), Value::Int(-2)],
        vec![Value::Int(-2), Value::Nil, Value::Int(1), Value::Int(1)],
        vec![Value::Int(3), Value::SimpleString("x".into())],
    ] {
        assert!(
            is_corrupt(decode_appends(&group, bad.clone())),
            "{bad:?} was accepted"
        );
    }
    let repeat = decode_appends(&group, vec![Value::Int(-2), Value::Nil, Value::Int(1)]).unwrap();
    let [first, _] = <[AppendAnswer; 2]>::try_from(repeat).ok().unwrap();
    assert!(
        is_corrupt(first.decode(group[0].1.clone())),
        "a repeat of a missing entry"
    );
}
