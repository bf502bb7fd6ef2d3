//! Operations endpoints: `/healthz` and `/metrics`.

use crate::engine::Engine;
use crate::metrics::Observed;
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
    let (hub, gate) = (&engine.inner.hub, &engine.inner.replays);
    let text = engine.inner.metrics.render(Observed {
        lagged: hub.lagged_total(),
        delivered: hub.delivered_total(),
        replays_active: gate.active() as u64,
        replays_peak: gate.peak() as u64,
        replays_waited: gate.waited(),
        #[cfg(feature = "redis")]
        broker: engine
            .redis_broker()
            .map(|b| (b.published_total(), b.received_total(), b.lost_total())),
        #[cfg(not(feature = "redis"))]
        broker: None,
        store_commits: engine.store().commits_total(),
    });
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response()
}
