//! ID token verification with a provider that signs what the test wants: a tiny in-test
//! OpenID provider (discovery, JWKS, token endpoint) with ES256 keys the test generates. The
//! real provider (`identity_oidc.rs`) cannot mint bad tokens; this one mints expired,
//! tampered, wrong-audience, wrong-issuer, wrong-nonce and unknown-key tokens.

mod identity_support;

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use identity_support::*;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use zajel_core::{MemoryStore, Store, UserStore};

/// An ES256 key: PKCS#8 for signing and its public JWK.
struct TestKey {
    pkcs8: Vec<u8>,
    jwk: Value,
}

fn key(kid: &str) -> TestKey {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref();
    assert_eq!(point.len(), 65);
    TestKey {
        pkcs8: pkcs8.as_ref().to_vec(),
        jwk: json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..])}),
    }
}

/// An ES256 JWT of `claims` signed with the PKCS#8 key `pkcs8`, naming key `kid`.
fn sign(pkcs8: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ec_der(pkcs8),
    )
    .unwrap()
}

#[derive(Default)]
struct FakeState {
    issuer: String,
    jwks: Value,
    id_token: String,
    jwks_fetches: usize,
}

type Shared = Arc<Mutex<FakeState>>;

async fn discovery(State(s): State<Shared>) -> Json<Value> {
    let iss = s.lock().unwrap().issuer.clone();
    Json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/auth"),
        "token_endpoint": format!("{iss}/token"),
        "jwks_uri": format!("{iss}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
}

async fn jwks(State(s): State<Shared>) -> Json<Value> {
    let mut s = s.lock().unwrap();
    s.jwks_fetches += 1;
    Json(s.jwks.clone())
}

async fn token(State(s): State<Shared>) -> Json<Value> {
    let t = s.lock().unwrap().id_token.clone();
    Json(json!({"access_token": "at", "token_type": "Bearer", "expires_in": 60, "id_token": t}))
}

struct Fake {
    state: Shared,
    issuer: String,
}

async fn fake_provider() -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let state: Shared = Arc::new(Mutex::new(FakeState {
        issuer: issuer.clone(),
        ..FakeState::default()
    }));
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/token", post(token))
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Fake { state, issuer }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Starts a sign-in, lets `mint` build the ID token from (issuer, nonce), and runs the
/// callback. Returns the callback's page.
async fn attempt(
    server: &IdentityServer,
    fake: &Fake,
    mint: impl FnOnce(&str, &str) -> String,
) -> Page {
    let mut browser = Browser::new();
    let start = browser.get(&server.start_url("/")).await;
    assert_eq!(start.status, 303, "{}", start.body);
    let auth = reqwest::Url::parse(start.location.as_deref().unwrap()).unwrap();
    let q = |k: &str| {
        auth.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    let (state, nonce) = (q("state"), q("nonce"));
    fake.state.lock().unwrap().id_token = mint(&fake.issuer, &nonce);
    browser
        .get(&format!(
            "{}/api/auth/oidc/test/callback?code=c0de&state={state}",
            server.base
        ))
        .await
}

fn claims(iss: &str, nonce: &str, sub: &str) -> Value {
    json!({"iss": iss, "sub": sub, "aud": "client-1", "nonce": nonce,
        "iat": now(), "exp": now() + 300, "preferred_username": sub})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_id_tokens_are_refused_and_create_nothing() {
    let fake = fake_provider().await;
    let k1 = key("k1");
    let other = key("k1"); // same kid, different key: a forgery
    fake.state.lock().unwrap().jwks = json!({"keys": [k1.jwk.clone()]});
    let (listener, _) = IdentityServer::bind().await;
    let store = Arc::new(MemoryStore::new());
    let server = IdentityServer::serve(
        listener,
        store.clone() as Arc<dyn Store>,
        provider_config(&fake.issuer, "client-1", "secret-1"),
        |_| {},
    )
    .await;

    type Mint = Box<dyn FnOnce(&str, &str) -> String>;
    let cases: Vec<(&str, Mint)> = vec![
        ("expired", {
            let pkcs8 = k1.pkcs8.clone();
            Box::new(move |iss: &str, nonce: &str| {
                let mut c = claims(iss, nonce, "mallory");
                c["iat"] = json!(now() - 7200);
                c["exp"] = json!(now() - 3600);
                sign(&pkcs8, "k1", &c)
            })
        }),
        ("wrong audience", {
            let pkcs8 = k1.pkcs8.clone();
            Box::new(move |iss: &str, nonce: &str| {
                let mut c = claims(iss, nonce, "mallory");
                c["aud"] = json!("someone-else");
                sign(&pkcs8, "k1", &c)
            })
        }),
        ("wrong issuer", {
            let pkcs8 = k1.pkcs8.clone();
            Box::new(move |_iss: &str, nonce: &str| {
                sign(
                    &pkcs8,
                    "k1",
                    &claims("https://evil.example", nonce, "mallory"),
                )
            })
        }),
        ("wrong nonce", {
            let pkcs8 = k1.pkcs8.clone();
            Box::new(move |iss: &str, _nonce: &str| {
                sign(&pkcs8, "k1", &claims(iss, "replayed-nonce", "mallory"))
            })
        }),
        ("tampered payload", {
            let pkcs8 = k1.pkcs8.clone();
            Box::new(move |iss: &str, nonce: &str| {
                let good = sign(&pkcs8, "k1", &claims(iss, nonce, "mallory"));
                let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
                let forged = claims(iss, nonce, "victim");
                parts[1] = B64.encode(forged.to_string());
                parts.join(".")
            })
        }),
        ("signed by another key", {
            let pkcs8 = other.pkcs8.clone();
            Box::new(move |iss: &str, nonce: &str| {
                sign(&pkcs8, "k1", &claims(iss, nonce, "mallory"))
            })
        }),
        (
            "alg none",
            Box::new(|iss: &str, nonce: &str| {
                let h = B64.encode(r#"{"alg":"none","typ":"JWT"}"#);
                let p = B64.encode(claims(iss, nonce, "mallory").to_string());
                format!("{h}.{p}.")
            }),
        ),
    ];
    for (what, mint) in cases {
        let page = attempt(&server, &fake, mint).await;
        assert_eq!(page.status, 401, "{what}: {}", page.body);
        assert_eq!(
            page.header("x-zajel-error"),
            Some("invalid_id_token"),
            "{what}"
        );
        assert!(
            page.set_cookies()
                .iter()
                .all(|c| !c.starts_with("zajel_session=")),
            "{what}"
        );
    }
    let mallory = zajel_core::Username::parse("mallory").unwrap();
    assert!(store.user_by_username(&mallory).await.unwrap().is_none());
    let victim = zajel_core::Username::parse("victim").unwrap();
    assert!(store.user_by_username(&victim).await.unwrap().is_none());

    // The control: a good token signs in.
    let good = {
        let pkcs8 = k1.pkcs8.clone();
        attempt(&server, &fake, move |iss, nonce| {
            sign(&pkcs8, "k1", &claims(iss, nonce, "grace"))
        })
        .await
    };
    assert_eq!(good.status, 303, "{}", good.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_are_fetched_once_on_an_unknown_kid() {
    let fake = fake_provider().await;
    let k1 = key("k1");
    let k2 = key("k2");
    fake.state.lock().unwrap().jwks = json!({"keys": [k1.jwk.clone()]});
    let (listener, _) = IdentityServer::bind().await;
    let server = IdentityServer::serve(
        listener,
        Arc::new(MemoryStore::new()),
        provider_config(&fake.issuer, "client-1", "secret-1"),
        |_| {},
    )
    .await;
    let p1 = k1.pkcs8.clone();
    let first = attempt(&server, &fake, move |iss, nonce| {
        sign(&p1, "k1", &claims(iss, nonce, "henry"))
    })
    .await;
    assert_eq!(first.status, 303, "{}", first.body);
    let fetches = fake.state.lock().unwrap().jwks_fetches;
    assert_eq!(fetches, 1, "discovery reads the JWKS once");

    // The provider rotates to k2: the first token naming k2 triggers one refetch.
    fake.state.lock().unwrap().jwks = json!({"keys": [k2.jwk.clone()]});
    let p2 = k2.pkcs8.clone();
    let rotated = attempt(&server, &fake, move |iss, nonce| {
        sign(&p2, "k2", &claims(iss, nonce, "henry"))
    })
    .await;
    assert_eq!(rotated.status, 303, "{}", rotated.body);
    assert_eq!(fake.state.lock().unwrap().jwks_fetches, 2);

    // Unknown kids cannot make the server hammer the provider: no refetch within the window.
    let p3 = key("k3").pkcs8;
    let unknown = attempt(&server, &fake, move |iss, nonce| {
        sign(&p3, "k3", &claims(iss, nonce, "henry"))
    })
    .await;
    assert_eq!(unknown.status, 401, "{}", unknown.body);
    assert_eq!(unknown.header("x-zajel-error"), Some("invalid_id_token"));
    assert_eq!(fake.state.lock().unwrap().jwks_fetches, 2);
}
