//! The wire protocol: JSON text frames over a WebSocket, tagged by `type`.
//!
//! * Client requests carry an `id` (1–64 characters, chosen by the client); the server's answer
//!   (a result frame or an `error`) echoes it as `re`. Events pushed by the server have no `re`.
//! * The first frame on a connection is [`ClientFrame::Auth`] with `protocol: 1`; it may carry
//!   resume cursors, and the server then replays what the client missed before going live.
//! * Server events (frames without `re`) are one type, [`Push`], carried by
//!   [`ServerFrame::Push`]: the event vocabulary every SDK reuses.
//! * Unknown server frame types decode to [`ServerFrame::Unknown`] so old clients survive new
//!   servers; unknown client frame types get an `unknown_type` error that echoes the `id`.
//!
//! The full reference with an example of every frame is `docs/protocol.md`; a test parses each
//! of its examples through these types, so the document cannot drift from the code.

mod client;
mod decode;
mod server;
mod tag_first;

pub use client::{ClientFrame, ResumeState, Unlisted};
pub use decode::FrameError;
pub use server::{EncodedMessage, ErrorFrame, FriendEntry, Limits, Push, ServerFrame, SyncState};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket subprotocol name for [`PROTOCOL_VERSION`].
pub const SUBPROTOCOL: &str = "zajel.v1";

/// A client-chosen request id, echoed in the answer as `re`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId(String);

impl RequestId {
    /// Validates: 1 to [`crate::limits::REQUEST_ID_MAX`] characters.
    pub fn new(s: impl Into<String>) -> Result<Self, crate::ValidationError> {
        let s = s.into();
        if s.is_empty() || s.len() > crate::limits::REQUEST_ID_MAX {
            // Reuse the closest validation error; the decoder reports it as invalid_field.
            Err(crate::ValidationError::InvalidCursor(
                "request id must be 1 to 64 characters",
            ))
        } else {
            Ok(Self(s))
        }
    }
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RequestId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::new(s).map_err(|_| "request id must be 1 to 64 characters".to_owned())
    }
}

impl From<RequestId> for String {
    fn from(r: RequestId) -> String {
        r.0
    }
}
