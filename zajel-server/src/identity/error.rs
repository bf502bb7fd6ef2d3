//! Errors of sign-in through an external identity, each with a stable code and a message a
//! person can act on.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use zajel_core::{ErrorCode, HasErrorCode, StoreError};

/// Why an external sign-in, a link or an unlink failed. Nothing is created or changed when one
/// of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The person declined (or cancelled) at the provider.
    #[error("sign-in was cancelled at the provider; nothing was changed")]
    ConsentDenied,
    /// The `state` is unknown, already used, expired, or was started in another browser.
    #[error("this sign-in link is invalid, expired or already used ({0}); please start again")]
    InvalidState(&'static str),
    /// The provider's ID token failed verification (signature, issuer, audience, expiry, nonce).
    #[error("the provider's answer could not be verified ({0}); please start again")]
    InvalidIdToken(String),
    /// The provider could not be reached, answered too slowly, or answered with an error.
    #[error("the sign-in provider is unavailable right now ({0}); please try again later")]
    ProviderUnavailable(String),
    /// No provider with that id is configured.
    #[error("no sign-in provider with that name is configured")]
    UnknownProvider,
    /// An app credential (its session, its JWT) was missing or failed verification.
    #[error("invalid application credential: {0}")]
    InvalidCredential(String),
    /// The identity already belongs to another account.
    #[error("this identity is already linked to another account")]
    IdentityTaken,
    /// Unlinking would leave the account with no way to sign in.
    #[error(
        "this is the account's last way to sign in; set a password or link another identity first"
    )]
    LastSignInMethod,
    /// The identity is not linked to this account.
    #[error("this identity is not linked to your account")]
    NotLinked,
    /// The request needs a signed-in session.
    #[error("missing, invalid or expired session token")]
    Unauthenticated,
    /// Malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// A JSON endpoint got a body not declared `Content-Type: application/json` (what a
    /// cross-site HTML form sends: refused so that it cannot act for a signed-in browser).
    #[error("send the body as Content-Type: application/json")]
    UnsupportedMediaType,
    /// Too many pending sign-ins on this server.
    #[error("too many sign-ins in progress; please try again in a minute")]
    Busy,
    /// The store cannot be reached right now; retry later.
    #[error("the service is temporarily unavailable; please try again shortly")]
    Unavailable,
    /// A store or server failure (logged; the message is generic).
    #[error("internal server error")]
    Internal,
}

