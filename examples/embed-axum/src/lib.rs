//! An existing axum application that mounts Zajel next to its own routes.
//!
//! Run with `cargo run -p example-embed-axum`, then open `http://127.0.0.1:3000/hello`;
//! Zajel's API is at `/api/*`, its WebSocket at `/ws`.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use zajel_server::{Engine, ServerConfig};

/// The application's own state.
#[derive(Clone, Default)]
pub struct AppState {
    hits: Arc<AtomicU64>,
}

async fn hello(State(state): State<AppState>) -> String {
    let n = state.hits.fetch_add(1, Ordering::Relaxed) + 1;
    format!("hello from my app (visit {n})")
}

/// The Zajel engine for this app (in-memory store here; use
/// `zajel_core::EmbeddedStore::open(dir)` or `RedisStore::connect(url)` for persistence).
pub fn engine(config: ServerConfig) -> Engine {
    Engine::new(Arc::new(zajel_core::MemoryStore::new()), config)
}

/// The application's router with Zajel merged in.
pub fn app(engine: &Engine) -> Router {
    Router::new()
        .route("/hello", get(hello))
        .with_state(AppState::default())
        .merge(engine.router())
}

/// Serves [`app`] on `listener` until `signal`, with Zajel's graceful WebSocket shutdown.
pub async fn run(
    listener: tokio::net::TcpListener,
    engine: Engine,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = app(&engine);
    zajel_server::serve_router(listener, router, engine, signal).await
}
