//! One test per bad-input class: the typed error, the connection still usable where that is
//! safe (a `ping` gets its `pong`), and nothing changed.

mod common;

use common::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use zajel_server::ServerConfig;

/// The conversation's `last_seq` and alice's read mark, as alice sees them.
async fn state(c: &mut Client) -> Value {
    let list = c.call(json!({"type": "conversations"})).await;
    list["conversations"].clone()
}

fn assert_error(frame: &Value, code: &str, re: Option<&str>) {
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["code"], code, "{frame}");
    assert!(frame["message"].as_str().is_some_and(|m| !m.is_empty()));
    match re {
        Some(re) => assert_eq!(frame["re"], re, "{frame}"),
        None => assert!(frame.get("re").is_none(), "{frame}"),
    }
}

async fn login(addr: SocketAddr, username: &str) -> String {
    let body = json!({"username": username, "password": "correct horse battery"}).to_string();
    let r = http(addr, "POST", "/api/login", Some(&body), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["token"].as_str().expect("token").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json() {
    let server = TestServer::memory().await;
    let mut p = alice_and_bob_after_hello(server.addr).await;
    let before = state(&mut p.a).await;
    p.a.send_raw("{\"type\": \"send\", \"id\": \"x1\", ").await;
    assert_error(&p.a.expect("error").await, "bad_frame", None);
    p.a.send_raw("[1, 2, 3]").await;
    assert_error(&p.a.expect("error").await, "bad_frame", None);
    p.a.send_raw("{\"id\": \"x2\"}").await;
    assert_error(&p.a.expect("error").await, "bad_frame", Some("x2"));
    p.a.send_binary(vec![0, 1, 2]).await;
    assert_error(&p.a.expect("error").await, "bad_frame", None);
    p.a.assert_alive().await;
    assert_eq!(state(&mut p.a).await, before);
    p.b.expect_silence(50).await;
    server.stop_with([p.a, p.b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_type() {
    let server = TestServer::memory().await;
    let mut p = alice_and_bob_after_hello(server.addr).await;
    p.a.send_raw(r#"{"type": "teleport", "id": "tp", "to": "mars"}"#)
        .await;
    assert_error(&p.a.answer("tp").await, "unknown_type", Some("tp"));
    p.a.assert_alive().await;
    server.stop_with([p.a, p.b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_field_type() {
    let server = TestServer::memory().await;
    let mut p = alice_and_bob_after_hello(server.addr).await;
    let before = state(&mut p.a).await;
    let r = p
        .a
        .call(json!({"type": "send", "conversation": p.conv, "body": 42, "idempotency_key": "k2"}))
        .await;
    assert_eq!(r["code"], "invalid_field", "{r}");
    let r =
        p.a.call(json!({"type": "history", "conversation": "not-a-conversation"}))
            .await;
    assert_eq!(r["code"], "invalid_field", "{r}");
    let r =
        p.a.call(json!({"type": "history", "conversation": p.conv, "limit": 0}))
            .await;
    assert_eq!(r["code"], "invalid_field", "{r}");
    p.a.assert_alive().await;
    assert_eq!(state(&mut p.a).await, before);
    p.b.expect_silence(50).await;
    server.stop_with([p.a, p.b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_1009() {
    let server = TestServer::memory_with(ServerConfig {
        max_frame_bytes: 1024,
        ..test_config()
    })
    .await;
    let mut p = alice_and_bob_after_hello(server.addr).await;
    let big = "x".repeat(2000);
    p.a.send_raw(
        &json!({"type": "send", "id": "big", "conversation": p.conv, "body": big, "idempotency_key": "k9"})
            .to_string(),
    )
    .await;
    let (code, mut frames) = p.a.expect_close().await;
    frames.retain(|f| f["type"] != "presence");
    assert_eq!(code, 1009);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_error(&frames[0], "frame_too_large", None);
    // Nothing stored.
    assert_eq!(state(&mut p.b).await[0]["last_seq"], 1);
    p.b.expect_silence(50).await;
    server.stop_with([p.b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_before_auth() {
    let server = TestServer::memory().await;
    let alice = register(server.addr, "alice").await;
    let mut c = Client::connect(server.addr, "anon").await;
    let r = c.call(json!({"type": "conversations"})).await;
    assert_error(&r, "unauthenticated", Some("r1"));
    let r = c
        .call(json!({"type": "friend_request", "username": "alice"}))
        .await;
    assert_error(&r, "unauthenticated", Some("r2"));
    // ping works before auth, and the connection can still authenticate.
    c.assert_alive().await;
    let ok = c.auth(&alice.token, None).await;
    assert_eq!(ok["type"], "auth_ok");
    let again = c.auth(&alice.token, None).await;
    assert_error(&again, "already_authenticated", Some("r5"));
    c.assert_alive().await;
    server.stop_with([c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token() {
    let server = TestServer::memory().await;
    let addr = server.addr;
    let alice = register(addr, "alice").await;
    // Malformed, forged (right shape, wrong secret), missing: `unauthenticated`, then close
    // 4001 (sign in again).
    let forged = format!("zs1.{}.{}", alice.id, "A".repeat(43));
    for auth in [
        json!({"type": "auth", "protocol": 1, "token": "nope"}),
        json!({"type": "auth", "protocol": 1, "token": forged}),
        json!({"type": "auth", "protocol": 1}),
    ] {
        let mut c = Client::connect(addr, "anon").await;
        let r = c.call(auth).await;
        assert_error(&r, "unauthenticated", Some("r1"));
        assert_eq!(c.expect_close().await.0, 4001);
    }
    // An unsupported version is recoverable: the connection stays open.
    let mut c = Client::connect(addr, "anon").await;
    let r = c
        .call(json!({"type": "auth", "protocol": 2, "token": alice.token}))
        .await;
    assert_eq!(r["code"], "unsupported_version", "{r}");
    c.assert_alive().await;
    assert_eq!(c.auth(&alice.token, None).await["type"], "auth_ok");
    // Over HTTP too.
    let res = http(
        addr,
        "GET",
        "/api/me",
        None,
        &[("Authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(
        (res.status, res.json()["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let bearer = format!("Bearer {}", alice.token);
    let res = http(addr, "GET", "/api/me", None, &[("Authorization", &bearer)]).await;
    assert_eq!(
        (res.status, res.json()["user"]["id"].as_str()),
        (200, Some(alice.id.as_str()))
    );
    server.stop_with([c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_too_long_and_empty() {
    let server = TestServer::memory().await;
    let mut p = alice_and_bob_after_hello(server.addr).await;
    let before = state(&mut p.a).await;
    let r = p
        .a
        .call(json!({"type": "send", "conversation": p.conv, "body": "x".repeat(4097), "idempotency_key": "k2"}))
        .await;
    assert_eq!(r["code"], "body_too_long", "{r}");
    let r =
        p.a.call(
            json!({"type": "send", "conversation": p.conv, "body": "   ", "idempotency_key": "k3"}),
        )
        .await;
    assert_eq!(r["code"], "empty_body", "{r}");
    let r = p
        .a
        .call(json!({"type": "send", "conversation": p.conv, "body": "ok", "idempotency_key": ""}))
        .await;
    assert_eq!(r["code"], "invalid_idempotency_key", "{r}");
    p.a.assert_alive().await;
    assert_eq!(state(&mut p.a).await, before);
    p.b.expect_silence(50).await;
    // Exactly at the limit is fine.
    let ack = p.a.send_message(&p.conv, &"y".repeat(4096), "k4").await;
    assert_eq!(ack["message"]["seq"], 2);
    server.stop_with([p.a, p.b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_cursor() {
    let server = TestServer::memory().await;
    let mut p = alice_and_bob_after_hello(server.addr).await;
    let before = state(&mut p.b).await;
    let r = p.b.history(&p.conv, json!({"after": 5})).await;
    assert_eq!(r["code"], "invalid_cursor", "{r}");
    let r = p.b.history(&p.conv, json!({"before": 0})).await;
    assert_eq!(r["code"], "invalid_cursor", "{r}");
    let r =
        p.b.call(json!({"type": "mark_read", "conversation": p.conv, "seq": 99}))
            .await;
    assert_eq!(r["code"], "invalid_cursor", "{r}");
    p.b.assert_alive().await;
    assert_eq!(state(&mut p.b).await, before);
    p.a.expect_silence(50).await;
    server.stop_with([p.a, p.b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_friend_and_foreign_conversation() {
    let server = TestServer::memory().await;
    let addr = server.addr;
    let mut p = alice_and_bob_after_hello(addr).await;
    let carol = register(addr, "carol").await;
    let (mut c, _) = Client::login(addr, &carol).await;
    let r = c
        .call(json!({"type": "send", "conversation": dm(&carol, &p.alice), "body": "hi", "idempotency_key": "c1"}))
        .await;
    assert_eq!(r["code"], "not_friends", "{r}");
    // Someone else's conversation: not found, for every operation.
    for frame in [
        json!({"type": "send", "conversation": p.conv, "body": "hi", "idempotency_key": "c2"}),
        json!({"type": "history", "conversation": p.conv}),
        json!({"type": "mark_read", "conversation": p.conv, "seq": 1}),
    ] {
        let r = c.call(frame).await;
        assert_eq!(r["code"], "conversation_not_found", "{r}");
    }
    c.assert_alive().await;
    assert_eq!(state(&mut c).await, json!([]));
    assert_eq!(state(&mut p.a).await[0]["last_seq"], 1);
    p.a.expect_silence(50).await;
    p.b.expect_silence(10).await;
    // Friend-rule errors are typed too.
    let r = c
        .call(json!({"type": "friend_request", "username": "carol"}))
        .await;
    assert_eq!(r["code"], "cannot_befriend_self", "{r}");
    let r = c
        .call(json!({"type": "friend_request", "username": "nobody"}))
        .await;
    assert_eq!(r["code"], "user_not_found", "{r}");
    let r = c
        .call(json!({"type": "friend_accept", "user_id": p.bob.id}))
        .await;
    assert_eq!(r["code"], "no_pending_request", "{r}");
    server.stop_with([p.a, p.b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_then_abuse_close() {
    let server = TestServer::memory_with(ServerConfig {
        rate_per_second: 5,
        rate_burst: 5,
        ..test_config()
    })
    .await;
    let alice = register(server.addr, "alice").await;
    let (mut c, _) = Client::login(server.addr, &alice).await;
    for i in 0..8 {
        c.send_raw(&json!({"type": "ping", "id": format!("p{i}")}).to_string())
            .await;
    }
    let mut limited = 0;
    for i in 0..8 {
        let f = c.answer(&format!("p{i}")).await;
        if f["type"] == "error" {
            assert_eq!(f["code"], "rate_limited");
            assert!(f["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0));
            limited += 1;
        }
    }
    assert!(limited >= 2, "{limited}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.assert_alive().await;
    // Persistent abuse: the connection is closed with 1008.
    for i in 0..40 {
        c.send_raw(&json!({"type": "ping", "id": format!("q{i}")}).to_string())
            .await;
    }
    let (code, frames) = c.expect_close().await;
    assert_eq!(code, 1008);
    assert!(frames.iter().any(|f| f["code"] == "rate_limited"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_idle_timeouts() {
    let server = TestServer::memory_with(ServerConfig {
        auth_timeout_ms: 300,
        idle_timeout_ms: 400,
        ..test_config()
    })
    .await;
    let alice = register(server.addr, "alice").await;
    let mut anon = Client::connect(server.addr, "anon").await;
    assert_eq!(anon.expect_close().await.0, 1008);
    let (mut c, ok) = Client::login(server.addr, &alice).await;
    assert_eq!(ok["limits"]["idle_timeout_ms"], 400);
    // Pings keep it open past the idle timeout (a ping every quarter of it: a sleep on a
    // loaded machine overshoots, and half the timeout left too little margin)...
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.assert_alive().await;
    }
    // ...silence closes it.
    assert_eq!(c.expect_close().await.0, 4000);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_account_errors() {
    let server = TestServer::memory_with(ServerConfig {
        login_failures_per_minute: 3,
        ..test_config()
    })
    .await;
    let addr = server.addr;
    let post = |path: &'static str, body: Value| async move {
        http(addr, "POST", path, Some(&body.to_string()), &[]).await
    };
    let r = post(
        "/api/register",
        json!({"username": "_bad", "password": "long enough"}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("invalid_username"))
    );
    let r = post(
        "/api/register",
        json!({"username": "dave", "password": "short"}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("invalid_password"))
    );
    let r = http(addr, "POST", "/api/register", Some("{nope"), &[]).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("bad_frame"))
    );
    let r = post("/api/register", json!({"username": "dave"})).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("invalid_field"))
    );
    register(addr, "dave").await;
    let r = post(
        "/api/register",
        json!({"username": "DAVE", "password": "long enough"}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (409, Some("username_taken"))
    );

    // Same answer for a wrong password and an unknown user.
    let wrong = post(
        "/api/login",
        json!({"username": "dave", "password": "wrong password"}),
    )
    .await;
    let unknown = post(
        "/api/login",
        json!({"username": "erin", "password": "wrong password"}),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.body, unknown.body);
    // Right password: 200, token and cookie.
    let ok = post(
        "/api/login",
        json!({"username": "Dave", "password": "correct horse battery"}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(
        ok.json()["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("zs1."))
    );
    let cookie = ok.header("set-cookie").expect("cookie");
    assert!(
        cookie.starts_with("zajel_session=zs1.")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
    );
    // Failures are throttled per account: the 3rd failure empties the bucket.
    post(
        "/api/login",
        json!({"username": "dave", "password": "wrong password"}),
    )
    .await;
    post(
        "/api/login",
        json!({"username": "dave", "password": "wrong password"}),
    )
    .await;
    let r = post(
        "/api/login",
        json!({"username": "dave", "password": "correct horse battery"}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert!(r.header("retry-after").is_some());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_closes_sockets_and_revokes_tokens() {
    let server = TestServer::memory().await;
    let addr = server.addr;
    let alice = register(addr, "alice").await;
    let (mut c, _) = Client::login(addr, &alice).await;
    let bearer = format!("Bearer {}", alice.token);
    let r = http(
        addr,
        "POST",
        "/api/logout",
        None,
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(c.expect_close().await.0, 4001);
    let r = http(addr, "GET", "/api/me", None, &[("Authorization", &bearer)]).await;
    assert_eq!(r.status, 401);
    let mut d = Client::connect(addr, "again").await;
    assert_eq!(d.auth(&alice.token, None).await["code"], "unauthenticated");
    assert_eq!(d.expect_close().await.0, 4001);
    // logout-all ends every session.
    let (tok1, tok2) = (login(addr, "alice").await, login(addr, "alice").await);
    let (mut e, _) = Client::login(
        addr,
        &Account {
            token: tok1.clone(),
            ..alice.clone()
        },
    )
    .await;
    logout_all(addr, &tok2).await;
    assert_eq!(e.expect_close().await.0, 4001);
    for t in [tok1, tok2] {
        let bearer = format!("Bearer {t}");
        let r = http(addr, "GET", "/api/me", None, &[("Authorization", &bearer)]).await;
        assert_eq!(r.status, 401);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_auth_needs_an_allowed_origin() {
    let server = TestServer::memory_with(ServerConfig {
        allowed_origins: vec!["https://chat.example.com".into()],
        ..test_config()
    })
    .await;
    let addr = server.addr;
    let alice = register(addr, "alice").await;
    let cookie = format!("zajel_session={}", alice.token);
    let mut ok = Client::connect_with(
        addr,
        "allowed",
        &[("Cookie", &cookie), ("Origin", "https://chat.example.com")],
    )
    .await;
    let r = ok.call(json!({"type": "auth", "protocol": 1})).await;
    assert_eq!(r["type"], "auth_ok", "{r}");
    let mut evil = Client::connect_with(
        addr,
        "evil",
        &[("Cookie", &cookie), ("Origin", "https://evil.example")],
    )
    .await;
    let r = evil.call(json!({"type": "auth", "protocol": 1})).await;
    assert_eq!(r["code"], "unauthenticated", "{r}");
    assert_eq!(evil.expect_close().await.0, 4001);
    server.stop_with([ok]).await;
}
