//! Frames a server sends: answers (with `re`) and events (without).

use super::RequestId;
use crate::error::{ErrorCode, HasErrorCode};
use crate::friends::FriendReason;
use crate::ids::{ConversationId, Timestamp, UserId};
use crate::model::{ConversationSummary, Message, Relation, User};
use serde::{Deserialize, Serialize};

/// Limits the server enforces, announced in `auth_ok` so clients can check before sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest frame the server accepts, in bytes.
    pub max_frame_bytes: u32,
    /// Largest message body, in bytes.
    pub max_body_bytes: u32,
    /// Sustained requests per second per connection before `rate_limited`.
    pub requests_per_second: u32,
    /// The server closes a connection that sends nothing for this long (ping to keep alive).
    pub idle_timeout_ms: u64,
}

/// One row of the friends list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FriendEntry {
    /// The other user.
    pub user: User,
    /// How I see them.
    pub relation: Relation,
    /// When the relation last changed.
    pub since: Timestamp,
    /// Online now (friends only; false otherwise).
    pub online: bool,
    /// Last time they were online (friends only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
}

/// What the server replayed on resume, sent after the replayed messages and before live events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// The conversation list now (unread counts, read marks).
    pub conversations: Vec<ConversationSummary>,
    /// The friends list now (replaces the client's copy: friend changes are state, not log).
    pub friends: Vec<FriendEntry>,
    /// Conversations whose backlog was larger than the replay bound; the client pages the rest
    /// with `history` (`after` = its cursor). Nothing is lost, only not pushed.
    pub truncated: Vec<ConversationId>,
    /// Conversations whose resume cursor was *ahead* of the stored end (`last_seq`), e.g.
    /// after the store lost acknowledged writes or a client bug. Nothing was replayed for
    /// them; the client must lower its cursor to the conversation's `last_seq` (in
    /// `conversations`): the next live messages reuse those sequence numbers and are delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ahead: Vec<ConversationId>,
}

/// The body of an `error` frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// The failed request's id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re: Option<RequestId>,
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// For `rate_limited`: when to retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorFrame {
    /// An error answering `re` built from any coded error.
    pub fn from_error(re: Option<RequestId>, e: &(impl HasErrorCode + ?Sized)) -> Self {
        Self {
            re,
            code: e.code(),
            message: e.to_string(),
            retry_after_ms: None,
        }
    }
    /// An error with an explicit code and message.
    pub fn new(re: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            re,
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

/// A frame from server to client: an answer (with `re`), an `error`, or a [`Push`] event.
///
/// On the wire a push is a frame like any other (`{"type":"message",…}`): the
/// [`ServerFrame::Push`] variant only groups them, so the event vocabulary is one type that the
/// client and the SDK bindings reuse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Authentication succeeded: the answer to `auth` (with `resume`, replayed `message`
    /// events and then [`Push::Synced`] follow).
    AuthOk {
        /// Answers `auth`.
        re: RequestId,
        /// Who I am.
        user: User,
        /// Protocol version in use.
        protocol: u32,
        /// Limits in force.
        limits: Limits,
    },
    /// Answers `ping`.
    Pong {
        /// Answers `ping`.
        re: RequestId,
    },
    /// A friend operation succeeded: my view of them now.
    FriendOk {
        /// Answers the friend operation.
        re: RequestId,
        /// The other user.
        user: User,
        /// How I see them now.
        relation: Relation,
    },
    /// Answers `friends_list`.
    Friends {
        /// Answers `friends_list`.
        re: RequestId,
        /// Everyone I have a relation with.
        friends: Vec<FriendEntry>,
    },
    /// The ack: the message is stored.
    Sent {
        /// Answers `send`.
        re: RequestId,
        /// The stored message (server id, sequence, time).
        message: Message,
        /// True when the idempotency key was seen before and nothing new was stored.
        duplicate: bool,
    },
    /// Answers `history`.
    History {
        /// Answers `history`.
        re: RequestId,
        /// The conversation.
        conversation: ConversationId,
        /// Oldest first.
        messages: Vec<Message>,
        /// More exist in the paging direction.
        has_more: bool,
    },
    /// Answers `conversations`.
    Conversations {
        /// Answers `conversations`.
        re: RequestId,
        /// Most recently active first.
        conversations: Vec<ConversationSummary>,
    },
    /// Answers `mark_read`.
    ReadOk {
        /// Answers `mark_read`.
        re: RequestId,
        /// The conversation.
        conversation: ConversationId,
        /// My read mark now.
        seq: u64,
    },
    /// Something went wrong.
    Error(ErrorFrame),
    /// An event (no `re`): see [`Push`].
    #[serde(skip)]
    Push(Push),
    /// A frame type this client does not know (from a newer server); ignore it.
    #[serde(other)]
    Unknown,
}

