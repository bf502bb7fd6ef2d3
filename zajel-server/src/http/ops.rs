//! Operations endpoints: `/healthz` and `/metrics`.

use crate::engine::Engine;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

pub(super) async fn healthz(State(engine): State<Engine>) -> Response {
    if engine.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
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
