//! # zajel-server
//!
//! Zajel's real-time chat engine as an axum [`Router`](axum::Router) you mount in your own app,
//! plus the standalone `zajel-server` binary built on it.
//!
//! ```no_run
//! use std::sync::Arc;
//! use zajel_server::{Engine, ServerConfig};
//!
//! # async fn run() -> std::io::Result<()> {
//! let store = Arc::new(zajel_core::MemoryStore::new());
//! let engine = Engine::new(store, ServerConfig::default());
//! let app = axum::Router::new()
//!     .route("/hello", axum::routing::get(|| async { "hello" }))
//!     .merge(engine.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // `serve` adds graceful shutdown: going_away to clients, close 1001, drain.
//! zajel_server::serve_router(listener, app, engine, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```
//!
//! Layout:
//! * [`config`]: [`ServerConfig`], the limits and policies.
//! * `engine`: [`Engine`] (shared state) and [`serve`].
//! * `http`: accounts (register, login, logout, whoami), health, metrics, WebSocket upgrade.
//! * `conn`: one WebSocket connection (auth, resume, request loop); close codes in [`close`].
//! * [`hub`]: local connections by user and the [`hub::Broker`] delivery seam.
//! * [`broker`]: [`broker::RedisBroker`], many nodes sharing one Redis (cross-node delivery
//!   and cluster-wide presence); [`presence`]: the [`presence::Presence`] seam.
//! * [`identity`]: OpenID Connect sign-in, an embedding app's own users ([`identity::Authenticator`],
//!   signed JWTs) and the server-side account API.
//! * `auth`: argon2id passwords and session tokens; `ratelimit`: token buckets;
//!   `metrics`: Prometheus exposition.
//!
//! See `docs/server.md` for configuration, limits, close codes and deployment.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
#![warn(missing_docs)]

mod auth;
pub mod broker;
pub mod config;
mod conn;
mod engine;
mod error;
mod http;
pub mod hub;
pub mod identity;
mod metrics;
pub mod presence;
mod ratelimit;

pub use config::ServerConfig;
pub use engine::{Engine, EngineBuilder, serve, serve_router};
pub use error::ApiError;
pub use http::SESSION_COOKIE;

/// WebSocket close codes the server uses.
pub mod close {
    pub use crate::conn::{
        CLOSE_GOING_AWAY, CLOSE_IDLE, CLOSE_INTERNAL, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_LARGE,
        CLOSE_UNAUTHENTICATED,
    };
    pub use crate::hub::CLOSE_LAGGED;
}

/// Compiles the Rust examples of `docs/server.md` as doc tests so the document cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../docs/server.md")]
pub struct ServerDocExamples;
