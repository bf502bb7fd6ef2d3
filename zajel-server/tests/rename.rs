//! Changing a username later (issue 9 item 2): `POST /api/me/username` on the embedded store,
//! with registration's rules; the old name is freed, the password keeps working under the new
//! name, a friend sees the new name in their list, subscribers get `user_renamed`; refused
//! renames change nothing.

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use zajel_server::events::EngineEvent;

async fn rename(addr: std::net::SocketAddr, token: &str, body: &str) -> HttpResponse {
    http(
        addr,
        "POST",
        "/api/me/username",
        Some(body),
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await
}

async fn login(addr: std::net::SocketAddr, username: &str) -> u16 {
    let body = json!({"username": username, "password": "correct horse battery"}).to_string();
    http(addr, "POST", "/api/login", Some(&body), &[])
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_renames_themselves_and_friends_see_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(zajel_core::EmbeddedStore::open(dir.path()).expect("open"));
    let server = TestServer::start(store, test_config()).await;
    let addr = server.addr;
    let Pair {
        alice,
        mut a,
        mut b,
        conv,
        ..
    } = alice_and_bob(addr).await;
    let mut events = server.engine.subscribe();

    // Refused: bad names, someone else's name in any case, no session, not JSON.
    for (body, code) in [
        (json!({"username": "a"}), "invalid_username"),
        (json!({"username": "has space"}), "invalid_username"),
        (json!({"username": "BOB"}), "username_taken"),
        (json!({"name": "x"}), "invalid_field"),
    ] {
        let r = rename(addr, &alice.token, &body.to_string()).await;
        assert_eq!(r.json()["code"], code, "{body}: {}", r.body);
        assert!(r.status >= 400, "{}", r.status);
    }
    let r = http(
        addr,
        "POST",
        "/api/me/username",
        Some(&json!({"username": "mallory"}).to_string()),
        &[],
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = rename(
        addr,
        "zs1.forged",
        &json!({"username": "mallory"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(events.try_recv().is_err(), "refused renames report nothing");
    assert_eq!(login(addr, "alice").await, 200, "nothing changed");

    // The rename.
    let r = rename(
        addr,
        &alice.token,
        &json!({"username": "Alice_B"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["user"]["username"], "Alice_B");
    assert_eq!(r.json()["user"]["id"], alice.id.as_str());
    match events.try_recv() {
        Ok(EngineEvent::UserRenamed { user, previous }) => {
            assert_eq!(
                (user.username.as_str(), previous.as_str()),
                ("Alice_B", "alice")
            );
        }
        other => panic!("expected user_renamed, got {other:?}"),
    }

    // The password opens the account under the new name only; the old name is free.
    assert_eq!(login(addr, "alice_b").await, 200);
    assert_eq!(login(addr, "alice").await, 401);
    let newcomer = register(addr, "alice").await;
    assert_ne!(newcomer.id, alice.id);

    // bob's list shows the new name; the friendship and the session are untouched.
    let list = b.call(json!({"type": "friends_list"})).await;
    assert_eq!(list["friends"][0]["user"]["id"], alice.id.as_str());
    assert_eq!(list["friends"][0]["user"]["username"], "Alice_B");
    let me = http(
        addr,
        "GET",
        "/api/me",
        None,
        &[("Authorization", &format!("Bearer {}", alice.token))],
    )
    .await;
    assert_eq!(me.json()["user"]["username"], "Alice_B");
    a.send_message(&conv, "still friends", "k1").await;
    assert_eq!(
        b.expect("message").await["message"]["body"],
        "still friends"
    );
    server.stop_with([a, b]).await;
}

/// Each rename is a durable write (and an event to every subscriber), so it draws from the
/// user's request rate like a `send`: a signed-in user cannot flood the store's writer with
/// renames (they were unthrottled), and a refused rename changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_draw_from_the_users_request_rate() {
    let server = TestServer::memory_with(zajel_server::ServerConfig {
        rate_per_second: 1,
        rate_burst: 3,
        ..test_config()
    })
    .await;
    let me = register(server.addr, "flipper").await;
    let mut statuses = Vec::new();
    let mut last_renamed = None;
    for i in 0..8 {
        let name = format!("flip_{i}");
        let body = json!({"username": name}).to_string();
        let r = rename(server.addr, &me.token, &body).await;
        match r.status {
            200 => last_renamed = Some(name),
            429 => {
                assert_eq!(r.json()["code"], "rate_limited", "{}", r.body);
                assert!(r.json()["retry_after_ms"].as_u64().is_some(), "{}", r.body);
            }
            other => panic!("rename answered {other}: {}", r.body),
        }
        statuses.push(r.status);
    }
    // The burst goes through, then the rate holds (1 per second: the loop takes far less than
    // the 5 seconds it would need to let the rest through).
    assert_eq!(statuses[..3], [200, 200, 200], "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 3,
        "{statuses:?}"
    );
    // A refused rename changed nothing: the name is the last one that went through.
    let who = http(
        server.addr,
        "GET",
        "/api/me",
        None,
        &[("Authorization", &format!("Bearer {}", me.token))],
    )
    .await;
    assert_eq!(
        who.json()["user"]["username"].as_str(),
        last_renamed.as_deref(),
        "{}",
        who.body
    );
    server.stop().await;
}
