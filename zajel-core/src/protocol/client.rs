//! Frames a client sends.

use super::RequestId;
use crate::ids::{ConversationId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a reconnecting client left off: for each conversation, the sequence up to which it
/// holds every message (its contiguous watermark). The server replays every later message,
/// then goes live, with nothing doubled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeState {
    /// Conversation → the client holds every message up to this sequence.
    pub cursors: BTreeMap<ConversationId, u64>,
    /// What to do with the user's conversations that `cursors` does not list.
    #[serde(default, skip_serializing_if = "Unlisted::is_replay")]
    pub unlisted: Unlisted,
}

/// How the server treats conversations missing from [`ResumeState::cursors`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unlisted {
    /// Replay them from the start (bounded per conversation; see `SyncState::truncated`).
    /// Right for a reconnect: a conversation the client has not seen is new since its last sync.
    #[default]
    Replay,
    /// Replay nothing for them: the client starts "from now" (a fresh device) and takes each
    /// conversation's `last_seq` from `synced` as its cursor, paging older history on demand.
    Skip,
}

impl Unlisted {
    /// Whether this is the default, [`Unlisted::Replay`].
    pub fn is_replay(&self) -> bool {
        *self == Unlisted::Replay
    }
}

super::tag_first::client_frames! {
/// A frame from client to server.
///
/// Serialized with a `type` tag (`{"type":"send","id":..}`); deserialized by reading `type`
/// first (see `tag_first.rs`), which is what [`ClientFrame::decode`] does for every frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// First frame: authenticate (token, or none when the WebSocket upgrade carried a session
    /// cookie), pick the protocol version and optionally resume.
    Auth {
        /// Request id.
        id: RequestId,
        /// Protocol version the client speaks (1).
        protocol: u32,
        /// Session token from login. Omitted when the upgrade request carried the session cookie.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// Resume cursors; when present the server replays missed messages before going live.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<ResumeState>,
    },
    /// Liveness check; answered by `pong`.
    Ping {
        /// Request id.
        id: RequestId,
    },
    /// Send a friend request by username.
    FriendRequest {
        /// Request id.
        id: RequestId,
        /// Their username (case-insensitive).
        username: String,
    },
    /// Accept their request.
    FriendAccept {
        /// Request id.
        id: RequestId,
        /// The requester.
        user_id: UserId,
    },
    /// Decline their request.
    FriendDecline {
        /// Request id.
        id: RequestId,
        /// The requester.
        user_id: UserId,
    },
    /// Withdraw my request.
    FriendCancel {
        /// Request id.
        id: RequestId,
        /// Whom I asked.
        user_id: UserId,
    },
    /// End a friendship.
    FriendRemove {
        /// Request id.
        id: RequestId,
        /// The friend.
        user_id: UserId,
    },
    /// Block a user.
    Block {
        /// Request id.
        id: RequestId,
        /// Whom.
        user_id: UserId,
    },
    /// Lift a block.
    Unblock {
        /// Request id.
        id: RequestId,
        /// Whom.
        user_id: UserId,
    },
    /// List friends, requests and blocks, with presence.
    FriendsList {
        /// Request id.
        id: RequestId,
    },
    /// Send a message. Answered by `sent` (the ack) once stored.
    Send {
        /// Request id.
        id: RequestId,
        /// Target conversation (`dm.<a>.<b>`, see `ConversationId::direct`).
        conversation: ConversationId,
        /// Text (non-empty, at most the server's `max_body_bytes`).
        body: String,
        /// Client-chosen key; a retry with the same key returns the stored message.
        idempotency_key: String,
    },
    /// Read a page of history.
    History {
        /// Request id.
        id: RequestId,
        /// The conversation.
        conversation: ConversationId,
        /// Return messages with a lower sequence (scroll back). Exclusive.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        /// Return messages with a higher sequence (catch up). Exclusive.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
        /// Page size, 1–200 (default 50).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// The conversation list with last message and unread counts.
    Conversations {
        /// Request id.
        id: RequestId,
        /// Page size, 1–200 (default 50).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Move my read mark; the other side gets a `read` event.
    MarkRead {
        /// Request id.
        id: RequestId,
        /// The conversation.
        conversation: ConversationId,
        /// Highest sequence read.
        seq: u64,
    },
    /// Typing indicator (ephemeral, never stored). No answer unless it fails.
    Typing {
        /// Optional request id (errors echo it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The conversation.
        conversation: ConversationId,
        /// Started (true) or stopped (false) typing.
        active: bool,
    },
}
}

impl ClientFrame {
    /// Every frame `type`, for the decoder's unknown-type check and the docs test.
    pub const TYPES: &'static [&'static str] = &[
        "auth",
        "ping",
        "friend_request",
        "friend_accept",
        "friend_decline",
        "friend_cancel",
        "friend_remove",
        "block",
        "unblock",
        "friends_list",
        "send",
        "history",
        "conversations",
        "mark_read",
        "typing",
    ];

    /// The request id, if the frame has one.
    pub fn id(&self) -> Option<&RequestId> {
        use ClientFrame::*;
        match self {
            Auth { id, .. }
            | Ping { id }
            | FriendRequest { id, .. }
            | FriendAccept { id, .. }
            | FriendDecline { id, .. }
            | FriendCancel { id, .. }
            | FriendRemove { id, .. }
            | Block { id, .. }
            | Unblock { id, .. }
            | FriendsList { id }
            | Send { id, .. }
            | History { id, .. }
            | Conversations { id, .. }
            | MarkRead { id, .. } => Some(id),
            Typing { id, .. } => id.as_ref(),
        }
    }

    /// Serializes to JSON text.
    pub fn encode(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"type\":\"invalid\",\"error\":\"{e}\"}}"))
    }
}
