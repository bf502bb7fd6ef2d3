//! # zajel-client
//!
//! The Zajel client SDK core: one async Rust client that every Zajel SDK wraps (JavaScript
//! through wasm-bindgen, Kotlin/Swift/Python through uniffi), so its behaviour is theirs.
//! It runs natively (tokio + tokio-tungstenite) and in the browser (`wasm32-unknown-unknown`,
//! `web-sys` WebSocket and `fetch`) behind the same API.
//!
//! ## Quick start
//!
//! ```no_run
//! use zajel_client::{Client, Event, HistoryQuery};
//!
//! # async fn run() -> Result<(), zajel_client::Error> {
//! let server = "http://127.0.0.1:8080";
//! let session = Client::login(server, "alice", "correct horse battery").await?;
//! let (client, mut events) = Client::connect(server, session.token).await?;
//!
//! // Friends: ask bob; he gets an `Event::Friend` and can `accept_friend`.
//! let bob = client.request_friend("bob").await?.user;
//!
//! // Messages: `send` returns once the server stored the message.
//! let sent = client.send(&bob, "hello bob").await?;
//! println!("stored as #{} in {}", sent.seq, sent.conversation);
//! let page = client.history(&sent.conversation, HistoryQuery::latest(20)).await?;
//! assert!(page.messages.iter().any(|m| m.id == sent.id));
//!
//! // Everything else arrives as events, in order.
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::Message { message, .. } => {
//!             println!("{}: {}", message.sender, message.body);
//!             client.mark_read(&message.conversation, message.seq).await?;
//!         }
//!         Event::State(state) => println!("connection: {state:?}"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! ## Behavior
//!
//! A [`Client`] is a cheap-to-clone handle to one background task (the driver) that owns the
//! WebSocket. Reliability lives in that task, not in each SDK:
//!
//! - **Connection states.** [`ConnectionState::Connecting`] (first attempt) →
//!   [`ConnectionState::Online`] (authenticated and caught up) → on any drop
//!   [`ConnectionState::Reconnecting`] `{ attempt, retry_in }` → `Online` again. It ends in
//!   [`ConnectionState::SignedOut`] when the token is refused (an `unauthenticated` answer to
//!   `auth`, close code 4001, or [`Client::logout`]) — the client does **not** retry then — or in
//!   [`ConnectionState::Closed`] ([`Client::close`], every handle dropped, a non-retryable
//!   refusal such as an unsupported protocol version, or
//!   [`ClientBuilder::max_attempts`] exhausted). Each change is also an [`Event::State`].
//! - **Reconnect.** Automatic, with jittered exponential backoff (250 ms doubling up to 30 s,
//!   randomized by up to 50 %; see [`Backoff`]). The attempt counter resets once a connection
//!   gets online. A server `going_away` suggests the delay; close code 4008 ("lagged")
//!   reconnects at once. A connection that stops answering pings is dropped and reconnected.
//! - **Resume.** The client tracks, per conversation, the highest sequence up to which it has
//!   seen every message (from acks, `message` events, replays and history pages) and sends
//!   these cursors in `auth.resume` on every connection. The server replays what was missed,
//!   oldest first, then the client is `Online` and gets live events. Conversations the server
//!   reports as truncated are paged in with `history` automatically. Every message is
//!   delivered to the event stream **once** per client: sequences already seen are dropped,
//!   even if an ack of a later message overtook them. Replayed messages carry
//!   `replayed: true`. Save [`Client::cursors`] and pass them to
//!   [`ClientBuilder::resume_from`] to resume across process restarts. A fresh client (no
//!   cursors at all) starts **from now** (`unlisted: skip`): nothing old is replayed, each
//!   conversation's cursor is taken from `synced`, and older messages are read with
//!   [`Client::history`]. From then on, a conversation the client has not seen is new since its
//!   last sync and is replayed in full.
//! - **Outbox.** [`Client::send`] gives each message a random 128-bit idempotency key at call
//!   time and queues it. Queued messages are sent in order whenever the client is online, stay
//!   queued across reconnects, and are re-sent with the **same key** until acknowledged, so the
//!   server stores each exactly once. A message seen on resume whose key matches a queued
//!   entry (its ack was lost) completes that entry without a resend. Retryable refusals
//!   (`internal`, `shutting_down`, `rate_limited`, see `ErrorCode::is_retryable`) are retried
//!   after `retry_after_ms` or a backoff (up to 8 times); other refusals (`not_friends`,
//!   `body_too_long`, …) fail the call and drop the entry. Dropping the `send` future does not
//!   cancel the message; its ack is also reported as [`Event::Sent`]. The outbox lives in
//!   memory: it survives reconnects, not a process exit. When the client stops, queued
//!   messages fail with [`Error::SignedOut`] or [`Error::Closed`].
//! - **Other requests.** Calls made while offline wait for the next connection (up to the
//!   request timeout, 30 s by default). If the connection drops after a request was sent,
//!   reads and idempotent writes (friends list, history, conversations, `mark_read`, ping) are
//!   re-sent; friend operations fail with [`Error::ConnectionLost`] since their outcome is
//!   unknown. `typing` is dropped while offline.
//!
//! ## Platforms
//!
//! Natively the client needs a tokio runtime (it spawns its driver with `tokio::spawn`); the
//! native HTTP client speaks plain `http://` (put TLS in a proxy for now; `wss://` needs a
//! TLS-enabled tokio-tungstenite). On `wasm32-unknown-unknown` it uses the browser's
//! `WebSocket`, `fetch` and timers and needs no runtime; the platform differences live in one
//! small internal module.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod backoff;
mod client;
mod cursor;
mod driver;
mod error;
mod event;
mod http;
mod rt;
mod storage;
mod transport;
mod url;

pub use backoff::Backoff;
pub use client::{Client, ClientBuilder, EventStream};
pub use error::{Error, Result};
pub use event::{
    ConnectionState, Event, FriendStatus, HistoryPage, HistoryQuery, OutboxItem, SendState,
    Session, Target,
};
#[cfg(not(target_arch = "wasm32"))]
pub use storage::FileStorage;
pub use storage::{MemoryStorage, Snapshot, Storage, StorageFuture, StoredSend};
/// The protocol and model types the API uses, re-exported for convenience.
pub use zajel_core::{
    self, ConversationId, ConversationSummary, ErrorCode, FriendReason, Message, MessageId,
    Relation, Timestamp, User, UserId,
    protocol::{FriendEntry, ResumeState},
};

#[cfg(test)]
mod tests;
