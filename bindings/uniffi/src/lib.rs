//! # zajel-uniffi
//!
//! The Kotlin, Swift and Python SDKs of Zajel: [`zajel_client`] exported through
//! [uniffi](https://mozilla.github.io/uniffi-rs/) (proc macros, no UDL). It is a thin layer:
//! ids become strings, times milliseconds, errors one typed exception; the reconnect, resume,
//! outbox and exactly-once delivery are the Rust client's.
//!
//! What the foreign languages see (namespace `zajel`):
//!
//! * account functions: `register`, `login`, `whoami`, `logout_everywhere`;
//! * `connect(server_url, token, listener, options?)` → a [`ZajelClient`] once online, and
//!   `start(…)` which returns at once (offline start);
//! * [`ZajelClient`]: an async method per client call (friends, `send`, `history`,
//!   `conversations`, `mark_read`, `retry_send`, `delete_send`, `ping`, `logout`), plus
//!   `queue`, `outbox`, `typing`, `state`, `user`,
//!   `cursors`, `conversation_with` and `disconnect`;
//! * `shutdown()`: stops every client, for a process that is exiting (the Python package
//!   calls it at interpreter exit);
//! * events through the [`EventListener`] callback interface, as [`ZajelEvent`]s, with the
//!   [`ConnectionState`] model;
//! * errors as [`ZajelError`] (the protocol's [`ErrorCode`] and `retry_after_ms`).
//!
//! Async functions run on a tokio runtime the library owns; they are `suspend` functions in
//! Kotlin, `async` in Swift and coroutines in Python (asyncio). `scripts/build-uniffi.sh`
//! builds the library and generates the bindings; `docs/mobile.md` is the guide.
#![warn(missing_docs)]

mod client;
mod error;
mod event;
mod model;

pub use client::{
    ConnectOptions, ZajelClient, connect, login, logout_everywhere, register, shutdown, start,
    whoami,
};
pub use error::{ErrorCode, ZajelError, error_code_wire_name};
pub use event::{ConnectionState, EventListener, ZajelEvent};
pub use model::{
    ConversationSummary, FriendEntry, FriendReason, FriendStatus, HistoryPage, HistoryQuery,
    Message, MessageKind, OutboxItem, Relation, ResumeCursors, SendState, Session, User,
};

uniffi::setup_scaffolding!("zajel");
