//! The client's address, for throttling.

use crate::engine::Engine;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use std::net::{IpAddr, SocketAddr};

/// The client's address (from the connection, or `X-Forwarded-For` when configured).
pub(crate) struct ClientAddr(pub(crate) Option<IpAddr>);

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
