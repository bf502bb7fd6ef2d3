//! Errors: the stable wire code table ([`ErrorCode`]) and the typed Rust errors that map onto it.
//!
//! Every error a client can see has a stable snake_case code and a human message. The codes are
//! the contract (SDKs match on them); the messages may change. Rust errors implement
//! [`HasErrorCode`] so the server turns any of them into an `error` frame in one place.

use serde::{Deserialize, Serialize};

/// The stable error codes of the wire protocol. New codes may be added; clients must treat an
/// unknown code (deserialized as [`ErrorCode::Unknown`]) like [`ErrorCode::Internal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    // -- frame level: the request could not be understood
    /// Not JSON, not an object, or no string `type`.
    BadFrame,
    /// `type` names no frame this server knows.
    UnknownType,
    /// A known frame with a missing field, a wrong type or an invalid value.
    InvalidField,
    /// The frame exceeds the configured maximum size.
    FrameTooLarge,
    /// The `protocol` version in `auth` is not supported.
    UnsupportedVersion,
    /// HTTP only: a request body that is not declared `application/json`.
    UnsupportedMediaType,
    /// HTTP only: no such route.
    NotFound,
    /// HTTP only: the route exists but not with this method.
    MethodNotAllowed,
    // -- authentication
    /// A request before `auth`, or an unknown/expired/revoked token.
    Unauthenticated,
    /// A second `auth` on an authenticated connection.
    AlreadyAuthenticated,
    /// Wrong username or password (deliberately the same for both).
    InvalidCredentials,
    /// Username is not 3–32 characters of `A–Z a–z 0–9 _ . -` starting with a letter or digit.
    InvalidUsername,
    /// Password too short or too long.
    InvalidPassword,
    /// The username is already registered.
    UsernameTaken,
    /// Too many requests; slow down (see `retry_after_ms` where given).
    RateLimited,
    // -- friends
    /// No user with that id or username.
    UserNotFound,
    /// A friend request to oneself.
    CannotBefriendSelf,
    /// Already friends.
    AlreadyFriends,
    /// A request from you to them is already pending.
    AlreadyRequested,
    /// No pending request matches (e.g. accept of a cancelled request).
    NoPendingRequest,
    /// The operation needs a friendship that does not exist.
    NotFriends,
    /// A block (either direction) forbids this.
    Blocked,
    /// You already block this user.
    AlreadyBlocked,
    /// You do not block this user.
    NotBlocked,
    // -- messaging and history
    /// The conversation id is malformed or you are not a member.
    ConversationNotFound,
    /// The message body is empty.
    EmptyBody,
    /// The message body exceeds the maximum length.
    BodyTooLong,
    /// The idempotency key is empty, too long or has characters outside printable ASCII.
    InvalidIdempotencyKey,
    /// A history cursor or read mark beyond the conversation's end, or otherwise invalid.
    InvalidCursor,
    // -- server side
    /// Something failed on the server; the request may be retried.
    Internal,
    /// The server is shutting down; reconnect (possibly to another node).
    ShuttingDown,
    /// A dependency (the store) is temporarily unavailable; retry after `retry_after_ms`.
    Unavailable,
    /// A code this client version does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadFrame => "bad_frame",
            UnknownType => "unknown_type",
            InvalidField => "invalid_field",
            FrameTooLarge => "frame_too_large",
            UnsupportedVersion => "unsupported_version",
            UnsupportedMediaType => "unsupported_media_type",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Unauthenticated => "unauthenticated",
            AlreadyAuthenticated => "already_authenticated",
            InvalidCredentials => "invalid_credentials",
            InvalidUsername => "invalid_username",
            InvalidPassword => "invalid_password",
            UsernameTaken => "username_taken",
            RateLimited => "rate_limited",
            UserNotFound => "user_not_found",
            CannotBefriendSelf => "cannot_befriend_self",
            AlreadyFriends => "already_friends",
            AlreadyRequested => "already_requested",
            NoPendingRequest => "no_pending_request",
            NotFriends => "not_friends",
            Blocked => "blocked",
            AlreadyBlocked => "already_blocked",
            NotBlocked => "not_blocked",
            ConversationNotFound => "conversation_not_found",
            EmptyBody => "empty_body",
            BodyTooLong => "body_too_long",
            InvalidIdempotencyKey => "invalid_idempotency_key",
            InvalidCursor => "invalid_cursor",
            Internal => "internal",
            ShuttingDown => "shutting_down",
            Unavailable => "unavailable",
            Unknown => "unknown",
        }
    }

    /// Whether retrying the same request later can succeed (the SDK's outbox uses this).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Internal
                | ErrorCode::ShuttingDown
                | ErrorCode::RateLimited
                | ErrorCode::Unavailable
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every error that can reach a client.
pub trait HasErrorCode: std::fmt::Display {
    /// The wire code for this error.
    fn code(&self) -> ErrorCode;
}

/// Input that fails the protocol's validation rules (see [`crate::limits`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// See [`ErrorCode::InvalidUsername`].
    #[error(
        "username must be 3 to 32 characters of letters, digits, '_', '.' or '-', starting with a letter or digit"
    )]
    InvalidUsername,
    /// See [`ErrorCode::EmptyBody`].
    #[error("message body is empty")]
    EmptyBody,
    /// See [`ErrorCode::BodyTooLong`].
    #[error("message body is {len} bytes; the maximum is {max}")]
    BodyTooLong {
        /// Length of the rejected body in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// See [`ErrorCode::InvalidIdempotencyKey`].
    #[error("idempotency key must be 1 to 64 printable ASCII characters")]
    InvalidIdempotencyKey,
    /// A page size outside 1..=max.
    #[error("limit must be between 1 and {max}")]
    InvalidLimit {
        /// The largest allowed page size.
        max: u32,
    },
    /// A history query with both `before` and `after` out of order, or `before = 0`.
    #[error("invalid cursor: {0}")]
    InvalidCursor(&'static str),
}

impl HasErrorCode for ValidationError {
    fn code(&self) -> ErrorCode {
        match self {
            ValidationError::InvalidUsername => ErrorCode::InvalidUsername,
            ValidationError::EmptyBody => ErrorCode::EmptyBody,
            ValidationError::BodyTooLong { .. } => ErrorCode::BodyTooLong,
            ValidationError::InvalidIdempotencyKey => ErrorCode::InvalidIdempotencyKey,
            ValidationError::InvalidLimit { .. } => ErrorCode::InvalidField,
            ValidationError::InvalidCursor(_) => ErrorCode::InvalidCursor,
        }
    }
}
