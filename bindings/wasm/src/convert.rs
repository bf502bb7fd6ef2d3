//! Plain-data mirrors of the client's Rust types, shaped like the protocol's JSON, and the
//! error mapping. Conversions only.

use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;
use zajel_client::{
    ConnectionState, ConversationId, ConversationSummary, Error, Event, FriendEntry, FriendReason,
    FriendStatus, HistoryPage, Message, Relation, Session, Timestamp, User, UserId,
};

/// Serializes to a plain JS value (objects for maps, numbers for integers, null for None).
pub(crate) fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| arg_error(&format!("serialize: {e}")))
}

fn error_with_code(code: &str, message: &str) -> JsValue {
    let err = js_sys::Error::new(message);
    let _ = js_sys::Reflect::set(&err, &"code".into(), &code.into());
    err.into()
}

/// A rejected promise's value for an invalid argument.
pub(crate) fn arg_error(message: &str) -> JsValue {
    error_with_code("invalid_argument", message)
}

/// A client error as a JS `Error` with a `code` (and `retry_after_ms` when rate limited).
pub(crate) fn js_error(e: Error) -> JsValue {
    let code = match &e {
        Error::Rejected { code, .. } => code.to_string(),
        Error::SignedOut => "unauthenticated".into(),
        Error::Closed => "closed".into(),
        Error::ConnectionLost => "connection_lost".into(),
        Error::Transport(_) => "transport".into(),
        Error::Http { .. } => "http".into(),
        Error::InvalidUrl(_) => "invalid_url".into(),
        Error::Protocol(_) => "protocol".into(),
        Error::Timeout => "timeout".into(),
        _ => "error".into(),
    };
    let err = error_with_code(&code, &e.to_string());
    if let Error::Rejected {
        retry_after_ms: Some(ms),
        ..
    } = &e
    {
        let _ = js_sys::Reflect::set(&err, &"retry_after_ms".into(), &(*ms as f64).into());
    }
    err
}

pub(crate) fn user_id(s: &str) -> Result<UserId, JsValue> {
    s.parse()
        .map_err(|_| arg_error(&format!("not a user id: {s:?}")))
}

pub(crate) fn conversation(s: &str) -> Result<ConversationId, JsValue> {
    s.parse()
        .map_err(|_| arg_error(&format!("not a conversation id: {s:?}")))
}

#[derive(Serialize)]
pub(crate) struct JsSession {
    user: User,
    token: String,
    expires_at: Timestamp,
}

impl From<Session> for JsSession {
    fn from(s: Session) -> Self {
        Self {
            user: s.user,
            token: s.token,
            expires_at: s.expires_at,
        }
    }
}

#[derive(Serialize)]
pub(crate) struct JsFriendStatus {
    user: User,
    relation: Relation,
}

impl From<FriendStatus> for JsFriendStatus {
    fn from(s: FriendStatus) -> Self {
        Self {
            user: s.user,
            relation: s.relation,
        }
    }
}

#[derive(Default, Deserialize)]
pub(crate) struct JsHistoryQuery {
    pub(crate) before: Option<u64>,
    pub(crate) after: Option<u64>,
    pub(crate) limit: Option<u32>,
}

#[derive(Serialize)]
pub(crate) struct JsHistoryPage {
    conversation: ConversationId,
    messages: Vec<Message>,
    has_more: bool,
}

impl From<HistoryPage> for JsHistoryPage {
    fn from(p: HistoryPage) -> Self {
        Self {
            conversation: p.conversation,
            messages: p.messages,
            has_more: p.has_more,
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum JsState {
    Connecting,
    Online,
    Reconnecting { attempt: u32, retry_in_ms: u64 },
    SignedOut,
    Closed,
}

impl From<ConnectionState> for JsState {
    fn from(s: ConnectionState) -> Self {
        match s {
            ConnectionState::Connecting => JsState::Connecting,
            ConnectionState::Online => JsState::Online,
            ConnectionState::Reconnecting { attempt, retry_in } => JsState::Reconnecting {
                attempt,
                retry_in_ms: u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
            },
            ConnectionState::SignedOut => JsState::SignedOut,
            ConnectionState::Closed => JsState::Closed,
        }
    }
}

/// An event as JS sees it: `{ type: "message", message, replayed }`, … (`type` as in the
/// protocol's event frames, plus `state`, `sent` and `synced` from the client).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum JsEvent {
    State {
        state: JsState,
    },
    Message {
        message: Message,
        replayed: bool,
    },
    Sent {
        message: Message,
    },
    Synced {
        conversations: Vec<ConversationSummary>,
        friends: Vec<FriendEntry>,
        first: bool,
    },
    Friend {
        user: User,
        relation: Relation,
        reason: FriendReason,
        at: Timestamp,
    },
    Read {
        conversation: ConversationId,
        user: UserId,
        seq: u64,
    },
    Typing {
        conversation: ConversationId,
        user: UserId,
        active: bool,
    },
    Presence {
        user: UserId,
        online: bool,
        last_seen: Option<Timestamp>,
    },
}

impl JsEvent {
    /// `None` for event kinds this binding does not know yet (the enum is non-exhaustive).
    pub(crate) fn from_event(e: Event) -> Option<Self> {
        Some(match e {
            Event::State(s) => JsEvent::State { state: s.into() },
            Event::Message { message, replayed } => JsEvent::Message { message, replayed },
            Event::Sent(message) => JsEvent::Sent { message },
            Event::Synced {
                conversations,
                friends,
                first,
            } => JsEvent::Synced {
                conversations,
                friends,
                first,
            },
            Event::Friend {
                user,
                relation,
                reason,
                at,
            } => JsEvent::Friend {
                user,
                relation,
                reason,
                at,
            },
            Event::Read {
                conversation,
                user,
                seq,
            } => JsEvent::Read {
                conversation,
                user,
                seq,
            },
            Event::Typing {
                conversation,
                user,
                active,
            } => JsEvent::Typing {
                conversation,
                user,
                active,
            },
            Event::Presence {
                user,
                online,
                last_seen,
            } => JsEvent::Presence {
                user,
                online,
                last_seen,
            },
            _ => return None,
        })
    }
}
