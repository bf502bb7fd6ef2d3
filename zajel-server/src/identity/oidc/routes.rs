//! The HTTP side of OpenID Connect sign-in, and identity listing/unlinking.

use super::super::IdentityError;
use super::super::outbound::provider_client;
use super::OidcConfig;
use super::flow::{Pending, PendingFlows};
use super::provider::Provider;
use crate::engine::Engine;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openidconnect::reqwest;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use zajel_core::ExternalIdentity;
use zajel_core::store::LinkedIdentity;

/// Name of the cookie that binds a started sign-in to the browser that started it.
pub const STATE_COOKIE: &str = "zajel_oidc_state";

/// OpenID Connect sign-in for an [`Engine`]; merge [`OidcSignIn::router`] next to
/// [`Engine::router`]. Cheap to clone.
#[derive(Clone)]
pub struct OidcSignIn {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    config: OidcConfig,
    providers: HashMap<String, Provider>,
    order: Vec<String>,
    pending: PendingFlows,
    http: reqwest::Client,
}

#[derive(Serialize)]
struct ProviderInfo<'a> {
    id: &'a str,
    name: &'a str,
    start_url: String,
}

#[derive(Deserialize)]
struct StartQuery {
    return_to: Option<String>,
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    iss: Option<String>,
}

#[derive(Serialize)]
struct LinkAnswer {
    authorize_url: String,
}

#[derive(Serialize)]
struct IdentitiesAnswer {
    identities: Vec<LinkedIdentity>,
}

impl OidcSignIn {
    /// Validates the configuration (provider ids unique and well-formed, URLs parse). No
    /// network access: each provider is discovered on its first sign-in, and again after a
    /// failed discovery, so a provider that is down at startup does not stop the server.
    pub fn new(engine: Engine, config: OidcConfig) -> Result<Self, IdentityError> {
        let mut providers = HashMap::new();
        let mut order = Vec::new();
        for p in &config.providers {
            let provider = Provider::new(p.clone(), &config.public_url)?;
            if providers.insert(p.id.clone(), provider).is_some() {
                return Err(IdentityError::BadRequest(format!(
                    "provider id {:?} is configured twice",
                    p.id
                )));
            }
            order.push(p.id.clone());
        }
        let http = provider_client(config.http_timeout(), &config.ca_files)?;
        Ok(Self {
            inner: Arc::new(Inner {
                pending: PendingFlows::new(config.flow_ttl(), config.max_pending),
                engine,
                config,
                providers,
                order,
                http,
            }),
        })
    }

    /// The redirect URL to register at provider `id`.
    pub fn redirect_url(&self, id: &str) -> Option<&str> {
        self.inner.providers.get(id).map(Provider::redirect_url)
    }

    /// The routes (see the [module docs](super)).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/auth/providers", get(providers))
            .route("/api/auth/oidc/{id}/start", get(start))
            .route("/api/auth/oidc/{id}/link", post(link))
            .route("/api/auth/oidc/{id}/callback", get(callback))
            .route("/api/identities", get(identities))
            .route("/api/identities/unlink", post(unlink))
            .with_state(self.clone())
    }

    fn provider(&self, id: &str) -> Result<&Provider, IdentityError> {
        self.inner
            .providers
            .get(id)
            .ok_or(IdentityError::UnknownProvider)
    }

    fn state_cookie(&self, value: &str, max_age: u64) -> String {
        format!(
            "{STATE_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
            if self.inner.engine.config().cookie_secure {
                "; Secure"
            } else {
                ""
            }
        )
    }

    /// Starts a flow: remembers it and returns (authorization URL, state cookie).
    async fn begin(
        &self,
        id: &str,
        return_to: Option<String>,
        link_user: Option<zajel_core::UserId>,
    ) -> Result<(String, String), IdentityError> {
        let provider = self.provider(id)?;
        let return_to = match return_to {
            Some(r) => safe_return_to(&r)?,
            None => self.inner.config.after_sign_in.clone(),
        };
        let auth = provider.authorize(&self.inner.http).await?;
        let flow = Pending {
            provider: id.to_owned(),
            pkce_verifier: auth.pkce_verifier,
            nonce: auth.nonce,
            return_to,
            link_user,
        };
        self.inner
            .pending
            .insert(self.inner.engine.store(), &auth.state, &flow)
            .await?;
        let cookie = self.state_cookie(&auth.state, self.inner.config.flow_ttl().as_secs());
        Ok((auth.url, cookie))
    }

    async fn finish(
        &self,
        id: &str,
        q: CallbackQuery,
        headers: &HeaderMap,
    ) -> Result<Response, IdentityError> {
        let provider = self.provider(id)?;
        let state = q
            .state
            .ok_or(IdentityError::InvalidState("the provider sent no state"))?;
        // Bound to this browser: a callback link from someone else's sign-in is refused
        // (login CSRF), before the state is consumed so the real owner can still finish.
        let cookie = crate::http::cookie_value(headers, STATE_COOKIE);
        if cookie.as_deref() != Some(state.as_str()) {
            return Err(IdentityError::InvalidState(
                "it was started in another browser or its cookie is gone",
            ));
        }
        let flow = self
            .inner
            .pending
            .take(self.inner.engine.store(), &state)
            .await?;
        if flow.provider != id {
            return Err(IdentityError::InvalidState(
                "it belongs to another provider",
            ));
        }
        if let Some(err) = q.error {
            return Err(if err == "access_denied" {
                IdentityError::ConsentDenied
            } else {
                IdentityError::ProviderUnavailable(format!(
                    "the provider answered {err}{}",
                    q.error_description
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ))
            });
        }
        // RFC 9207: a provider that names itself must be the one this flow went to.
        if let Some(iss) = &q.iss
            && iss.trim_end_matches('/') != provider.config.issuer.trim_end_matches('/')
        {
            return Err(IdentityError::InvalidState(
                "the answer came from another issuer",
            ));
        }
        let code = q
            .code
            .filter(|c| !c.is_empty())
            .ok_or(IdentityError::InvalidState("the provider sent no code"))?;
        let verified = provider
            .finish(&self.inner.http, code, flow.pkce_verifier, &flow.nonce)
            .await?;
        let identity = ExternalIdentity::oidc(&verified.issuer, &verified.subject)
            .map_err(|e| IdentityError::InvalidIdToken(e.to_string()))?;
        let engine = &self.inner.engine;
        let clear = self.state_cookie("", 0);
        if let Some(user) = flow.link_user {
            engine.link_identity(user, &identity).await?;
            tracing::info!(user = %user, provider = %id, "identity linked");
            return Ok(redirect(&flow.return_to, &[clear]));
        }
        let account = engine
            .user_for_identity(
                &identity,
                &[
                    verified.preferred_username.as_deref(),
                    verified.name.as_deref(),
                    verified.email.as_deref(),
                ],
            )
            .await?;
        let grant = engine.issue_session(account.user.id).await?;
        // The same Set-Cookie a password login sends.
        let login = grant.into_response(engine, StatusCode::OK);
        let session_cookie = login
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| IdentityError::internal("login response without a cookie"))?;
        Ok(redirect(&flow.return_to, &[clear, session_cookie]))
    }
}

