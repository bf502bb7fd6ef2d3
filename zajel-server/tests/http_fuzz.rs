//! Property tests of the HTTP API against a real server on loopback: any body (arbitrary bytes,
//! arbitrary JSON, account bodies with fields of any type) and any bearer token, sent to every
//! endpoint that reads one, is answered with a 2xx or a 4xx carrying the JSON error body
//! (`code`, `message`); never a 5xx, never a dropped connection.
//!
//! Bounded for CI: `PROPTEST_CASES` (default 256 per property) sets the cases; at the default
//! the file takes a few seconds.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};
use std::net::SocketAddr;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<char>(), 0..40).prop_map(String::from_iter),
        proptest::collection::vec(proptest::char::range('a', 'z'), 3..12)
            .prop_map(String::from_iter),
        Just(String::new()),
        Just("x".repeat(200)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        proptest::num::f64::NORMAL.prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((text(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Bodies: raw bytes, any JSON, and account- and identity-shaped objects whose fields have any
/// type.
fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        json_value().prop_map(|v| v.to_string()),
        (
            prop_oneof![json_value(), text().prop_map(Value::String)],
            prop_oneof![json_value(), text().prop_map(Value::String)],
            proptest::option::of(json_value()),
        )
            .prop_map(|(u, p, extra)| {
                let mut o = json!({"username": u, "password": p});
                if let Some(x) = extra {
                    o["extra"] = x;
                }
                o.to_string()
            }),
        // An identity to unlink: `{"provider", "subject"}` of any type.
        (
            prop_oneof![json_value(), text().prop_map(Value::String)],
            prop_oneof![json_value(), text().prop_map(Value::String)],
        )
            .prop_map(|(p, s)| json!({"provider": p, "subject": s}).to_string()),
    ]
}

/// Header-safe token text (printable ASCII: a header cannot carry CR/LF).
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(proptest::char::range(' ', '~'), 0..80)
            .prop_map(|c| String::from_iter(c).trim().to_owned()),
        proptest::collection::vec(proptest::char::range('a', 'z'), 0..40).prop_map(|c| format!(
            "zs1.{}.{}",
            String::from_iter(c.clone()),
            String::from_iter(c)
        )),
        Just("zs1.1f0c5a52-8d3b-4a7e-9c61-2b7f4e0a9d11.AAAA".to_owned()),
        // JWT-shaped: three base64url-ish segments.
        proptest::collection::vec(proptest::char::range('A', 'z'), 3..60).prop_map(|c| {
            let s = String::from_iter(c).replace(['[', '\\', ']', '^', '`'], "_");
            format!("{s}.{s}.{s}")
        }),
    ]
}

/// The contract for every answer.
fn check(what: &str, r: &HttpResponse) -> Result<(), TestCaseError> {
    prop_assert!(r.status < 500, "{what}: {} {}", r.status, r.body);
    if r.status >= 400 {
        let v = r.json();
        prop_assert!(
            v["code"].is_string() && v["message"].is_string(),
            "{what}: error body is not the JSON error: {} {}",
            r.status,
            r.body
        );
    }
    Ok(())
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    })
}

/// Every throttle open, the login-failure ones too (the cases hammer one address).
fn fuzz_config() -> zajel_server::ServerConfig {
    zajel_server::ServerConfig {
        login_failures_per_minute: 1_000_000,
        login_failures_per_account_per_minute: 1_000_000,
        ..open_config()
    }
}

/// A runtime and a server on it with every throttle open.
fn start() -> (tokio::runtime::Runtime, TestServer) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt.block_on(TestServer::memory_with(fuzz_config()));
    (rt, server)
}

async fn post_body(addr: SocketAddr, path: &str, body: &str) -> HttpResponse {
    http(addr, "POST", path, Some(body), &[]).await
}

