//! [`EngineError`]: the engine's one error type. It renders both as an HTTP answer
//! (`{"code", "message", "retry_after_ms"?}` with a matching status) and as a WebSocket `error`
//! frame, so every transport reports the same code for the same failure.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;
use zajel_core::protocol::{ErrorFrame, RequestId, ServerFrame};
use zajel_core::{ErrorCode, HasErrorCode};

/// A refused or failed request: a stable code, a human message and, for `rate_limited` and
/// `unavailable`, how long to wait before retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct EngineError {
    /// The stable code.
    pub code: ErrorCode,
    /// Human-readable text.
    pub message: String,
    /// When to retry (`rate_limited`, `unavailable`).
    pub retry_after: Option<Duration>,
}

/// The former name of [`EngineError`].
pub type ApiError = EngineError;

#[derive(Serialize)]
struct Body<'a> {
    code: ErrorCode,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

impl EngineError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds a retry hint.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// `rate_limited` with a retry hint.
    pub fn rate_limited(wait: Duration) -> Self {
        Self::new(ErrorCode::RateLimited, "too many attempts; try again later").retry_after(wait)
    }

    /// `unauthenticated`.
    pub fn unauthenticated() -> Self {
        Self::new(
            ErrorCode::Unauthenticated,
            "missing, invalid or expired session token",
        )
    }

    /// `shutting_down`.
    pub fn shutting_down() -> Self {
        Self::new(ErrorCode::ShuttingDown, "server is shutting down")
    }

    /// `internal` (the cause is logged, not shown).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(ErrorCode::Internal, "internal server error; try again")
    }

    /// The retry hint in milliseconds (at least 1), as sent on the wire.
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.retry_after.map(|d| (d.as_millis() as u64).max(1))
    }

    /// The `error` frame answering request `re`.
    pub fn to_frame(&self, re: Option<RequestId>) -> ServerFrame {
        let mut frame = ErrorFrame::new(re, self.code, self.message.clone());
        frame.retry_after_ms = self.retry_after_ms();
        ServerFrame::Error(frame)
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
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Unauthenticated | InvalidCredentials => StatusCode::UNAUTHORIZED,
            UsernameTaken | AlreadyAuthenticated | AlreadyFriends | AlreadyRequested
            | AlreadyBlocked => StatusCode::CONFLICT,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            UserNotFound | ConversationNotFound | NoPendingRequest => StatusCode::NOT_FOUND,
            NotFriends | Blocked | NotBlocked | CannotBefriendSelf => StatusCode::FORBIDDEN,
            ShuttingDown | Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Converts any coded error; `internal` causes are logged and hidden from the client.
    pub fn from_coded<E: HasErrorCode + ?Sized>(e: &E) -> Self {
        match e.code() {
            ErrorCode::Internal => EngineError::internal(e),
            code => EngineError::new(code, e.to_string()),
        }
    }
}

impl HasErrorCode for EngineError {
    fn code(&self) -> ErrorCode {
        self.code
    }
}

impl From<&zajel_core::StoreError> for EngineError {
    fn from(e: &zajel_core::StoreError) -> Self {
        let out = EngineError::from_coded(e);
        match e.retry_after_ms() {
            Some(ms) => out.retry_after(Duration::from_millis(ms.max(1))),
            None => out,
        }
    }
}

impl From<zajel_core::StoreError> for EngineError {
    fn from(e: zajel_core::StoreError) -> Self {
        EngineError::from(&e)
    }
}

macro_rules! from_coded {
    ($($t:ty),*) => {$(
        impl From<$t> for EngineError {
            fn from(e: $t) -> Self {
                EngineError::from_coded(&e)
            }
        }
    )*};
}
from_coded!(zajel_core::ValidationError);

impl From<zajel_core::FriendError> for EngineError {
    fn from(e: zajel_core::FriendError) -> Self {
        match e {
            zajel_core::FriendError::Store(s) => s.into(),
            e => EngineError::from_coded(&e),
        }
    }
}

impl From<zajel_core::messaging::SendError> for EngineError {
    fn from(e: zajel_core::messaging::SendError) -> Self {
        match e {
            zajel_core::messaging::SendError::Store(s) => s.into(),
            e => EngineError::from_coded(&e),
        }
    }
}

impl IntoResponse for EngineError {
    fn into_response(self) -> Response {
        let retry_after_ms = self.retry_after_ms();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_error_renders_as_http_and_as_a_frame() {
        let e = EngineError::rate_limited(Duration::from_millis(1500));
        let frame = e.to_frame(RequestId::new("7").ok());
        let ServerFrame::Error(f) = frame else {
            panic!("an error frame")
        };
        assert_eq!(
            (
                f.code,
                f.retry_after_ms,
                f.re.as_ref().map(RequestId::as_str)
            ),
            (ErrorCode::RateLimited, Some(1500), Some("7"))
        );
        let res = e.into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        let unavailable = EngineError::new(ErrorCode::Unavailable, "store down");
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
