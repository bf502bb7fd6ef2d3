//! The one exception type of the SDKs: [`ZajelError`], and the protocol's [`ErrorCode`].

use zajel_client::Error;

/// The protocol's stable error codes (`not_friends`, `rate_limited`, …), as an enum.
///
/// Mirrors [`zajel_client::ErrorCode`]; a code this SDK version does not know arrives as
/// [`ErrorCode::Unknown`] (treat it like [`ErrorCode::Internal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, uniffi::Enum)]
#[allow(missing_docs)] // each variant is documented on zajel_core::ErrorCode
pub enum ErrorCode {
    BadFrame,
    UnknownType,
    InvalidField,
    FrameTooLarge,
    UnsupportedVersion,
    Unauthenticated,
    AlreadyAuthenticated,
    InvalidCredentials,
    InvalidUsername,
    InvalidPassword,
    UsernameTaken,
    RateLimited,
    UserNotFound,
    CannotBefriendSelf,
    AlreadyFriends,
    AlreadyRequested,
    NoPendingRequest,
    NotFriends,
    Blocked,
    AlreadyBlocked,
    NotBlocked,
    ConversationNotFound,
    EmptyBody,
    BodyTooLong,
    InvalidIdempotencyKey,
    InvalidCursor,
    Internal,
    ShuttingDown,
    Unavailable,
    Unknown,
}

impl From<zajel_client::ErrorCode> for ErrorCode {
    fn from(code: zajel_client::ErrorCode) -> Self {
        use zajel_client::ErrorCode as C;
        match code {
            C::BadFrame => Self::BadFrame,
            C::UnknownType => Self::UnknownType,
            C::InvalidField => Self::InvalidField,
            C::FrameTooLarge => Self::FrameTooLarge,
            C::UnsupportedVersion => Self::UnsupportedVersion,
            C::Unauthenticated => Self::Unauthenticated,
            C::AlreadyAuthenticated => Self::AlreadyAuthenticated,
            C::InvalidCredentials => Self::InvalidCredentials,
            C::InvalidUsername => Self::InvalidUsername,
            C::InvalidPassword => Self::InvalidPassword,
            C::UsernameTaken => Self::UsernameTaken,
            C::RateLimited => Self::RateLimited,
            C::UserNotFound => Self::UserNotFound,
            C::CannotBefriendSelf => Self::CannotBefriendSelf,
            C::AlreadyFriends => Self::AlreadyFriends,
            C::AlreadyRequested => Self::AlreadyRequested,
            C::NoPendingRequest => Self::NoPendingRequest,
            C::NotFriends => Self::NotFriends,
            C::Blocked => Self::Blocked,
            C::AlreadyBlocked => Self::AlreadyBlocked,
            C::NotBlocked => Self::NotBlocked,
            C::ConversationNotFound => Self::ConversationNotFound,
            C::EmptyBody => Self::EmptyBody,
            C::BodyTooLong => Self::BodyTooLong,
            C::InvalidIdempotencyKey => Self::InvalidIdempotencyKey,
            C::InvalidCursor => Self::InvalidCursor,
            C::Internal => Self::Internal,
            C::ShuttingDown => Self::ShuttingDown,
            C::Unavailable => Self::Unavailable,
            // `Unknown`, and codes added to the (non-exhaustive) core enum later.
            _ => Self::Unknown,
        }
    }
}

/// Everything an SDK call can fail with: one exception type per language
/// (`ZajelException` in Kotlin, `ZajelError` in Python and Swift) with a case per kind.
///
/// The fields are named `detail` rather than `message` so they do not clash with the
/// exception's own `message` in Kotlin.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum ZajelError {
    /// The server (or the client's own check of the same rule) refused the request.
    #[error("{code:?}: {detail}")]
    Rejected {
        /// The protocol's error code.
        code: ErrorCode,
        /// Human-readable explanation (may change; match on `code`).
        detail: String,
        /// For `RateLimited`: when the server suggests retrying, in milliseconds.
        retry_after_ms: Option<u64>,
    },
    /// The session token is unknown, expired or revoked: sign in again. The client stopped.
    #[error("signed out: the session token is no longer valid")]
    SignedOut,
    /// The client was closed before the call completed.
    #[error("the client is closed")]
    Closed,
    /// The connection dropped after a friend operation was sent but before it was answered;
    /// whether it took effect is unknown (reload the friends list).
    #[error("the connection was lost before the server answered")]
    ConnectionLost,
    /// A network-level failure (connect, socket, HTTP transport).
    #[error("transport error: {detail}")]
    Transport {
        /// What failed.
        detail: String,
    },
    /// An HTTP answer that was not the documented JSON.
    #[error("unexpected HTTP {status}: {body}")]
    Http {
        /// The status code.
        status: u16,
        /// The (possibly truncated) body.
        body: String,
    },
    /// The server URL is not `http://`, `https://`, `ws://` or `wss://`.
    #[error("invalid server URL {url:?}")]
    InvalidUrl {
        /// The URL given.
        url: String,
    },
    /// The server answered with something the protocol does not allow here.
    #[error("protocol violation: {detail}")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// The request was not answered in time.
    #[error("timed out")]
    Timeout,
    /// The client's storage (`ConnectOptions.storage_path`) failed to load or save.
    #[error("storage: {detail}")]
    Storage {
        /// What failed.
        detail: String,
    },
    /// An argument is malformed (a user id that is not a UUID, a conversation id that is not
    /// `dm.<id>.<id>`, an unknown outbox key); nothing was sent.
    #[error("invalid argument: {detail}")]
    InvalidArgument {
        /// Which argument, and why.
        detail: String,
    },
}