/// An event the server pushes without being asked (a frame without `re`): the one event
/// vocabulary of Zajel. The client SDK hands these to apps as they are
/// (`zajel_client::Event::Server`), the browser package serializes them with serde, and the
/// uniffi bindings convert them with one exhaustive `match`; so adding an event means adding a
/// variant here (plus its example in `docs/protocol.md` and, for Kotlin/Swift/Python, its
/// uniffi record).
///
/// ```
/// use zajel_core::protocol::{Push, ServerFrame};
/// let text = r#"{"type":"presence","user":"6a4e2c90-3b1d-4f8e-a5c7-90d2e1f3b422","online":true}"#;
/// let frame = ServerFrame::decode(text).unwrap();
/// assert!(matches!(frame, ServerFrame::Push(Push::Presence { online: true, .. })));
/// assert_eq!(frame.encode(), text);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Push {
    /// Resume finished: replayed messages (as `message` events) precede this frame. An event
    /// (no `re`): `auth_ok` is the one answer to `auth`, and this frame ends what that `auth`'s
    /// `resume` started. A `re` sent by an older server is ignored.
    Synced {
        /// State now.
        #[serde(flatten)]
        state: SyncState,
    },
    /// A new message in one of my conversations (also my own, sent from another device).
    Message {
        /// The message.
        message: Message,
    },
    /// My relation with someone changed (on any of my devices, or by them).
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
    /// Someone's read mark moved (the other participant's, or mine from another device).
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
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen: Option<Timestamp>,
    },
    /// The server is going away (shutdown); reconnect after the delay and resume.
    GoingAway {
        /// Why.
        reason: String,
        /// Suggested delay before reconnecting.
        reconnect_after_ms: u64,
    },
}

impl Push {
    /// Every push `type`, as on the wire.
    pub const TYPES: &'static [&'static str] = &[
        "synced",
        "message",
        "friend",
        "read",
        "typing",
        "presence",
        "going_away",
    ];
}

/// The `type` of every answer frame.
const ANSWER_TYPES: [&str; 9] = [
    "auth_ok",
    "pong",
    "friend_ok",
    "friends",
    "sent",
    "history",
    "conversations",
    "read_ok",
    "error",
];

/// [`ANSWER_TYPES`] then [`Push::TYPES`].
const ALL_TYPES: [&str; ANSWER_TYPES.len() + Push::TYPES.len()] = {
    let mut all = [""; ANSWER_TYPES.len() + Push::TYPES.len()];
    let mut i = 0;
    while i < all.len() {
        all[i] = if i < ANSWER_TYPES.len() {
            ANSWER_TYPES[i]
        } else {
            Push::TYPES[i - ANSWER_TYPES.len()]
        };
        i += 1;
    }
    all
};

impl From<Push> for ServerFrame {
    fn from(p: Push) -> Self {
        ServerFrame::Push(p)
    }
}

// The derive (with `remote = "Self"`) writes the answers; a push serializes as itself, so the
// bytes are the same as when the events were variants of `ServerFrame`.
impl Serialize for ServerFrame {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ServerFrame::Push(p) => p.serialize(s),
            answer => ServerFrame::serialize(answer, s),
        }
    }
}

// A push `type` decodes as a [`Push`]; anything else through the derive (answers, `error`,
// and `Unknown` for a type from a newer server).
impl<'de> Deserialize<'de> for ServerFrame {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(d)?;
        let is_push = value
            .get("type")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|t| Push::TYPES.contains(&t));
        if is_push {
            Push::deserialize(value).map(ServerFrame::Push)
        } else {
            ServerFrame::deserialize(value)
        }
        .map_err(D::Error::custom)
    }
}

