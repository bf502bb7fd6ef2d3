//! Accounts over HTTP: register, login, logout, logout-all, session, me, rename. The rules live in
//! [`crate::sessions`]; this file reads requests and writes answers (body, cookie).

use super::{ClientAddr, SESSION_COOKIE, parse_json, request_token, require_json};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::sessions::IssuedSession;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use zajel_core::{Timestamp, User};

/// `{"username", "password"}`.
#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// The answer to register and login.
#[derive(Serialize)]
pub(super) struct SessionBody {
    user: User,
    token: String,
    expires_at: Timestamp,
}

#[derive(Serialize)]
pub(super) struct MeBody {
    user: User,
}

pub(crate) fn session_response(
    engine: &Engine,
    status: StatusCode,
    user: User,
    session: IssuedSession,
) -> Response {
    let cfg = engine.config();
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        session.token,
        cfg.token_ttl_secs,
        if cfg.cookie_secure { "; Secure" } else { "" }
    );
    let mut res = (
        status,
        Json(SessionBody {
            user,
            token: session.token,
            expires_at: session.expires_at,
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

pub(super) async fn register(
    State(engine): State<Engine>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, EngineError> {
    require_json(&headers)?;
    let creds: Credentials = parse_json(&body)?;
    let (user, session) = engine
        .sessions()
        .register(&creds.username, creds.password, addr)
        .await?;
    Ok(session_response(
        &engine,
        StatusCode::CREATED,
        user,
        session,
    ))
}

pub(super) async fn login(
    State(engine): State<Engine>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, EngineError> {
    require_json(&headers)?;
    let creds: Credentials = parse_json(&body)?;
    let (user, session) = engine
        .sessions()
        .login(&creds.username, creds.password, addr)
        .await?;
    Ok(session_response(&engine, StatusCode::OK, user, session))
}

fn clear_cookie() -> [(header::HeaderName, String); 1] {
    [(
        header::SET_COOKIE,
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    )]
}

pub(super) async fn logout(
    State(engine): State<Engine>,
    headers: HeaderMap,
) -> Result<Response, EngineError> {
    let token = request_token(&headers).ok_or_else(EngineError::unauthenticated)?;
    let sessions = engine.sessions();
    let info = sessions.resolve(&token).await?;
    sessions.revoke(info.user.id, &info.hash).await?;
    Ok((StatusCode::NO_CONTENT, clear_cookie()).into_response())
}

pub(super) async fn logout_all(
    State(engine): State<Engine>,
    headers: HeaderMap,
) -> Result<Response, EngineError> {
    let token = request_token(&headers).ok_or_else(EngineError::unauthenticated)?;
    let sessions = engine.sessions();
    let info = sessions.resolve(&token).await?;
    sessions.revoke_all(info.user.id).await?;
    Ok((StatusCode::NO_CONTENT, clear_cookie()).into_response())
}

/// `POST /api/session`: the session this request carries (normally the cookie a redirect
/// sign-in such as OpenID Connect set) answered like a login, so a web app can hand the token
/// to its client. JSON only: a cross-site form cannot send it, and without a CORS allowlist
/// entry another origin cannot read the answer.
pub(super) async fn session(
    State(engine): State<Engine>,
    headers: HeaderMap,
) -> Result<Json<SessionBody>, EngineError> {
    require_json(&headers)?;
    let token = request_token(&headers).ok_or_else(EngineError::unauthenticated)?;
    let info = engine.sessions().resolve(&token).await?;
    Ok(Json(SessionBody {
        user: info.user,
        token,
        expires_at: info.expires_at,
    }))
}

/// `{"username"}`.
#[derive(Deserialize)]
struct NewName {
    username: String,
}

/// `POST /api/me/username {"username"}`: renames the signed-in user (see
/// [`Engine::rename_user`]); answers `{"user"}`.
pub(super) async fn rename(
    State(engine): State<Engine>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<MeBody>, EngineError> {
    require_json(&headers)?;
    let token = request_token(&headers).ok_or_else(EngineError::unauthenticated)?;
    let me = engine.sessions().resolve(&token).await?.user;
    // A rename is a durable write like a `send`: it counts against the same per-user rate.
    engine.take_user_request(me.id)?;
    let NewName { username } = parse_json(&body)?;
    let user = engine.rename_user(me.id, &username).await?;
    Ok(Json(MeBody { user }))
}

pub(super) async fn me(
    State(engine): State<Engine>,
    headers: HeaderMap,
) -> Result<Json<MeBody>, EngineError> {
    let token = request_token(&headers).ok_or_else(EngineError::unauthenticated)?;
    let user = engine.sessions().resolve(&token).await?.user;
    Ok(Json(MeBody { user }))
}
