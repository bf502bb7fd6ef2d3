//! The records and enums the SDKs exchange, converted from the Rust client's types.
//!
//! Ids cross as strings (UUIDs in their hyphenated form, conversation ids as `dm.<a>.<b>`),
//! times as milliseconds since the Unix epoch, so every language gets plain values.

use crate::error::ZajelError;
use std::collections::HashMap;
use zajel_client::zajel_core::protocol::Unlisted;
use zajel_client::{ConversationId, UserId};

/// A user's public profile.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct User {
    /// Stable id (a UUID).
    pub id: String,
    /// Display form of the username.
    pub username: String,
    /// When the account was created (ms since the epoch).
    pub created_at_ms: i64,
}

impl From<zajel_client::User> for User {
    fn from(u: zajel_client::User) -> Self {
        Self {
            id: u.id.to_string(),
            username: u.username,
            created_at_ms: u.created_at.0,
        }
    }
}

/// A signed-in session from `register` or `login`.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct Session {
    /// Who signed in.
    pub user: User,
    /// The session token: a secret; pass it to `connect` and keep it out of logs.
    pub token: String,
    /// When the token expires (ms since the epoch).
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("token", &"<redacted>")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

impl From<zajel_client::Session> for Session {
    fn from(s: zajel_client::Session) -> Self {
        Self {
            user: s.user.into(),
            token: s.token,
            expires_at_ms: s.expires_at.0,
        }
    }
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Message {
    /// Server-assigned id.
    pub id: String,
    /// The conversation it belongs to.
    pub conversation: String,
    /// Position in the conversation: 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// The author's user id (`00000000-0000-0000-0000-000000000000` for a system message).
    pub sender: String,
    /// Whether a person or the system (the app's server) wrote it: show a system message as a
    /// notice, not as either member's message.
    pub kind: MessageKind,
    /// The text.
    pub body: String,
    /// When the server stored it (ms since the epoch).
    pub sent_at_ms: i64,
    /// The sender's idempotency key (the SDK picks one per `send`).
    pub idempotency_key: String,
}

impl From<zajel_client::Message> for Message {
    fn from(m: zajel_client::Message) -> Self {
        Self {
            id: m.id.to_string(),
            conversation: m.conversation.to_string(),
            seq: m.seq,
            sender: m.sender.to_string(),
            kind: m.kind().into(),
            body: m.body,
            sent_at_ms: m.sent_at.0,
            idempotency_key: m.idempotency_key,
        }
    }
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum MessageKind {
    /// A person: `sender`, a member of the conversation.
    User,
    /// The system: a notice the app's server posted into the conversation.
    System,
}

impl From<zajel_client::MessageKind> for MessageKind {
    fn from(k: zajel_client::MessageKind) -> Self {
        match k {
            zajel_client::MessageKind::User => Self::User,
            zajel_client::MessageKind::System => Self::System,
        }
    }
}

/// One conversation in the list: last message, unread count, read marks.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct ConversationSummary {
    /// The conversation id.
    pub conversation: String,
    /// The other participant of a direct conversation.
    pub peer: Option<String>,
    /// The newest message.
    pub last_message: Option<Message>,
    /// The newest sequence (0 when empty).
    pub last_seq: u64,
    /// Messages from others above my read mark.
    pub unread: u64,
    /// My read mark.
    pub read_seq: u64,
    /// The peer's read mark ("seen").
    pub peer_read_seq: u64,
}

impl From<zajel_client::ConversationSummary> for ConversationSummary {
    fn from(c: zajel_client::ConversationSummary) -> Self {
        Self {
            conversation: c.conversation.to_string(),
            peer: c.peer.map(|p| p.to_string()),
            last_message: c.last_message.map(Message::from),
            last_seq: c.last_seq,
            unread: c.unread,
            read_seq: c.read_seq,
            peer_read_seq: c.peer_read_seq,
        }
    }
}

/// A relationship as I see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum Relation {
    /// No relationship (also what a user blocked by the other side sees).
    None,
    /// Friends: may message each other.
    Friends,
    /// I asked them; waiting.
    RequestSent,
    /// They asked me; I may accept or decline.
    RequestReceived,
    /// I block them.
    Blocked,
}

impl From<zajel_client::Relation> for Relation {
    fn from(r: zajel_client::Relation) -> Self {
        use zajel_client::Relation as R;
        match r {
            R::None => Self::None,
            R::Friends => Self::Friends,
            R::RequestSent => Self::RequestSent,
            R::RequestReceived => Self::RequestReceived,
            R::Blocked => Self::Blocked,
        }
    }
}

