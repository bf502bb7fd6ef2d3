//! Events, the connection state, and the listener interface the app implements.

use crate::model::{
    ConversationSummary, FriendEntry, FriendReason, Message, OutboxItem, Relation, User,
};
use zajel_client::ConnectionState as State;

/// The connection as a UI should show it.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectionState {
    /// The first connection attempt is in progress.
    Connecting,
    /// Authenticated and caught up: requests flow, events arrive live.
    Online,
    /// The connection dropped (or an attempt failed); the next attempt starts in
    /// `retry_in_ms`. `attempt` counts failed attempts since the client was last online.
    Reconnecting {
        /// Failed attempts since the client was last online (1 for the first retry).
        attempt: u32,
        /// Delay before the next attempt, in milliseconds.
        retry_in_ms: u64,
    },
    /// The session token was refused (or `logout` was called): the client stopped; sign in
    /// again and connect a new client.
    SignedOut,
    /// `disconnect` was called, or the server refused the connection for good.
    Closed,
}

impl From<State> for ConnectionState {
    fn from(s: State) -> Self {
        match s {
            State::Connecting => Self::Connecting,
            State::Online => Self::Online,
            State::Reconnecting { attempt, retry_in } => Self::Reconnecting {
                attempt,
                retry_in_ms: u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
            },
            State::SignedOut => Self::SignedOut,
            State::Closed => Self::Closed,
        }
    }
}

/// Something that happened, in the order the server reported it.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ZajelEvent {
    /// The connection state changed.
    State {
        /// The state now.
        state: ConnectionState,
    },
    /// A new message (from the peer, or mine from another device). Delivered once per client,
    /// even across reconnects.
    Message {
        /// The message.
        message: Message,
        /// True when replayed on (re)connect rather than pushed live.
        replayed: bool,
    },
    /// A message this client sent was stored (also reported when the `send` call was
    /// cancelled).
    Sent {
        /// The stored message.
        message: Message,
    },
    /// An outbox entry changed state (queued, sending, sent, failed) or was deleted.
    Outbox {
        /// The entry now.
        item: OutboxItem,
    },
    /// A (re)connection finished catching up; the lists are the server's state now.
    Synced {
        /// The conversation list.
        conversations: Vec<ConversationSummary>,
        /// The friends list with presence (replaces any earlier copy).
        friends: Vec<FriendEntry>,
        /// True for the first sync of this client.
        first: bool,
    },
    /// My relation with someone changed.
    Friend {
        /// The other user.
        user: User,
        /// How I see them now.
        relation: Relation,
        /// What happened.
        reason: FriendReason,
        /// When (ms since the epoch).
        at_ms: i64,
    },
    /// A read mark moved (the peer's: show "seen"; or mine from another device).
    Read {
        /// The conversation.
        conversation: String,
        /// Whose mark.
        user: String,
        /// The mark now.
        seq: u64,
    },
    /// A friend started or stopped typing.
    Typing {
        /// The conversation.
        conversation: String,
        /// Who.
        user: String,
        /// Typing now.
        active: bool,
    },
    /// A friend came online or went offline.
    Presence {
        /// Who.
        user: String,
        /// Online now.
        online: bool,
        /// When last seen (set when going offline; ms since the epoch).
        last_seen_ms: Option<i64>,
    },
}

impl ZajelEvent {
    /// Converts a client event; `None` for kinds added to the client later than this SDK.
    pub(crate) fn from_client(event: zajel_client::Event) -> Option<Self> {
        use zajel_client::Event as E;
        Some(match event {
            E::State(state) => Self::State {
                state: state.into(),
            },
            E::Message { message, replayed } => Self::Message {
                message: message.into(),
                replayed,
            },
            E::Sent(message) => Self::Sent {
                message: message.into(),
            },
            E::Outbox(item) => Self::Outbox { item: item.into() },
            E::Synced {
                conversations,
                friends,
                first,
            } => Self::Synced {
                conversations: conversations.into_iter().map(Into::into).collect(),
                friends: friends.into_iter().map(Into::into).collect(),
                first,
            },
            E::Friend {
                user,
                relation,
                reason,
                at,
            } => Self::Friend {
                user: user.into(),
                relation: relation.into(),
                reason: reason.into(),
                at_ms: at.0,
            },
            E::Read {
                conversation,
                user,
                seq,
            } => Self::Read {
                conversation: conversation.to_string(),
                user: user.to_string(),
                seq,
            },
            E::Typing {
                conversation,
                user,
                active,
            } => Self::Typing {
                conversation: conversation.to_string(),
                user: user.to_string(),
                active,
            },
            E::Presence {
                user,
                online,
                last_seen,
            } => Self::Presence {
                user: user.to_string(),
                online,
                last_seen_ms: last_seen.map(|t| t.0),
            },
            _ => return None,
        })
    }
}

/// Implemented by the app to receive a client's events.
///
/// `on_event` is called for every event, in order, on one thread per client that belongs to
/// the SDK (not the UI thread, not a coroutine or asyncio loop): hand the event over to your
/// own thread or queue and return quickly, since the next event waits. An exception thrown
/// by `on_event` is ignored; delivery continues with the next event.
#[uniffi::export(callback_interface)]
pub trait EventListener: Send + Sync {
    /// One event.
    fn on_event(&self, event: ZajelEvent);
}
