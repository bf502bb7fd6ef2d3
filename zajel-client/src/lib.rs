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
//! // Friends: ask bob; he gets a `friend` event (`Event::Server(Push::Friend { .. })`) and
//! // can `accept_friend`.
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
//!         // A notice the app's server posted (`Engine::send_system`): no person wrote it.
//!         Event::Message { message, .. } if message.is_system() => {
//!             println!("-- {} --", message.body);
//!         }
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
//!   gets online. Closes a whole population gets at once (4008 "lagged", 1012, 1013) wait a
//!   full-jitter delay over at least 2 s; a server `going_away` delay (clamped to 5 min, and
//!   already spread by the server over the connections it closed) is honoured, plus jitter
//!   over `max(delay / 4, 500 ms)`. Closes retrying cannot fix (1002, 1003, 1007, 1009, 1010) stop the
//!   client (`Closed`, with the server's error in [`Client::last_error`]). A connection that
//!   stops answering pings is dropped and reconnected.
//! - **Resume.** The client tracks, per conversation, the highest sequence up to which it has
//!   seen every message (from acks, `message` events, replays and history pages) and sends
//!   these cursors in `auth.resume`, the most recently active first and never more than half
//!   the server's frame limit; conversations left out are compared with `synced` and paged in
//!   with `history`, as are conversations the server reports as truncated and gaps in the
//!   live stream (seq 7 then 9). Every message is delivered to the event stream **once** per
//!   client: sequences already seen are dropped, even if an ack of a later message overtook
//!   them. Replayed and paged-in messages carry `replayed: true`. A fresh client (no cursors
//!   at all) starts **from now** (`unlisted: skip`): nothing old is replayed, each
//!   conversation's cursor is taken from `synced`, and older messages are read with
//!   [`Client::history`].
//! - **Storage.** With [`ClientBuilder::storage`] ([`FileStorage`], [`MemoryStorage`], or
//!   IndexedDB in the browser) the cursors and the outbox survive a restart or a page reload,
//!   and so does a bounded cache of the friends and conversations ([`CachedView`]): a client
//!   started while the server is down reports it as [`Event::Cached`] and
//!   [`Client::cached_view`], and the server's lists replace it once connected.
//!   Without it, save [`Client::cursors`] and pass them to [`ClientBuilder::resume_from`].
//! - **Outbox.** [`Client::send`] (or [`Client::queue`], which returns at once) gives each
//!   message a random 128-bit idempotency key at call time and queues it. The outbox is a
//!   per-conversation ordered queue: a message is not sent before the previous one to the
//!   same conversation is acknowledged. Entries stay queued across reconnects and are re-sent
//!   with the **same key** until acknowledged, so the server stores each exactly once; a
//!   message seen on resume whose key matches a queued entry completes it without a resend.
//!   Each entry's state (`queued`, `sending`, `sent`, `failed` with the typed error and
//!   whether it will retry) is visible with [`Client::outbox`] and [`Event::Outbox`].
//!   Retryable refusals (`internal`, `shutting_down`, `rate_limited`, see
//!   `ErrorCode::is_retryable`) are retried after `retry_after_ms` or a backoff (up to 8
//!   times); other refusals (`not_friends`, …) fail the `send` call and leave the entry
//!   `failed` until [`Client::retry_send`] or [`Client::delete_send`]. Dropping the `send`
//!   future does not cancel the message; its ack is also reported as [`Event::Sent`].
//! - **Pacing.** Every frame the client sends takes a token from a bucket refilled at 90 % of
//!   the server's advertised `requests_per_second`; a `rate_limited` answer pauses sending for
//!   its `retry_after_ms`. A large backlog after a reconnect flows at the server's pace
//!   instead of being closed with 1008.
//! - **Other requests.** Calls made while offline wait for the next connection (up to the
//!   request timeout, 30 s by default). If the connection drops after a request was sent,
//!   reads and idempotent writes (friends list, history, conversations, `mark_read`, ping) are
//!   re-sent; friend operations fail with [`Error::ConnectionLost`] since their outcome is
//!   unknown. `typing` is dropped while offline.
//!
//! ## Platforms
//!
//! Natively the client needs a tokio runtime (it spawns its driver with `tokio::spawn`); it
//! speaks `http://`/`ws://` and, with the default feature `tls` (rustls, ring provider,
//! Mozilla's roots built in; no OpenSSL), `https://`/`wss://`. Trust a private CA or a test
//! certificate with `add_root_certificates_pem`. Without `tls` (`default-features = false`)
//! nothing of rustls is compiled and a secure URL is refused with [`Error::InvalidArgument`]. On `wasm32-unknown-unknown` it uses the browser's
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
#[cfg(all(not(target_arch = "wasm32"), feature = "tls"))]
mod tls;
mod transport;
mod url;
mod view;

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
#[cfg(all(not(target_arch = "wasm32"), feature = "tls"))]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use tls::add_root_certificates_pem;
pub use view::CachedView;
/// The protocol and model types the API uses, re-exported for convenience.
pub use zajel_core::{
    self, ConversationId, ConversationSummary, ErrorCode, FriendReason, Message, MessageId,
    MessageKind, Relation, Timestamp, User, UserId,
    protocol::{FriendEntry, Push, ResumeState},
};

#[cfg(test)]
mod event_samples;
#[cfg(test)]
mod tests;
