//! The HTTP API's JSON bodies, through the engine's real router in-process (no socket): the
//! first input byte picks the endpoint, the rest is the body. Every answer is a 2xx or a 4xx
//! with the JSON error body (`code`, `message`): never a 5xx, never a panic.
#![no_main]

use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;
use zajel_server::{Engine, ServerConfig};

/// The endpoints that read a body (or a content type), and whether they need a session.
const ENDPOINTS: &[(&str, bool)] = &[
    ("/api/register", false),
    ("/api/login", false),
    ("/api/me/username", true),
    ("/api/session", true),
];

struct World {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    bearer: String,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // The engine starts its background tasks on the runtime it is made in.
        let _in_runtime = rt.enter();
        let config = ServerConfig {
            // Cheap hashing and no throttles: the fuzzer registers and logs in a lot.
            argon2_memory_kib: 256,
            argon2_iterations: 1,
            register_per_address_per_minute: 1_000_000,
            login_attempts_per_address_per_minute: 1_000_000,
            login_failures_per_minute: 1_000_000,
            login_failures_per_account_per_minute: 1_000_000,
            ..ServerConfig::default()
        };
        let engine = Engine::new(Arc::new(zajel_core::MemoryStore::new()), config);
        let router = engine.router();
        let body = r#"{"username":"fuzzer","password":"correct horse battery"}"#;
        let (status, answer) = rt.block_on(call(&router, "/api/register", None, body.as_bytes()));
        assert_eq!(status, 201, "{answer}");
        let token: serde_json::Value = serde_json::from_str(&answer).expect("json");
        let bearer = format!("Bearer {}", token["token"].as_str().expect("token"));
        drop(_in_runtime);
        World { rt, router, bearer }
    })
}

async fn call(router: &axum::Router, path: &str, auth: Option<&str>, body: &[u8]) -> (u16, String) {
    let mut req = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    let req = req.body(Body::from(body.to_vec())).expect("request");
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let w = world();
    let (path, signed_in) = ENDPOINTS[usize::from(pick) % ENDPOINTS.len()];
    let auth = signed_in.then_some(w.bearer.as_str());
    let (status, answer) = w.rt.block_on(call(&w.router, path, auth, body));
    assert!(status < 500, "{path}: {status} {answer}");
    if status >= 400 {
        let v: serde_json::Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("{path}: {status}: error body is not JSON ({e}): {answer}"));
        assert!(
            v["code"].is_string() && v["message"].is_string(),
            "{path}: {status}: {answer}"
        );
    }
    // The session survives whatever the body was (a rename keeps the session).
    if signed_in {
        let (status, _) =
            w.rt.block_on(call(&w.router, "/api/session", Some(&w.bearer), b""));
        assert_eq!(status, 200, "the fuzzer's session was lost after {path}");
    }
});
