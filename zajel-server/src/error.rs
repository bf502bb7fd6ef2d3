//! HTTP error answers: `{"code": <ErrorCode>, "message": "..."}` with a matching status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;
use zajel_core::{ErrorCode, HasErrorCode};

/// An error answered over HTTP.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// Human-readable text.
    pub message: String,
    /// For `rate_limited`.
    pub retry_after: Option<Duration>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: ErrorCode,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `rate_limited` with a retry hint.
    pub fn rate_limited(wait: Duration) -> Self {
        Self {
            code: ErrorCode::RateLimited,
            message: "too many attempts; try again later".into(),
            retry_after: Some(wait),
        }
    }

    /// `unauthenticated`.
    pub fn unauthenticated() -> Self {
        Self::new(
            ErrorCode::Unauthenticated,
            "missing, invalid or expired session token",
        )
    }

    /// `internal` (the cause is logged, not shown).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(ErrorCode::Internal, "internal server error")
    }

    /// The HTTP status for the code.
    pub fn status(&self) -> StatusCode {
        use ErrorCode::*;
        match self.code {
            BadFrame
            | UnknownType
            | InvalidField
            | InvalidUsername
            | InvalidPassword
            | UnsupportedVersion
            | EmptyBody
            | BodyTooLong
            | InvalidIdempotencyKey
            | InvalidCursor => StatusCode::BAD_REQUEST,
            FrameTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Unauthenticated | InvalidCredentials => StatusCode::UNAUTHORIZED,
            UsernameTaken | AlreadyAuthenticated | AlreadyFriends | AlreadyRequested
            | AlreadyBlocked => StatusCode::CONFLICT,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            UserNotFound | ConversationNotFound | NoPendingRequest => StatusCode::NOT_FOUND,
            NotFriends | Blocked | NotBlocked | CannotBefriendSelf => StatusCode::FORBIDDEN,
            ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl<E: HasErrorCode> From<&E> for ApiError {
    fn from(e: &E) -> Self {
        match e.code() {
            ErrorCode::Internal => ApiError::internal(e),
            code => ApiError::new(code, e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after_ms = self.retry_after.map(|d| d.as_millis().max(1) as u64);
        let body = serde_json::to_vec(&Body {
            code: self.code,
            message: &self.message,
            retry_after_ms,
        })
        .unwrap_or_default();
        let mut res = (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        res.extensions_mut().insert(self.code);
        if let Some(ms) = retry_after_ms
            && let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).to_string())
        {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        res
    }
}
