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
    let mut text = engine
        .inner
        .metrics
        .render(hub.lagged_total(), hub.delivered_total());
    {
        use std::fmt::Write;
        let gate = &engine.inner.replays;
        for (name, kind, help, v) in [
            (
                "zajel_replays_active",
                "gauge",
                "Resume replays running now (at most max_concurrent_replays).",
                gate.active() as u64,
            ),
            (
                "zajel_replays_peak",
                "gauge",
                "The most resume replays that ran at once since start.",
                gate.peak() as u64,
            ),
            (
                "zajel_replays_waited_total",
                "counter",
                "Resume replays that waited for a slot (the node was at max_concurrent_replays).",
                gate.waited(),
            ),
        ] {
            let _ = writeln!(
                text,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
    #[cfg(feature = "redis")]
    if let Some(b) = engine.redis_broker() {
        use std::fmt::Write;
        for (name, help, v) in [
            (
                "zajel_broker_published_total",
                "Events published to other nodes.",
                b.published_total(),
            ),
            (
                "zajel_broker_received_total",
                "Events received from other nodes.",
                b.received_total(),
            ),
            (
                "zajel_broker_lost_total",
                "Events whose cross-node delivery was lost (their recipients are closed with 4008 to resume).",
                b.lost_total(),
            ),
        ] {
            let _ = writeln!(
                text,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
