//! CORS for the HTTP API (`/api/*`): which other origins' pages may call it from a browser.
//!
//! The allowlist is `cors_origins` plus `allowed_origins` (the origins trusted for
//! cookie-authenticated WebSocket upgrades): a page trusted with the WebSocket may also call the
//! API, so the two lists never disagree. Origins compare like the WebSocket check does: exact
//! `scheme://host[:port]`, ASCII case-insensitive. `*` allows every origin; that is safe
//! because credentials are never allowed cross-origin: the session cookie is not sent, and
//! a cross-origin page authenticates with a bearer token it got from the user (docs/web.md).
//! An empty allowlist adds no layer: browsers then refuse cross-origin reads, as before.

use axum::http::{HeaderValue, Method, header};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer.
const MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer for the allowlist, or `None` when no origin is listed.
pub(crate) fn layer<'a>(origins: impl IntoIterator<Item = &'a String>) -> Option<CorsLayer> {
    let origins: Vec<String> = origins
        .into_iter()
        .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin
                .to_str()
                .is_ok_and(|o| origins.iter().any(|a| a.eq_ignore_ascii_case(o)))
        })
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
            .expose_headers([header::RETRY_AFTER])
            .max_age(MAX_AGE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_origins_no_layer() {
        assert!(layer(&Vec::<String>::new()).is_none());
        assert!(layer(&vec![" ".to_string(), String::new()]).is_none());
        assert!(layer(&vec!["https://a.example/".to_string()]).is_some());
    }
}