impl ServerFrame {
    /// Every frame `type` (excluding `Unknown`), for the docs test: the answers and
    /// [`Push::TYPES`].
    pub const TYPES: &'static [&'static str] = &ALL_TYPES;

    /// Serializes to JSON text.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                "{{\"type\":\"error\",\"code\":\"internal\",\"message\":\"encode failed: {e}\"}}"
            )
        })
    }

    /// Parses a server frame (client side). Unknown types become [`ServerFrame::Unknown`].
    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// An error frame.
    pub fn error(re: Option<RequestId>, e: &(impl HasErrorCode + ?Sized)) -> Self {
        ServerFrame::Error(ErrorFrame::from_error(re, e))
    }
}

/// A stored message serialized once, for every frame that carries it: the `sent` answer to
/// its sender and the `message` event to each recipient (and to other nodes) are built by
/// splicing the same JSON, byte for byte what [`ServerFrame::encode`] writes.
///
/// ```
/// use zajel_core::protocol::{EncodedMessage, Push, RequestId, ServerFrame};
/// # use zajel_core::{ConversationId, Message, MessageId, Timestamp, UserId};
/// # let (a, b) = (UserId::new_random(), UserId::new_random());
/// # let message = Message { id: MessageId::new_v7(), conversation: ConversationId::direct(a, b),
/// #     seq: 1, sender: a, body: "hi".into(), sent_at: Timestamp(1), idempotency_key: "k".into() };
/// let encoded = EncodedMessage::new(&message);
/// let re = RequestId::new("7").unwrap();
/// assert_eq!(
///     encoded.sent_frame(&re, false),
///     ServerFrame::Sent { re, message: message.clone(), duplicate: false }.encode()
/// );
/// assert_eq!(encoded.message_frame(), ServerFrame::from(Push::Message { message }).encode());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedMessage {
    json: String,
}

