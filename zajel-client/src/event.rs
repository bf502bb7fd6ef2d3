//! What the client reports: events and the connection state.

use std::time::Duration;
use zajel_core::protocol::FriendEntry;
use zajel_core::{
    ConversationId, ConversationSummary, FriendReason, Message, Relation, Timestamp, User, UserId,
};

/// The connection as a UI should show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// The first connection attempt is in progress.
    Connecting,
    /// Authenticated and caught up: requests flow, events arrive live.
    Online,
    /// The connection dropped (or an attempt failed); the next attempt starts in `retry_in`
    /// ("reconnecting in 3 s"). `attempt` counts failed attempts since the last `Online`.
    Reconnecting {
        /// Failed attempts since the client was last online (1 for the first retry).
        attempt: u32,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// The session token is unknown, expired or revoked (or [`crate::Client::logout`] was
    /// called). The client has stopped; sign in again and connect a new client.
    SignedOut,
    /// [`crate::Client::close`] was called, or the server refused the connection for a reason
    /// retrying cannot fix (such as an unsupported protocol version).
    Closed,
}

impl ConnectionState {
    /// Whether the client has stopped for good (`SignedOut` or `Closed`).
    pub fn is_terminal(&self) -> bool {
        matches!(self, ConnectionState::SignedOut | ConnectionState::Closed)
    }
}

/// Something that happened, in the order the server reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The connection state changed.
    State(ConnectionState),
    /// A new message: from the other participant, or mine from another device. Delivered once
    /// per client, even across reconnects.
    Message {
        /// The message.
        message: Message,
        /// True when it was replayed on (re)connect rather than pushed live: it arrived while
        /// this client was offline (or, on the first connection, before it started).
        replayed: bool,
    },
    /// A message this client sent was stored (the same value `send` returns; emitted even when
    /// the `send` future was dropped).
    Sent(Message),
    /// A (re)connection finished catching up; the lists are the server's state now.
    Synced {
        /// The conversation list (unread counts, read marks).
        conversations: Vec<ConversationSummary>,
        /// The friends list with presence (replaces any earlier copy).
        friends: Vec<FriendEntry>,
        /// True for the first sync of this client.
        first: bool,
    },
    /// My relation with someone changed (by them, or by me on another device).
    Friend {
        /// The other user.
        user: User,
        /// How I see them now.
        relation: Relation,
        /// What happened.
        reason: FriendReason,
        /// When.
        at: Timestamp,
    },
    /// A read mark moved (the peer's: show "seen"; or mine from another device).
    Read {
        /// The conversation.
        conversation: ConversationId,
        /// Whose mark.
        user: UserId,
        /// The mark now.
        seq: u64,
    },
    /// A friend started or stopped typing.
    Typing {
        /// The conversation.
        conversation: ConversationId,
        /// Who.
        user: UserId,
        /// Typing now.
        active: bool,
    },
    /// A friend came online or went offline.
    Presence {
        /// Who.
        user: UserId,
        /// Online now.
        online: bool,
        /// When last seen (set when going offline).
        last_seen: Option<Timestamp>,
    },
}

/// A signed-in session from [`crate::Client::register`] or [`crate::Client::login`].
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Session {
    /// Who signed in.
    pub user: User,
    /// The session token (secret: pass it to [`crate::Client::connect`], keep it out of logs).
    pub token: String,
    /// When the token expires.
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The result of a friend operation: my view of the other user now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FriendStatus {
    /// The other user.
    pub user: User,
    /// How I see them now.
    pub relation: Relation,
}

/// Which page of history to read (sequences are exclusive bounds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Messages with a lower sequence (scroll back).
    pub before: Option<u64>,
    /// Messages with a higher sequence (catch up).
    pub after: Option<u64>,
    /// Page size, 1–200 (server default 50).
    pub limit: Option<u32>,
}

impl HistoryQuery {
    /// The newest page.
    pub fn latest(limit: u32) -> Self {
        Self {
            limit: Some(limit),
            ..Self::default()
        }
    }
    /// The page before `seq`.
    pub fn before(seq: u64, limit: u32) -> Self {
        Self {
            before: Some(seq),
            limit: Some(limit),
            ..Self::default()
        }
    }
    /// The page after `seq`.
    pub fn after(seq: u64, limit: u32) -> Self {
        Self {
            after: Some(seq),
            limit: Some(limit),
            ..Self::default()
        }
    }
}

/// One page of history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    /// The conversation.
    pub conversation: ConversationId,
    /// Messages, oldest first.
    pub messages: Vec<Message>,
    /// More exist in the paging direction.
    pub has_more: bool,
}

/// Where a message goes: a conversation, or a friend (their direct conversation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A conversation id.
    Conversation(ConversationId),
    /// The direct conversation with this user.
    Peer(UserId),
}

impl From<ConversationId> for Target {
    fn from(c: ConversationId) -> Self {
        Target::Conversation(c)
    }
}
impl From<&ConversationId> for Target {
    fn from(c: &ConversationId) -> Self {
        Target::Conversation(c.clone())
    }
}
impl From<UserId> for Target {
    fn from(u: UserId) -> Self {
        Target::Peer(u)
    }
}
impl From<&User> for Target {
    fn from(u: &User) -> Self {
        Target::Peer(u.id)
    }
}

impl Target {
    pub(crate) fn resolve(&self, me: UserId) -> ConversationId {
        match self {
            Target::Conversation(c) => c.clone(),
            Target::Peer(p) => ConversationId::direct(me, *p),
        }
    }
}