#[test]
fn any_account_body_gets_a_typed_answer() {
    let (rt, server) = start();
    let addr = server.addr;
    runner()
        .run(&body(), |b| {
            rt.block_on(async {
                for path in [
                    "/api/register",
                    "/api/login",
                    "/api/logout",
                    "/api/logout-all",
                ] {
                    check(path, &post_body(addr, path, &b).await)?;
                }
                Ok(())
            })
        })
        .expect("every body is answered with a typed 2xx/4xx");
    rt.block_on(server.stop());
}

#[test]
fn any_bearer_token_gets_a_typed_answer() {
    let (rt, server) = start();
    let addr = server.addr;
    runner()
        .run(&token(), |t| {
            rt.block_on(async {
                let bearer = format!("Bearer {t}");
                let cookie = format!("zajel_session={t}");
                for headers in [
                    [("Authorization", bearer.as_str())],
                    [("Cookie", cookie.as_str())],
                ] {
                    for (method, path) in [
                        ("GET", "/api/me"),
                        ("POST", "/api/logout"),
                        ("POST", "/api/logout-all"),
                    ] {
                        let r = http(addr, method, path, None, &headers).await;
                        check(path, &r)?;
                        prop_assert_eq!(r.status, 401, "{} {}: {}", method, path, r.body);
                    }
                }
                Ok(())
            })
        })
        .expect("every token is refused with a typed 401");
    rt.block_on(server.stop());
}

/// The endpoints that read a body from a signed-in user: rename, the session answer, and the
/// OpenID Connect unlink. None of them ends the session, whatever the body.
#[cfg(feature = "oidc")]
#[test]
fn any_body_from_a_signed_in_user_gets_a_typed_answer() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (server, bearer) = rt.block_on(async {
        let store = std::sync::Arc::new(zajel_core::MemoryStore::new());
        let engine = zajel_server::Engine::new(store, fuzz_config());
        let server = TestServer::serve_app(engine.clone(), with_oidc_routes(&engine)).await;
        let me = register(server.addr, "fuzzer").await;
        (server, format!("Bearer {}", me.token))
    });
    let addr = server.addr;
    runner()
        .run(&body(), |b| {
            rt.block_on(async {
                let auth = [("Authorization", bearer.as_str())];
                for path in ["/api/me/username", "/api/session", "/api/identities/unlink"] {
                    check(path, &http(addr, "POST", path, Some(&b), &auth).await)?;
                }
                let me = http(addr, "GET", "/api/me", None, &auth).await;
                prop_assert_eq!(me.status, 200, "the session survives: {}", me.body);
                Ok(())
            })
        })
        .expect("every body is answered with a typed 2xx/4xx");
    rt.block_on(server.stop());
}

/// The signed-JWT exchange of an embedding app's users reads its token from the header.
#[cfg(feature = "oidc")]
#[test]
fn any_app_token_gets_a_typed_answer() {
    use zajel_server::identity::jwt::{JwtAuthenticator, JwtConfig, JwtKey};
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt.block_on(async {
        let store = std::sync::Arc::new(zajel_core::MemoryStore::new());
        let engine = zajel_server::Engine::new(store, fuzz_config());
        let auth = JwtAuthenticator::new(JwtConfig::new(
            JwtKey::Hs256(b"an HS256 secret of at least 32 bytes!".to_vec()),
            "zajel",
        ))
        .expect("authenticator");
        let app = engine.router().merge(engine.app_auth_router("shop", auth));
        TestServer::serve_app(engine, app).await
    });
    let addr = server.addr;
    runner()
        .run(&(token(), body()), |(t, b)| {
            rt.block_on(async {
                let bearer = format!("Bearer {t}");
                let r = http(
                    addr,
                    "POST",
                    "/api/auth/app",
                    None,
                    &[("Authorization", &bearer)],
                )
                .await;
                check("/api/auth/app", &r)?;
                prop_assert_eq!(r.status, 401, "{}", r.body);
                let r = http(
                    addr,
                    "POST",
                    "/api/auth/app",
                    Some(&b),
                    &[("Authorization", &bearer)],
                )
                .await;
                check("/api/auth/app with a body", &r)?;
                Ok(())
            })
        })
        .expect("every app token is refused with a typed 401");
    rt.block_on(server.stop());
}
