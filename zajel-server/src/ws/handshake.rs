//! The WebSocket upgrade (origin check for cookie authentication, transport limits) and the
//! handshake: the first frame must be `auth`.

use super::socket::{Conn, Incoming, error};
use super::{CLOSE_POLICY, CLOSE_UNAUTHENTICATED, close_reason};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::http::{ClientAddr, SESSION_COOKIE, cookie_value};
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use zajel_core::protocol::{ClientFrame, PROTOCOL_VERSION, RequestId, ResumeState, ServerFrame};
use zajel_core::{ErrorCode, User, UserId};

/// Per-connection WebSocket read buffer (see the upgrade handler): tungstenite zero-fills all
/// of it, so every connection holds it resident for its whole life. A chat frame (a `send` of
/// a typical message is ~200-300 bytes) fits in one read; the largest body (4 KiB) takes three.
const READ_BUFFER_BYTES: usize = 2 * 1024;

/// What the upgrade request carried for authentication.
pub(crate) struct Upgrade {
    /// The `zajel_session` cookie, if any.
    pub(crate) cookie_token: Option<String>,
    /// Whether the cookie may be used (Origin allowlisted or same-origin).
    pub(crate) cookie_allowed: bool,
    /// The client address's connection slot, released when the connection ends.
    pub(crate) address_slot: Option<super::limits::AddressSlot>,
}

/// An authenticated handshake.
pub(super) struct Authed {
    pub(super) user: User,
    /// The session's key (token hash): logout of that session closes this connection.
    pub(super) session: Arc<str>,
    /// The `auth` request's id.
    pub(super) re: RequestId,
    /// When the session ends: the connection closes with 4001 then.
    pub(super) expires_at: zajel_core::Timestamp,
    /// [`Hub::revocations`](crate::hub::Hub::revocations) before the session was read.
    pub(super) revocations: u64,
    /// The user's friends, read with the session (with node-local presence only), and
    /// [`Hub::relation_changes`](crate::hub::Hub::relation_changes) before that read.
    pub(super) friends: Option<(Vec<UserId>, u64)>,
    pub(super) resume: Option<ResumeState>,
}

impl Conn {
    pub(super) async fn authenticate(&mut self, upgrade: &Upgrade) -> Option<Authed> {
        let deadline = Instant::now() + Duration::from_millis(self.engine.config().auth_timeout_ms);
        loop {
            let msg = tokio::select! {
                biased;
                _ = self.shutdown.changed() => {
                    self.going_away().await;
                    return None;
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.close(CLOSE_POLICY, "auth timeout").await;
                    return None;
                }
                msg = self.socket.recv() => msg,
            };
            let frame = match self.classify(msg) {
                Incoming::Frame(f) => f,
                other => {
                    if !self.handle_non_frame(other).await {
                        return None;
                    }
                    continue;
                }
            };
            let answer = match frame {
                ClientFrame::Auth {
                    id,
                    protocol,
                    token,
                    resume,
                } => {
                    if protocol != PROTOCOL_VERSION {
                        error(
                            Some(id),
                            ErrorCode::UnsupportedVersion,
                            format!(
                                "protocol {protocol} is not supported; this server speaks {PROTOCOL_VERSION}"
                            ),
                        )
                    } else {
                        let token = match token {
                            Some(t) => Some(t),
                            None if upgrade.cookie_allowed => upgrade.cookie_token.clone(),
                            None => None,
                        };
                        let hub = &self.engine.inner.hub;
                        let revocations = hub.revocations();
                        let relation_changes = hub.relation_changes();
                        let sessions = self.engine.sessions();
                        let result = match token {
                            // With node-local presence the friend list for "came online"
                            // comes with the session (one store read; `go_live` checks that
                            // no friendship changed before the registration).
                            Some(t) if self.engine.inner.presence.node_local() => sessions
                                .resolve_with_friends(&t)
                                .await
                                .map(|c| (c.session, Some((c.friends, relation_changes)))),
                            Some(t) => sessions.resolve(&t).await.map(|s| (s, None)),
                            None => Err(EngineError::new(
                                ErrorCode::Unauthenticated,
                                "no token given (a session cookie is only accepted from an allowed origin)",
                            )),
                        };
                        match result {
                            Ok((info, friends)) => {
                                return Some(Authed {
                                    user: info.user,
                                    session: info.hash.into(),
                                    expires_at: info.expires_at,
                                    revocations,
                                    friends,
                                    re: id,
                                    resume,
                                });
                            }
                            Err(e) if e.code == ErrorCode::Unauthenticated => {
                                // The client must sign in again: say so, then close 4001.
                                let answer = error(Some(id), e.code, e.message);
                                if self.answer(&answer).await {
                                    self.close(
                                        CLOSE_UNAUTHENTICATED,
                                        close_reason(CLOSE_UNAUTHENTICATED),
                                    )
                                    .await;
                                }
                                return None;
                            }
                            // A store failure: the client may retry on this connection.
                            Err(e) => e.to_frame(Some(id)),
                        }
                    }
                }
                ClientFrame::Ping { id } => ServerFrame::Pong { re: id },
                other => error(
                    other.id().cloned(),
                    ErrorCode::Unauthenticated,
                    "authenticate first: the first frame must be auth",
                ),
            };
            if !self.answer(&answer).await {
                return None;
            }
        }
    }
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

/// What the upgrade request offers for cookie authentication, read from the request's
/// headers in place (the `HeaderMap` extractor would copy them all).
pub(crate) struct CookieAuth {
    token: Option<String>,
    allowed: bool,
}

impl FromRequestParts<Engine> for CookieAuth {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        engine: &Engine,
    ) -> Result<Self, Self::Rejection> {
        Ok(CookieAuth {
            token: cookie_value(&parts.headers, SESSION_COOKIE),
            allowed: origin_allowed(&parts.headers, &engine.config().allowed_origins),
        })
    }
}

