//! The HTTP side: the router, accounts (`accounts.rs`), operations endpoints (`ops.rs`), the
//! client-address extractor (`client_addr.rs`). Request bodies are JSON; every error is an
//! [`EngineError`](crate::error::EngineError) rendered as `{"code", "message"}`.

mod accounts;
mod client_addr;
mod ops;

pub(crate) use accounts::session_response;
pub(crate) use client_addr::ClientAddr;

use crate::engine::Engine;
use crate::error::EngineError;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use std::time::Instant;
use zajel_core::ErrorCode;

/// Name of the session cookie set by login/register.
pub const SESSION_COOKIE: &str = "zajel_session";

impl Engine {
    /// The HTTP API and the WebSocket endpoint as a `Router` with its state applied, ready to
    /// `merge` into an application's router (or `nest` under a prefix).
    ///
    /// Routes: `POST /api/register`, `POST /api/login`, `POST /api/logout`,
    /// `POST /api/logout-all`, `GET /api/me`, `GET /healthz`, `GET /metrics`, `GET /ws`.
    pub fn router(&self) -> Router {
        let router = Router::new()
            .route("/api/register", post(accounts::register))
            .route("/api/login", post(accounts::login))
            .route("/api/logout", post(accounts::logout))
            .route("/api/logout-all", post(accounts::logout_all))
            .route("/api/me", get(accounts::me))
            .route("/healthz", get(ops::healthz))
            .route("/metrics", get(ops::metrics))
            .route("/ws", get(crate::ws::ws_upgrade))
            .layer(DefaultBodyLimit::max(16 * 1024))
            .layer(middleware::from_fn_with_state(self.clone(), track))
            .with_state(self.clone());
        let cfg = &self.inner.config;
        match crate::cors::layer(cfg.cors_origins.iter().chain(&cfg.allowed_origins)) {
            Some(cors) => router.layer(cors),
            None => router,
        }
    }
}

async fn track(State(engine): State<Engine>, req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let res = next.run(req).await;
    engine.inner.metrics.http_latency.observe(t0.elapsed());
    if let Some(code) = res.extensions().get::<ErrorCode>() {
        engine.inner.metrics.error(*code);
    }
    res
}

/// Parses a JSON request body with a typed error.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, EngineError> {
    serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() {
            ErrorCode::BadFrame
        } else {
            ErrorCode::InvalidField
        };
        EngineError::new(code, format!("invalid request body: {e}"))
    })
}

/// The session token from `Authorization: Bearer` or, failing that, the session cookie.
pub(crate) fn request_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_owned());
    }
    cookie_value(headers, SESSION_COOKIE)
}

/// A cookie's value from the request's `Cookie` headers.
pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}
