//! HTTP endpoints: accounts, health, metrics, and the WebSocket upgrade.

use crate::auth;
use crate::engine::Engine;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};

/// Per-connection WebSocket read buffer (see the upgrade handler).
const READ_BUFFER_BYTES: usize = 4 * 1024;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use zajel_core::{ErrorCode, Session, StoreError, Timestamp, User, Username};

/// Name of the session cookie set by login/register.
pub const SESSION_COOKIE: &str = "zajel_session";

pub(crate) fn router(engine: Engine) -> Router {
    Router::new()
        .route("/api/register", post(register))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/logout-all", post(logout_all))
        .route("/api/me", get(me))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/ws", get(ws_upgrade))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .layer(middleware::from_fn_with_state(engine.clone(), track))
        .with_state(engine)
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

/// `{"username", "password"}`.
#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// The answer to register and login.
#[derive(Serialize)]
struct SessionBody {
    user: User,
    token: String,
    expires_at: Timestamp,
}

#[derive(Serialize)]
struct MeBody {
    user: User,
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() {
            ErrorCode::BadFrame
        } else {
            ErrorCode::InvalidField
        };
        ApiError::new(code, format!("invalid request body: {e}"))
    })
}

/// The client's address (from the connection, or `X-Forwarded-For` when configured).
pub(crate) struct ClientAddr(Option<IpAddr>);

impl FromRequestParts<Engine> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        engine: &Engine,
    ) -> Result<Self, Self::Rejection> {
        if engine.inner.config.trust_forwarded_for
            && let Some(ip) = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok())
        {
            return Ok(ClientAddr(Some(ip)));
        }
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