/// An upgrade refused: what the router's middlewares do for every other route (`/ws` is
/// outside them, see `http/mod.rs`): the error counted, the request timed, the security
/// headers set.
fn refuse(engine: &Engine, t0: std::time::Instant, e: EngineError) -> Response {
    engine.inner.metrics.error(e.code);
    let mut res = e.into_response();
    crate::http::add_security_headers(&mut res);
    observe(engine, t0);
    res
}

fn observe(engine: &Engine, t0: std::time::Instant) {
    engine
        .inner
        .metrics
        .http_latency
        .observe(t0.elapsed().as_secs_f64());
}

/// `/ws` with a method other than GET (HEAD): the JSON 405 every other route answers.
pub(crate) async fn ws_wrong_method(State(engine): State<Engine>) -> Response {
    let t0 = std::time::Instant::now();
    let mut res = refuse(
        &engine,
        t0,
        EngineError::new(
            ErrorCode::MethodNotAllowed,
            "this endpoint does not take that method",
        ),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
    res
}

pub(crate) async fn ws_upgrade(
    State(engine): State<Engine>,
    ClientAddr(addr): ClientAddr,
    cookie: CookieAuth,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let t0 = std::time::Instant::now();
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            let e = EngineError::new(ErrorCode::BadFrame, format!("not a WebSocket upgrade: {e}"));
            return refuse(&engine, t0, e);
        }
    };
    if engine.is_shutting_down() {
        return refuse(&engine, t0, EngineError::shutting_down());
    }
    let address_slot = match super::limits::admit(&engine, addr) {
        Ok(slot) => slot,
        Err(e) => return refuse(&engine, t0, e),
    };
    let cfg = &engine.inner.config;
    let upgrade = Upgrade {
        cookie_token: cookie.token,
        cookie_allowed: cookie.allowed,
        address_slot,
    };
    // The transport limit sits well above the protocol limit so an oversized frame still gets
    // a `frame_too_large` answer and a 1009 close instead of a dropped connection.
    let hard = (cfg.max_frame_bytes as usize)
        .saturating_mul(4)
        .max(1 << 20);
    observe(&engine, t0);
    ws.protocols([zajel_core::protocol::SUBPROTOCOL])
        // tungstenite's default 128 KiB read buffer is allocated per connection; chat frames
        // are small, and larger ones are still read in several chunks. Memory per idle
        // connection is what lets one node hold tens of thousands of them.
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(hard)
        .max_frame_size(hard)
        .on_upgrade(move |socket| super::socket::run(engine, socket, upgrade))
}