impl EncodedMessage {
    /// Serializes `message` (the only serialization the frames below need), byte for byte
    /// what its `Serialize` writes.
    ///
    /// Written by hand because this runs for every message: ids are copied as they are (a
    /// UUID's hyphenated form and a checked conversation id need no escaping), where serde
    /// formats each UUID through `Display` and escapes it character by character. The
    /// texts a client chose (body, idempotency key) are escaped by `serde_json` as usual.
    pub fn new(message: &Message) -> Self {
        use std::io::Write;
        let mut out = Vec::with_capacity(
            160 + message.conversation.as_str().len()
                + message.body.len()
                + message.idempotency_key.len(),
        );
        let mut uuid = [0u8; uuid::fmt::Hyphenated::LENGTH];
        out.extend_from_slice(br#"{"id":""#);
        out.extend_from_slice(message.id.0.hyphenated().encode_lower(&mut uuid).as_bytes());
        out.extend_from_slice(br#"","conversation":""#);
        out.extend_from_slice(message.conversation.as_str().as_bytes());
        out.extend_from_slice(br#"","seq":"#);
        let _ = write!(out, "{}", message.seq);
        out.extend_from_slice(br#","sender":""#);
        out.extend_from_slice(
            message
                .sender
                .0
                .hyphenated()
                .encode_lower(&mut uuid)
                .as_bytes(),
        );
        out.push(b'"');
        if message.is_system() {
            out.extend_from_slice(br#","kind":"system""#);
        }
        out.extend_from_slice(br#","body":"#);
        // Writing a `str` to a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut out, &message.body);
        out.extend_from_slice(br#","sent_at":"#);
        let _ = write!(out, "{}", message.sent_at.0);
        out.extend_from_slice(br#","idempotency_key":"#);
        let _ = serde_json::to_writer(&mut out, &message.idempotency_key);
        out.push(b'}');
        Self {
            // Only UTF-8 was written (ids are ASCII, serde_json writes UTF-8).
            json: String::from_utf8(out).unwrap_or_else(|_| "null".into()),
        }
    }

    /// The message's JSON.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The `message` event carrying it.
    pub fn message_frame(&self) -> String {
        const HEAD: &str = r#"{"type":"message","message":"#;
        let mut s = String::with_capacity(HEAD.len() + self.json.len() + 1);
        s.push_str(HEAD);
        s.push_str(&self.json);
        s.push('}');
        s
    }

    /// The `sent` answer to request `re`.
    pub fn sent_frame(&self, re: &RequestId, duplicate: bool) -> String {
        const HEAD: &str = r#"{"type":"sent","re":"#;
        // The id is client text: escaped by serde like everywhere else.
        let re = serde_json::to_string(re.as_str()).unwrap_or_else(|_| "\"\"".into());
        let tail = if duplicate {
            r#","duplicate":true}"#
        } else {
            r#","duplicate":false}"#
        };
        let mut s = String::with_capacity(HEAD.len() + re.len() + self.json.len() + 32);
        s.push_str(HEAD);
        s.push_str(&re);
        s.push_str(r#","message":"#);
        s.push_str(&self.json);
        s.push_str(tail);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::MessageId;

    /// Every push type is a server frame type, and decodes as a [`Push`] (not as `Unknown`).
    #[test]
    fn push_types_decode_as_pushes() {
        for t in Push::TYPES {
            assert!(ServerFrame::TYPES.contains(t), "{t}");
            // Without its fields a push is an error, never an unknown frame to ignore.
            let err = ServerFrame::decode(&format!(r#"{{"type":"{t}"}}"#));
            assert!(err.is_err() || *t == "synced", "{t}: {err:?}");
        }
        let typing = r#"{"type":"typing","conversation":"dm.1f0c5a52-8d3b-4a7e-9c61-2b7f4e0a9d11.6a4e2c90-3b1d-4f8e-a5c7-90d2e1f3b422","user":"6a4e2c90-3b1d-4f8e-a5c7-90d2e1f3b422","active":true}"#;
        let frame = ServerFrame::decode(typing).unwrap();
        assert!(matches!(
            frame,
            ServerFrame::Push(Push::Typing { active: true, .. })
        ));
        assert_eq!(frame.encode(), typing);
    }

    /// The hand-written message JSON is exactly what `Serialize for Message` writes: system
    /// and user senders, every control character, non-ASCII text, extreme numbers.
    #[test]
    fn encoded_message_is_the_serde_serialization() {
        let (a, b) = (UserId::new_random(), UserId::new_random());
        let controls: String = (0u8..0x20).chain([0x7f]).map(char::from).collect();
        for (sender, seq, sent_at) in [
            (a, 1, Timestamp(0)),
            (UserId::SYSTEM, u64::MAX, Timestamp(i64::MIN)),
            (b, 7, Timestamp(i64::MAX)),
        ] {
            for (body, key) in [
                ("", "k"),
                (controls.as_str(), "\\u{2028}\u{2028}"),
                ("ünï 🕊 \"\\/", "a/b"),
            ] {
                let message = Message {
                    id: MessageId::new_v7(),
                    conversation: ConversationId::direct(a, b),
                    seq,
                    sender,
                    body: body.into(),
                    sent_at,
                    idempotency_key: key.into(),
                };
                let encoded = EncodedMessage::new(&message);
                assert_eq!(encoded.json(), serde_json::to_string(&message).unwrap());
                let back: Message = serde_json::from_str(encoded.json()).unwrap();
                assert_eq!(back, message);
            }
        }
    }

    /// The spliced frames are exactly what serde writes, for ids and bodies that need
    /// escaping and for both `duplicate` values; and they decode back to the same frames.
    #[test]
    fn encoded_message_frames_equal_serde_output() {
        let (a, b) = (UserId::new_random(), UserId::new_random());
        let message = Message {
            id: MessageId::new_v7(),
            conversation: ConversationId::direct(a, b),
            seq: 42,
            sender: a,
            body: "quote \" backslash \\ newline \n emoji 🕊 nul \u{0}".into(),
            sent_at: Timestamp(-5),
            idempotency_key: "k\"1".into(),
        };
        let encoded = EncodedMessage::new(&message);
        for id in ["1", "a\"b\\c", "ünï\u{1}"] {
            for duplicate in [false, true] {
                let re = RequestId::new(id).unwrap();
                let frame = ServerFrame::Sent {
                    re: re.clone(),
                    message: message.clone(),
                    duplicate,
                };
                let text = encoded.sent_frame(&re, duplicate);
                assert_eq!(text, frame.encode());
                assert_eq!(ServerFrame::decode(&text).unwrap(), frame);
            }
        }
        let event = ServerFrame::Push(Push::Message { message });
        assert_eq!(encoded.message_frame(), event.encode());
        assert_eq!(
            ServerFrame::decode(&encoded.message_frame()).unwrap(),
            event
        );
    }
}
