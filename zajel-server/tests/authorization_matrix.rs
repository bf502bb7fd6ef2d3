//! The authorization matrix: every client operation of docs/protocol.md against every relation
//! the acting user can have with the other user, with the expected answer, whether the other
//! user hears anything, and (where the answer is a refusal or a read) proof that nothing changed.
//!
//! The table in [`MATRIX`] is the documentation (docs/protocol.md links here). Each cell runs on
//! its own pair of fresh users on one server over the embedded store, through real WebSockets.
//!
//! Reading a cell: `"friend_ok:request_sent"` is a `friend_ok` answer with that relation, a bare
//! frame type (`"sent"`, `"history"`) is that answer, `"silent"` is no answer (a successful
//! `typing`), anything else is the `error` code. A trailing `+` means the other user's devices
//! get an event (`friend`, `message`, `read`, `typing`); without it they get nothing but
//! presence.
//!
//! No HTTP endpoint acts on another user (`/api/me`, `/api/logout`, `/api/logout-all`,
//! `/api/session` and `/api/me/username` act on the caller's own session);
//! [`http_endpoints_refuse_the_anonymous`] pins their anonymous answers.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use zajel_core::{
    Body, ConversationId, EmbeddedStore, FriendGraph, FriendOp, HistoryQuery, IdempotencyKey,
    MessageStore, NewMessage, Timestamp, UserId,
};

/// How I (the actor) stand with them (the other user) before the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A connection that never sent `auth` (the pair are friends with a message, the most
    /// permissive state to attack).
    Anonymous,
    /// Never met.
    Stranger,
    /// I asked them; pending.
    RequestOut,
    /// They asked me; pending.
    RequestIn,
    /// Friends, with one message from them (seq 1).
    Friends,
    /// Were friends (one message), I removed them.
    FormerFriends,
    /// Were friends (one message), I block them.
    BlockedByMe,
    /// Were friends (one message), they block me.
    BlockedByThem,
    /// The operation aims at myself.
    SelfTarget,
}

use State::*;

const STATES: [State; 9] = [
    Anonymous,
    Stranger,
    RequestOut,
    RequestIn,
    Friends,
    FormerFriends,
    BlockedByMe,
    BlockedByThem,
    SelfTarget,
];

