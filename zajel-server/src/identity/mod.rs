//! Identity: sign-in methods other than a Zajel password.
//!
//! * [`Authenticator`]: an embedding app's own credential (its session, its JWT) becomes a
//!   Zajel session through [`Engine::app_auth_router`](crate::Engine::app_auth_router); the
//!   app's users map onto Zajel users by (`app:<name>`, app user id).
//! * [`jwt::JwtAuthenticator`] (feature `oidc`): a ready authenticator for signed JWTs (HS256,
//!   or RS256/ES256 against a JWKS URL), so any backend language can mint connection tokens.
//! * [`oidc`] (feature `oidc`): "Sign in with Google" and any OpenID Connect provider
//!   (authorization code + PKCE, `state`, `nonce`, verified ID token).
//! * The server-side [`Engine`](crate::Engine) API: [`Engine::app_user`](crate::Engine::app_user),
//!   [`Engine::issue_session`](crate::Engine::issue_session),
//!   [`Engine::revoke_sessions`](crate::Engine::revoke_sessions),
//!   [`Engine::make_friends`](crate::Engine::make_friends), identity listing/linking.
//!
//! Accounts are matched by (issuer, subject) or (app, app user id), never by e-mail. The
//! security model is in `docs/identity.md`.

mod authenticator;
mod engine_api;
mod error;
#[cfg(feature = "oidc")]
#[cfg_attr(docsrs, doc(cfg(feature = "oidc")))]
pub mod jwt;
#[cfg(feature = "oidc")]
#[cfg_attr(docsrs, doc(cfg(feature = "oidc")))]
pub mod oidc;
#[cfg(feature = "oidc")]
mod outbound;
mod username;

pub use authenticator::{AppUser, Authenticator};
pub use engine_api::SessionGrant;
pub use error::IdentityError;
