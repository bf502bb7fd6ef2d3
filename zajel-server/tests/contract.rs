//! Protocol contract points of issue 7, pinned where docs/protocol.md states them: a new
//! friendship's conversation is listed before its first message (as the `conversations`
//! example shows), on the embedded and the memory store alike; ids have one spelling.

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;

fn convs(answer: &Value) -> Vec<String> {
    answer["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .map(|c| c["conversation"].as_str().expect("id").to_owned())
        .collect()
}

async fn new_friends_conversations_are_listed(store: Arc<dyn zajel_core::Store>) {
    let config = zajel_server::ServerConfig {
        register_per_address_per_minute: 1000,
        ..test_config()
    };
    let server = TestServer::start(store, config).await;
    let alice = register(server.addr, "alice").await;
    let bob = register(server.addr, "bob").await;
    let carol = register(server.addr, "carol").await;
    let dave = register(server.addr, "dave").await;
    let (mut a, _) = Client::login(server.addr, &alice).await;
    let (mut b, _) = Client::login(server.addr, &bob).await;
    let (mut c, _) = Client::login(server.addr, &carol).await;
    let (mut d, _) = Client::login(server.addr, &dave).await;
    befriend(&mut a, &alice, &mut b, &bob).await;
    // The doc's example, exactly: empty, last_seq 0, last_message null, for both sides.
    let list = a.call(json!({"type": "conversations"})).await;
    assert_eq!(
        list["conversations"],
        json!([{"conversation": dm(&alice, &bob), "peer": bob.id, "last_message": null,
            "last_seq": 0, "unread": 0, "read_seq": 0, "peer_read_seq": 0}]),
        "{list}"
    );
    let list = b.call(json!({"type": "conversations"})).await;
    assert_eq!(convs(&list), vec![dm(&alice, &bob)]);
    // Newest activity first: a friendship is activity until the first message.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    befriend(&mut a, &alice, &mut c, &carol).await;
    let list = a.call(json!({"type": "conversations"})).await;
    assert_eq!(convs(&list), vec![dm(&alice, &carol), dm(&alice, &bob)]);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    a.send_message(&dm(&alice, &bob), "hi", "k1").await;
    let list = a.call(json!({"type": "conversations"})).await;
    assert_eq!(convs(&list), vec![dm(&alice, &bob), dm(&alice, &carol)]);
    let list = a.call(json!({"type": "conversations", "limit": 1})).await;
    assert_eq!(convs(&list), vec![dm(&alice, &bob)], "the limit holds");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    befriend(&mut a, &alice, &mut d, &dave).await;
    let list = a.call(json!({"type": "conversations", "limit": 2})).await;
    assert_eq!(convs(&list), vec![dm(&alice, &dave), dm(&alice, &bob)]);
    // A resume's `synced` carries the same list.
    let mut a2 = Client::connect(server.addr, "alice-2").await;
    let ok = a2
        .auth(
            &alice.token,
            Some(json!({"cursors": {}, "unlisted": "skip"})),
        )
        .await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    let synced = a2.expect("synced").await;
    assert_eq!(
        convs(&synced),
        vec![dm(&alice, &dave), dm(&alice, &bob), dm(&alice, &carol)]
    );
    // A removal ends the listing of an empty conversation (nothing to read there).
    let r = a
        .call(json!({"type": "friend_remove", "user_id": carol.id}))
        .await;
    assert_eq!(r["type"], "friend_ok", "{r}");
    let list = a.call(json!({"type": "conversations"})).await;
    assert_eq!(convs(&list), vec![dm(&alice, &dave), dm(&alice, &bob)]);
    server.stop_with([a, b, c, d, a2]).await;
}

#[tokio::test]
async fn new_friends_conversations_are_listed_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = zajel_core::EmbeddedStore::open(dir.path()).expect("open");
    new_friends_conversations_are_listed(Arc::new(store)).await;
}

#[tokio::test]
async fn new_friends_conversations_are_listed_memory() {
    new_friends_conversations_are_listed(Arc::new(zajel_core::MemoryStore::new())).await;
}

/// Ids have one spelling on the wire: other forms are `invalid_field`, nothing changes.
#[tokio::test]
async fn other_spellings_of_ids_are_refused() {
    let server = TestServer::memory().await;
    let alice = register(server.addr, "alice").await;
    let bob = register(server.addr, "bob").await;
    let (mut a, _) = Client::login(server.addr, &alice).await;
    let (mut b, _) = Client::login(server.addr, &bob).await;
    let r = b
        .call(json!({"type": "friend_request", "username": "alice"}))
        .await;
    assert_eq!(r["relation"], "request_sent", "{r}");
    a.expect("friend").await;
    for form in [
        bob.id.to_uppercase(),
        bob.id.replace('-', ""),
        format!("urn:uuid:{}", bob.id),
    ] {
        let r = a
            .call(json!({"type": "friend_accept", "user_id": form}))
            .await;
        assert_eq!(r["code"], "invalid_field", "{form}: {r}");
    }
    let list = a.call(json!({"type": "friends_list"})).await;
    assert_eq!(list["friends"][0]["relation"], "request_received", "{list}");
    b.expect_silence(100).await;
    server.stop_with([a, b]).await;
}