/// Operation x state (columns in the order of [`STATES`]): anonymous, stranger, request out,
/// request in, friends, former friends, blocked by me, blocked by them, self.
#[rustfmt::skip]
const MATRIX: &[(&str, [&str; 9])] = &[
    ("ping", ["pong", "pong", "pong", "pong", "pong", "pong", "pong", "pong", "pong"]),
    ("friends_list", ["unauthenticated", "friends", "friends", "friends", "friends", "friends", "friends", "friends", "friends"]),
    ("conversations", ["unauthenticated", "conversations", "conversations", "conversations", "conversations", "conversations", "conversations", "conversations", "conversations"]),
    ("friend_request", ["unauthenticated", "friend_ok:request_sent+", "already_requested", "friend_ok:friends+", "already_friends", "friend_ok:request_sent+", "blocked", "friend_ok:request_sent", "cannot_befriend_self"]),
    ("friend_accept", ["unauthenticated", "no_pending_request", "no_pending_request", "friend_ok:friends+", "already_friends", "no_pending_request", "no_pending_request", "no_pending_request", "cannot_befriend_self"]),
    ("friend_decline", ["unauthenticated", "no_pending_request", "no_pending_request", "friend_ok:none+", "no_pending_request", "no_pending_request", "no_pending_request", "no_pending_request", "cannot_befriend_self"]),
    ("friend_cancel", ["unauthenticated", "no_pending_request", "friend_ok:none+", "no_pending_request", "no_pending_request", "no_pending_request", "no_pending_request", "no_pending_request", "cannot_befriend_self"]),
    ("friend_remove", ["unauthenticated", "not_friends", "not_friends", "not_friends", "friend_ok:none+", "not_friends", "not_friends", "not_friends", "not_friends"]),
    ("block", ["unauthenticated", "friend_ok:blocked", "friend_ok:blocked+", "friend_ok:blocked+", "friend_ok:blocked+", "friend_ok:blocked", "already_blocked", "friend_ok:blocked", "cannot_befriend_self"]),
    ("unblock", ["unauthenticated", "not_blocked", "not_blocked", "not_blocked", "not_blocked", "not_blocked", "friend_ok:none", "not_blocked", "not_blocked"]),
    ("send", ["unauthenticated", "not_friends", "not_friends", "not_friends", "sent+", "not_friends", "not_friends", "not_friends", "invalid_field"]),
    ("history", ["unauthenticated", "history", "history", "history", "history", "history", "history", "history", "invalid_field"]),
    ("mark_read", ["unauthenticated", "not_friends", "not_friends", "not_friends", "read_ok+", "not_friends", "not_friends", "not_friends", "invalid_field"]),
    ("typing", ["unauthenticated", "not_friends", "not_friends", "not_friends", "silent+", "not_friends", "not_friends", "not_friends", "invalid_field"]),
    // A conversation of two other users, whatever my relation with either.
    ("send_elsewhere", ["unauthenticated", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found"]),
    ("history_elsewhere", ["unauthenticated", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found"]),
    ("mark_read_elsewhere", ["unauthenticated", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found"]),
    ("typing_elsewhere", ["unauthenticated", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found", "conversation_not_found"]),
];

/// Operations that never change stored state, even when they succeed.
const READS: &[&str] = &["ping", "friends_list", "conversations", "history", "typing"];

/// How long the other user's devices are watched for an event.
const LISTEN_MS: u64 = 300;

/// Everything the store holds about the pair, as both see it.
async fn snapshot(store: &EmbeddedStore, me: UserId, them: UserId) -> String {
    let conv = ConversationId::direct(me, them);
    let history = store
        .history(
            &conv,
            HistoryQuery {
                before: None,
                after: None,
                limit: 200,
            },
        )
        .await
        .expect("history");
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        zajel_core::FriendStore::relations(store, me)
            .await
            .expect("relations"),
        zajel_core::FriendStore::relations(store, them)
            .await
            .expect("relations"),
        store.conversations(me, 200).await.expect("conversations"),
        store.conversations(them, 200).await.expect("conversations"),
        history,
    )
}

/// Puts the pair in `state` directly through the store (no events to drain).
async fn arrange(store: &EmbeddedStore, state: State, me: UserId, them: UserId) {
    let g = FriendGraph::new(store);
    let at = Timestamp::now();
    let apply = |actor, target, op| {
        let g = &g;
        async move {
            g.apply(actor, target, op, at)
                .await
                .unwrap_or_else(|e| panic!("arrange {state:?}: {op:?}: {e}"));
        }
    };
    match state {
        Stranger | SelfTarget => {}
        RequestOut => apply(me, them, FriendOp::Request).await,
        RequestIn => apply(them, me, FriendOp::Request).await,
        Anonymous | Friends | FormerFriends | BlockedByMe | BlockedByThem => {
            apply(me, them, FriendOp::Request).await;
            apply(them, me, FriendOp::Accept).await;
            let appended = store
                .append(vec![NewMessage {
                    conversation: ConversationId::direct(me, them),
                    sender: them,
                    body: Body::parse("hello").expect("body"),
                    idempotency_key: IdempotencyKey::parse("setup").expect("key"),
                    sent_at: at,
                }])
                .await;
            assert!(appended.iter().all(Result::is_ok), "{appended:?}");
            match state {
                FormerFriends => apply(me, them, FriendOp::Remove).await,
                BlockedByMe => apply(me, them, FriendOp::Block).await,
                BlockedByThem => apply(them, me, FriendOp::Block).await,
                _ => {}
            }
        }
    }
}

/// The request frame of `op`, aimed at `target` (myself in the self column).
fn frame(op: &str, me: &Account, target: &Account, elsewhere: &str) -> Value {
    let conv = if me.id == target.id {
        // What a client would compute for "my conversation with myself": not a valid id.
        format!("dm.{}.{}", me.id, me.id)
    } else {
        dm(me, target)
    };
    let key = format!("k-{op}");
    match op {
        "ping" | "friends_list" | "conversations" => json!({"type": op}),
        "friend_request" => json!({"type": op, "username": target.username}),
        "friend_accept" | "friend_decline" | "friend_cancel" | "friend_remove" | "block"
        | "unblock" => json!({"type": op, "user_id": target.id}),
        "send" => json!({"type": op, "conversation": conv, "body": "hi", "idempotency_key": key}),
        "history" => json!({"type": op, "conversation": conv}),
        "mark_read" => json!({"type": op, "conversation": conv, "seq": 1}),
        "typing" => json!({"type": op, "conversation": conv, "active": true}),
        "send_elsewhere" => {
            json!({"type": "send", "conversation": elsewhere, "body": "hi", "idempotency_key": key})
        }
        "history_elsewhere" => json!({"type": "history", "conversation": elsewhere}),
        "mark_read_elsewhere" => {
            json!({"type": "mark_read", "conversation": elsewhere, "seq": 1})
        }
        "typing_elsewhere" => json!({"type": "typing", "conversation": elsewhere, "active": true}),
        other => panic!("no frame for {other}"),
    }
}

/// The answer in the table's notation.
fn outcome(answer: Option<&Value>) -> String {
    match answer {
        None => "silent".into(),
        Some(a) if a["type"] == "error" => a["code"].as_str().unwrap_or("?").to_owned(),
        Some(a) if a["type"] == "friend_ok" => {
            format!("friend_ok:{}", a["relation"].as_str().unwrap_or("?"))
        }
        Some(a) => a["type"].as_str().unwrap_or("?").to_owned(),
    }
}

/// Runs one cell; returns a description of each way it differs from the table.
async fn cell(
    server: &TestServer,
    store: &EmbeddedStore,
    n: usize,
    op: &'static str,
    state: State,
    expected: &'static str,
) -> Vec<String> {
    let me = register(server.addr, &format!("me{n:03}")).await;
    let them = register(server.addr, &format!("them{n:03}")).await;
    let (me_id, them_id): (UserId, UserId) =
        (me.id.parse().expect("uuid"), them.id.parse().expect("uuid"));
    let elsewhere = ConversationId::direct(them_id, nobody(n)).to_string();
    arrange(store, state, me_id, them_id).await;
    let (mut peer, _) = Client::login(server.addr, &them).await;
    let mut actor = if state == Anonymous {
        Client::connect(server.addr, &me.username).await
    } else {
        Client::login(server.addr, &me).await.0
    };
    peer.frames_within(50).await; // presence of a friend coming online
    let before = snapshot(store, me_id, them_id).await;
    let target = if state == SelfTarget { &me } else { &them };
    let mut f = frame(op, &me, target, &elsewhere);
    let id = actor.id();
    f["id"] = json!(id);
    actor.send_raw(&f.to_string()).await;
    let wait = if f["type"] == "typing" {
        LISTEN_MS
    } else {
        10_000
    };
    let answer = actor.answer_within(&id, wait).await;
    let heard = peer.frames_within(LISTEN_MS).await;
    let after = snapshot(store, me_id, them_id).await;

    let (want, want_heard) = match expected.strip_suffix('+') {
        Some(w) => (w, true),
        None => (expected, false),
    };
    let got = outcome(answer.as_ref());
    let mut diffs = Vec::new();
    let at = format!("{op} x {state:?}");
    if got != want {
        diffs.push(format!(
            "{at}: answered {got}, table says {want} ({answer:?})"
        ));
    }
    if heard.is_empty() == want_heard {
        diffs.push(format!(
            "{at}: the other user heard {heard:?}, table says heard={want_heard}"
        ));
    }
    let refused = answer.as_ref().is_some_and(|a| a["type"] == "error");
    if (refused || READS.contains(&op)) && before != after {
        diffs.push(format!(
            "{at}: state changed\nbefore: {before}\nafter:  {after}"
        ));
    }
    if refused && answer.as_ref().is_some_and(|a| a["re"] != json!(id)) {
        diffs.push(format!("{at}: the error does not echo the request id"));
    }
    // A refusal keeps the connection: it still answers.
    actor.assert_alive().await;
    actor.close().await;
    peer.close().await;
    diffs
}

/// A user id no account has, distinct per cell.
fn nobody(n: usize) -> UserId {
    format!("7a1e0000-0000-4000-8000-{n:012x}")
        .parse()
        .expect("uuid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operation_against_every_relation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open embedded store"));
    let config = zajel_server::ServerConfig {
        max_connections_per_address: 1_000,
        ..open_config()
    };
    let server = TestServer::start(store.clone(), config).await;
    let cells: Vec<_> = MATRIX
        .iter()
        .flat_map(|(op, row)| {
            STATES
                .iter()
                .zip(row.iter())
                .map(move |(s, e)| (*op, *s, *e))
        })
        .enumerate()
        .collect();
    let (server_ref, store_ref) = (&server, &*store);
    let diffs: Vec<String> = futures_util::stream::iter(cells)
        .map(|(n, (op, state, expected))| cell(server_ref, store_ref, n, op, state, expected))
        .buffer_unordered(12)
        .flat_map(futures_util::stream::iter)
        .collect()
        .await;
    assert!(
        diffs.is_empty(),
        "{} cells differ from the table:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    server.stop().await;
}

/// The HTTP endpoints that act for a signed-in user refuse a caller without a session.
#[tokio::test]
async fn http_endpoints_refuse_the_anonymous() {
    let server = TestServer::memory().await;
    register(server.addr, "someone").await;
    for (method, path, body) in [
        ("GET", "/api/me", None),
        ("POST", "/api/logout", None),
        ("POST", "/api/logout-all", None),
        ("POST", "/api/session", Some("{}")),
        (
            "POST",
            "/api/me/username",
            Some(r#"{"username":"someone"}"#),
        ),
    ] {
        for auth in [None, Some("Bearer zs1.not-a-token"), Some("Bearer ")] {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("Authorization", a)).into_iter().collect();
            let r = http(server.addr, method, path, body, &headers).await;
            assert_eq!(
                (r.status, r.json()["code"].as_str()),
                (401, Some("unauthenticated")),
                "{method} {path} with {auth:?}: {}",
                r.body
            );
        }
    }
    server.stop().await;
}
