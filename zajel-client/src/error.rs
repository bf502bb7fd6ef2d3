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
    /// The storage seam failed to load or save (see [`crate::Storage`]).
    #[error("storage: {0}")]
    Storage(String),
    /// An argument the client refused before sending anything (an unknown outbox key, an id
    /// that does not parse).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl serde::Serialize for Error {
    /// `{ "code": "<code_name>", "message": "…", "retry_after_ms"? }`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let retry = match self {
            Error::Rejected { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        };
        let mut st = s.serialize_struct("Error", 3)?;
        st.serialize_field("code", &self.code_name())?;
        st.serialize_field("message", &self.to_string())?;
        if let Some(ms) = retry {
            st.serialize_field("retry_after_ms", &ms)?;
        }
        st.end()
    }
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

    /// A stable string code for every variant: the wire code for [`Error::Rejected`]
    /// (`not_friends`, …), `unauthenticated` for [`Error::SignedOut`], else one of `closed`,
    /// `connection_lost`, `transport`, `http`, `invalid_url`, `protocol`, `timeout`,
    /// `storage`, `invalid_argument`. The bindings expose errors with this code.
    pub fn code_name(&self) -> String {
        match self {
            Error::Rejected { code, .. } => code.to_string(),
            Error::SignedOut => "unauthenticated".into(),
            Error::Closed => "closed".into(),
            Error::ConnectionLost => "connection_lost".into(),
            Error::Transport(_) => "transport".into(),
            Error::Http { .. } => "http".into(),
            Error::InvalidUrl(_) => "invalid_url".into(),
            Error::Protocol(_) => "protocol".into(),
            Error::Timeout => "timeout".into(),
            Error::Storage(_) => "storage".into(),
            Error::InvalidArgument(_) => "invalid_argument".into(),
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
