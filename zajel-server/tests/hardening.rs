//! Regression tests for the server hardening (issue 7): each would fail on the code before the
//! fix. Real server over real loopback HTTP and WebSockets.

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use zajel_core::{Timestamp, UserStore, Username};

/// Item 1: an account without a password hash (created by a server-side API or OpenID
/// Connect) cannot be logged in to with any password, including the one the server verifies
/// against when an account has none.
#[tokio::test]
async fn passwordless_account_cannot_log_in_with_a_password() {
    let store = Arc::new(zajel_core::MemoryStore::new());
    let name = Username::parse("oidc_only").expect("name");
    store
        .create_user(&name, None, Timestamp::now())
        .await
        .expect("user");
    let server = TestServer::start(store, test_config()).await;
    for password in ["not-a-real-password", "correct horse battery", ""] {
        let body = json!({"username": "oidc_only", "password": password}).to_string();
        let r = http(server.addr, "POST", "/api/login", Some(&body), &[]).await;
        assert_eq!(r.status, 401, "{password:?}: {}", r.body);
        assert_eq!(r.json()["code"], "invalid_credentials");
        assert!(r.header("set-cookie").is_none());
    }
    server.stop().await;
}

async fn login_status(addr: std::net::SocketAddr, user: &str, password: &str, xff: &str) -> u16 {
    let body = json!({"username": user, "password": password}).to_string();
    http(
        addr,
        "POST",
        "/api/login",
        Some(&body),
        &[("X-Forwarded-For", xff)],
    )
    .await
    .status
}

/// Item 4 (and 5): wrong passwords from one address throttle that address's attempts on the
/// account, not the owner's logins from elsewhere. Item 5: a forged leftmost
/// `X-Forwarded-For` entry does not give the attacker a fresh address.
#[tokio::test]
async fn a_guesser_cannot_lock_the_owner_out() {
    let server = TestServer::memory_with(zajel_server::ServerConfig {
        login_failures_per_minute: 3,
        trust_forwarded_for: true,
        ..open_config()
    })
    .await;
    register(server.addr, "victim").await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        // The attacker forges a new leftmost entry each time; the proxy appended the real one.
        let xff = format!("6.6.6.{i}, 203.0.113.66");
        statuses.push(login_status(server.addr, "victim", "wrong password!", &xff).await);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    // The owner, from another address, still logs in.
    let s = login_status(
        server.addr,
        "victim",
        "correct horse battery",
        "198.51.100.7",
    )
    .await;
    assert_eq!(s, 200);
    server.stop().await;
}

/// Item 3: registration is throttled per address (it runs argon2).
#[tokio::test]
async fn register_is_throttled_per_address() {
    let server = TestServer::memory_with(zajel_server::ServerConfig {
        register_per_address_per_minute: 2,
        ..test_config()
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let body = json!({"username": format!("user{i}"), "password": "correct horse battery"})
            .to_string();
        let r = http(server.addr, "POST", "/api/register", Some(&body), &[]).await;
        if r.status == 429 {
            assert_eq!(r.json()["code"], "rate_limited");
            assert!(r.json()["retry_after_ms"].as_u64().is_some());
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, [201, 201, 429, 429]);
    server.stop().await;
}

/// Item 8: JSON endpoints refuse other content types (a cross-site `text/plain` form cannot
/// log a victim in) and answers carry the careful headers; framework refusals have the JSON
/// error body.
#[tokio::test]
async fn login_csrf_and_headers() {
    let server = TestServer::memory_with(open_config()).await;
    register(server.addr, "carol").await;
    // text/plain: what an HTML form can send without a preflight.
    let body = r#"{"username":"carol","password":"correct horse battery"}"#;
    let r = http_with_type(
        server.addr,
        "POST",
        "/api/login",
        Some((Some("text/plain"), body)),
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (415, Some("unsupported_media_type")),
        "{}",
        r.body
    );
    assert!(r.header("set-cookie").is_none());
    let r = http(server.addr, "GET", "/healthz", None, &[]).await;
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    let r = http(server.addr, "GET", "/api/nothing-here", None, &[]).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("not_found"))
    );
    let r = http(server.addr, "GET", "/api/login", None, &[]).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let big = format!(r#"{{"username":"{}","password":"x"}}"#, "a".repeat(20_000));
    let r = http(server.addr, "POST", "/api/login", Some(&big), &[]).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (413, Some("frame_too_large"))
    );
    // `/ws` is routed outside the middlewares that do this for the other routes; its
    // refusals still get the JSON body, the headers and the error count.
    let errors = async |code: &str| -> u64 {
        let metrics = http(server.addr, "GET", "/metrics", None, &[]).await.body;
        let line = format!("zajel_errors_total{{code=\"{code}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0, |n| n.trim().parse().expect("a count"))
    };
    let before = (
        errors("method_not_allowed").await,
        errors("bad_frame").await,
    );
    let r = http(server.addr, "POST", "/ws", Some("{}"), &[]).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str(), r.header("allow")),
        (405, Some("method_not_allowed"), Some("GET,HEAD")),
        "{}",
        r.body
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let r = http(server.addr, "GET", "/ws", None, &[]).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("bad_frame")),
        "{}",
        r.body
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        (
            errors("method_not_allowed").await,
            errors("bad_frame").await
        ),
        (before.0 + 1, before.1 + 1),
        "each /ws refusal counted once"
    );
    server.stop().await;
}