/// Only same-site paths: an open redirect after sign-in would hand attackers a trusted link.
fn safe_return_to(r: &str) -> Result<String, IdentityError> {
    let ok = r.starts_with('/')
        && !r.starts_with("//")
        && !r.starts_with("/\\")
        && r.len() <= 1024
        && !r.chars().any(|c| c.is_control());
    if ok {
        Ok(r.to_owned())
    } else {
        Err(IdentityError::BadRequest(
            "return_to must be a path on this site, starting with a single '/'".into(),
        ))
    }
}

fn redirect(to: &str, cookies: &[String]) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(to) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    res
}

async fn providers(State(s): State<OidcSignIn>) -> Response {
    let list: Vec<ProviderInfo<'_>> = s
        .inner
        .order
        .iter()
        .filter_map(|id| s.inner.providers.get(id))
        .map(|p| ProviderInfo {
            id: &p.config.id,
            name: &p.config.name,
            start_url: format!("/api/auth/oidc/{}/start", p.config.id),
        })
        .collect();
    Json(serde_json::json!({ "providers": list })).into_response()
}

async fn start(
    State(s): State<OidcSignIn>,
    Path(id): Path<String>,
    Query(q): Query<StartQuery>,
) -> Response {
    match s.begin(&id, q.return_to, None).await {
        Ok((url, cookie)) => redirect(&url, &[cookie]),
        Err(e) => e.html_page(&s.inner.config.after_sign_in),
    }
}

async fn callback(
    State(s): State<OidcSignIn>,
    Path(id): Path<String>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    match s.finish(&id, q, &headers).await {
        Ok(res) => res,
        Err(e) => {
            tracing::info!(provider = %id, code = e.code(), error = %e, "sign-in failed");
            e.html_page(&s.inner.config.after_sign_in)
        }
    }
}

async fn signed_in(s: &OidcSignIn, headers: &HeaderMap) -> Result<zajel_core::User, IdentityError> {
    let token = crate::http::request_token(headers).ok_or(IdentityError::Unauthenticated)?;
    Ok(s.inner.engine.sessions().user_of_token(&token).await?)
}

async fn link(
    State(s): State<OidcSignIn>,
    Path(id): Path<String>,
    Query(q): Query<StartQuery>,
    headers: HeaderMap,
) -> Result<Response, IdentityError> {
    let user = signed_in(&s, &headers).await?;
    let (url, cookie) = s.begin(&id, q.return_to, Some(user.id)).await?;
    let mut res = Json(LinkAnswer { authorize_url: url }).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

async fn identities(
    State(s): State<OidcSignIn>,
    headers: HeaderMap,
) -> Result<Json<IdentitiesAnswer>, IdentityError> {
    let user = signed_in(&s, &headers).await?;
    Ok(Json(IdentitiesAnswer {
        identities: s.inner.engine.identities(user.id).await?,
    }))
}

async fn unlink(
    State(s): State<OidcSignIn>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, IdentityError> {
    // JSON only, like every body endpoint: a cross-site form cannot send it.
    crate::http::require_json(&headers)?;
    let user = signed_in(&s, &headers).await?;
    let identity: ExternalIdentity = serde_json::from_slice(&body)
        .map_err(|e| IdentityError::BadRequest(format!("invalid request body: {e}")))?;
    s.inner.engine.unlink_identity(user.id, &identity).await?;
    Ok(StatusCode::NO_CONTENT)
}
