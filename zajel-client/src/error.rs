//! The client's error type.

use zajel_core::ErrorCode;

/// Everything a client call can fail with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server (or the client's own check of the same rule) refused the request with a
    /// stable code. Retryable codes (see [`ErrorCode::is_retryable`]) are retried by the outbox
    /// before a `send` ever reports them.
    #[error("{code}: {message}")]
    Rejected {
        /// The stable wire code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
        /// For `rate_limited`: when the server suggests retrying.
        retry_after_ms: Option<u64>,
    },
    /// The session token is unknown, expired or revoked: sign in again. The client stops
    /// reconnecting ([`crate::ConnectionState::SignedOut`]).
    #[error("signed out: the session token is no longer valid")]
    SignedOut,
    /// The client was closed ([`crate::Client::close`]) before the call completed.
    #[error("the client is closed")]
    Closed,
    /// The connection dropped after a non-repeatable request (a friend operation) was sent
    /// but before it was answered; whether it took effect is unknown. Reads are re-sent
    /// automatically and never see this.
    #[error("the connection was lost before the server answered")]
    ConnectionLost,
    /// Network-level failure (connect, TLS, socket, HTTP transport).
    #[error("transport error: {0}")]
    Transport(String),
    /// An HTTP answer that was not the documented JSON.
    #[error("unexpected HTTP {status}: {body}")]
    Http {
        /// The status code.
        status: u16,
        /// The (possibly truncated) body.
        body: String,
    },
    /// The server URL is not `http://`, `https://`, `ws://` or `wss://`.
    #[error("invalid server URL {0:?}")]
    InvalidUrl(String),
    /// The server answered with something the protocol does not allow here.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The request was not answered in time.
    #[error("timed out")]
    Timeout,
}

impl Error {
    /// The wire error code, for [`Error::Rejected`] (and `unauthenticated` for
    /// [`Error::SignedOut`]).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Rejected { code, .. } => Some(*code),
            Error::SignedOut => Some(ErrorCode::Unauthenticated),
            _ => None,
        }
    }

    pub(crate) fn rejected(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Rejected {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    pub(crate) fn from_frame(e: zajel_core::protocol::ErrorFrame) -> Self {
        if e.code == ErrorCode::Unauthenticated {
            return Error::SignedOut;
        }
        Error::Rejected {
            code: e.code,
            message: e.message,
            retry_after_ms: e.retry_after_ms,
        }
    }
}

/// Shorthand for results of client calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;
