//! `Engine::subscribe`: real WebSocket clients, HTTP registration and the server-side API on
//! the embedded store cause the events a subscriber sees; refused or repeated operations cause
//! none; a lagging subscriber is told how many it missed and carries on.

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::broadcast::{Receiver, error::RecvError, error::TryRecvError};
use zajel_core::{FriendReason, Relation, UserId};
use zajel_server::events::{EVENT_BUFFER, EngineEvent};

async fn next(rx: &mut Receiver<EngineEvent>) -> EngineEvent {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an event in time")
        .expect("no lag, not closed")
}

/// Nothing more has been emitted (everything before was emitted synchronously with the
/// operation's answer, so "nothing now" means "nothing for it").
fn assert_quiet(rx: &mut Receiver<EngineEvent>) {
    match rx.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!("expected no event, got {other:?}"),
    }
}

fn uid(a: &Account) -> UserId {
    a.id.parse().expect("uuid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_reports_to_subscribers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(zajel_core::EmbeddedStore::open(dir.path()).expect("open"));
    let server = TestServer::start(store, test_config()).await;
    let addr = server.addr;
    let mut rx = server.engine.subscribe();

    // Registration over HTTP.
    let alice = register(addr, "alice").await;
    let bob = register(addr, "bob").await;
    let carol = register(addr, "carol").await;
    for who in [&alice, &bob, &carol] {
        match next(&mut rx).await {
            EngineEvent::UserCreated { user } => assert_eq!(user.id, uid(who)),
            other => panic!("expected user_created, got {other:?}"),
        }
    }

    // Friends over WebSockets.
    let (mut a, _) = Client::login(addr, &alice).await;
    let (mut b, _) = Client::login(addr, &bob).await;
    befriend(&mut a, &alice, &mut b, &bob).await;
    match next(&mut rx).await {
        EngineEvent::FriendChanged {
            actor,
            target,
            relation,
            reason,
        } => {
            assert_eq!((actor.id, target.id), (uid(&alice), uid(&bob)));
            assert_eq!(
                (relation, reason),
                (Relation::RequestSent, FriendReason::Requested)
            );
        }
        other => panic!("expected the request, got {other:?}"),
    }
    match next(&mut rx).await {
        EngineEvent::FriendChanged {
            actor,
            relation,
            reason,
            ..
        } => {
            assert_eq!(actor.id, uid(&bob));
            assert_eq!(
                (relation, reason),
                (Relation::Friends, FriendReason::Accepted)
            );
        }
        other => panic!("expected the acceptance, got {other:?}"),
    }

    // A message over the WebSocket; its retry stores nothing new and reports nothing.
    let conv = dm(&alice, &bob);
    a.send_message(&conv, "hi bob", "k1").await;
    let event = next(&mut rx).await;
    match &event {
        EngineEvent::MessageStored { message } => {
            assert_eq!((message.body.as_str(), message.seq), ("hi bob", 1));
            assert_eq!(message.sender, uid(&alice));
        }
        other => panic!("expected message_stored, got {other:?}"),
    }
    let wire = serde_json::to_value(&event).expect("serialize");
    assert_eq!(wire["type"], "message_stored");
    assert_eq!(wire["message"]["body"], "hi bob");
    let again = a.send_message(&conv, "hi bob", "k1").await;
    assert_eq!(again["duplicate"], true);
    assert_quiet(&mut rx);

    // Refused operations report nothing: a send to a non-friend, a bad friend request.
    let (mut c, _) = Client::login(addr, &carol).await;
    let refused = c
        .call(json!({"type": "send", "conversation": dm(&carol, &alice), "body": "psst", "idempotency_key": "c1"}))
        .await;
    assert_eq!(refused["type"], "error", "{refused}");
    let refused = c
        .call(json!({"type": "friend_request", "username": "nobody_here"}))
        .await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_quiet(&mut rx);

    // The server-side API goes through the same place.
    server
        .engine
        .send_as(uid(&bob), uid(&alice), "from the app", "app-1")
        .await
        .expect("send_as");
    match next(&mut rx).await {
        EngineEvent::MessageStored { message } => {
            assert_eq!((message.body.as_str(), message.seq), ("from the app", 2));
        }
        other => panic!("expected message_stored, got {other:?}"),
    }
    let shopper = server
        .engine
        .app_user("shop", "customer-1", Some("shopper"))
        .await
        .expect("app user");
    match next(&mut rx).await {
        EngineEvent::UserCreated { user } => assert_eq!(user.id, shopper.id),
        other => panic!("expected user_created, got {other:?}"),
    }
    // Seen again: not created again.
    server
        .engine
        .app_user("shop", "customer-1", None)
        .await
        .expect("app user");
    server
        .engine
        .make_friends(shopper.id, uid(&carol))
        .await
        .expect("make_friends");
    for expected in [FriendReason::Requested, FriendReason::Accepted] {
        match next(&mut rx).await {
            EngineEvent::FriendChanged { reason, .. } => assert_eq!(reason, expected),
            other => panic!("expected friend_changed, got {other:?}"),
        }
    }
    assert_quiet(&mut rx);

    // A late subscriber sees only what happens after it subscribed.
    let mut late = server.engine.subscribe();
    b.send_message(&conv, "later", "k2").await;
    for r in [&mut rx, &mut late] {
        match next(r).await {
            EngineEvent::MessageStored { message } => assert_eq!(message.body, "later"),
            other => panic!("expected message_stored, got {other:?}"),
        }
    }
    server.stop_with([a, b, c]).await;
}

/// A subscriber that does not read falls behind by more than the buffer: it learns how many
/// events it missed, then continues with the newest ones; the operations never waited for it,
/// and a subscriber that keeps up misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_subscriber_is_told_what_it_missed() {
    let server = TestServer::memory().await;
    let engine = server.engine.clone();
    let alice = engine
        .app_user("t", "a", Some("alice"))
        .await
        .expect("user");
    let bob = engine.app_user("t", "b", Some("bob")).await.expect("user");
    engine
        .make_friends(alice.id, bob.id)
        .await
        .expect("friends");

    let mut slow = engine.subscribe();
    let mut prompt = engine.subscribe();
    let total = EVENT_BUFFER + 10;
    // The prompt subscriber reads each event as it comes; the slow one never reads.
    for i in 0..total {
        engine
            .send_as(alice.id, bob.id, "x", &format!("k{i}"))
            .await
            .expect("sends never wait for a slow subscriber");
        match prompt.try_recv() {
            Ok(EngineEvent::MessageStored { message }) => assert_eq!(message.seq, i as u64 + 1),
            other => panic!("prompt subscriber at {i}: {other:?}"),
        }
    }

    match slow.recv().await {
        Err(RecvError::Lagged(missed)) => assert_eq!(missed, 10),
        other => panic!("expected a lag report, got {other:?}"),
    }
    // Then the oldest event still buffered: message 11.
    match slow.recv().await {
        Ok(EngineEvent::MessageStored { message }) => assert_eq!(message.seq, 11),
        other => panic!("expected message 11, got {other:?}"),
    }
    server.stop().await;
}