/// Why a relation changed (in a `Friend` event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum FriendReason {
    /// A request was sent (to me, or by me from another device).
    Requested,
    /// A request was accepted.
    Accepted,
    /// A request was declined.
    Declined,
    /// A request was withdrawn.
    Cancelled,
    /// A friendship ended.
    Removed,
    /// I blocked them.
    Blocked,
    /// I unblocked them.
    Unblocked,
}

impl From<zajel_client::FriendReason> for FriendReason {
    fn from(r: zajel_client::FriendReason) -> Self {
        use zajel_client::FriendReason as R;
        match r {
            R::Requested => Self::Requested,
            R::Accepted => Self::Accepted,
            R::Declined => Self::Declined,
            R::Cancelled => Self::Cancelled,
            R::Removed => Self::Removed,
            R::Blocked => Self::Blocked,
            R::Unblocked => Self::Unblocked,
        }
    }
}

/// One row of the friends list: friends (with presence), requests and blocks.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FriendEntry {
    /// The other user.
    pub user: User,
    /// How I see them.
    pub relation: Relation,
    /// When the relation last changed (ms since the epoch).
    pub since_ms: i64,
    /// Online now (friends only; false otherwise).
    pub online: bool,
    /// Last time they were online (friends only; ms since the epoch).
    pub last_seen_ms: Option<i64>,
}

impl From<zajel_client::FriendEntry> for FriendEntry {
    fn from(f: zajel_client::FriendEntry) -> Self {
        Self {
            user: f.user.into(),
            relation: f.relation.into(),
            since_ms: f.since.0,
            online: f.online,
            last_seen_ms: f.last_seen.map(|t| t.0),
        }
    }
}

/// The result of a friend operation: my view of the other user now.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FriendStatus {
    /// The other user.
    pub user: User,
    /// How I see them now.
    pub relation: Relation,
}

impl From<zajel_client::FriendStatus> for FriendStatus {
    fn from(s: zajel_client::FriendStatus) -> Self {
        Self {
            user: s.user.into(),
            relation: s.relation.into(),
        }
    }
}

/// Which page of history to read. Sequences are exclusive bounds; all fields are optional
/// (none: the newest page of the server's default size, 50).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, uniffi::Record)]
pub struct HistoryQuery {
    /// Messages with a lower sequence (scroll back).
    #[uniffi(default = None)]
    pub before: Option<u64>,
    /// Messages with a higher sequence (catch up).
    #[uniffi(default = None)]
    pub after: Option<u64>,
    /// Page size, 1–200.
    #[uniffi(default = None)]
    pub limit: Option<u32>,
}

impl From<HistoryQuery> for zajel_client::HistoryQuery {
    fn from(q: HistoryQuery) -> Self {
        Self {
            before: q.before,
            after: q.after,
            limit: q.limit,
        }
    }
}

/// One page of history.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct HistoryPage {
    /// The conversation.
    pub conversation: String,
    /// Messages, oldest first.
    pub messages: Vec<Message>,
    /// More exist in the paging direction.
    pub has_more: bool,
}

impl From<zajel_client::HistoryPage> for HistoryPage {
    fn from(p: zajel_client::HistoryPage) -> Self {
        Self {
            conversation: p.conversation.to_string(),
            messages: p.messages.into_iter().map(Message::from).collect(),
            has_more: p.has_more,
        }
    }
}

/// Resume cursors: save them (`ZajelClient.cursors()`) and pass them to `connect` after an
/// app restart, so the server replays exactly what this device has not seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, uniffi::Record)]
pub struct ResumeCursors {
    /// Conversation id → the highest sequence up to which every message was seen.
    pub cursors: HashMap<String, u64>,
    /// True: conversations missing from `cursors` are not replayed (a fresh device starting
    /// "from now"). False: they are replayed from their start (right after a restart: a
    /// conversation this device has not seen is new since it last synced).
    #[uniffi(default = false)]
    pub skip_unlisted: bool,
}

impl From<zajel_client::ResumeState> for ResumeCursors {
    fn from(r: zajel_client::ResumeState) -> Self {
        Self {
            cursors: r
                .cursors
                .into_iter()
                .map(|(c, seq)| (c.to_string(), seq))
                .collect(),
            skip_unlisted: r.unlisted == Unlisted::Skip,
        }
    }
}

