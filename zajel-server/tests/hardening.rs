//! Regression tests for the server hardening (issue 7): each would fail on the code before the
//! fix. Real server over real loopback HTTP and WebSockets.

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use zajel_core::{Timestamp, UserStore, Username};

/// Item 1: an account without a password hash (created by a server-side API or OpenID
/// Connect) cannot be logged in to with any password, including the one the server verifies
/// against when an account has none.
#[tokio::test]
async fn passwordless_account_cannot_log_in_with_a_password() {
    let store = Arc::new(zajel_core::MemoryStore::new());
    let name = Username::parse("oidc_only").expect("name");
    store
        .create_user(&name, None, Timestamp::now())
        .await
        .expect("user");
    let server = TestServer::start(store, test_config()).await;
    for password in ["not-a-real-password", "correct horse battery", ""] {
        let body = json!({"username": "oidc_only", "password": password}).to_string();
        let r = http(server.addr, "POST", "/api/login", Some(&body), &[]).await;
        assert_eq!(r.status, 401, "{password:?}: {}", r.body);
        assert_eq!(r.json()["code"], "invalid_credentials");
        assert!(r.header("set-cookie").is_none());
    }
    server.stop().await;
}
