//! What the client reports: events and the connection state.

use crate::error::Error;
use crate::view::CachedView;
use serde::{Deserialize, Serialize, Serializer};
use std::time::Duration;
use zajel_core::protocol::{FriendEntry, Push};
use zajel_core::{ConversationId, ConversationSummary, Message, Relation, Timestamp, User, UserId};

/// The connection as a UI should show it. Serializes as `{ "status": "online" }`,
/// `{ "status": "reconnecting", "attempt": 2, "retry_in_ms": 500 }`, …
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
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
        #[serde(rename = "retry_in_ms", serialize_with = "as_millis")]
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

fn as_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn state_field<S: Serializer>(state: &ConnectionState, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct W<'a> {
        state: &'a ConnectionState,
    }
    W { state }.serialize(s)
}

fn message_field<S: Serializer>(message: &Message, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct W<'a> {
        message: &'a Message,
    }
    W { message }.serialize(s)
}

fn outbox_field<S: Serializer>(item: &OutboxItem, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct W<'a> {
        item: &'a OutboxItem,
    }
    W { item }.serialize(s)
}

/// Something that happened, in the order the server reported it.
///
/// The server's events are one type, [`Push`] (in `zajel_core::protocol`): they arrive as
/// [`Event::Server`] unchanged, except `message` and `synced`, which the client turns into
/// [`Event::Message`] and [`Event::Synced`] (delivery state). The client adds `state`, `sent`
/// and `outbox`. Events serialize (serde) as `{ "type": "<snake_case name>", …fields }`, a
/// push exactly as on the wire, which is what the bindings hand to JavaScript: adding a push
/// touches `Push` only (plus the uniffi record, which must map every variant).
///
/// ```
/// use zajel_client::{Event, Push};
/// # let user: zajel_client::UserId = "6a4e2c90-3b1d-4f8e-a5c7-90d2e1f3b422".parse().unwrap();
/// let event = Event::Server(Push::Presence { user, online: true, last_seen: None });
/// assert_eq!(
///     serde_json::to_string(&event).unwrap(),
///     r#"{"type":"presence","user":"6a4e2c90-3b1d-4f8e-a5c7-90d2e1f3b422","online":true}"#
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The connection state changed (`{ "type": "state", "state": { "status": … } }`).
    #[serde(serialize_with = "state_field")]
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
    /// the `send` future was dropped). `{ "type": "sent", "message": … }`.
    #[serde(serialize_with = "message_field")]
    Sent(Message),
    /// An outbox entry changed state (queued, sending, sent, failed) or was deleted.
    /// `{ "type": "outbox", "item": … }`.
    #[serde(serialize_with = "outbox_field")]
    Outbox(OutboxItem),
    /// A (re)connection finished catching up; the lists are the server's state now.
    Synced {
        /// The conversation list (unread counts, read marks).
        conversations: Vec<ConversationSummary>,
        /// The friends list with presence (replaces any earlier copy).
        friends: Vec<FriendEntry>,
        /// True for the first sync of this client.
        first: bool,
    },
    /// The contact list cached by the storage seam, loaded before the first connection
    /// (only when one was stored): what to show until the server answers. `{ "type":
    /// "cached", "friends": […], "conversations": […] }`; see [`crate::CachedView`].
    Cached(CachedView),
    /// Any other event the server pushed, exactly as the protocol defines it (`friend`,
    /// `read`, `typing`, `presence`, `going_away`, and whatever a newer `zajel-core` adds):
    /// `{ "type": "friend", "user": …, … }` as in `docs/protocol.md`. `message` and `synced`
    /// are not delivered here but as [`Event::Message`] (de-duplicated, with `replayed`) and
    /// [`Event::Synced`].
    #[serde(untagged)]
    Server(Push),
}

/// A signed-in session from [`crate::Client::register`] or [`crate::Client::login`]. Serializes
/// as the server's JSON (`{ user, token, expires_at }`; the token included: it is what the
/// bindings hand to the app).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The result of a friend operation: my view of the other user now (`{ user, relation }`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FriendStatus {
    /// The other user.
    pub user: User,
    /// How I see them now.
    pub relation: Relation,
}

/// Which page of history to read (sequences are exclusive bounds). Deserializes from
/// `{ before?, after?, limit? }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
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

/// One page of history (`{ conversation, messages, has_more }`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryPage {
    /// The conversation.
    pub conversation: ConversationId,
    /// Messages, oldest first.
    pub messages: Vec<Message>,
    /// More exist in the paging direction.
    pub has_more: bool,
}

/// Where a message goes: a conversation, or a friend (their direct conversation). Serializes
/// as the id's string (`dm.…` or a user id).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Conversation(c) => c.fmt(f),
            Target::Peer(u) => u.fmt(f),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = Error;
    /// A conversation id (`dm.…`) or a user id.
    fn from_str(s: &str) -> Result<Self, Error> {
        if let Ok(c) = s.parse::<ConversationId>() {
            return Ok(Target::Conversation(c));
        }
        s.parse::<UserId>()
            .map(Target::Peer)
            .map_err(|_| Error::InvalidArgument(format!("not a conversation or user id: {s:?}")))
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One message in the outbox, as a UI shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutboxItem {
    /// The idempotency key: the handle for [`crate::Client::retry_send`] and
    /// [`crate::Client::delete_send`].
    pub key: String,
    /// Where it goes (as given to `send`).
    pub to: Target,
    /// The conversation, once the signed-in user is known (for a `Target::Peer`).
    pub conversation: Option<ConversationId>,
    /// The text.
    pub body: String,
    /// Where it is.
    #[serde(flatten)]
    pub state: SendState,
}

/// Where an outbox entry is. Serializes as `{ "state": "queued" }`, `{ "state": "sent",
/// "message": … }`, `{ "state": "failed", "error": { "code", "message" }, "will_retry" }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SendState {
    /// Waiting: offline, paced, or behind an earlier message to the same conversation.
    Queued,
    /// On the wire, not yet acknowledged.
    Sending,
    /// Stored by the server (the entry leaves the outbox).
    Sent {
        /// The stored message (id, `seq`, time).
        message: Message,
    },
    /// Refused. With `will_retry` the outbox tries again by itself (a retryable error such as
    /// `rate_limited`); without, it stays here until [`crate::Client::retry_send`] or
    /// [`crate::Client::delete_send`].
    Failed {
        /// Why.
        error: Error,
        /// Whether the outbox retries by itself.
        will_retry: bool,
    },
    /// Removed with [`crate::Client::delete_send`]; never sent.
    Deleted,
}
