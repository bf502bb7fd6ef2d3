//! System messages (`Engine::send_system`) end to end: the embedded store, real WebSockets.
//! The app's notice reaches every live device of both members marked as a system message, is
//! in history and in the replay after a reconnect, counts as unread, and repeats store once;
//! no client can write one or act on the reserved system id; bad calls change nothing.

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use zajel_core::{ErrorCode, MessageKind, Relation, UserId};
use zajel_server::events::EngineEvent;

const SYSTEM: &str = "00000000-0000-0000-0000-000000000000";

fn uid(a: &Account) -> UserId {
    a.id.parse().expect("uuid")
}

/// Asserts `m` (a message object from the wire) is the system notice `body` at `seq`.
fn assert_system(m: &Value, body: &str, seq: u64) {
    assert_eq!(
        (&m["sender"], &m["kind"], &m["body"], &m["seq"]),
        (&json!(SYSTEM), &json!("system"), &json!(body), &json!(seq)),
        "{m}"
    );
}

/// The `conversations` row of `conv` as `client` sees it.
async fn summary(client: &mut Client, conv: &str) -> Value {
    let list = client.call(json!({"type": "conversations"})).await;
    list["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .find(|s| s["conversation"] == conv)
        .cloned()
        .unwrap_or_else(|| panic!("{conv} not listed: {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_notice_reaches_both_members_history_and_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(zajel_core::EmbeddedStore::open(dir.path()).expect("open"));
    let server = TestServer::start(store, test_config()).await;
    let (addr, engine) = (server.addr, server.engine.clone());
    let alice = register(addr, "alice").await;
    let bob = register(addr, "bob").await;
    let (mut a, _) = Client::login(addr, &alice).await;
    let (mut a2, _) = Client::login(addr, &alice).await;
    let (mut b, _) = Client::login(addr, &bob).await;
    befriend(&mut a, &alice, &mut b, &bob).await;
    a2.expect("friend").await; // alice's own request, from her other device
    a2.expect("friend").await; // bob's acceptance
    let conv = dm(&alice, &bob);
    let mut events = engine.subscribe();

    // Every live device of both members gets it, marked; nobody is skipped.
    let notice = engine
        .send_system(
            uid(&alice),
            uid(&bob),
            "alice and bob are now friends",
            "friends",
        )
        .await
        .expect("send_system");
    assert!(!notice.duplicate);
    assert_eq!(
        (notice.message.seq, notice.message.kind()),
        (1, MessageKind::System)
    );
    for c in [&mut a, &mut a2, &mut b] {
        let m = c.expect("message").await;
        assert_system(&m["message"], "alice and bob are now friends", 1);
        assert_eq!(m["message"]["id"], json!(notice.message.id));
    }
    match events.recv().await.expect("event") {
        EngineEvent::MessageStored { message } => assert!(message.is_system()),
        other => panic!("expected message_stored, got {other:?}"),
    }

    // A repeat (the app retrying after a crash) stores nothing and reports nothing new.
    let again = engine
        .send_system(uid(&bob), uid(&alice), "edited", "friends")
        .await
        .expect("repeat");
    assert_eq!((again.duplicate, &again.message), (true, &notice.message));
    assert!(events.try_recv().is_err(), "a repeat is not a new message");
    for c in [&mut a, &mut a2, &mut b] {
        // Published again (the first publication may have been lost): same seq, clients
        // de-duplicate by it.
        let m = c.expect("message").await;
        assert_eq!(m["message"]["seq"], 1);
    }

    // Unread for both members; nobody's read mark moved. Marking it read works as usual.
    for c in [&mut a, &mut b] {
        let s = summary(c, &conv).await;
        assert_eq!(
            (&s["unread"], &s["read_seq"], &s["peer_read_seq"]),
            (&json!(1), &json!(0), &json!(0)),
            "{s}"
        );
        assert_system(&s["last_message"], "alice and bob are now friends", 1);
    }
    let read = b
        .call(json!({"type": "mark_read", "conversation": conv, "seq": 1}))
        .await;
    assert_eq!(
        (&read["type"], &read["seq"]),
        (&json!("read_ok"), &json!(1))
    );
    a.expect("read").await;
    a2.expect("read").await;

    // A person's messages around it carry no kind; history keeps the marker.
    let sent = a.send_message(&conv, "hi bob", "k1").await;
    assert!(sent["message"].get("kind").is_none(), "{sent}");
    assert!(b.expect("message").await["message"].get("kind").is_none());
    a2.expect("message").await;
    let history = b.history(&conv, json!({})).await;
    assert_eq!(seqs(&history), vec![1, 2]);
    assert_system(&history["messages"][0], "alice and bob are now friends", 1);
    assert_eq!(history["messages"][1]["sender"], json!(alice.id));

    // Bob goes away; a notice while he is offline is replayed when he resumes, before
    // `synced`, exactly once.
    b.close().await;
    let offline = engine
        .send_system(uid(&alice), uid(&bob), "your order shipped", "order-7")
        .await
        .expect("while offline");
    assert_eq!(offline.message.seq, 3);
    a.expect("message").await;
    a2.expect("message").await;
    let mut b = Client::connect(addr, "bob").await;
    let ok = b
        .auth(&bob.token, Some(json!({"cursors": {conv.clone(): 2}})))
        .await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    let replayed = b.expect("message").await;
    assert_system(&replayed["message"], "your order shipped", 3);
    let synced = b.expect("synced").await;
    assert_eq!(synced["conversations"][0]["unread"], 2, "{synced}");
    assert_system(
        &synced["conversations"][0]["last_message"],
        "your order shipped",
        3,
    );
    b.expect_silence(200).await;
    server.stop_with([a, a2, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_forge_or_reach_the_system() {
    let server = TestServer::memory().await;
    let addr = server.addr;
    let alice = register(addr, "alice").await;
    let bob = register(addr, "bob").await;
    let (mut a, _) = Client::login(addr, &alice).await;
    let (mut b, _) = Client::login(addr, &bob).await;
    befriend(&mut a, &alice, &mut b, &bob).await;
    let conv = dm(&alice, &bob);

    // `send` names no sender and no kind: extra fields are ignored, the message is alice's.
    let sent = a
        .call(
            json!({"type": "send", "conversation": conv, "body": "I am the system",
            "idempotency_key": "forge", "kind": "system", "sender": SYSTEM}),
        )
        .await;
    assert_eq!(sent["type"], "sent", "{sent}");
    assert_eq!(sent["message"]["sender"], json!(alice.id));
    assert!(sent["message"].get("kind").is_none(), "{sent}");
    let seen = b.expect("message").await;
    assert_eq!(seen["message"]["sender"], json!(alice.id));
    assert!(seen["message"].get("kind").is_none(), "{seen}");

    // The reserved id is no account: nothing a client aims at it succeeds.
    let with_system = zajel_core::ConversationId::direct(UserId::SYSTEM, uid(&alice)).to_string();
    for (frame, code) in [
        (
            json!({"type": "friend_accept", "user_id": SYSTEM}),
            "user_not_found",
        ),
        (
            json!({"type": "block", "user_id": SYSTEM}),
            "user_not_found",
        ),
        (
            json!({"type": "send", "conversation": with_system, "body": "x", "idempotency_key": "s"}),
            "not_friends",
        ),
    ] {
        let answer = a.call(frame.clone()).await;
        assert_eq!(
            (&answer["type"], &answer["code"]),
            (&json!("error"), &json!(code)),
            "{frame} -> {answer}"
        );
    }
    // `mark_read` names no user either: a `user` field is ignored, the mark is bob's own.
    let read = b
        .call(json!({"type": "mark_read", "conversation": conv, "seq": 1, "user": SYSTEM}))
        .await;
    assert_eq!(
        (&read["type"], &read["seq"]),
        (&json!("read_ok"), &json!(1))
    );
    let told = a.expect("read").await;
    assert_eq!(told["user"], json!(bob.id), "{told}");
    // No session can be for it.
    let mut intruder = Client::connect(addr, "intruder").await;
    let unauth = intruder
        .auth(&format!("zs1.{SYSTEM}.{}", "A".repeat(43)), None)
        .await;
    assert_eq!(unauth["code"], "unauthenticated", "{unauth}");
    assert_eq!(intruder.expect_close().await.0, 4001);
    server.stop_with([a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_decides_the_relation_and_bad_calls_change_nothing() {
    let server = TestServer::memory().await;
    let (addr, engine) = (server.addr, server.engine.clone());
    let alice = register(addr, "alice").await;
    let carol = register(addr, "carol").await;
    let (mut a, _) = Client::login(addr, &alice).await;
    let (mut c, _) = Client::login(addr, &carol).await;
    let conv = dm(&alice, &carol);

    // Strangers: no friendship needed (a marketplace "you matched" notice).
    let matched = engine
        .send_system(uid(&alice), uid(&carol), "you matched", "match")
        .await
        .expect("strangers");
    assert_eq!(matched.message.seq, 1);
    assert_system(&a.expect("message").await["message"], "you matched", 1);
    assert_system(&c.expect("message").await["message"], "you matched", 1);

    // A block does not stop it either: the app asks `relation` and decides.
    let blocked = c.call(json!({"type": "block", "user_id": alice.id})).await;
    assert_eq!(blocked["relation"], "blocked", "{blocked}");
    assert_eq!(
        engine
            .relation(uid(&carol), uid(&alice))
            .await
            .expect("relation"),
        Relation::Blocked
    );
    assert_eq!(
        engine
            .relation(uid(&alice), uid(&carol))
            .await
            .expect("relation"),
        Relation::None,
        "the blocked side sees none"
    );
    engine
        .send_system(
            uid(&alice),
            uid(&carol),
            "the app chose to post this",
            "post-block",
        )
        .await
        .expect("the app decides");
    a.expect("message").await;
    c.expect("message").await;

    // Bad calls: a typed error each, nothing stored, nobody told.
    let ghost = UserId::new_random();
    let cases: Vec<(UserId, UserId, String, &str, ErrorCode)> = vec![
        (uid(&alice), ghost, "x".into(), "k", ErrorCode::UserNotFound),
        (
            uid(&alice),
            uid(&alice),
            "x".into(),
            "k",
            ErrorCode::ConversationNotFound,
        ),
        (
            UserId::SYSTEM,
            uid(&alice),
            "x".into(),
            "k",
            ErrorCode::ConversationNotFound,
        ),
        (
            uid(&alice),
            uid(&carol),
            "  ".into(),
            "k",
            ErrorCode::EmptyBody,
        ),
        (
            uid(&alice),
            uid(&carol),
            "x".repeat(70_000),
            "k",
            ErrorCode::BodyTooLong,
        ),
        (
            uid(&alice),
            uid(&carol),
            "x".into(),
            "",
            ErrorCode::InvalidIdempotencyKey,
        ),
        (
            uid(&alice),
            uid(&carol),
            "x".into(),
            "é",
            ErrorCode::InvalidIdempotencyKey,
        ),
    ];
    for (x, y, body, key, code) in cases {
        let err = engine
            .send_system(x, y, &body, key)
            .await
            .expect_err("refused");
        assert_eq!(err.code, code, "{x} {y} {key:?}: {err:?}");
    }
    // Nor can the app send *as* the system through the person's path.
    let err = engine
        .send_as(UserId::SYSTEM, uid(&alice), "forged", "f")
        .await
        .expect_err("refused");
    assert_eq!(err.code, ErrorCode::ConversationNotFound);
    let history = a.history(&conv, json!({})).await;
    assert_eq!(seqs(&history), vec![1, 2]);
    a.expect_silence(200).await;
    c.expect_silence(0).await;
    server.stop_with([a, c]).await;
}

/// A server posting `template` as its friends notice, with alice and bob signed in.
async fn notice_server(template: String) -> (TestServer, [(Account, Client); 2]) {
    let config = zajel_server::ServerConfig {
        friends_notice: Some(template),
        ..test_config()
    };
    let server = TestServer::start(Arc::new(zajel_core::MemoryStore::new()), config).await;
    let alice = register(server.addr, "alice").await;
    let bob = register(server.addr, "bob").await;
    let (a, _) = Client::login(server.addr, &alice).await;
    let (b, _) = Client::login(server.addr, &bob).await;
    (server, [(alice, a), (bob, b)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_notice_marks_each_new_friendship() {
    let (server, [(alice, mut a), (bob, mut b)]) =
        notice_server("{requester} and {accepter} are now friends".into()).await;
    let conv = dm(&alice, &bob);

    // The acceptance's answer comes after the notice is stored; both see the friend event,
    // then the notice.
    befriend(&mut a, &alice, &mut b, &bob).await;
    for c in [&mut a, &mut b] {
        let m = c.expect("message").await;
        assert_system(&m["message"], "alice and bob are now friends", 1);
    }
    // A request is no friendship: nothing was posted before the acceptance.
    let history = a.history(&conv, json!({})).await;
    assert_eq!(seqs(&history), vec![1]);

    // Ending it posts nothing; a new friendship (crossed requests this time) posts a new one.
    let removed = b
        .call(json!({"type": "friend_remove", "user_id": alice.id}))
        .await;
    assert_eq!(removed["relation"], "none", "{removed}");
    a.expect("friend").await;
    let r = b
        .call(json!({"type": "friend_request", "username": "alice"}))
        .await;
    assert_eq!(r["relation"], "request_sent", "{r}");
    a.expect("friend").await;
    let r = a
        .call(json!({"type": "friend_request", "username": "bob"}))
        .await;
    assert_eq!(r["relation"], "friends", "{r}");
    b.expect("friend").await;
    for c in [&mut a, &mut b] {
        let m = c.expect("message").await;
        assert_system(&m["message"], "bob and alice are now friends", 2);
    }
    a.expect_silence(200).await;
    server.stop_with([a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_that_cannot_be_posted_leaves_the_friendship_made() {
    let (server, [(alice, mut a), (bob, mut b)]) = notice_server("{requester}".repeat(4096)).await;
    befriend(&mut a, &alice, &mut b, &bob).await;
    b.expect_silence(200).await;
    assert!(seqs(&a.history(&dm(&alice, &bob), json!({})).await).is_empty());
    a.send_message(&dm(&alice, &bob), "still friends", "k")
        .await;
    server.stop_with([a, b]).await;
}

/// A server with a friends notice on a real Redis, and alice and bob signed in and made
/// friends while Redis refuses `XADD` (the history's append; the friendship's own writes go
/// through). Redis still refuses it on return.
async fn friends_while_history_refuses_writes() -> (
    zajel_core::testing::RedisServer,
    TestServer,
    Client,
    Client,
    String,
) {
    let redis = zajel_core::testing::RedisServer::start().expect("redis-server");
    let store = zajel_core::RedisStore::connect(&redis.url())
        .await
        .expect("connect redis");
    let config = zajel_server::ServerConfig {
        friends_notice: Some("{requester} and {accepter} are now friends".into()),
        ..test_config()
    };
    let server = TestServer::start(Arc::new(store), config).await;
    let alice = register(server.addr, "alice").await;
    let bob = register(server.addr, "bob").await;
    let (mut a, _) = Client::login(server.addr, &alice).await;
    let (mut b, _) = Client::login(server.addr, &bob).await;
    let conv = dm(&alice, &bob);
    redis_acl(redis.port(), "-xadd");
    befriend(&mut a, &alice, &mut b, &bob).await;
    (redis, server, a, b, conv)
}

/// The store refuses the notice's write (Redis denies `XADD`, the history's append, while the
/// friendship's own writes go through): the friendship is made and answered, the notice
/// waits. A send of the pair meanwhile fails (the notice must come first) and stores nothing;
/// once Redis takes writes again the notice is posted with no one asking, as seq 1, and the
/// pair's messages follow it. Before, the failure was only logged: no notice, ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_the_store_refused_is_posted_once_it_recovers_before_any_message() {
    let (redis, server, mut a, mut b, conv) = friends_while_history_refuses_writes().await;
    let refused = a
        .call(json!({"type": "send", "conversation": conv, "body": "hi", "idempotency_key": "k1"}))
        .await;
    assert_eq!(refused["type"], "error", "{refused}");
    // The store's error as it is: a refused command, or the breaker opened by repeated ones.
    let code = refused["code"].as_str();
    assert!(
        matches!(code, Some("internal" | "unavailable")),
        "{refused}"
    );

    redis_acl(redis.port(), "+xadd");
    for c in [&mut a, &mut b] {
        let m = c.expect("message").await;
        assert_system(&m["message"], "alice and bob are now friends", 1);
    }
    let sent = a.send_message(&conv, "hi", "k1").await;
    assert_eq!(sent["message"]["seq"], 2, "{sent}");
    assert_eq!(b.expect("message").await["message"]["seq"], 2);
    assert_eq!(seqs(&a.history(&conv, json!({})).await), vec![1, 2]);
    server.stop_with([a, b]).await;
}

/// The same refusal, and the pair's next operation is the send that finds the store back:
/// the send posts the waiting notice first (seq 1, published first), then its own message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_posts_the_waiting_notice_first() {
    let (redis, server, mut a, mut b, conv) = friends_while_history_refuses_writes().await;
    redis_acl(redis.port(), "+xadd");
    // The background retry (first after 0.2 s) may win the race: either way the notice is
    // seq 1 and reaches bob before the message.
    let sent = a.send_message(&conv, "hi", "k1").await;
    assert_eq!(sent["message"]["seq"], 2, "{sent}");
    let m = b.expect("message").await;
    assert_system(&m["message"], "alice and bob are now friends", 1);
    assert_eq!(b.expect("message").await["message"]["seq"], 2);
    assert_eq!(seqs(&b.history(&conv, json!({})).await), vec![1, 2]);
    server.stop_with([a, b]).await;
}
