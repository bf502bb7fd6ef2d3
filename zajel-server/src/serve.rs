//! [`serve`] and [`serve_router`]: run an engine's router with graceful shutdown.

use crate::engine::Engine;
use std::future::Future;
use std::net::SocketAddr;

/// Serves `engine`'s router on `listener` until `signal` completes, then shuts down
/// gracefully: stops accepting, sends `going_away` to every WebSocket client, closes them with
/// 1001, waits for connections to drain (bounded by `shutdown_grace_ms`) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Engine,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = engine.router();
    serve_router(listener, app, engine, signal).await
}

/// Like [`serve`], for an application router that merged (or nested) `engine.router()` next to
/// its own routes. Client addresses are provided (`ConnectInfo`) for login throttling.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    engine: Engine,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let on_signal = engine.clone();
    // Chat frames are small and latency-bound: without TCP_NODELAY a second small write
    // waits for the peer's delayed ACK (measured: p90 ~43 ms, 3x lower throughput).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        signal.await;
        // Start telling WebSocket clients now: upgraded connections are no longer HTTP
        // requests the HTTP server would wait for.
        let engine = on_signal.clone();
        tokio::spawn(async move { engine.shutdown().await });
    })
    .await?;
    engine.shutdown().await;
    Ok(())
}
