//! The chat service: every chat rule, with no transport in it.
//!
//! [`ChatService`] performs an operation for an [`Actor`] and returns an [`Outcome`]: the
//! reply plus the events to fan out. The WebSocket loop, HTTP handlers and server-side Rust
//! code all go through it, so one set of rules (friends only, blocks, ordering) serves all.
//! [`ChatService::commit`] publishes the events and hands back the reply; an operation whose
//! events must leave in order (a send) keeps its conversation's ordering lock inside the
//! outcome until then.
//!
//! * `messaging.rs`: send, history, conversations, read marks, typing;
//! * `friends.rs`: friend requests, answers, removal, blocks, the friends list;
//! * `presence.rs`: online/offline announcements;
//! * `pending.rs`: what is retried until the store takes it (an announcement whose friend
//!   list could not be read, a friends notice that could not be posted).
//! * `frames.rs`: a client frame to the matching operation and its answer frame.

mod frames;
mod friends;
mod messaging;
mod pending;
mod presence;

pub(crate) use pending::{PendingAnnouncements, PendingNotices};

use crate::engine::Engine;
use crate::events::EngineEvent;
use crate::hub::{ConnId, Event};
use tokio::sync::OwnedMutexGuard;
use zajel_core::protocol::{EncodedMessage, Push, ServerFrame};
use zajel_core::{ErrorCode, UserId};

/// Who performs an operation: a user, and the connection the request came from (which gets
/// the reply directly and is skipped when the operation's events are fanned out to the
/// user's devices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Actor {
    /// The acting user.
    pub user: UserId,
    /// The originating connection, if the request came over one.
    pub conn: Option<ConnId>,
}

impl Actor {
    /// `user`, acting from no connection (e.g. server-side code): every device of theirs
    /// gets the events.
    pub fn user(user: UserId) -> Self {
        Self { user, conn: None }
    }

    /// `user`, acting over connection `conn`.
    pub fn connection(user: UserId, conn: ConnId) -> Self {
        Self {
            user,
            conn: Some(conn),
        }
    }
}

/// An event for some users' connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fanout {
    /// Recipients.
    pub users: Vec<UserId>,
    /// The event.
    pub frame: ServerFrame,
    /// Skip the actor's originating connection (it got the reply instead).
    pub skip_origin: bool,
}

/// The result of an operation: the reply and the events it causes.
#[must_use = "events are only delivered by ChatService::commit"]
pub struct Outcome<T> {
    /// What the actor gets back.
    pub reply: T,
    /// What others (and the actor's other devices) must be told.
    pub events: Vec<Fanout>,
    origin: Option<ConnId>,
    /// Held until the events are published (keeps a conversation's events in order).
    order: Option<OwnedMutexGuard<()>>,
    /// The message of a send, serialized once for its event and its `sent` answer.
    encoded: Option<EncodedMessage>,
    /// What the embedding app's subscribers are told ([`Engine::subscribe`]); built only
    /// when someone listens.
    notices: Vec<Box<dyn FnOnce() -> EngineEvent + Send>>,
}

impl<T> Outcome<T> {
    fn new(actor: Actor, reply: T) -> Self {
        Self {
            reply,
            events: Vec::new(),
            origin: actor.conn,
            order: None,
            encoded: None,
            notices: Vec::new(),
        }
    }

    fn event(mut self, users: Vec<UserId>, frame: ServerFrame, skip_origin: bool) -> Self {
        self.events.push(Fanout {
            users,
            frame,
            skip_origin,
        });
        self
    }

    /// Adds an engine event for the app's subscribers, built (only if someone listens) when
    /// the outcome is committed.
    fn notice(mut self, event: impl FnOnce() -> EngineEvent + Send + 'static) -> Self {
        self.notices.push(Box::new(event));
        self
    }

    /// Takes over `other`'s events, engine events and ordering lock (its reply is dropped):
    /// an operation that caused another, published together (a friendship and its notice).
    fn absorb<U>(mut self, other: Outcome<U>) -> Self {
        // `skip_origin` meant `other`'s origin: without one, nobody is skipped.
        let keep_skip = other.origin.is_some() && other.origin == self.origin;
        self.events.extend(other.events.into_iter().map(|mut ev| {
            ev.skip_origin &= keep_skip;
            ev
        }));
        self.notices.extend(other.notices);
        self.order = other.order.or(self.order);
        self.encoded = other.encoded.or(self.encoded);
        self
    }

    /// The same outcome with its reply transformed.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        Outcome {
            reply: f(self.reply),
            events: self.events,
            origin: self.origin,
            order: self.order,
            encoded: self.encoded,
            notices: self.notices,
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Outcome<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcome")
            .field("reply", &self.reply)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// The chat operations of an [`Engine`] (see [`Engine::chat`] and the module docs).
#[derive(Clone)]
pub struct ChatService {
    engine: Engine,
}

impl Engine {
    /// The transport-free chat service.
    pub fn chat(&self) -> ChatService {
        ChatService {
            engine: self.clone(),
        }
    }
}

/// An answer ready for the wire: its JSON text, and its error code if it is an `error` frame
/// (for the metrics).
#[derive(Debug)]
pub(crate) struct Answer {
    pub text: String,
    pub error: Option<ErrorCode>,
}

impl Answer {
    /// Serializes `frame`.
    pub fn frame(frame: &ServerFrame) -> Self {
        Self {
            text: frame.encode(),
            error: match frame {
                ServerFrame::Error(e) => Some(e.code),
                _ => None,
            },
        }
    }
}

impl ChatService {
    /// Publishes `outcome`'s events (then releases its ordering lock), tells the engine's
    /// subscribers ([`Engine::subscribe`]) and returns the reply. Every operation of every
    /// transport ends here, so this is the one place engine events come from.
    pub fn commit<T>(&self, outcome: Outcome<T>) -> T {
        self.commit_encoded(outcome).0
    }

    /// [`ChatService::commit`], also handing back the serialized message of a send (so its
    /// answer reuses it).
    fn commit_encoded<T>(&self, outcome: Outcome<T>) -> (T, Option<EncodedMessage>) {
        for ev in &outcome.events {
            let skip = if ev.skip_origin { outcome.origin } else { None };
            let event = match (&ev.frame, &outcome.encoded) {
                // The message was serialized once in `send`: splice it, do not re-encode.
                (ServerFrame::Push(Push::Message { message }), Some(encoded)) => {
                    Event::from_serialized(
                        encoded.message_frame(),
                        Some((message.conversation.clone(), message.seq)),
                    )
                }
                (frame, _) => Event::new(frame),
            };
            self.engine.inner.broker.publish(&ev.users, event, skip);
        }
        drop(outcome.order);
        for notice in outcome.notices {
            self.engine.emit(notice);
        }
        (outcome.reply, outcome.encoded)
    }
}
