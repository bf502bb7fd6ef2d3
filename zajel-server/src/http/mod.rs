//! The HTTP side: the router, accounts (`accounts.rs`), operations endpoints (`ops.rs`), the
//! client-address extractor (`client_addr.rs`). Request bodies are JSON; every error is an
//! [`EngineError`](crate::error::EngineError) rendered as `{"code", "message"}`.

mod accounts;
mod client_addr;
mod ops;
mod options;

pub use options::RouterOptions;

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
        self.router_with(RouterOptions::default())
    }

    /// Like [`Engine::router`], with [`RouterOptions`]: a mount prefix, and whether
    /// `/metrics` and `/healthz` are served (an app with its own routes of those names turns
    /// them off instead of colliding with them).
    pub fn router_with(&self, options: RouterOptions) -> Router {
        let mut router = Router::new()
            .route("/api/register", post(accounts::register))
            .route("/api/login", post(accounts::login))
            .route("/api/logout", post(accounts::logout))
            .route("/api/logout-all", post(accounts::logout_all))
            .route("/api/me", get(accounts::me))
            .route("/api/session", post(accounts::session))
            .route("/api/me/username", post(accounts::rename));
        if options.healthz {
            router = router.route("/healthz", get(ops::healthz));
        }
        if options.metrics {
            router = router.route("/metrics", get(ops::metrics));
        }
        // `/ws` is added after the two middlewares, so they do not wrap it: each clones and
        // boxes per request, and every connection's setup paid for that. The upgrade handler
        // does what they would for it (its refusals are counted, timed and carry the same
        // headers and JSON body: `ws::handshake`).
        let router = router
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .layer(middleware::from_fn(security_headers))
            .layer(middleware::from_fn_with_state(self.clone(), track))
            .route(
                "/ws",
                get(crate::ws::ws_upgrade).fallback(crate::ws::ws_wrong_method),
            )
            .with_state(self.clone());
        let cfg = &self.inner.config;
        let router = match crate::cors::layer(cfg.cors_origins.iter().chain(&cfg.allowed_origins)) {
            Some(cors) => router.layer(cors),
            None => router,
        };
        match options.prefix {
            Some(prefix) => Router::new().nest(&prefix, router),
            None => router,
        }
    }
}

async fn track(State(engine): State<Engine>, req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let res = next.run(req).await;
    engine
        .inner
        .metrics
        .http_latency
        .observe(t0.elapsed().as_secs_f64());
    if let Some(code) = res.extensions().get::<ErrorCode>() {
        engine.inner.metrics.error(*code);
    }
    res
}

/// Refuses a body that is not declared `application/json` (415): a cross-site HTML form can
/// only send `text/plain`, `multipart/form-data` or `application/x-www-form-urlencoded`
/// without a CORS preflight, so this closes login CSRF.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), EngineError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if ok {
        Ok(())
    } else {
        Err(EngineError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as Content-Type: application/json",
        ))
    }
}

/// Headers every answer of the engine's router carries: no MIME sniffing, no caching of
/// account answers, no framing, no referrer leaks.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = json_errors(next.run(req).await);
    add_security_headers(&mut res);
    res
}

/// Adds the headers of [`security_headers`] that the response does not set itself.
pub(crate) fn add_security_headers(res: &mut Response) {
    let h = res.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.entry(name)
            .or_insert(axum::http::HeaderValue::from_static(value));
    }
}

/// Gives the framework's own refusals (no route, wrong method, body over the limit) the same
/// JSON error body as every other error.
fn json_errors(res: Response) -> Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    if res.extensions().get::<ErrorCode>().is_some() {
        return res;
    }
    let e = match res.status() {
        StatusCode::NOT_FOUND => EngineError::new(ErrorCode::NotFound, "no such endpoint"),
        StatusCode::METHOD_NOT_ALLOWED => EngineError::new(
            ErrorCode::MethodNotAllowed,
            "this endpoint does not take that method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => EngineError::new(
            ErrorCode::FrameTooLarge,
            format!("request body over the limit of {BODY_LIMIT} bytes"),
        ),
        _ => return res,
    };
    let allow = res.headers().get(header::ALLOW).cloned();
    let mut out = e.into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

/// Largest accepted HTTP request body.
const BODY_LIMIT: usize = 16 * 1024;

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
///
/// Hand-written rather than the `cookie` crate: the server only reads its own session cookie
/// (an opaque token it set, never quoted or percent-encoded), and `cookie` would add `time`
/// and `percent-encoding` to every embedder's tree for that.
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
