//! The records stores keep and the protocol carries.

use crate::ids::{ConversationId, MessageId, Timestamp, UserId};
use crate::limits::{Body, IdempotencyKey};
use serde::{Deserialize, Serialize};

/// A user's public profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable id.
    pub id: UserId,
    /// Display form of the username (unique case-insensitively).
    pub username: String,
    /// When the account was created.
    pub created_at: Timestamp,
}

/// A sign-in session. The token itself is never stored, only its SHA-256 (hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Owner. Tokens carry the user id so a store can keep all of a user's sessions together.
    pub user_id: UserId,
    /// Hex SHA-256 of the secret part of the token.
    pub token_hash: String,
    /// When it was issued.
    pub created_at: Timestamp,
    /// When it stops being valid.
    pub expires_at: Timestamp,
}

/// A stored message.
///
/// A message from [`UserId::SYSTEM`] is a system message ([`Message::kind`]): serialized, it
/// carries `"kind": "system"` after `sender`; a person's message has no `kind` (the frame
/// stays as small as before, and older clients ignore the field). The sender id decides:
/// `kind` is its spelled-out form for clients, ignored when read back.
///
/// ```
/// use zajel_core::{ConversationId, Message, MessageId, MessageKind, Timestamp, UserId};
/// let alice: UserId = "1f0c5a52-8d3b-4a7e-9c61-2b7f4e0a9d11".parse().unwrap();
/// let bob: UserId = "6a4e2c90-3b1d-4f8e-a5c7-90d2e1f3b422".parse().unwrap();
/// let notice = Message {
///     id: MessageId(Default::default()),
///     conversation: ConversationId::direct(alice, bob),
///     seq: 1,
///     sender: UserId::SYSTEM,
///     body: "alice and bob are now friends".into(),
///     sent_at: Timestamp(1732550000000),
///     idempotency_key: "friends".into(),
/// };
/// assert_eq!(notice.kind(), MessageKind::System);
/// let json = serde_json::to_value(&notice).unwrap();
/// assert_eq!(json["kind"], "system");
/// let from_alice = Message { sender: alice, ..notice };
/// assert!(serde_json::to_value(&from_alice).unwrap().get("kind").is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Message {
    /// Server-assigned id.
    pub id: MessageId,
    /// The conversation it belongs to.
    pub conversation: ConversationId,
    /// Position in the conversation: 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// Author.
    pub sender: UserId,
    /// Text.
    pub body: String,
    /// Server time of storage.
    pub sent_at: Timestamp,
    /// The sender's idempotency key; lets the sending device match a message it sees on resume
    /// to an outbox entry whose ack it never received.
    pub idempotency_key: String,
}

/// Who wrote a [`Message`]: a person, or the system (the embedding app, through
/// `Engine::send_system`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Sent by `sender`, a member of the conversation.
    User,
    /// Posted by the system into a conversation between two users (`sender` is
    /// [`UserId::SYSTEM`]): render it as a notice, not as either member's message.
    System,
}

impl Message {
    /// Whether a person or the system wrote it (decided by `sender`).
    pub fn kind(&self) -> MessageKind {
        if self.sender.is_system() {
            MessageKind::System
        } else {
            MessageKind::User
        }
    }

    /// Whether it is a system message (`sender` is [`UserId::SYSTEM`]).
    pub fn is_system(&self) -> bool {
        self.sender.is_system()
    }
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let system = self.is_system();
        let mut m = s.serialize_struct("Message", 7 + usize::from(system))?;
        m.serialize_field("id", &self.id)?;
        m.serialize_field("conversation", &self.conversation)?;
        m.serialize_field("seq", &self.seq)?;
        m.serialize_field("sender", &self.sender)?;
        if system {
            m.serialize_field("kind", &MessageKind::System)?;
        } else {
            m.skip_field("kind")?;
        }
        m.serialize_field("body", &self.body)?;
        m.serialize_field("sent_at", &self.sent_at)?;
        m.serialize_field("idempotency_key", &self.idempotency_key)?;
        m.end()
    }
}

/// A message to append; valid by construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// Target conversation.
    pub conversation: ConversationId,
    /// Author: a member of `conversation` (the store checks), or [`UserId::SYSTEM`] for a
    /// system message (which moves nobody's read mark).
    pub sender: UserId,
    /// Validated text.
    pub body: Body,
    /// Validated idempotency key, unique per (conversation, sender).
    pub idempotency_key: IdempotencyKey,
    /// Server time to record.
    pub sent_at: Timestamp,
}

/// The result of appending one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// The stored message (the earlier one when `duplicate`).
    pub message: Message,
    /// True when the idempotency key had been used: nothing new was stored.
    pub duplicate: bool,
}

/// Which slice of a conversation's history to read. Sequences are exclusive bounds.
///
/// * `after: Some(n)`: the oldest `limit` messages with `seq > n` (forward paging, resume).
/// * otherwise: the newest `limit` messages with `seq < before` (or the newest overall), for
///   scrolling back. Pages are always returned oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HistoryQuery {
    /// Exclusive upper bound.
    pub before: Option<u64>,
    /// Exclusive lower bound.
    pub after: Option<u64>,
    /// Page size (1..=[`crate::limits::PAGE_MAX`]).
    pub limit: u32,
}

/// One page of history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// Messages, oldest first.
    pub messages: Vec<Message>,
    /// Whether more messages exist in the paging direction.
    pub has_more: bool,
}

/// One row of a user's conversation list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationSummary {
    /// The conversation.
    pub conversation: ConversationId,
    /// For a direct conversation, the other participant.
    pub peer: Option<UserId>,
    /// The newest message.
    pub last_message: Option<Message>,
    /// Sequence of the newest message (0 when empty).
    pub last_seq: u64,
    /// Messages after this user's read mark. Sending advances the sender's own mark.
    pub unread: u64,
    /// This user's read mark.
    pub read_seq: u64,
    /// The other participant's read mark (for "seen" ticks).
    pub peer_read_seq: u64,
}

/// A read mark after `mark_read`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadMark {
    /// The conversation.
    pub conversation: ConversationId,
    /// Whose mark.
    pub user: UserId,
    /// The mark now (marks only move forward).
    pub seq: u64,
    /// False when the mark was already at or past the requested sequence.
    pub changed: bool,
}

/// A relationship as one user sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
