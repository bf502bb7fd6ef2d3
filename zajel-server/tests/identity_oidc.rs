//! OpenID Connect sign-in against a real provider (npm `oidc-provider` on loopback), walked
//! over HTTP like a browser: start -> provider login + consent -> callback -> session ->
//! WebSocket. Plus the failures a person can meet: denied consent, a wrong / replayed /
//! foreign `state`, a provider that is down.

mod common;
mod identity_support;

use common::{Client, http};
use identity_support::*;
use serde_json::{Value, json};
use std::sync::Arc;
use zajel_core::{ExternalIdentity, IdentityStore, MemoryStore, Store, UserStore};

struct Setup {
    server: IdentityServer,
    provider: RealProvider,
    store: Arc<MemoryStore>,
}

async fn setup() -> Setup {
    let (listener, base) = IdentityServer::bind().await;
    let provider = RealProvider::start(&IdentityServer::callback_url(&base));
    let store = Arc::new(MemoryStore::new());
    let server = IdentityServer::serve(
        listener,
        store.clone() as Arc<dyn Store>,
        provider_config(
            &provider.issuer,
            &provider.client_id,
            &provider.client_secret,
        ),
        |_| {},
    )
    .await;
    Setup {
        server,
        provider,
        store,
    }
}

/// Runs the flow up to (not including) Zajel's callback; returns the callback URL.
async fn to_callback(s: &Setup, browser: &mut Browser, login: &str, consent: Consent) -> String {
    let start = browser.get(&s.server.start_url("/chat")).await;
    assert_eq!(start.status, 303, "{start:?}");
    let to_provider = start.location.clone().expect("location");
    assert!(to_provider.starts_with(&s.provider.issuer), "{to_provider}");
    for must in [
        "code_challenge=",
        "code_challenge_method=S256",
        "state=",
        "nonce=",
        "scope=openid",
    ] {
        assert!(
            to_provider.contains(must),
            "{must} missing in {to_provider}"
        );
    }
    let cb = IdentityServer::callback_url(&s.server.base);
    let page = at_provider(browser, start, login, consent, &cb).await;
    page.location.expect("callback location")
}

