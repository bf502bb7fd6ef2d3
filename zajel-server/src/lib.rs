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
//! let store = Arc::new(zajel_server::MemoryStore::new());
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
//! Layout (each layer only uses the ones above it):
//! * [`config`]: [`ServerConfig`], the limits and policies; [`error`]: [`EngineError`], the
//!   one error type (an HTTP answer or an `error` frame).
//! * [`hub`]: local connections by user and the [`hub::Broker`] delivery seam; [`broker`]:
//!   [`broker::RedisBroker`], many nodes sharing one Redis; [`presence`]: the
//!   [`presence::Presence`] seam.
//! * `engine`: [`Engine`], the shared state (store, hub, broker, limits, metrics, shutdown).
//! * [`sessions`]: accounts and sessions (register, login, resolve, revoke), transport-free.
//! * [`chat`]: [`chat::ChatService`], every chat rule (send, read marks, typing, friends,
//!   presence), transport-free: it returns the reply plus the events to fan out.
//! * `ws`: the WebSocket side (upgrade, handshake, socket loop, replay); close codes in
//!   [`close`]. `http`: the router and the account endpoints.
//! * `builder` ([`EngineBuilder`]) and `serve` ([`serve`], [`serve_router`]) put it together.
//! * `auth`: argon2id passwords and session tokens; `ratelimit`: limiters; `metrics`:
//!   Prometheus exposition.
//! * [`events`]: [`events::EngineEvent`]s (message stored, friend change, user created) for
//!   the embedding app, from [`Engine::subscribe`].
//! * [`identity`]: OpenID Connect sign-in, an embedding app's own users
//!   ([`identity::Authenticator`], signed JWTs) and the server-side account API.
//!
//! See `docs/server.md` for configuration, limits, close codes and deployment.
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `embedded` | yes | [`EmbeddedStore`], the persistent single-file store (redb) |
//! | `memory` | yes | [`MemoryStore`] (nothing persists; tests and demos) |
//! | `redis` | yes | [`RedisStore`] and [`broker::RedisBroker`] (several nodes on one Redis) |
//! | `cli` | yes | the `zajel-server` binary: flags, config file, logs; implies `oidc` |
//! | `oidc` | with `cli` | OpenID Connect sign-in and the signed-JWT authenticator |
//!
//! An embedding app turns the defaults off and names what it uses, e.g.
//! `zajel-server = { version = "0.1", default-features = false, features = ["embedded"] }`:
//! no Redis client, clap or log subscriber in its dependency tree.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod auth;
pub mod broker;
mod builder;
pub mod chat;
pub mod config;
mod cors;
mod engine;
pub mod error;
pub mod events;
mod http;
pub mod hub;
pub mod identity;
mod metrics;
pub mod presence;
mod ratelimit;
mod serve;
pub mod sessions;
mod ws;

pub use builder::EngineBuilder;
pub use config::ServerConfig;
pub use engine::Engine;
pub use error::{ApiError, EngineError};
pub use http::{RouterOptions, SESSION_COOKIE};
pub use serve::{serve, serve_router};

/// The protocol, model and storage crate this server is built on, re-exported so an embedder
/// needs one dependency and always gets the matching version.
pub use zajel_core;
#[cfg(feature = "embedded")]
#[cfg_attr(docsrs, doc(cfg(feature = "embedded")))]
pub use zajel_core::EmbeddedStore;
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use zajel_core::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use zajel_core::RedisStore;
pub use zajel_core::{Store, StoreError, StoreHealth};

/// WebSocket close codes the server uses.
pub mod close {
    pub use crate::hub::CLOSE_LAGGED;
    pub use crate::ws::{
        CLOSE_GOING_AWAY, CLOSE_IDLE, CLOSE_INTERNAL, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_LARGE,
        CLOSE_UNAUTHENTICATED,
    };
}

/// Compiles the Rust examples of `docs/server.md` as doc tests so the document cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../docs/server.md")]
pub struct ServerDocExamples;