impl ZajelError {
    pub(crate) fn invalid_argument(detail: impl Into<String>) -> Self {
        Self::InvalidArgument {
            detail: detail.into(),
        }
    }
}

impl From<Error> for ZajelError {
    fn from(e: Error) -> Self {
        match e {
            Error::Rejected {
                code,
                message,
                retry_after_ms,
            } => Self::Rejected {
                code: code.into(),
                detail: message,
                retry_after_ms,
            },
            Error::SignedOut => Self::SignedOut,
            Error::Closed => Self::Closed,
            Error::ConnectionLost => Self::ConnectionLost,
            Error::Transport(detail) => Self::Transport { detail },
            Error::Http { status, body } => Self::Http { status, body },
            Error::InvalidUrl(url) => Self::InvalidUrl { url },
            Error::Protocol(detail) => Self::Protocol { detail },
            Error::Timeout => Self::Timeout,
            Error::Storage(detail) => Self::Storage { detail },
            Error::InvalidArgument(detail) => Self::InvalidArgument { detail },
            // Kinds added to the (non-exhaustive) client error later.
            other => Self::Protocol {
                detail: other.to_string(),
            },
        }
    }
}

/// The wire form of a code (`"not_friends"`), for logs and for matching on strings.
#[uniffi::export]
pub fn error_code_wire_name(code: ErrorCode) -> String {
    wire(code).as_str().to_owned()
}

fn wire(code: ErrorCode) -> zajel_client::ErrorCode {
    use zajel_client::ErrorCode as C;
    match code {
        ErrorCode::BadFrame => C::BadFrame,
        ErrorCode::UnknownType => C::UnknownType,
        ErrorCode::InvalidField => C::InvalidField,
        ErrorCode::FrameTooLarge => C::FrameTooLarge,
        ErrorCode::UnsupportedVersion => C::UnsupportedVersion,
        ErrorCode::Unauthenticated => C::Unauthenticated,
        ErrorCode::AlreadyAuthenticated => C::AlreadyAuthenticated,
        ErrorCode::InvalidCredentials => C::InvalidCredentials,
        ErrorCode::InvalidUsername => C::InvalidUsername,
        ErrorCode::InvalidPassword => C::InvalidPassword,
        ErrorCode::UsernameTaken => C::UsernameTaken,
        ErrorCode::RateLimited => C::RateLimited,
        ErrorCode::UserNotFound => C::UserNotFound,
        ErrorCode::CannotBefriendSelf => C::CannotBefriendSelf,
        ErrorCode::AlreadyFriends => C::AlreadyFriends,
        ErrorCode::AlreadyRequested => C::AlreadyRequested,
        ErrorCode::NoPendingRequest => C::NoPendingRequest,
        ErrorCode::NotFriends => C::NotFriends,
        ErrorCode::Blocked => C::Blocked,
        ErrorCode::AlreadyBlocked => C::AlreadyBlocked,
        ErrorCode::NotBlocked => C::NotBlocked,
        ErrorCode::ConversationNotFound => C::ConversationNotFound,
        ErrorCode::EmptyBody => C::EmptyBody,
        ErrorCode::BodyTooLong => C::BodyTooLong,
        ErrorCode::InvalidIdempotencyKey => C::InvalidIdempotencyKey,
        ErrorCode::InvalidCursor => C::InvalidCursor,
        ErrorCode::Internal => C::Internal,
        ErrorCode::ShuttingDown => C::ShuttingDown,
        ErrorCode::Unavailable => C::Unavailable,
        ErrorCode::Unknown => C::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every wire code survives the trip wire -> core -> SDK enum -> wire name (so none is
    /// mapped to the wrong variant or lost to `Unknown`).
    #[test]
    fn every_code_round_trips() {
        let names = [
            "bad_frame",
            "unknown_type",
            "invalid_field",
            "frame_too_large",
            "unsupported_version",
            "unauthenticated",
            "already_authenticated",
            "invalid_credentials",
            "invalid_username",
            "invalid_password",
            "username_taken",
            "rate_limited",
            "user_not_found",
            "cannot_befriend_self",
            "already_friends",
            "already_requested",
            "no_pending_request",
            "not_friends",
            "blocked",
            "already_blocked",
            "not_blocked",
            "conversation_not_found",
            "empty_body",
            "body_too_long",
            "invalid_idempotency_key",
            "invalid_cursor",
            "internal",
            "shutting_down",
            "unavailable",
        ];
        for name in names {
            // Decoded the way the client decodes frames from the wire.
            let core: zajel_client::ErrorCode = serde_json::from_str(&format!("\"{name}\""))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let sdk = ErrorCode::from(core);
            assert_ne!(sdk, ErrorCode::Unknown, "{name}");
            assert_eq!(error_code_wire_name(sdk), name);
        }
        // A code from a newer server is `Unknown`, not an error.
        let newer: zajel_client::ErrorCode = serde_json::from_str("\"from_the_future\"").unwrap();
        assert_eq!(ErrorCode::from(newer), ErrorCode::Unknown);
    }

    #[test]
    fn client_errors_keep_code_and_retry_hint() {
        let e = ZajelError::from(Error::Rejected {
            code: zajel_client::ErrorCode::RateLimited,
            message: "slow down".into(),
            retry_after_ms: Some(1500),
        });
        assert_eq!(
            e,
            ZajelError::Rejected {
                code: ErrorCode::RateLimited,
                detail: "slow down".into(),
                retry_after_ms: Some(1500),
            }
        );
        assert_eq!(ZajelError::from(Error::SignedOut), ZajelError::SignedOut);
        assert_eq!(
            ZajelError::from(Error::Http {
                status: 502,
                body: "bad gateway".into()
            }),
            ZajelError::Http {
                status: 502,
                body: "bad gateway".into()
            }
        );
    }
}
