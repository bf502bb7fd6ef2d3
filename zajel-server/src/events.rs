//! Engine events for the embedding application: a message was stored, a friendship changed,
//! a user was created or renamed. Subscribe with [`Engine::subscribe`] to forward them to a
//! webhook, index them, or run the app's own logic.
//!
//! Every chat operation reports through [`crate::chat::ChatService::commit`], so a message
//! sent over a WebSocket, over HTTP or with [`Engine::send_as`] produces the same event; user
//! creation reports from the account paths (registration, first sign-in of an external
//! identity) and renames from [`Engine::rename_user`].
//!
//! Delivery is a [`tokio::sync::broadcast`] channel of [`EVENT_BUFFER`] events:
//! * each event is emitted once, on the node that performed the operation (with several nodes,
//!   subscribe on each; no event is seen twice across the cluster);
//! * it is emitted after the store acknowledged the change, so an event is never about
//!   something that was not stored;
//! * emitting never waits: a subscriber that falls more than [`EVENT_BUFFER`] events behind
//!   gets [`RecvError::Lagged(n)`](tokio::sync::broadcast::error::RecvError::Lagged) with how
//!   many it missed, then continues with the oldest event still buffered. The store stays the
//!   source of truth: a subscriber that must not miss anything re-reads the history after a lag;
//! * events are not persisted: they are a live feed for the running process, not a log.

use crate::engine::Engine;
use serde::Serialize;
use tokio::sync::broadcast;
use zajel_core::{FriendReason, Message, Relation, User};

/// How many events a subscriber may fall behind before it starts missing some.
pub const EVENT_BUFFER: usize = 4096;

/// Something that happened in the engine (see the [module docs](self)).
///
/// Serializes as JSON with a `type` tag (`message_stored`, `friend_changed`, `user_created`,
/// `user_renamed`), ready for a webhook body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EngineEvent {
    /// A new message was stored (a retried send that stored nothing new reports nothing).
    MessageStored {
        /// The stored message, with its sequence number.
        message: Message,
    },
    /// `actor` changed their relation with `target` (a request, an answer, a removal, a block).
    FriendChanged {
        /// Who acted.
        actor: User,
        /// Who it was about.
        target: User,
        /// How `actor` sees `target` now.
        relation: Relation,
        /// What happened, in the actor's words.
        reason: FriendReason,
    },
    /// A user was created (a password registration or the first sign-in of an external
    /// identity).
    UserCreated {
        /// The new user.
        user: User,
    },
    /// A user changed their username ([`Engine::rename_user`], `POST /api/me/username`).
    UserRenamed {
        /// The user, with the new name.
        user: User,
        /// The name before.
        previous: String,
    },
}

/// The sending side, one per engine.
pub(crate) struct EventBus {
    tx: broadcast::Sender<EngineEvent>,
}

impl EventBus {
    pub(crate) fn new() -> Self {
        Self {
            tx: broadcast::channel(EVENT_BUFFER).0,
        }
    }

    /// Whether anyone listens (so callers can skip building an event nobody reads).
    pub(crate) fn wanted(&self) -> bool {
        self.tx.receiver_count() > 0
    }
}

impl Engine {
    /// A live feed of [`EngineEvent`]s from now on (see the [module docs](crate::events) for
    /// lag and multi-node behaviour).
    ///
    /// A webhook forwarder:
    ///
    /// ```no_run
    /// use tokio::sync::broadcast::error::RecvError;
    /// use zajel_server::events::EngineEvent;
    ///
    /// # async fn post_json(body: String) {}
    /// # fn demo(engine: zajel_server::Engine) {
    /// let mut events = engine.subscribe();
    /// tokio::spawn(async move {
    ///     loop {
    ///         match events.recv().await {
    ///             Ok(event @ EngineEvent::MessageStored { .. }) => {
    ///                 let body = serde_json::to_string(&event).expect("events serialize");
    ///                 post_json(body).await; // e.g. reqwest::Client::post(url).body(body)
    ///             }
    ///             Ok(_) => {}
    ///             // Too slow: `n` events were dropped for this subscriber; carry on (or
    ///             // re-read history from the store to catch up).
    ///             Err(RecvError::Lagged(n)) => eprintln!("webhook forwarder missed {n} events"),
    ///             Err(RecvError::Closed) => break, // the engine is gone
    ///         }
    ///     }
    /// });
    /// # }
    /// ```
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.inner.events.tx.subscribe()
    }

    /// Emits `event` to the subscribers (nothing happens when there are none).
    pub(crate) fn emit(&self, event: impl FnOnce() -> EngineEvent) {
        let bus = &self.inner.events;
        if bus.wanted() {
            // Err only means every subscriber left in between.
            let _ = bus.tx.send(event());
        }
    }
}
