//! Operations endpoints: `/healthz` and `/metrics`.

use crate::engine::Engine;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use zajel_core::store::StoreHealth;

/// 200 `ok`; 503 while shutting down or while the store cannot write (so a load balancer
/// sends clients elsewhere until it recovers).
pub(super) async fn healthz(State(engine): State<Engine>) -> Response {
    if engine.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match engine.store().health() {
        StoreHealth::Ok => (StatusCode::OK, "ok\n").into_response(),
        StoreHealth::Unavailable { reason, .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {reason}\n"),
        )
            .into_response(),
        StoreHealth::Failed { reason } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store failed: {reason}\n"),
        )
            .into_response(),
    }
}

pub(super) async fn metrics(State(engine): State<Engine>) -> Response {
    let hub = &engine.inner.hub;
    let text = engine
        .inner
        .metrics
        .render(hub.lagged_total(), hub.delivered_total());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
