//! The full product flow over real WebSockets, run against each store.

mod common;

use common::*;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// Registration, friending, live messaging, refusal of a non-friend, resume after a
/// disconnect, a second device, history pages, unread counts and read receipts.
async fn full_flow(addr: SocketAddr) {
    let alice = register(addr, "alice").await;
    let bob = register(addr, "Bob").await;
    let carol = register(addr, "carol").await;
    let conv = dm(&alice, &bob);

    let (mut a1, ok) = Client::login(addr, &alice).await;
    assert_eq!(ok["user"]["username"], "alice");
    assert_eq!(ok["limits"]["max_body_bytes"], 4096);
    let (mut b1, _) = Client::login(addr, &bob).await;

    // bob asks alice by username (case-insensitive); alice sees it live and accepts.
    let r = b1
        .call(json!({"type": "friend_request", "username": "ALICE"}))
        .await;
    assert_eq!(r["type"], "friend_ok", "{r}");
    assert_eq!(r["relation"], "request_sent");
    let ev = a1.expect("friend").await;
    assert_eq!(ev["relation"], "request_received");
    assert_eq!(ev["reason"], "requested");
    assert_eq!(ev["user"]["id"], bob.id.as_str());
    let r = a1
        .call(json!({"type": "friend_accept", "user_id": bob.id}))
        .await;
    assert_eq!(r["relation"], "friends", "{r}");
    let ev = b1.expect("friend").await;
    assert_eq!(
        (&ev["relation"], &ev["reason"]),
        (&json!("friends"), &json!("accepted"))
    );

    // Friends list with presence.
    let list = a1.call(json!({"type": "friends_list"})).await;
    let entry = &list["friends"][0];
    assert_eq!(entry["user"]["id"], bob.id.as_str());
    assert_eq!(entry["relation"], "friends");
    assert_eq!(entry["online"], true);

    // Live messages both ways.
    let ack = a1.send_message(&conv, "hi bob", "a-1").await;
    assert_eq!(ack["message"]["seq"], 1);
    assert_eq!(ack["duplicate"], false);
    let m = b1.expect("message").await;
    assert_eq!(m["message"]["body"], "hi bob");
    assert_eq!(m["message"]["seq"], 1);
    let ack = b1.send_message(&conv, "hi alice", "b-1").await;
    assert_eq!(ack["message"]["seq"], 2);
    assert_eq!(a1.expect("message").await["message"]["body"], "hi alice");

    // carol is not a friend: refused, nothing stored.
    let (mut c1, _) = Client::login(addr, &carol).await;
    let carol_alice = dm(&carol, &alice);
    let r = c1
        .call(json!({"type": "send", "conversation": carol_alice, "body": "hey", "idempotency_key": "c-1"}))
        .await;
    assert_eq!(r["type"], "error");
    assert_eq!(r["code"], "not_friends");
    let r = c1.call(json!({"type": "conversations"})).await;
    assert_eq!(r["conversations"], json!([]));
    let r = a1.call(json!({"type": "conversations"})).await;
    assert_eq!(r["conversations"].as_array().map(Vec::len), Some(1));
    c1.close().await;

    // alice's second device.
    let (mut a2, _) = Client::login(addr, &alice).await;

    // bob drops; alice sends three messages meanwhile.
    b1.close().await;
    let p = a1.expect("presence").await;
    assert_eq!((&p["user"], &p["online"]), (&json!(bob.id), &json!(false)));
    assert!(p["last_seen"].as_i64().is_some());
    for (i, body) in ["one", "two", "three"].iter().enumerate() {
        let ack = a1.send_message(&conv, body, &format!("a-{}", i + 2)).await;
        assert_eq!(ack["message"]["seq"], 3 + i as u64);
        // The second device sees its own user's messages as events.
        let m = a2.expect("message").await;
        assert_eq!(m["message"]["body"], *body);
        assert_eq!(m["message"]["sender"], alice.id.as_str());
    }
    a1.expect_silence(100).await;

    // bob resumes from seq 2: exactly 3, 4, 5, then synced, then live.
    let mut b2 = Client::connect(addr, "bob-2").await;
    let ok = b2
        .auth(&bob.token, Some(json!({"cursors": {conv.clone(): 2}})))
        .await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    for (seq, body) in [(3, "one"), (4, "two"), (5, "three")] {
        let m = b2.expect("message").await;
        assert_eq!(m.get("re"), None, "a replayed message is an event: {m}");
        assert_eq!(
            (m["message"]["seq"].as_u64(), m["message"]["body"].as_str()),
            (Some(seq), Some(body))
        );
    }
    let synced = b2.expect("synced").await;
    // Every request is answered exactly once: `auth_ok` answered the `auth`; `synced` is an
    // event (no `re`), like the replayed messages before it.
    assert_eq!(synced.get("re"), None, "synced is an event: {synced}");
    assert_eq!(synced["truncated"], json!([]));
    assert_eq!(synced["friends"][0]["user"]["id"], alice.id.as_str());
    assert_eq!(synced["conversations"][0]["last_seq"], 5);
    let ack = a1.send_message(&conv, "live again", "a-5").await;
    assert_eq!(ack["message"]["seq"], 6);
    let m = b2.expect("message").await;
    assert_eq!(m["message"]["seq"], 6);
    a2.expect("message").await;
    b2.expect_silence(200).await;

    // A retry with the same key: same message; its event is published again (the first
    // publication may have been lost with the ack) and clients de-duplicate it by `seq`.
    let again = a1.send_message(&conv, "live again", "a-5").await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["message"]["id"], ack["message"]["id"]);
    assert_eq!(b2.expect("message").await["message"]["seq"], 6);
    assert_eq!(a2.expect("message").await["message"]["seq"], 6);
    b2.expect_silence(150).await;

    // History pages (newest first page, then scroll back, then forward).
    let h = b2.history(&conv, json!({"limit": 2})).await;
    assert_eq!(
        (seqs(&h), h["has_more"].as_bool()),
        (vec![5, 6], Some(true))
    );
    let h = b2.history(&conv, json!({"limit": 2, "before": 5})).await;
    assert_eq!(seqs(&h), vec![3, 4]);
    let h = b2.history(&conv, json!({"limit": 10, "after": 4})).await;
    assert_eq!(
        (seqs(&h), h["has_more"].as_bool()),
        (vec![5, 6], Some(false))
    );

    // Unread: bob's mark is at his own message (2), so 4 unread.
    let list = b2.call(json!({"type": "conversations"})).await;
    let row = &list["conversations"][0];
    assert_eq!(
        (row["unread"].as_u64(), row["last_seq"].as_u64()),
        (Some(4), Some(6))
    );
    assert_eq!(row["peer"], alice.id.as_str());
    assert_eq!(row["last_message"]["body"], "live again");

    // mark_read notifies both alice devices; repeating it changes nothing and notifies nobody.
    let r = b2
        .call(json!({"type": "mark_read", "conversation": conv, "seq": 6}))
        .await;
    assert_eq!(
        (r["type"].as_str(), r["seq"].as_u64()),
        (Some("read_ok"), Some(6))
    );
    for a in [&mut a1, &mut a2] {
        let ev = a.expect("read").await;
        assert_eq!((&ev["user"], &ev["seq"]), (&json!(bob.id), &json!(6)));
    }
    let r = b2
        .call(json!({"type": "mark_read", "conversation": conv, "seq": 4}))
        .await;
    assert_eq!(r["seq"], 6);
    a1.expect_silence(150).await;
    let list = b2.call(json!({"type": "conversations"})).await;
    assert_eq!(list["conversations"][0]["unread"], 0);
    let list = a1.call(json!({"type": "conversations"})).await;
    assert_eq!(list["conversations"][0]["peer_read_seq"], 6);

    for c in [a1, a2, b2] {
        c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_memory() {
    let server = TestServer::memory().await;
    full_flow(server.addr).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = zajel_core::EmbeddedStore::open(dir.path()).expect("open embedded store");
    let server = TestServer::start(Arc::new(store), test_config()).await;
    full_flow(server.addr).await;
    server.stop().await;
}

/// The embedded store's commits are a metric (operators compare them with messages stored to
/// see how well group commit groups); a store without commits of its own has no such series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_commits_are_a_metric() {
    let commits = |text: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix("zajel_store_commits_total "))
            .map(|v| v.trim().parse().expect("a counter value"))
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = zajel_core::EmbeddedStore::open(dir.path()).expect("open embedded store");
    let server = TestServer::start(Arc::new(store), test_config()).await;
    let mut p = alice_and_bob(server.addr).await;
    let before = commits(&http(server.addr, "GET", "/metrics", None, &[]).await.body)
        .expect("the embedded store counts commits");
    p.a.send_message(&p.conv, "hello", "k1").await;
    let after = commits(&http(server.addr, "GET", "/metrics", None, &[]).await.body)
        .expect("the embedded store counts commits");
    assert!(
        after > before,
        "a stored message is committed: {before} -> {after}"
    );
    server.stop_with([p.a, p.b]).await;

    let server = TestServer::memory().await;
    let text = http(server.addr, "GET", "/metrics", None, &[]).await.body;
    assert_eq!(commits(&text), None, "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_redis() {
    let redis = zajel_core::testing::RedisServer::start().expect("redis-server");
    let store = zajel_core::RedisStore::connect(&redis.url())
        .await
        .expect("connect redis");
    let server = TestServer::start(Arc::new(store), test_config()).await;
    full_flow(server.addr).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_friend_only() {
    let server = TestServer::memory().await;
    let addr = server.addr;
    let (alice, bob, carol) = (
        register(addr, "alice").await,
        register(addr, "bob").await,
        register(addr, "carol").await,
    );
    let (mut a1, _) = Client::login(addr, &alice).await;
    let (mut a2, _) = Client::login(addr, &alice).await;
    let (mut b1, _) = Client::login(addr, &bob).await;
    let (mut c1, _) = Client::login(addr, &carol).await;
    befriend(&mut a1, &alice, &mut b1, &bob).await;
    // alice's other device saw both steps.
    assert_eq!(a2.expect("friend").await["reason"], "requested");
    assert_eq!(a2.expect("friend").await["reason"], "accepted");
    let conv = dm(&alice, &bob);
    a1.send_raw(&json!({"type": "typing", "conversation": conv, "active": true}).to_string())
        .await;
    let t = b1.expect("typing").await;
    assert_eq!((&t["user"], &t["active"]), (&json!(alice.id), &json!(true)));
    a1.expect_silence(100).await;
    a2.expect_silence(50).await;
    // A non-friend's typing is refused and relayed to nobody.
    let r = c1
        .call(json!({"type": "typing", "conversation": dm(&carol, &alice), "active": true}))
        .await;
    assert_eq!(r["code"], "not_friends");
    a1.expect_silence(100).await;
    server.stop_with([a1, a2, b1, c1]).await;
}

/// A fresh device resumes "from now" (`unlisted: skip`): nothing old is replayed, `synced`
/// gives each conversation's end, and live messages after it arrive exactly once. A listed
/// cursor in the same `auth` is still replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_device_resumes_from_now() {
    let server = TestServer::memory().await;
    let addr = server.addr;
    let alice = register(addr, "alice").await;
    let bob = register(addr, "bob").await;
    let carol = register(addr, "carol").await;
    let (mut a1, _) = Client::login(addr, &alice).await;
    let (mut b1, _) = Client::login(addr, &bob).await;
    let (mut c1, _) = Client::login(addr, &carol).await;
    befriend(&mut a1, &alice, &mut b1, &bob).await;
    befriend(&mut a1, &alice, &mut c1, &carol).await;
    let ab = dm(&alice, &bob);
    let ac = dm(&alice, &carol);
    for i in 1..=3 {
        b1.send_message(&ab, &format!("old {i}"), &format!("b-{i}"))
            .await;
        c1.send_message(&ac, &format!("old {i}"), &format!("c-{i}"))
            .await;
    }

    // Alice's new device: a cursor for ac (at 1), nothing for ab, and "from now" for the rest.
    let mut a2 = Client::connect(addr, "alice-new").await;
    let ok = a2
        .auth(
            &alice.token,
            Some(json!({"cursors": {ac.clone(): 1}, "unlisted": "skip"})),
        )
        .await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    for seq in [2, 3] {
        let m = a2.expect("message").await;
        assert_eq!(
            (
                m["message"]["conversation"].as_str(),
                m["message"]["seq"].as_u64()
            ),
            (Some(ac.as_str()), Some(seq))
        );
    }
    let synced = a2.expect("synced").await;
    let ab_row = synced["conversations"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["conversation"] == ab.as_str()))
        .cloned()
        .expect("ab listed in synced");
    assert_eq!(
        (ab_row["last_seq"].as_u64(), ab_row["unread"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(ab_row["last_message"]["body"], "old 3");

    // Live from here: exactly the new message, nothing old.
    b1.send_message(&ab, "new", "b-4").await;
    let m = a2.expect("message").await;
    assert_eq!(
        (m["message"]["seq"].as_u64(), m["message"]["body"].as_str()),
        (Some(4), Some("new"))
    );
    a2.expect_silence(150).await;
    server.stop_with([a1, b1, c1, a2]).await;
}

/// A presence announcement whose friend list the store cannot read is retried until it can:
/// Redis refuses `HGETALL` (the friend list's read) when alice goes offline; once it answers
/// again, bob learns she went offline, with no one asking. Before, the failure was only
/// logged and bob saw alice online until his next `friends_list` or reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_waits_for_a_friend_list_the_store_refused() {
    let redis = zajel_core::testing::RedisServer::start().expect("redis-server");
    let store = zajel_core::RedisStore::connect(&redis.url())
        .await
        .expect("connect redis");
    let server = TestServer::start(Arc::new(store), test_config()).await;
    let mut p = alice_and_bob(server.addr).await;
    // The friendship's presence events, then quiet.
    p.b.expect_silence(200).await;

    redis_acl(redis.port(), "-hgetall");
    p.a.close().await;
    wait_for_acl_refusal(redis.port(), "hgetall").await;
    redis_acl(redis.port(), "+hgetall");
    let presence = p.b.expect("presence").await;
    assert_eq!(presence["user"], p.alice.id.as_str(), "{presence}");
    assert_eq!(presence["online"], false, "{presence}");
    assert!(presence["last_seen"].is_u64(), "{presence}");
    server.stop_with([p.b]).await;
}
