//! An embedding app's users signing in with JWTs its backend signs: HS256 with a shared
//! secret, and ES256 with keys the test generates, served as a JWKS over HTTP (rotated once).
//! The app's token is exchanged at `POST /api/auth/app` for a Zajel session, then used on the
//! WebSocket.

mod common;

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{Client, TestServer, http, test_config};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use zajel_core::{ExternalIdentity, IdentityStore, MemoryStore, Store};
use zajel_server::Engine;
use zajel_server::identity::jwt::{JwtAuthenticator, JwtConfig, JwtKey};

const SECRET: &[u8] = b"an HS256 secret of at least 32 bytes!";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "aud": "zajel", "iss": "https://shop.example", "exp": now() + 300,
        "name": "Shop Customer"})
}

struct Srv {
    addr: std::net::SocketAddr,
}

async fn serve(engine: Engine, auth: Arc<JwtAuthenticator>) -> Srv {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = engine.router().merge(engine.app_auth_router("shop", auth));
    let e = engine.clone();
    tokio::spawn(zajel_server::serve_router(
        listener,
        app,
        e,
        std::future::pending(),
    ));
    Srv { addr }
}

async fn exchange(addr: std::net::SocketAddr, token: &str) -> common::HttpResponse {
    http(
        addr,
        "POST",
        "/api/auth/app",
        None,
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_tokens_sign_app_users_in_and_bad_ones_are_refused() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone() as Arc<dyn Store>, test_config());
    let mut config = JwtConfig::new(JwtKey::Hs256(SECRET.to_vec()), "zajel");
    config.issuer = Some("https://shop.example".into());
    let server = serve(engine.clone(), JwtAuthenticator::new(config).unwrap()).await;

    let ok = exchange(server.addr, &hs(&claims("cust-1"))).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let body = ok.json();
    assert_eq!(body["user"]["username"], "Shop_Customer");
    assert!(
        ok.header("set-cookie")
            .unwrap()
            .starts_with("zajel_session=")
    );
    let token = body["token"].as_str().unwrap().to_owned();
    let id = body["user"]["id"].clone();
    assert_eq!(
        store
            .external_user(&ExternalIdentity::app("shop", "cust-1").unwrap())
            .await
            .unwrap()
            .map(|u| u.to_string()),
        id.as_str().map(str::to_owned)
    );
    // The Zajel token works on the WebSocket.
    let mut ws = Client::connect(server.addr, "cust-1").await;
    let auth = ws.auth(&token, None).await;
    assert_eq!(auth["type"], "auth_ok", "{auth}");
    // The same app user again: the same Zajel user.
    let again = exchange(server.addr, &hs(&claims("cust-1"))).await;
    assert_eq!(again.json()["user"]["id"], id);

    let mut bad: Vec<(&str, String)> = Vec::new();
    let mut c = claims("cust-2");
    c["exp"] = json!(now() - 120);
    bad.push(("expired", hs(&c)));
    let mut c = claims("cust-2");
    c["aud"] = json!("another-service");
    bad.push(("wrong audience", hs(&c)));
    let mut c = claims("cust-2");
    c["iss"] = json!("https://evil.example");
    bad.push(("wrong issuer", hs(&c)));
    let mut c = claims("cust-2");
    c["nbf"] = json!(now() + 3600);
    bad.push(("not yet valid", hs(&c)));
    let mut c = claims("cust-2");
    c.as_object_mut().unwrap().remove("sub");
    bad.push(("no subject", hs(&c)));
    let mut c = claims("cust-2");
    c.as_object_mut().unwrap().remove("exp");
    bad.push(("no expiry", hs(&c)));
    let good = hs(&claims("cust-2"));
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = B64.encode(claims("cust-1").to_string());
    bad.push(("tampered (someone else's sub)", parts.join(".")));
    bad.push((
        "other secret",
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims("cust-2"),
            &EncodingKey::from_secret(b"another secret that is also long enough"),
        )
        .unwrap(),
    ));
    bad.push((
        "alg none",
        format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            B64.encode(claims("cust-2").to_string())
        ),
    ));
    bad.push(("garbage", "not.a.jwt".into()));
    for (what, token) in bad {
        let r = exchange(server.addr, &token).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.json()["code"], "invalid_credentials", "{what}");
        assert!(r.header("set-cookie").is_none(), "{what}");
    }
    let none = http(server.addr, "POST", "/api/auth/app", None, &[]).await;
    assert_eq!(none.status, 401);
    assert!(
        store
            .external_user(&ExternalIdentity::app("shop", "cust-2").unwrap())
            .await
            .unwrap()
            .is_none(),
        "no refused token created a user"
    );
    // Short secrets are refused at configuration time.
    assert!(
        JwtAuthenticator::new(JwtConfig::new(JwtKey::Hs256(b"short".to_vec()), "zajel")).is_err()
    );
}