impl IdentityError {
    /// The stable code (`consent_denied`, `invalid_state`, …), as in `docs/identity.md`.
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::ConsentDenied => "consent_denied",
            IdentityError::InvalidState(_) => "invalid_state",
            IdentityError::InvalidIdToken(_) => "invalid_id_token",
            IdentityError::ProviderUnavailable(_) => "provider_unavailable",
            IdentityError::UnknownProvider => "unknown_provider",
            IdentityError::InvalidCredential(_) => "invalid_credentials",
            IdentityError::IdentityTaken => "identity_taken",
            IdentityError::LastSignInMethod => "last_sign_in_method",
            IdentityError::NotLinked => "identity_not_linked",
            IdentityError::Unauthenticated => "unauthenticated",
            IdentityError::BadRequest(_) => "invalid_field",
            IdentityError::UnsupportedMediaType => "unsupported_media_type",
            IdentityError::Busy => "rate_limited",
            IdentityError::Unavailable => "unavailable",
            IdentityError::Internal => "internal",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            IdentityError::ConsentDenied => StatusCode::FORBIDDEN,
            IdentityError::InvalidState(_) | IdentityError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            IdentityError::InvalidIdToken(_)
            | IdentityError::InvalidCredential(_)
            | IdentityError::Unauthenticated => StatusCode::UNAUTHORIZED,
            IdentityError::ProviderUnavailable(_) => StatusCode::BAD_GATEWAY,
            IdentityError::UnknownProvider | IdentityError::NotLinked => StatusCode::NOT_FOUND,
            IdentityError::IdentityTaken | IdentityError::LastSignInMethod => StatusCode::CONFLICT,
            IdentityError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IdentityError::Busy => StatusCode::TOO_MANY_REQUESTS,
            IdentityError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            IdentityError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Logs `cause` and returns [`IdentityError::Internal`].
    pub(crate) fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "identity: internal error");
        IdentityError::Internal
    }

    /// A store error: the ones a caller can act on keep their meaning.
    pub(crate) fn store(e: StoreError) -> Self {
        match e {
            StoreError::IdentityTaken => IdentityError::IdentityTaken,
            StoreError::UserNotFound => IdentityError::Unauthenticated,
            StoreError::Unavailable { reason, .. } => {
                tracing::warn!(%reason, "identity: store unavailable");
                IdentityError::Unavailable
            }
            e => IdentityError::internal(e),
        }
    }

    #[cfg(feature = "oidc")]
    /// An error page for a browser (the OAuth callback is a top-level navigation, so a JSON body
    /// would be shown raw). Carries the code in `X-Zajel-Error` for programs and tests; its
    /// "Back to the app" link adds `sign_in_error=<code>` so the app can say what happened.
    pub(crate) fn html_page(&self, back_to: &str) -> Response {
        let sep = if back_to.contains('?') { '&' } else { '?' };
        let back_to = format!("{back_to}{sep}sign_in_error={}", self.code());
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign-in failed</title></head>\
             <body><h1>Sign-in failed</h1><p data-code=\"{code}\">{msg}</p>\
             <p><a href=\"{back}\">Back to the app</a></p></body></html>",
            code = self.code(),
            msg = esc(&self.to_string()),
            back = esc(&back_to),
        );
        (
            self.status(),
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (
                    header::HeaderName::from_static("x-zajel-error"),
                    self.code(),
                ),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response()
    }
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: String,
}

impl IntoResponse for IdentityError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Body {
            code: self.code(),
            message: self.to_string(),
        })
        .unwrap_or_default();
        let mut res = (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        // The engine's request metrics count errors by wire code where one exists.
        let wire = match self {
            IdentityError::Unauthenticated => Some(ErrorCode::Unauthenticated),
            IdentityError::InvalidCredential(_) => Some(ErrorCode::InvalidCredentials),
            IdentityError::UnsupportedMediaType => Some(ErrorCode::UnsupportedMediaType),
            IdentityError::Busy => Some(ErrorCode::RateLimited),
            IdentityError::Unavailable => Some(ErrorCode::Unavailable),
            IdentityError::Internal => Some(ErrorCode::Internal),
            _ => None,
        };
        if let Some(code) = wire {
            res.extensions_mut().insert(code);
        }
        res
    }
}

impl From<crate::EngineError> for IdentityError {
    fn from(e: crate::EngineError) -> Self {
        match e.code {
            ErrorCode::Unauthenticated => IdentityError::Unauthenticated,
            ErrorCode::RateLimited => IdentityError::Busy,
            ErrorCode::UnsupportedMediaType => IdentityError::UnsupportedMediaType,
            ErrorCode::Unavailable => IdentityError::Unavailable,
            ErrorCode::Internal => IdentityError::Internal,
            _ => IdentityError::BadRequest(e.message),
        }
    }
}

impl HasErrorCode for IdentityError {
    fn code(&self) -> ErrorCode {
        match self {
            IdentityError::Unauthenticated => ErrorCode::Unauthenticated,
            IdentityError::InvalidCredential(_)
            | IdentityError::InvalidIdToken(_)
            | IdentityError::InvalidState(_)
            | IdentityError::ConsentDenied => ErrorCode::InvalidCredentials,
            IdentityError::Busy => ErrorCode::RateLimited,
            IdentityError::Unavailable => ErrorCode::Unavailable,
            IdentityError::BadRequest(_) => ErrorCode::InvalidField,
            IdentityError::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            IdentityError::UnknownProvider | IdentityError::NotLinked => ErrorCode::UserNotFound,
            _ => ErrorCode::Internal,
        }
    }
}
