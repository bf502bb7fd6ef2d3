//! OpenID Connect sign-in: "Sign in with Google" and any provider found by discovery.
//!
//! The authorization code flow with PKCE (S256), a random `state` bound to the browser by a
//! cookie and usable once, and a `nonce`; the ID token's signature is checked against the
//! provider's JWKS (cached, refetched once when a token names an unknown key), and its issuer,
//! audience, expiry and nonce are verified. Success gives the same session (cookie + token) as
//! a password login and sends the browser back to the app.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use zajel_server::identity::oidc::{OidcConfig, OidcProvider, OidcSignIn};
//! let engine = zajel_server::Engine::new(Arc::new(zajel_core::MemoryStore::new()), Default::default());
//! let oidc = OidcSignIn::new(engine.clone(), OidcConfig {
//!     public_url: "https://chat.example.com".into(),
//!     providers: vec![OidcProvider::google("<client id>", "<client secret>")],
//!     ..OidcConfig::default()
//! }).expect("valid configuration");
//! let app = engine.router().merge(oidc.router());
//! # let _ = app; Ok(()) }
//! ```
//!
//! Routes: `GET /api/auth/providers`, `GET /api/auth/oidc/{id}/start?return_to=/path`,
//! `GET /api/auth/oidc/{id}/callback` (the redirect URL to register at the provider:
//! `<public_url>/api/auth/oidc/<id>/callback`), `POST /api/auth/oidc/{id}/link`,
//! `GET /api/identities`, `POST /api/identities/unlink`. See `docs/identity.md`.

mod flow;
mod provider;
mod routes;

pub use routes::OidcSignIn;

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Google's issuer (discovery at `/.well-known/openid-configuration`).
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

/// One configured provider.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProvider {
    /// Short id used in URLs (`google`, `corp`): 1-32 of `a-z 0-9 _ -`.
    pub id: String,
    /// Label for a "Sign in with `<name>`" button.
    pub name: String,
    /// Issuer URL; its discovery document is read on first use.
    pub issuer: String,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret (confidential clients; PKCE is used either way).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Scopes besides `openid` (default: `email profile`).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The redirect URL registered at the provider, when it differs from
    /// `<public_url>/api/auth/oidc/<id>/callback`.
    #[serde(default)]
    pub redirect_url: Option<String>,
}

fn default_scopes() -> Vec<String> {
    vec!["email".into(), "profile".into()]
}

impl OidcProvider {
    /// The Google preset: only the client id and secret from the Google Cloud console.
    pub fn google(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self {
            id: "google".into(),
            name: "Google".into(),
            issuer: GOOGLE_ISSUER.into(),
            client_id: client_id.into(),
            client_secret: Some(client_secret.into()),
            scopes: default_scopes(),
            redirect_url: None,
        }
    }

    /// Any provider by issuer URL (discovery).
    pub fn generic(
        id: impl Into<String>,
        name: impl Into<String>,
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Option<String>,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret,
            scopes: default_scopes(),
            redirect_url: None,
        }
    }
}

/// OpenID Connect settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// The providers.
    pub providers: Vec<OidcProvider>,
    /// The externally visible base URL of the engine's routes (scheme, host, port and mount
    /// prefix), used to build redirect URLs.
    pub public_url: String,
    /// Where the browser goes after signing in when the start link named no `return_to`
    /// (a path on the app, or an absolute URL).
    pub after_sign_in: String,
    /// How long a started sign-in stays valid (seconds).
    pub flow_ttl_secs: u64,
    /// Timeout of each request to a provider (seconds).
    pub http_timeout_secs: u64,
    /// Most sign-ins started on this node within `flow_ttl_secs` and not finished here: a
    /// bound on what a flood of `/start` requests puts in the store (each sign-in in progress
    /// is a one-time ticket there, so any node on the same store can finish it).
    pub max_pending: usize,
    /// PEM files of extra root certificates trusted for requests to the providers, beside the
    /// web PKI roots: for a provider behind a private CA (e.g. an in-house Keycloak). A file
    /// that cannot be read or holds no certificate fails [`OidcSignIn::new`].
    pub ca_files: Vec<PathBuf>,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            public_url: "http://127.0.0.1:8080".into(),
            after_sign_in: "/".into(),
            flow_ttl_secs: 600,
            http_timeout_secs: 10,
            max_pending: 10_000,
            ca_files: Vec::new(),
        }
    }
}

impl OidcConfig {
    fn flow_ttl(&self) -> Duration {
        Duration::from_secs(self.flow_ttl_secs.max(1))
    }
    fn http_timeout(&self) -> Duration {
        Duration::from_secs(self.http_timeout_secs.max(1))
    }
}
