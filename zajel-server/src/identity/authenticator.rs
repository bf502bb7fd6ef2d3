//! The [`Authenticator`] seam: an embedding app's own credential becomes a Zajel session.

use super::IdentityError;
use crate::engine::Engine;
use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use std::sync::Arc;

/// The app's user, as its authenticator vouches for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppUser {
    /// The app's own, stable id for the user (never an e-mail address that can change hands).
    pub id: String,
    /// A display name to derive the Zajel username from on first sight.
    pub username_hint: Option<String>,
}

/// Verifies an embedding app's own credential (its session cookie, its JWT, …) found in a
/// request's headers and says which of the app's users it belongs to.
///
/// Implement it over your session store, or use the ready
/// [`JwtAuthenticator`](crate::identity::jwt::JwtAuthenticator) (feature `oidc`).
///
/// ```
/// use zajel_server::identity::{AppUser, Authenticator, IdentityError};
/// use axum::http::HeaderMap;
///
/// struct ApiKeys;
/// #[async_trait::async_trait]
/// impl Authenticator for ApiKeys {
///     async fn authenticate(&self, headers: &HeaderMap) -> Result<AppUser, IdentityError> {
///         match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
///             Some("key-of-42") => Ok(AppUser { id: "42".into(), username_hint: Some("alice".into()) }),
///             _ => Err(IdentityError::InvalidCredential("unknown api key".into())),
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The app user the request's credential proves, or
    /// [`IdentityError::InvalidCredential`] (with a reason) when it proves none.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<AppUser, IdentityError>;
}

#[derive(Clone)]
struct AppAuth {
    engine: Engine,
    app: Arc<str>,
    authenticator: Arc<dyn Authenticator>,
}

impl Engine {
    /// `POST /api/auth/app`: exchanges the app's credential (whatever `authenticator` checks)
    /// for a Zajel session, answered exactly like `POST /api/login` (JSON body with the token,
    /// and the session cookie). The app's user is created on first sight and linked as
    /// (`app:<app>`, app user id). Merge the returned router next to [`Engine::router`].
    pub fn app_auth_router(&self, app: &str, authenticator: Arc<dyn Authenticator>) -> Router {
        Router::new()
            .route("/api/auth/app", post(exchange))
            .with_state(AppAuth {
                engine: self.clone(),
                app: app.into(),
                authenticator,
            })
    }

    /// Signs in the app user a request's credential proves: verifies it with `authenticator`,
    /// finds or creates the Zajel user, and issues a session.
    pub async fn sign_in_app_user(
        &self,
        app: &str,
        authenticator: &dyn Authenticator,
        headers: &HeaderMap,
    ) -> Result<super::SessionGrant, IdentityError> {
        let app_user = authenticator.authenticate(headers).await?;
        let user = self
            .app_user(app, &app_user.id, app_user.username_hint.as_deref())
            .await?;
        self.issue_session(user.id).await
    }
}

async fn exchange(State(s): State<AppAuth>, headers: HeaderMap) -> Result<Response, IdentityError> {
    let grant = s
        .engine
        .sign_in_app_user(&s.app, &*s.authenticator, &headers)
        .await?;
    Ok(grant.into_response(&s.engine, StatusCode::OK))
}
