//! Events, the connection state, and the listener interface the app implements.

use crate::model::{
    ConversationSummary, FriendEntry, FriendReason, Message, OutboxItem, Relation, User,
};
use zajel_client::ConnectionState as State;
use zajel_client::Push;

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
    /// The friends and conversations cached by the storage (`storage_path`) at the last
    /// session, delivered before the first connection: what to show while offline, until
    /// `Synced` brings the server's lists.
    Cached {
        /// The friends list as last seen.
        friends: Vec<FriendEntry>,
        /// The conversation list as last seen (at most 1,000, most recent first).
        conversations: Vec<ConversationSummary>,
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
    /// The server is closing this connection (shutdown, or this client lagged); the client
    /// reconnects by itself after about `reconnect_after_ms` and resumes. For a UI notice.
    GoingAway {
        /// Why.
        reason: String,
        /// The server's suggested delay before reconnecting.
        reconnect_after_ms: u64,
    },
}

impl ZajelEvent {
    /// Converts a client event; `None` for client-only kinds added to the client later than
    /// this SDK. Every server push is mapped (see the `From<Push>` below).
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
            } => Self::synced(conversations, friends, first),
            E::Cached(view) => Self::Cached {
                friends: view.friends.into_iter().map(Into::into).collect(),
                conversations: view.conversations.into_iter().map(Into::into).collect(),
            },
            E::Server(push) => push.into(),
            _ => return None,
        })
    }

    fn synced(
        conversations: Vec<zajel_client::ConversationSummary>,
        friends: Vec<zajel_client::FriendEntry>,
        first: bool,
    ) -> Self {
        Self::Synced {
            conversations: conversations.into_iter().map(Into::into).collect(),
            friends: friends.into_iter().map(Into::into).collect(),
            first,
        }
    }
}

/// One conversion per push, with no wildcard: a push added to `zajel_core::protocol::Push`
/// does not compile here until it has its variant above.
impl From<Push> for ZajelEvent {
    fn from(push: Push) -> Self {
        match push {
            // The client delivers these two as `Event::Message` / `Event::Synced`; mapped
            // here as a live message and a later sync all the same.
            Push::Message { message } => Self::Message {
                message: message.into(),
                replayed: false,
            },
            Push::Synced { state } => Self::synced(state.conversations, state.friends, false),
            Push::Friend {
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
            Push::Read {
                conversation,
                user,
                seq,
            } => Self::Read {
                conversation: conversation.to_string(),
                user: user.to_string(),
                seq,
            },
            Push::Typing {
                conversation,
                user,
                active,
            } => Self::Typing {
                conversation: conversation.to_string(),
                user: user.to_string(),
                active,
            },
            Push::Presence {
                user,
                online,
                last_seen,
            } => Self::Presence {
                user: user.to_string(),
                online,
                last_seen_ms: last_seen.map(|t| t.0),
            },
            Push::GoingAway {
                reason,
                reconnect_after_ms,
            } => Self::GoingAway {
                reason,
                reconnect_after_ms,
            },
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use zajel_client::zajel_core::protocol::ServerFrame;

    /// Every push example of `docs/protocol.md` becomes the `ZajelEvent` of the same name,
    /// with its values (the `match` above has no wildcard, so a new push cannot be missing).
    #[test]
    fn every_documented_push_maps_to_its_event() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/protocol.md"
        ))
        .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for block in doc.split("```json\n").skip(1) {
            let json = &block[..block.find("```").unwrap()];
            let Ok(ServerFrame::Push(push)) = ServerFrame::decode(json) else {
                continue;
            };
            let wire = serde_json::to_value(&push).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned();
            let event = ZajelEvent::from(push);
            // `going_away` -> `GoingAway { …`
            let name: String = wire
                .split('_')
                .map(|w| w[..1].to_uppercase() + &w[1..])
                .collect();
            assert!(
                format!("{event:?}").starts_with(&format!("{name} ")),
                "{wire} became {event:?}"
            );
            if let ZajelEvent::GoingAway {
                reconnect_after_ms, ..
            } = event
            {
                assert_eq!(reconnect_after_ms, 1000);
            }
            seen.insert(wire);
        }
        let all: std::collections::BTreeSet<String> =
            Push::TYPES.iter().map(|t| t.to_string()).collect();
        assert_eq!(seen, all);
    }
}