pub(crate) async fn issue_session(
    engine: &Engine,
    user: &User,
) -> Result<(String, Timestamp), ApiError> {
    let (token, hash) = auth::new_token(user.id).map_err(ApiError::internal)?;
    let now = Timestamp::now();
    let ttl_ms =
        i64::try_from(engine.inner.config.token_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let expires_at = now.plus_millis(ttl_ms);
    engine
        .inner
        .store
        .create_session(&Session {
            user_id: user.id,
            token_hash: hash,
            created_at: now,
            expires_at,
        })
        .await
        .map_err(|e| ApiError::from(&e))?;
    Ok((token, expires_at))
}

pub(crate) fn session_response(
    engine: &Engine,
    status: StatusCode,
    user: User,
    token: String,
    expires_at: Timestamp,
) -> Response {
    let cfg = &engine.inner.config;
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        cfg.token_ttl_secs,
        if cfg.cookie_secure { "; Secure" } else { "" }
    );
    let mut res = (
        status,
        Json(SessionBody {
            user,
            token,
            expires_at,
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

async fn hash_blocking(engine: &Engine, password: String) -> Result<String, ApiError> {
    let (m, t) = (
        engine.inner.config.argon2_memory_kib,
        engine.inner.config.argon2_iterations,
    );
    tokio::task::spawn_blocking(move || auth::hash_password(&password, m, t))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

async fn register(State(engine): State<Engine>, body: Bytes) -> Result<Response, ApiError> {
    let creds: Credentials = parse_json(&body)?;
    let username = Username::parse(&creds.username).map_err(|e| ApiError::from(&e))?;
    if !auth::password_ok(&creds.password) {
        return Err(ApiError::new(
            ErrorCode::InvalidPassword,
            format!(
                "password must be {} to {} characters",
                auth::PASSWORD_MIN,
                auth::PASSWORD_MAX
            ),
        ));
    }
    if engine.is_shutting_down() {
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "server is shutting down",
        ));
    }
    let hash = hash_blocking(&engine, creds.password).await?;
    let user = match engine
        .inner
        .store
        .create_user(&username, Some(&hash), Timestamp::now())
        .await
    {
        Ok(u) => u,
        Err(StoreError::UsernameTaken) => {
            return Err(ApiError::new(ErrorCode::UsernameTaken, "username is taken"));
        }
        Err(e) => return Err(ApiError::from(&e)),
    };
    tracing::info!(user = %user.id, username = %user.username, "registered");
    let (token, expires_at) = issue_session(&engine, &user).await?;
    Ok(session_response(
        &engine,
        StatusCode::CREATED,
        user,
        token,
        expires_at,
    ))
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidCredentials,
        "invalid username or password",
    )
}

async fn login(
    State(engine): State<Engine>,
    ClientAddr(addr): ClientAddr,
    body: Bytes,
) -> Result<Response, ApiError> {
    let creds: Credentials = parse_json(&body)?;
    let inner = &engine.inner;
    if let Some(addr) = addr {
        inner
            .login_by_address
            .take(&addr.to_string())
            .map_err(ApiError::rate_limited)?;
    }
    // Unknown usernames share the throttle key space (their canonical form) so probing
    // them costs the same as probing real accounts.
    let account_key = creds.username.to_ascii_lowercase();
    inner
        .login_by_account
        .check(&account_key)
        .map_err(ApiError::rate_limited)?;
    let user = match Username::parse(&creds.username) {
        Ok(name) => inner
            .store
            .user_by_username(&name)
            .await
            .map_err(|e| ApiError::from(&e))?,
        Err(_) => None,
    };
    let stored = match &user {
        Some(u) => inner
            .store
            .password_hash(u.id)
            .await
            .map_err(|e| ApiError::from(&e))?,
        None => None,
    };
    // Always run one argon2 verification so timing does not reveal whether the user exists
    // or has a password; an account without a password (external sign-in only) never
    // verifies, whatever is typed (the dummy hash's own password included).
    let has_password = stored.is_some();
    let phc = stored.unwrap_or_else(|| engine.dummy_hash().to_owned());
    let password = creds.password;
    let verified = tokio::task::spawn_blocking(move || auth::verify_password(&password, &phc))
        .await
        .map_err(ApiError::internal)?
        && has_password;
    let Some(user) = user.filter(|_| verified) else {
        let _ = inner.login_by_account.take(&account_key);
        return Err(invalid_credentials());
    };
    let (token, expires_at) = issue_session(&engine, &user).await?;
    Ok(session_response(
        &engine,
        StatusCode::OK,
        user,
        token,
        expires_at,
    ))
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

fn clear_cookie() -> [(header::HeaderName, String); 1] {
    [(
        header::SET_COOKIE,
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    )]
}

async fn logout(State(engine): State<Engine>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = request_token(&headers).ok_or_else(ApiError::unauthenticated)?;
    let (user, hash) = engine.session_user(&token).await?;
    engine
        .inner
        .store
        .delete_session(user.id, &hash)
        .await
        .map_err(|e| ApiError::from(&e))?;
    engine
        .inner
        .hub
        .close_user(user.id, Some(&hash), crate::conn::CLOSE_UNAUTHENTICATED);
    Ok((StatusCode::NO_CONTENT, clear_cookie()).into_response())
}

async fn logout_all(
    State(engine): State<Engine>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = request_token(&headers).ok_or_else(ApiError::unauthenticated)?;
    let (user, _) = engine.session_user(&token).await?;
    let n = engine
        .inner
        .store
        .delete_user_sessions(user.id)
        .await
        .map_err(|e| ApiError::from(&e))?;
    engine
        .inner
        .hub
        .close_user(user.id, None, crate::conn::CLOSE_UNAUTHENTICATED);
    tracing::info!(user = %user.id, sessions = n, "logged out everywhere");
    Ok((StatusCode::NO_CONTENT, clear_cookie()).into_response())
}

async fn me(State(engine): State<Engine>, headers: HeaderMap) -> Result<Json<MeBody>, ApiError> {
    let token = request_token(&headers).ok_or_else(ApiError::unauthenticated)?;
    let (user, _) = engine.session_user(&token).await?;
    Ok(Json(MeBody { user }))
}

async fn healthz(State(engine): State<Engine>) -> Response {
    if engine.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn metrics(State(engine): State<Engine>) -> Response {
    let hub = &engine.inner.hub;
    let text = engine
        .inner
        .metrics
        .render(hub.lagged_total(), hub.delivered_total());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Whether a cookie-authenticated upgrade from this `Origin` is allowed: listed in the
/// configuration, or same-origin (the Origin's host equals the Host header).
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

async fn ws_upgrade(
    State(engine): State<Engine>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::new(ErrorCode::BadFrame, format!("not a WebSocket upgrade: {e}"))
                .into_response();
        }
    };
    if engine.is_shutting_down() {
        return ApiError::new(ErrorCode::ShuttingDown, "server is shutting down").into_response();
    }
    let cfg = &engine.inner.config;
    let upgrade = crate::conn::Upgrade {
        cookie_token: cookie_value(&headers, SESSION_COOKIE),
        cookie_allowed: origin_allowed(&headers, &cfg.allowed_origins),
    };
    // The transport limit sits well above the protocol limit so an oversized frame still gets
    // a `frame_too_large` answer and a 1009 close instead of a dropped connection.
    let hard = (cfg.max_frame_bytes as usize)
        .saturating_mul(4)
        .max(1 << 20);
    ws.protocols([zajel_core::protocol::SUBPROTOCOL])
        // tungstenite's default 128 KiB read buffer is allocated per connection; chat frames
        // are small, and larger ones are still read in several chunks. Memory per idle
        // connection is what lets one node hold tens of thousands of them.
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(hard)
        .max_frame_size(hard)
        .on_upgrade(move |socket| crate::conn::run(engine, socket, upgrade))
}