impl TryFrom<ResumeCursors> for zajel_client::ResumeState {
    type Error = ZajelError;
    fn try_from(r: ResumeCursors) -> Result<Self, ZajelError> {
        let mut state = zajel_client::ResumeState::default();
        for (conversation, seq) in r.cursors {
            state.cursors.insert(conversation_id(&conversation)?, seq);
        }
        if r.skip_unlisted {
            state.unlisted = Unlisted::Skip;
        }
        Ok(state)
    }
}

/// One message in the outbox, as a UI shows it (from `queue`, `outbox()` and `Outbox` events).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct OutboxItem {
    /// The idempotency key: the handle for `retry_send` and `delete_send`.
    pub key: String,
    /// Where it goes, as given to `send`/`queue` (a conversation or a user id).
    pub to: String,
    /// The conversation, once the signed-in user is known.
    pub conversation: Option<String>,
    /// The text.
    pub body: String,
    /// Where it is.
    pub state: SendState,
}

impl From<zajel_client::OutboxItem> for OutboxItem {
    fn from(i: zajel_client::OutboxItem) -> Self {
        Self {
            key: i.key,
            to: i.to.to_string(),
            conversation: i.conversation.map(|c| c.to_string()),
            body: i.body,
            state: i.state.into(),
        }
    }
}

/// Where an outbox entry is.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SendState {
    /// Waiting: offline, paced, or behind an earlier message to the same conversation.
    Queued,
    /// On the wire, not yet acknowledged.
    Sending,
    /// Stored by the server (the entry leaves the outbox).
    Sent {
        /// The stored message.
        message: Message,
    },
    /// Refused. With `will_retry` the outbox tries again by itself; without, it stays until
    /// `retry_send` or `delete_send`.
    Failed {
        /// The error's stable code: the protocol's (`not_friends`, `rate_limited`, …) or
        /// `closed`, `transport`, `timeout`, … (see `zajel_client::Error::code_name`).
        code: String,
        /// Human-readable explanation.
        detail: String,
        /// Whether the outbox retries by itself.
        will_retry: bool,
    },
    /// Removed with `delete_send`; never sent.
    Deleted,
}

impl From<zajel_client::SendState> for SendState {
    fn from(s: zajel_client::SendState) -> Self {
        use zajel_client::SendState as S;
        match s {
            S::Queued => Self::Queued,
            S::Sending => Self::Sending,
            S::Sent { message } => Self::Sent {
                message: message.into(),
            },
            S::Failed { error, will_retry } => Self::Failed {
                code: error.code_name(),
                detail: error.to_string(),
                will_retry,
            },
            S::Deleted => Self::Deleted,
        }
    }
}

/// Parses a user id argument.
pub(crate) fn user_id(s: &str) -> Result<UserId, ZajelError> {
    s.parse()
        .map_err(|_| ZajelError::invalid_argument(format!("{s:?} is not a user id (a UUID)")))
}

/// Parses a conversation id argument.
pub(crate) fn conversation_id(s: &str) -> Result<ConversationId, ZajelError> {
    s.parse()
        .map_err(|e| ZajelError::invalid_argument(format!("{s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00000000-0000-4000-8000-000000000001";
    const B: &str = "00000000-0000-4000-8000-000000000002";

    #[test]
    fn bad_ids_are_invalid_arguments() {
        assert!(user_id(A).is_ok());
        for bad in ["", "alice", "dm.x.y", "00000000-0000-4000-8000"] {
            assert!(matches!(
                user_id(bad),
                Err(ZajelError::InvalidArgument { .. })
            ));
            assert!(matches!(
                conversation_id(bad),
                Err(ZajelError::InvalidArgument { .. })
            ));
        }
        assert!(conversation_id(&format!("dm.{A}.{B}")).is_ok());
        // Participants out of order are not the canonical id.
        assert!(conversation_id(&format!("dm.{B}.{A}")).is_err());
    }

    #[test]
    fn resume_cursors_round_trip_and_reject_bad_ids() {
        let conv = format!("dm.{A}.{B}");
        let saved = ResumeCursors {
            cursors: HashMap::from([(conv.clone(), 7)]),
            skip_unlisted: true,
        };
        let state = zajel_client::ResumeState::try_from(saved.clone()).unwrap();
        assert_eq!(state.unlisted, Unlisted::Skip);
        assert_eq!(ResumeCursors::from(state), saved);

        let bad = ResumeCursors {
            cursors: HashMap::from([("dm.nope".to_owned(), 1)]),
            skip_unlisted: false,
        };
        assert!(matches!(
            zajel_client::ResumeState::try_from(bad),
            Err(ZajelError::InvalidArgument { .. })
        ));
    }
}
