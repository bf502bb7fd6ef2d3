//! An existing axum application that mounts Zajel next to its own routes and signs its own
//! users into the chat: no Zajel passwords.
//!
//! * The app has its own accounts and its own login (`POST /login`, cookie `app_session`).
//! * [`AppSessions`] implements Zajel's [`Authenticator`] over those sessions, and
//!   `engine.app_auth_router("embed-demo", …)` adds `POST /api/auth/app`: the app's cookie in,
//!   a Zajel session (token + cookie) out. Each app user becomes a Zajel user on first sight.
//! * The app uses the engine's server-side API: its two demo users are made friends at start
//!   and welcomed by a system message in their conversation (`engine.send_system`).
//!
//! Run with `cargo run -p example-embed-axum`, then
//! `curl -c jar -d '{"username":"alice","password":"wonderland"}' -H 'content-type: application/json' http://127.0.0.1:3000/login`
//! and `curl -b jar -X POST http://127.0.0.1:3000/api/auth/app` for a Zajel token; Zajel's
//! WebSocket is at `/ws`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use zajel_server::identity::{AppUser, Authenticator, IdentityError};
use zajel_server::{Engine, ServerConfig};

/// The app's name in Zajel's identity links (`app:embed-demo`, app user id).
pub const APP: &str = "embed-demo";
/// The app's own session cookie.
pub const APP_COOKIE: &str = "app_session";

/// One of the app's own accounts (a real app has a database).
struct Account {
    id: &'static str,
    password: &'static str,
}

/// The application's own state: its users and its sessions.
#[derive(Clone)]
pub struct AppState {
    hits: Arc<AtomicU64>,
    accounts: Arc<HashMap<&'static str, Account>>,
    sessions: AppSessions,
}

impl Default for AppState {
    fn default() -> Self {
        let accounts = HashMap::from([
            (
                "alice",
                Account {
                    id: "u-1001",
                    password: "wonderland",
                },
            ),
            (
                "bob",
                Account {
                    id: "u-1002",
                    password: "builder",
                },
            ),
        ]);
        Self {
            hits: Arc::default(),
            accounts: Arc::new(accounts),
            sessions: AppSessions::default(),
        }
    }
}

/// The app's sessions: cookie value -> (app user id, display name). Zajel reads them through
/// [`Authenticator`].
#[derive(Clone, Default)]
pub struct AppSessions(Arc<Mutex<HashMap<String, (String, String)>>>);

#[async_trait::async_trait]
impl Authenticator for AppSessions {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<AppUser, IdentityError> {
        let jar = CookieJar::from_headers(headers);
        let sid = jar
            .get(APP_COOKIE)
            .map(Cookie::value)
            .ok_or_else(|| IdentityError::InvalidCredential("not signed in to the app".into()))?;
        let sessions = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (id, name) = sessions
            .get(sid)
            .ok_or_else(|| IdentityError::InvalidCredential("unknown app session".into()))?;
        Ok(AppUser {
            id: id.clone(),
            username_hint: Some(name.clone()),
        })
    }
}

async fn hello(State(state): State<AppState>) -> String {
    let n = state.hits.fetch_add(1, Ordering::Relaxed) + 1;
    format!("hello from my app (visit {n})")
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

/// The app's own login (a real app verifies a password hash).
async fn login(State(state): State<AppState>, jar: CookieJar, Json(body): Json<Login>) -> Response {
    let Some(account) = state
        .accounts
        .get(body.username.as_str())
        .filter(|a| a.password == body.password)
    else {
        return (StatusCode::UNAUTHORIZED, "wrong username or password").into_response();
    };
    let mut raw = [0u8; 16];
    if getrandom::fill(&mut raw).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let sid: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    state
        .sessions
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(sid.clone(), (account.id.to_owned(), body.username.clone()));
    let cookie = Cookie::build((APP_COOKIE, sid))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax);
    (jar.add(cookie), "signed in to the app").into_response()
}

/// The Zajel engine for this app (in-memory store here; use
/// `zajel_server::EmbeddedStore::open(dir)`, or `RedisStore::connect(url)` with the `redis`
/// feature, for persistence).
pub fn engine(config: ServerConfig) -> Engine {
    Engine::new(Arc::new(zajel_server::MemoryStore::new()), config)
}

/// The welcome notice [`seed`] posts into the demo users' conversation.
pub const WELCOME: &str = "Welcome! alice and bob can chat here now.";

/// The app's server-side use of the engine: its two demo users may talk to each other, so
/// they are made friends (created as Zajel users if needed), and a system message welcomes
/// them in their conversation. Its idempotency key is fixed, so running this again posts it
/// once (with a persistent store, across restarts too, within the store's dedupe window).
pub async fn seed(engine: &Engine) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let alice = engine.app_user(APP, "u-1001", Some("alice")).await?;
    let bob = engine.app_user(APP, "u-1002", Some("bob")).await?;
    engine.make_friends(alice.id, bob.id).await?;
    engine
        .send_system(alice.id, bob.id, WELCOME, "welcome")
        .await?;
    Ok(())
}

/// The application's router with Zajel merged in, signing the app's users into Zajel.
pub fn app(engine: &Engine) -> Router {
    let state = AppState::default();
    let sessions = Arc::new(state.sessions.clone());
    Router::new()
        .route("/hello", get(hello))
        .route("/login", post(login))
        .with_state(state)
        .merge(engine.router())
        .merge(engine.app_auth_router(APP, sessions))
}

/// Serves [`app`] on `listener` until `signal`, with Zajel's graceful WebSocket shutdown.
pub async fn run(
    listener: tokio::net::TcpListener,
    engine: Engine,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    seed(&engine).await.map_err(std::io::Error::other)?;
    let router = app(&engine);
    zajel_server::serve_router(listener, router, engine, signal).await
}