/// Item 8, the whole class: every endpoint that reads a JSON body refuses what a cross-site
/// HTML form can send without a preflight (`text/plain`, form-urlencoded, multipart) and a body
/// with no type, with 415 and no change. The OpenID Connect unlink used to accept them: a form
/// on a sibling subdomain (same site, so the `SameSite=Lax` cookie goes along) could unlink a
/// victim's identity.
#[tokio::test]
async fn every_json_endpoint_refuses_form_content_types() {
    let engine = zajel_server::Engine::new(Arc::new(zajel_core::MemoryStore::new()), open_config());
    let server = TestServer::serve_app(engine.clone(), with_oidc_routes(&engine)).await;
    let ivy = register(server.addr, "ivy").await;
    let ivy_id = ivy.id.parse().expect("uuid");
    let identity = zajel_core::ExternalIdentity {
        provider: UNCONTACTED_ISSUER.into(),
        subject: "ivy-at-the-provider".into(),
    };
    engine.link_identity(ivy_id, &identity).await.expect("link");
    let bearer = format!("Bearer {}", ivy.token);
    let cookie = format!("zajel_session={}", ivy.token);
    let requests = [
        (
            "/api/register",
            json!({"username": "mallory", "password": "correct horse battery"}),
        ),
        (
            "/api/login",
            json!({"username": "ivy", "password": "correct horse battery"}),
        ),
        ("/api/me/username", json!({"username": "mallory"})),
        ("/api/session", json!({})),
        (
            "/api/identities/unlink",
            json!({"provider": identity.provider, "subject": identity.subject}),
        ),
    ];
    let form_types = [
        Some("text/plain"),
        Some("text/plain; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ];
    for content_type in form_types {
        for (path, body) in &requests {
            for auth in [
                ("Authorization", bearer.as_str()),
                ("Cookie", cookie.as_str()),
            ] {
                let body = body.to_string();
                let r = http_with_type(
                    server.addr,
                    "POST",
                    path,
                    Some((content_type, &body)),
                    &[auth],
                )
                .await;
                assert_eq!(
                    (r.status, r.json()["code"].as_str()),
                    (415, Some("unsupported_media_type")),
                    "{path} as {content_type:?} with {}: {}",
                    auth.0,
                    r.body
                );
                assert!(r.header("set-cookie").is_none(), "{path}");
            }
        }
    }
    // Nothing changed: the identity is linked, the name is ivy's, no mallory.
    let linked = engine.identities(ivy_id).await.expect("identities");
    assert_eq!(linked.len(), 1, "{linked:?}");
    let me = http(
        server.addr,
        "GET",
        "/api/me",
        None,
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(me.json()["user"]["username"], "ivy", "{}", me.body);
    let r = http(
        server.addr,
        "POST",
        "/api/login",
        Some(r#"{"username":"mallory","password":"correct horse battery"}"#),
        &[],
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    server.stop().await;
}

/// Item 9: `rate_per_second = 0` (and a zero burst) no longer panics: it counts as 1.
#[tokio::test]
async fn zero_rates_do_not_panic() {
    let server = TestServer::memory_with(zajel_server::ServerConfig {
        rate_per_second: 0,
        rate_burst: 0,
        login_failures_per_minute: 0,
        ..open_config()
    })
    .await;
    let acc = register(server.addr, "dora").await;
    let (mut c, _) = Client::login(server.addr, &acc).await;
    let r = c.call(json!({"type": "ping"})).await;
    assert!(r["type"] == "pong" || r["code"] == "rate_limited", "{r}");
    server.stop_with([c]).await;
}

/// Item 6: connection caps per address and per user.
#[tokio::test]
async fn connection_caps() {
    let server = TestServer::memory_with(zajel_server::ServerConfig {
        max_connections_per_address: 3,
        max_connections_per_user: 2,
        ..open_config()
    })
    .await;
    let acc = register(server.addr, "erin").await;
    let (c1, _) = Client::login(server.addr, &acc).await;
    let (c2, _) = Client::login(server.addr, &acc).await;
    // The user's third connection is refused at auth with rate_limited and 1008.
    let mut c3 = Client::connect(server.addr, "erin-3").await;
    let r = c3.auth(&acc.token, None).await;
    assert_eq!(r["code"], "rate_limited", "{r}");
    let (code, _) = c3.expect_close().await;
    assert_eq!(code, 1008);
    drop(c3);
    // Its address slot is released when the server's connection task ends: until then a
    // third socket is refused too, so wait for that (bounded) instead of a fixed sleep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let idle = loop {
        let mut req = format!("ws://{}/ws", server.addr)
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "zajel.v1".parse().expect("header"),
        );
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => break ws,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the refused connection's slot was never released: {e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    // Three open sockets from this address (two authenticated, one idle): a fourth upgrade
    // is refused with 429 before any WebSocket exists.
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 429);
            let body = res.body().as_deref().unwrap_or_default();
            assert!(String::from_utf8_lossy(body).contains("rate_limited"));
        }
        other => panic!("expected a 429 refusal, got {:?}", other.map(|_| ())),
    }
    drop(idle);
    server.stop_with([c1, c2]).await;
}

/// Item 7: after a block, `mark_read` and `typing` are refused like `send`, and nothing moves.
#[tokio::test]
async fn a_block_stops_read_marks_and_typing() {
    let server = TestServer::memory_with(open_config()).await;
    let Pair {
        bob,
        mut a,
        mut b,
        conv,
        ..
    } = alice_and_bob_after_hello(server.addr).await;
    let r = a.call(json!({"type": "block", "user_id": bob.id})).await;
    assert_eq!(r["type"], "friend_ok", "{r}");
    b.expect("friend").await;
    let r = b
        .call(json!({"type": "mark_read", "conversation": conv, "seq": 1}))
        .await;
    assert_eq!(r["code"], "not_friends", "{r}");
    let r = b
        .call(json!({"type": "typing", "conversation": conv, "active": true}))
        .await;
    assert_eq!(r["code"], "not_friends", "{r}");
    a.expect_silence(200).await;
    let list = b.call(json!({"type": "conversations"})).await;
    assert_eq!(list["conversations"][0]["read_seq"], 0, "{list}");
    server.stop_with([a, b]).await;
}

/// Item 7: a friend request to someone who blocked you answers exactly like a request to
/// anyone else, and the blocker's devices hear nothing; unblocking shows the request.
#[tokio::test]
async fn a_request_to_a_blocker_looks_like_any_request() {
    let server = TestServer::memory_with(open_config()).await;
    let alice = register(server.addr, "alice").await;
    let bob = register(server.addr, "bob").await;
    let carol = register(server.addr, "carol").await;
    let (mut a, _) = Client::login(server.addr, &alice).await;
    let (mut b, _) = Client::login(server.addr, &bob).await;
    let (mut c, _) = Client::login(server.addr, &carol).await;
    let r = a.call(json!({"type": "block", "user_id": bob.id})).await;
    assert_eq!(r["relation"], "blocked", "{r}");
    let before = a.call(json!({"type": "friends_list"})).await;
    // Bob asks alice (who blocks him) and carol (who does not): the same answer.
    let to_blocker = b
        .call(json!({"type": "friend_request", "username": "alice"}))
        .await;
    let to_carol = b
        .call(json!({"type": "friend_request", "username": "carol"}))
        .await;
    for r in [&to_blocker, &to_carol] {
        assert_eq!(
            (&r["type"], &r["relation"]),
            (&json!("friend_ok"), &json!("request_sent")),
            "{r}"
        );
    }
    c.expect("friend").await;
    a.expect_silence(300).await;
    let after = a.call(json!({"type": "friends_list"})).await;
    assert_eq!(
        before["friends"], after["friends"],
        "alice's list is untouched"
    );
    let bobs = b.call(json!({"type": "friends_list"})).await;
    let relations: Vec<_> = bobs["friends"]
        .as_array()
        .expect("friends")
        .iter()
        .map(|f| f["relation"].clone())
        .collect();
    assert_eq!(
        relations,
        vec![json!("request_sent"), json!("request_sent")]
    );
    // Alice cannot accept what she cannot see; once she unblocks, it is there.
    let r = a
        .call(json!({"type": "friend_accept", "user_id": bob.id}))
        .await;
    assert_eq!(r["code"], "no_pending_request", "{r}");
    let r = a.call(json!({"type": "unblock", "user_id": bob.id})).await;
    assert_eq!(r["relation"], "request_received", "{r}");
    b.expect_silence(200).await;
    let r = a
        .call(json!({"type": "friend_accept", "user_id": bob.id}))
        .await;
    assert_eq!(r["relation"], "friends", "{r}");
    assert_eq!(b.expect("friend").await["reason"], "accepted");
    server.stop_with([a, b, c]).await;
}

/// Item 13: a device resuming with a cursor ahead of the store gets `synced.ahead` and the
/// next live messages (which reuse those sequence numbers) are delivered, not filtered.
#[tokio::test]
async fn resume_with_a_cursor_ahead_still_gets_new_messages() {
    let server = TestServer::memory_with(open_config()).await;
    let mut p = alice_and_bob_after_hello(server.addr).await;
    p.b.close().await;
    let mut b = Client::connect(server.addr, "bob-2").await;
    let mut cursors = serde_json::Map::new();
    cursors.insert(p.conv.clone(), json!(5));
    let ok = b
        .auth(&p.bob.token, Some(json!({"cursors": cursors})))
        .await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    let synced = b.expect("synced").await;
    assert_eq!(synced["ahead"], json!([p.conv.clone()]), "{synced}");
    for (i, key) in ["k2", "k3"].iter().enumerate() {
        p.a.send_message(&p.conv, "new", key).await;
        let m = b.expect("message").await;
        assert_eq!(m["message"]["seq"], i as u64 + 2, "{m}");
    }
    server.stop_with([p.a, b]).await;
}

/// Item 2: the session ends when it expires, even on a connection that keeps pinging.
#[tokio::test]
async fn a_socket_does_not_outlive_its_session() {
    let server = TestServer::memory_with(zajel_server::ServerConfig {
        token_ttl_secs: 2,
        ..open_config()
    })
    .await;
    let acc = register(server.addr, "frank").await;
    let (mut c, _) = Client::login(server.addr, &acc).await;
    // Pings keep it from idling; the session's end still closes it.
    c.assert_alive().await;
    let (code, _) = c.expect_close().await;
    assert_eq!(code, 4001);
    server.stop().await;
}

mod redis {
    use super::*;
    use std::time::{Duration, Instant};
    use zajel_core::RedisStore;
    use zajel_core::testing::RedisServer;
    use zajel_server::Engine;
    use zajel_server::broker::{RedisBroker, RedisBrokerConfig};

    async fn node(url: &str, id: &str) -> TestServer {
        let opts = zajel_core::store::redis::RedisOptions {
            command_timeout: Duration::from_millis(1500),
            ..Default::default()
        };
        let store = RedisStore::connect_with(url, opts).await.expect("store");
        let broker = RedisBroker::connect(
            url,
            RedisBrokerConfig {
                node_id: id.into(),
                ..RedisBrokerConfig::default()
            },
        )
        .await
        .expect("broker");
        let engine = Engine::builder(Arc::new(store), super::open_config())
            .redis_broker(broker)
            .build();
        TestServer::serve(engine).await
    }

    /// Item 2: logout and logout-all on node A close the session's sockets on node B (4001).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revocation_reaches_every_node() {
        let redis = RedisServer::start().expect("redis-server");
        let (na, nb) = (node(&redis.url(), "a").await, node(&redis.url(), "b").await);
        let acc = register(na.addr, "gina").await;
        let (mut on_b, _) = Client::login(nb.addr, &acc).await;
        let r = http(
            na.addr,
            "POST",
            "/api/logout",
            None,
            &[("Authorization", &format!("Bearer {}", acc.token))],
        )
        .await;
        assert_eq!(r.status, 204);
        let (code, _) = on_b.expect_close().await;
        assert_eq!(code, 4001);
        // logout-all: a second session's socket on B closes too.
        let body = json!({"username": "gina", "password": "correct horse battery"}).to_string();
        let s1 = http(na.addr, "POST", "/api/login", Some(&body), &[])
            .await
            .json();
        let s2 = http(na.addr, "POST", "/api/login", Some(&body), &[])
            .await
            .json();
        let mut c = Client::connect(nb.addr, "gina-2").await;
        assert_eq!(
            c.auth(s2["token"].as_str().expect("token"), None).await["type"],
            "auth_ok"
        );
        logout_all(na.addr, s1["token"].as_str().expect("token")).await;
        let (code, _) = c.expect_close().await;
        assert_eq!(code, 4001);
        na.stop().await;
        nb.stop().await;
    }

    /// Item 11: with Redis frozen, a send fails fast with `unavailable` and `retry_after_ms`,
    /// and a `ping` sent after it is answered at once, not after the send.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ping_does_not_wait_behind_a_stuck_store() {
        let redis = RedisServer::start().expect("redis-server");
        let na = node(&redis.url(), "a").await;
        let Pair { mut a, b, conv, .. } = alice_and_bob(na.addr).await;
        redis.signal("STOP").expect("SIGSTOP redis");
        a.send_raw(
            &json!({"type": "send", "id": "s1", "conversation": conv, "body": "x",
                    "idempotency_key": "k1"})
            .to_string(),
        )
        .await;
        let t0 = Instant::now();
        a.send_raw(r#"{"type":"ping","id":"p1"}"#).await;
        let pong = a.answer("p1").await;
        let ping_took = t0.elapsed();
        let sent = a.answer("s1").await;
        let send_took = t0.elapsed();
        redis.signal("CONT").expect("SIGCONT redis");
        assert_eq!(pong["type"], "pong");
        assert!(
            ping_took < Duration::from_millis(500),
            "ping took {ping_took:?}"
        );
        assert_eq!(sent["code"], "unavailable", "{sent}");
        assert!(sent["retry_after_ms"].as_u64().is_some(), "{sent}");
        assert!(
            send_took < Duration::from_secs(5),
            "send took {send_took:?}"
        );
        na.stop_with([a, b]).await;
    }

    /// A full Redis (`maxmemory` reached under `noeviction`: every write answers `OOM`): a
    /// send is answered `unavailable` with `retry_after_ms` (nothing stored), the connection
    /// stays open, `/healthz` says 503 with the reason while reads still work, and once memory
    /// is freed health comes back by itself and the same send (same key) is stored once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_redis_answers_unavailable_and_fails_healthz() {
        let redis = RedisServer::start_with_args(&["--maxmemory", "4mb"]).expect("redis-server");
        let na = node(&redis.url(), "a").await;
        let Pair {
            mut a, mut b, conv, ..
        } = alice_and_bob(na.addr).await;
        assert_eq!(
            http(na.addr, "GET", "/healthz", None, &[]).await.status,
            200
        );
        let mut raw = ::redis::Client::open(redis.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection");
        let _full = zajel_core::testing::fill_until_oom(&redis.url()).await;
        let send = json!({"type": "send", "id": "s1", "conversation": conv, "body": "x",
                          "idempotency_key": "k1"});
        a.send_raw(&send.to_string()).await;
        let refused = a.answer("s1").await;
        assert_eq!(refused["code"], "unavailable", "{refused}");
        assert!(refused["retry_after_ms"].as_u64().is_some(), "{refused}");
        a.assert_alive().await;
        let health = http(na.addr, "GET", "/healthz", None, &[]).await;
        assert_eq!(health.status, 503);
        assert!(health.body.contains("OOM"), "{}", health.body);
        // Memory freed: health recovers without traffic, the retry is stored once.
        let _: () = ::redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(0)
            .query_async(&mut raw)
            .await
            .expect("CONFIG SET");
        let deadline = Instant::now() + Duration::from_secs(10);
        while http(na.addr, "GET", "/healthz", None, &[]).await.status != 200 {
            assert!(Instant::now() < deadline, "/healthz never recovered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        a.send_raw(
            &json!({"type": "send", "id": "s2", "conversation": conv, "body": "x",
                            "idempotency_key": "k1"})
            .to_string(),
        )
        .await;
        let stored = a.answer("s2").await;
        assert_eq!(stored["type"], "sent", "{stored}");
        assert_eq!(stored["message"]["seq"], 1, "{stored}");
        assert_eq!(stored["duplicate"], false, "{stored}");
        assert_eq!(b.expect("message").await["message"]["seq"], 1);
        na.stop_with([a, b]).await;
    }
}
