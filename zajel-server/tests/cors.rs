//! CORS on the HTTP API: listed origins (and the WebSocket allowlist's) get the CORS headers,
//! others and the default configuration get none, and credentials are never allowed.

mod common;

use common::{TestServer, http, test_config};

const APP: &str = "http://app.example:5173";

fn header<'a>(r: &'a common::HttpResponse, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

async fn server(cors: &[&str], ws: &[&str]) -> TestServer {
    let mut config = test_config();
    config.cors_origins = cors.iter().map(|s| s.to_string()).collect();
    config.allowed_origins = ws.iter().map(|s| s.to_string()).collect();
    TestServer::memory_with(config).await
}

async fn preflight(s: &TestServer, origin: &str) -> common::HttpResponse {
    http(
        s.addr,
        "OPTIONS",
        "/api/login",
        None,
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
    )
    .await
}

#[tokio::test]
async fn a_listed_origin_may_call_the_api() {
    let s = server(&[APP], &[]).await;
    let pre = preflight(&s, APP).await;
    assert!(pre.status < 300, "preflight status {}", pre.status);
    assert_eq!(header(&pre, "access-control-allow-origin"), Some(APP));
    let methods = header(&pre, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "{methods}");
    let allowed = header(&pre, "access-control-allow-headers").unwrap_or_default();
    assert!(
        allowed.to_ascii_lowercase().contains("content-type"),
        "{allowed}"
    );
    assert_eq!(header(&pre, "access-control-allow-credentials"), None);

    // The real request: the answer (here a typed error) is readable by the page.
    let r = http(
        s.addr,
        "POST",
        "/api/login",
        Some(r#"{"username":"nobody","password":"whatever123"}"#),
        &[("Origin", "HTTP://APP.EXAMPLE:5173")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(header(&r, "access-control-allow-origin").is_some());
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    s.stop().await;
}

#[tokio::test]
async fn other_origins_and_the_default_get_no_cors_headers() {
    let s = server(&[APP], &[]).await;
    for origin in [
        "http://evil.example",
        "http://app.example:5174",
        "https://app.example:5173",
        "null",
    ] {
        let pre = preflight(&s, origin).await;
        assert_eq!(
            header(&pre, "access-control-allow-origin"),
            None,
            "{origin}"
        );
    }
    s.stop().await;

    let s = server(&[], &[]).await;
    let pre = preflight(&s, APP).await;
    assert_eq!(header(&pre, "access-control-allow-origin"), None);
    let r = http(s.addr, "GET", "/healthz", None, &[("Origin", APP)]).await;
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    s.stop().await;
}

#[tokio::test]
async fn the_websocket_allowlist_is_also_allowed_and_star_allows_all() {
    let s = server(&[], &[APP]).await;
    let pre = preflight(&s, APP).await;
    assert_eq!(header(&pre, "access-control-allow-origin"), Some(APP));
    s.stop().await;

    let s = server(&["*"], &[]).await;
    let pre = preflight(&s, "http://anyone.example").await;
    assert_eq!(header(&pre, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&pre, "access-control-allow-credentials"), None);
    s.stop().await;
}