struct EsKey {
    pkcs8: Vec<u8>,
    jwk: Value,
    public: Vec<u8>,
}

fn es_key(kid: &str) -> EsKey {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let p = pair.public_key().as_ref().to_vec();
    EsKey {
        pkcs8: pkcs8.as_ref().to_vec(),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..])}),
        public: p,
    }
}

fn es(key: &EsKey, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_ec_der(&key.pkcs8)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_verify_against_a_jwks_url_with_rotation() {
    // The app's JWKS endpoint.
    let jwks: Arc<Mutex<(Value, usize)>> = Arc::new(Mutex::new((Value::Null, 0)));
    let k1 = es_key("k1");
    let k2 = es_key("k2");
    jwks.lock().unwrap().0 = json!({"keys": [k1.jwk.clone()]});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let served = jwks.clone();
    let app = axum::Router::new()
        .route(
            "/jwks.json",
            get(|State(s): State<Arc<Mutex<(Value, usize)>>>| async move {
                let mut s = s.lock().unwrap();
                s.1 += 1;
                Json(s.0.clone())
            }),
        )
        .with_state(served);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let engine = Engine::new(Arc::new(MemoryStore::new()), test_config());
    let mut config = JwtConfig::new(JwtKey::JwksUrl(jwks_url), "zajel");
    // The interval is the contract under test: after a refetch, the next one waits this
    // long. 1 s (not less) so the two exchanges after the refetch surely fall inside it on a
    // loaded 2-core machine.
    const MIN_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);
    config.jwks_min_refresh = MIN_REFRESH;
    let server = serve(engine, JwtAuthenticator::new(config).unwrap()).await;

    let r = exchange(server.addr, &es(&k1, "k1", &claims("u1"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let fetches = jwks.lock().unwrap().1;
    assert_eq!(fetches, 1, "fetched on first use");
    let r = exchange(server.addr, &es(&k1, "k1", &claims("u1"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(jwks.lock().unwrap().1, 1, "cached");

    // Alg confusion: an HS256 token "signed" with the public key as secret is refused.
    let confused = jsonwebtoken::encode(
        &{
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("k1".into());
            h
        },
        &claims("u1"),
        &EncodingKey::from_secret(&k1.public),
    )
    .unwrap();
    let r = exchange(server.addr, &confused).await;
    assert_eq!(r.status, 401, "{}", r.body);

    // Rotation: a token with the new kid triggers one refetch (after the minimum interval).
    tokio::time::sleep(MIN_REFRESH + std::time::Duration::from_millis(50)).await;
    jwks.lock().unwrap().0 = json!({"keys": [k2.jwk.clone()]});
    let r = exchange(server.addr, &es(&k2, "k2", &claims("u1"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(jwks.lock().unwrap().1, 2);
    // An unknown kid right after: no new fetch inside the interval, refused.
    let r = exchange(server.addr, &es(&es_key("k9"), "k9", &claims("u1"))).await;
    assert_eq!(r.status, 401);
    assert_eq!(jwks.lock().unwrap().1, 2);
    // The retired key no longer verifies.
    let r = exchange(server.addr, &es(&k1, "k1", &claims("u1"))).await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_api_creates_app_users_sessions_and_friendships() {
    let engine = Engine::new(Arc::new(MemoryStore::new()), test_config());
    let server = TestServer::serve(engine.clone()).await;
    let a = engine.app_user("shop", "1", Some("ann")).await.unwrap();
    let b = engine.app_user("shop", "2", Some("ann")).await.unwrap();
    assert_eq!(engine.app_user("shop", "1", None).await.unwrap(), a);
    assert_ne!(a.id, b.id);
    assert_eq!(b.username, "ann_2");
    // Another app's user 1 is someone else.
    assert_ne!(
        engine.app_user("blog", "1", Some("ann")).await.unwrap().id,
        a.id
    );
    assert!(engine.app_user("shop", "", None).await.is_err());
    // Regression (issue 7.1): a password-less account cannot be opened with any password,
    // including the one behind the server's dummy hash.
    for pw in ["not-a-real-password", "", "whatever123"] {
        let r = http(
            server.addr,
            "POST",
            "/api/login",
            Some(&json!({"username": "ann", "password": pw}).to_string()),
            &[],
        )
        .await;
        assert_eq!(r.status, 401, "password {pw:?}: {}", r.body);
    }

    engine.make_friends(a.id, b.id).await.unwrap();
    engine.make_friends(b.id, a.id).await.unwrap(); // idempotent
    let sa = engine.issue_session(a.id).await.unwrap();
    let sb = engine.issue_session(b.id).await.unwrap();
    let mut ca = Client::connect(server.addr, "ann").await;
    assert_eq!(ca.auth(&sa.token, None).await["type"], "auth_ok");
    let mut cb = Client::connect(server.addr, "ann_2").await;
    assert_eq!(cb.auth(&sb.token, None).await["type"], "auth_ok");
    let friends = ca.call(json!({"type": "friends_list"})).await;
    assert_eq!(friends["friends"][0]["relation"], "friends", "{friends}");

    // Revocation closes the socket with 4001 and the token stops working.
    assert_eq!(engine.revoke_sessions(a.id).await.unwrap(), 1);
    let (code, _) = ca.expect_close().await;
    assert_eq!(code, 4001);
    let r = http(
        server.addr,
        "GET",
        "/api/me",
        None,
        &[("Authorization", &format!("Bearer {}", sa.token))],
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_options_mount_under_a_prefix_without_metrics_or_healthz() {
    use zajel_server::RouterOptions;
    let engine = Engine::new(Arc::new(MemoryStore::new()), test_config());
    // An app with its own /metrics and /healthz: merging the default router would panic
    // (overlapping routes); with the options it does not.
    let app = axum::Router::new()
        .route("/metrics", get(|| async { "app metrics" }))
        .route("/healthz", get(|| async { "app health" }))
        .merge(
            engine.router_with(
                RouterOptions::default()
                    .prefix("/chat/")
                    .metrics(false)
                    .healthz(false),
            ),
        )
        .merge(
            engine.router_with(
                RouterOptions::default()
                    .prefix("/ops")
                    .metrics(true)
                    .healthz(false),
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(zajel_server::serve_router(
        listener,
        app,
        engine.clone(),
        std::future::pending(),
    ));
    let r = http(addr, "GET", "/metrics", None, &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "app metrics"));
    let r = http(addr, "GET", "/healthz", None, &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "app health"));
    assert_eq!(
        http(addr, "GET", "/chat/metrics", None, &[]).await.status,
        404
    );
    assert_eq!(
        http(addr, "GET", "/chat/healthz", None, &[]).await.status,
        404
    );
    assert_eq!(
        http(addr, "GET", "/ops/metrics", None, &[]).await.status,
        200
    );
    assert_eq!(
        http(addr, "GET", "/api/register", None, &[]).await.status,
        404
    );
    let reg = http(
        addr,
        "POST",
        "/chat/api/register",
        Some(r#"{"username":"pat","password":"correct horse battery"}"#),
        &[],
    )
    .await;
    assert_eq!(reg.status, 201, "{}", reg.body);
    let token = reg.json()["token"].as_str().unwrap().to_owned();
    // The WebSocket under the prefix.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{addr}/chat/ws"),
    )
    .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "zajel.v1".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    let auth = json!({"type": "auth", "id": "1", "protocol": 1, "token": token});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        auth.to_string().into(),
    ))
    .await
    .unwrap();
    let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
    assert_eq!(v["type"], "auth_ok", "{v}");
}