async fn me(s: &Setup, token: &str) -> Value {
    let r = http(
        s.server.addr,
        "GET",
        "/api/me",
        None,
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_creates_a_user_and_the_websocket_accepts_the_session() {
    let s = setup().await;
    let mut browser = Browser::new();
    let cb = to_callback(&s, &mut browser, "alice", Consent::Grant).await;
    let done = browser.get(&cb).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(
        done.location.as_deref(),
        Some(format!("{}/chat", s.server.base).as_str())
    );
    assert!(
        !done.location.as_deref().unwrap_or("").contains("zs1."),
        "no token in URLs"
    );
    let token = browser
        .cookie(&s.server.base, zajel_server::SESSION_COOKIE)
        .expect("session cookie");
    assert!(
        browser.cookie(&s.server.base, "zajel_oidc_state").is_none(),
        "state cookie cleared"
    );
    let cookie_line = done
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("zajel_session="))
        .expect("session Set-Cookie");
    assert!(cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Lax"));

    let user = me(&s, &token).await["user"].clone();
    assert_eq!(user["username"], "alice");

    // The web app trades the HttpOnly cookie for its client's session: JSON only.
    let cookie = format!("{}={token}", zajel_server::SESSION_COOKIE);
    let session = http(
        s.server.addr,
        "POST",
        "/api/session",
        Some("{}"),
        &[("Cookie", &cookie)],
    )
    .await;
    assert_eq!(session.status, 200, "{}", session.body);
    assert_eq!(session.json()["token"], token.as_str());
    assert_eq!(session.json()["user"]["username"], "alice");
    assert!(session.json()["expires_at"].as_i64().unwrap_or(0) > 0);
    let form = http(
        s.server.addr,
        "POST",
        "/api/session",
        None,
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", "0"),
        ],
    )
    .await;
    assert_eq!(
        form.status, 415,
        "a cross-site form cannot read the session: {}",
        form.body
    );
    let anonymous = http(s.server.addr, "POST", "/api/session", Some("{}"), &[]).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let forged = format!("{}=zs1.forged", zajel_server::SESSION_COOKIE);
    let forged = http(
        s.server.addr,
        "POST",
        "/api/session",
        Some("{}"),
        &[("Cookie", &forged)],
    )
    .await;
    assert_eq!(forged.status, 401, "{}", forged.body);
    let id: zajel_core::UserId = user["id"].as_str().unwrap().parse().unwrap();
    let issuer = s.provider.issuer.clone();
    assert_eq!(
        s.store
            .external_user(&ExternalIdentity::oidc(&issuer, "alice").unwrap())
            .await
            .unwrap(),
        Some(id)
    );
    // Password-less: no password opens this account.
    for pw in ["", "not-a-real-password", "pw"] {
        let r = http(
            s.server.addr,
            "POST",
            "/api/login",
            Some(&json!({"username": "alice", "password": pw}).to_string()),
            &[],
        )
        .await;
        assert_eq!(r.status, 401, "password {pw:?} must not log in: {}", r.body);
    }

    // The browser's WebSocket: cookie + same-origin, auth without a token.
    let mut ws = Client::connect_with(
        s.server.addr,
        "alice",
        &[
            ("Cookie", &format!("zajel_session={token}")),
            ("Origin", &s.server.base),
        ],
    )
    .await;
    let ok = ws.call(json!({"type": "auth", "protocol": 1})).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    assert_eq!(ok["user"]["username"], "alice");
    ws.close().await;

    // A second sign-in (another browser) finds the same user and creates nothing.
    let mut second = Browser::new();
    let cb = to_callback(&s, &mut second, "alice", Consent::Grant).await;
    assert_eq!(second.get(&cb).await.status, 303);
    let token2 = second
        .cookie(&s.server.base, "zajel_session")
        .expect("cookie");
    assert_ne!(token2, token);
    assert_eq!(me(&s, &token2).await["user"]["id"], user["id"]);
    let list = http(
        s.server.addr,
        "GET",
        "/api/identities",
        None,
        &[("Authorization", &format!("Bearer {token2}"))],
    )
    .await;
    assert_eq!(list.status, 200);
    assert_eq!(
        list.json()["identities"].as_array().map(Vec::len),
        Some(1),
        "{}",
        list.body
    );
    // The only way in cannot be unlinked.
    let unlink = http(
        s.server.addr,
        "POST",
        "/api/identities/unlink",
        Some(&json!({"provider": issuer, "subject": "alice"}).to_string()),
        &[("Authorization", &format!("Bearer {token2}"))],
    )
    .await;
    assert_eq!(unlink.status, 409, "{}", unlink.body);
    assert_eq!(unlink.json()["code"], "last_sign_in_method");

    // Another person with the same display name gets a unique username.
    let mut third = Browser::new();
    // sub differs ("Alice" vs "alice"), preferred_username collides case-insensitively.
    let cb = to_callback(&s, &mut third, "Alice", Consent::Grant).await;
    assert_eq!(third.get(&cb).await.status, 303);
    let t3 = third
        .cookie(&s.server.base, "zajel_session")
        .expect("cookie");
    let u3 = me(&s, &t3).await["user"].clone();
    assert_ne!(u3["id"], user["id"]);
    assert_eq!(u3["username"], "Alice_2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_wrong_and_foreign_states_are_refused() {
    let s = setup().await;
    let mut browser = Browser::new();
    let cb = to_callback(&s, &mut browser, "bob", Consent::Grant).await;

    // Someone else's browser (no state cookie) cannot use the callback link: login CSRF.
    let mut attacker_victim = Browser::new();
    let foreign = attacker_victim.get(&cb).await;
    assert_eq!(foreign.status, 400, "{}", foreign.body);
    assert_eq!(foreign.header("x-zajel-error"), Some("invalid_state"));
    assert!(foreign.body.contains("another browser"), "{}", foreign.body);

    // The owner still finishes (the refused attempt did not consume the state).
    let ok = browser.get(&cb).await;
    assert_eq!(ok.status, 303, "{}", ok.body);

    // Replaying the same callback (same browser, same cookie put back) is refused.
    let state = reqwest::Url::parse(&cb)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");
    browser.set_cookie(&s.server.base, "zajel_oidc_state", &state);
    let replay = browser.get(&cb).await;
    assert_eq!(replay.status, 400);
    assert_eq!(replay.header("x-zajel-error"), Some("invalid_state"));
    assert!(replay.body.contains("already used"), "{}", replay.body);

    // A made-up state, even with a matching cookie.
    browser.set_cookie(&s.server.base, "zajel_oidc_state", "forged");
    let forged = browser
        .get(&format!(
            "{}/api/auth/oidc/test/callback?code=x&state=forged",
            s.server.base
        ))
        .await;
    assert_eq!(forged.status, 400);
    assert_eq!(forged.header("x-zajel-error"), Some("invalid_state"));
    // No state at all.
    let none = browser
        .get(&format!(
            "{}/api/auth/oidc/test/callback?code=x",
            s.server.base
        ))
        .await;
    assert_eq!(none.header("x-zajel-error"), Some("invalid_state"));
    // Unknown provider.
    let unknown = browser
        .get(&format!("{}/api/auth/oidc/nope/start", s.server.base))
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.header("x-zajel-error"), Some("unknown_provider"));
    // An open redirect is refused.
    let open = browser
        .get(&format!(
            "{}/api/auth/oidc/test/start?return_to=//evil.example",
            s.server.base
        ))
        .await;
    assert_eq!(open.status, 400);
    assert_eq!(s.store_users().await, 1, "only bob exists");
}

impl Setup {
    async fn store_users(&self) -> usize {
        let mut n = 0;
        for name in ["alice", "bob", "carol", "dave"] {
            let u = zajel_core::Username::parse(name).unwrap();
            n += usize::from(self.store.user_by_username(&u).await.unwrap().is_some());
        }
        n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_consent_creates_nothing() {
    let s = setup().await;
    let mut browser = Browser::new();
    let cb = to_callback(&s, &mut browser, "carol", Consent::Deny).await;
    assert!(cb.contains("error=access_denied"), "{cb}");
    let page = browser.get(&cb).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(page.header("x-zajel-error"), Some("consent_denied"));
    assert!(page.body.contains("cancelled"), "{}", page.body);
    // The way back tells the app what happened (the web demo shows a sentence for it).
    assert!(
        page.body
            .contains("href=\"/?sign_in_error=consent_denied\""),
        "{}",
        page.body
    );
    assert!(browser.cookie(&s.server.base, "zajel_session").is_none());
    assert_eq!(s.store_users().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_is_down_gives_a_clear_error_and_no_account() {
    let mut s = setup().await;
    let mut browser = Browser::new();
    // Down between consent and the code exchange.
    let cb = to_callback(&s, &mut browser, "dave", Consent::Grant).await;
    s.provider.stop();
    let page = browser.get(&cb).await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert_eq!(page.header("x-zajel-error"), Some("provider_unavailable"));
    assert!(page.body.contains("try again later"), "{}", page.body);
    assert_eq!(s.store_users().await, 0);

    // Down before the flow starts (nothing listens at the issuer): discovery fails.
    let (listener, _base) = IdentityServer::bind().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let server = IdentityServer::serve(
        listener,
        Arc::new(MemoryStore::new()),
        provider_config(&dead, "c", "s"),
        |_| {},
    )
    .await;
    let page = browser.get(&server.start_url("/")).await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert_eq!(page.header("x-zajel-error"), Some("provider_unavailable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_user_links_a_provider_explicitly() {
    let s = setup().await;
    let reg = http(
        s.server.addr,
        "POST",
        "/api/register",
        Some(r#"{"username":"erin","password":"correct horse battery"}"#),
        &[],
    )
    .await;
    assert_eq!(reg.status, 201, "{}", reg.body);
    let token = reg.json()["token"].as_str().unwrap().to_owned();
    // Linking needs a session.
    let anon = http(s.server.addr, "POST", "/api/auth/oidc/test/link", None, &[]).await;
    assert_eq!(anon.status, 401);
    let mut browser = Browser::new();
    browser.set_cookie(&s.server.base, "zajel_session", &token);
    let link = http(
        s.server.addr,
        "POST",
        "/api/auth/oidc/test/link?return_to=/settings",
        None,
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(link.status, 200, "{}", link.body);
    let url = link.json()["authorize_url"].as_str().unwrap().to_owned();
    let state_cookie = link
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let (k, v) = state_cookie.split_once('=').unwrap();
    browser.set_cookie(&s.server.base, k, v);
    let first = browser.get(&url).await;
    let cb = IdentityServer::callback_url(&s.server.base);
    let page = at_provider(&mut browser, first, "erin-at-idp", Consent::Grant, &cb).await;
    let done = browser.get(&page.location.unwrap()).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(done.location.unwrap().ends_with("/settings"));
    let list = http(
        s.server.addr,
        "GET",
        "/api/identities",
        None,
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await;
    let ids = list.json()["identities"].clone();
    assert_eq!(ids[0]["identity"]["subject"], "erin-at-idp", "{ids}");
    // Signing in with that identity now reaches erin's account, not a new one.
    let mut other = Browser::new();
    let cb2 = to_callback(&s, &mut other, "erin-at-idp", Consent::Grant).await;
    assert_eq!(other.get(&cb2).await.status, 303);
    let t2 = other.cookie(&s.server.base, "zajel_session").unwrap();
    assert_eq!(me(&s, &t2).await["user"]["username"], "erin");
    // Erin has a password, so the identity can be unlinked.
    let unlink = http(
        s.server.addr,
        "POST",
        "/api/identities/unlink",
        Some(&json!({"provider": s.provider.issuer, "subject": "erin-at-idp"}).to_string()),
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(unlink.status, 204, "{}", unlink.body);
}

/// A provider served over https with a certificate no public CA signed (a private CA, as an
/// in-house Keycloak has): trusted through `ca_files`, sign-in works end to end; a server
/// without it refuses the provider's certificate with a clear error and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_provider_behind_a_private_ca_is_trusted_only_through_ca_files() {
    let tls = TestCertificate::generate();
    let (listener, base) = IdentityServer::bind().await;
    let provider = RealProvider::start_tls(&IdentityServer::callback_url(&base), &tls);
    assert!(
        provider.issuer.starts_with("https://"),
        "{}",
        provider.issuer
    );
    let store = Arc::new(MemoryStore::new());
    let config = provider_config(
        &provider.issuer,
        &provider.client_id,
        &provider.client_secret,
    );
    let server = IdentityServer::serve(
        listener,
        store.clone() as Arc<dyn Store>,
        config.clone(),
        |c| c.ca_files = vec![tls.cert_path()],
    )
    .await;
    let s = Setup {
        server,
        provider,
        store,
    };
    let mut browser = Browser::trusting(Some(&tls.cert_pem));
    let cb = to_callback(&s, &mut browser, "erin", Consent::Grant).await;
    let done = browser.get(&cb).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let token = browser
        .cookie(&s.server.base, zajel_server::SESSION_COOKIE)
        .expect("session cookie");
    assert_eq!(me(&s, &token).await["user"]["username"], "erin");

    // The same provider, a server that does not trust its certificate: discovery fails.
    let (listener, _) = IdentityServer::bind().await;
    let untrusting_store = Arc::new(MemoryStore::new());
    let untrusting = IdentityServer::serve(
        listener,
        untrusting_store.clone() as Arc<dyn Store>,
        config,
        |_| {},
    )
    .await;
    let page = browser.get(&untrusting.start_url("/")).await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert_eq!(page.header("x-zajel-error"), Some("provider_unavailable"));
    let erin = zajel_core::Username::parse("erin").unwrap();
    assert!(
        untrusting_store
            .user_by_username(&erin)
            .await
            .unwrap()
            .is_none()
    );
}

/// A CA file that is missing or holds no certificate is a configuration error at startup, not
/// a sign-in failure later.
#[tokio::test]
async fn a_ca_file_that_is_missing_or_holds_no_certificate_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    for (file, says) in [
        (dir.path().join("missing.pem"), "cannot read CA file"),
        (empty, "holds no PEM certificate"),
    ] {
        let engine = zajel_server::Engine::new(
            Arc::new(MemoryStore::new()),
            zajel_server::ServerConfig::default(),
        );
        let config = zajel_server::identity::oidc::OidcConfig {
            providers: vec![provider_config("https://idp.example", "c", "s")],
            ca_files: vec![file.clone()],
            ..Default::default()
        };
        match zajel_server::identity::oidc::OidcSignIn::new(engine, config) {
            Err(zajel_server::identity::IdentityError::BadRequest(why)) => {
                assert!(why.contains(says), "{why}");
                assert!(why.contains(&*file.to_string_lossy()), "{why}");
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("{} accepted", file.display()),
        }
    }
}

/// Two nodes on one Redis Cluster behind a load balancer that does not pin a browser to a
/// node: the sign-in starts on node A and the provider sends the browser back to node B.
/// B finishes it from the ticket A stored (no sticky sessions needed), the first sign-in
/// creates the account on the Cluster (the identity and the name claims live in different
/// slots), the session works on A, and replaying the callback on A finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_started_on_one_node_finishes_on_another_on_a_redis_cluster() {
    use zajel_core::RedisStore;
    use zajel_core::store::redis::RedisOptions;
    use zajel_core::testing::RedisCluster;
    let cluster = RedisCluster::start(3, 0).expect("start a Redis Cluster");
    let store = || async {
        Arc::new(
            RedisStore::connect_cluster(&cluster.urls(), RedisOptions::default())
                .await
                .expect("connect to the cluster"),
        ) as Arc<dyn Store>
    };
    let (listener_a, _) = IdentityServer::bind().await;
    let (listener_b, base_b) = IdentityServer::bind().await;
    let cb = IdentityServer::callback_url(&base_b);
    let provider = RealProvider::start(&cb);
    let config = || {
        provider_config(
            &provider.issuer,
            &provider.client_id,
            &provider.client_secret,
        )
    };
    // The public URL (the balancer's) is what the provider redirects to: here, node B.
    let public = base_b.clone();
    let a = IdentityServer::serve(listener_a, store().await, config(), |c| {
        c.public_url = public;
    })
    .await;
    let b = IdentityServer::serve(listener_b, store().await, config(), |_| {}).await;

    let mut browser = Browser::new();
    let start = browser.get(&a.start_url("/chat")).await;
    assert_eq!(start.status, 303, "{start:?}");
    let state = browser
        .cookie(&a.base, "zajel_oidc_state")
        .expect("state cookie from node A");
    let page = at_provider(&mut browser, start, "erin", Consent::Grant, &cb).await;
    let callback = page.location.expect("callback location");
    assert!(callback.starts_with(&b.base), "{callback}");
    // One site behind the balancer: the browser sends A's cookie to B.
    browser.set_cookie(&b.base, "zajel_oidc_state", &state);
    let done = browser.get(&callback).await;
    assert_eq!(
        done.status, 303,
        "node B finishes A's sign-in: {}",
        done.body
    );
    let token = browser
        .cookie(&b.base, zajel_server::SESSION_COOKIE)
        .expect("session cookie");
    let me_on_a = http(
        a.addr,
        "GET",
        "/api/me",
        None,
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(me_on_a.status, 200, "{}", me_on_a.body);
    assert_eq!(me_on_a.json()["user"]["username"], "erin");

    // The same callback replayed on node A: the ticket is gone on every node.
    browser.set_cookie(&a.base, "zajel_oidc_state", &state);
    let replay_url = callback.replacen(&b.base, &a.base, 1);
    let replay = browser.get(&replay_url).await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert_eq!(replay.header("x-zajel-error"), Some("invalid_state"));

    // A second sign-in finds the same account (created once, on the Cluster).
    let mut again = Browser::new();
    let start = again.get(&b.start_url("/chat")).await;
    let page = at_provider(&mut again, start, "erin", Consent::Grant, &cb).await;
    let done = again.get(&page.location.expect("callback")).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let token2 = again
        .cookie(&b.base, zajel_server::SESSION_COOKIE)
        .expect("second session");
    let me2 = http(
        b.addr,
        "GET",
        "/api/me",
        None,
        &[("Authorization", &format!("Bearer {token2}"))],
    )
    .await;
    assert_eq!(me2.json()["user"]["id"], me_on_a.json()["user"]["id"]);
}
