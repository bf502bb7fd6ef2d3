//! # zajel-core
//!
//! The shared heart of Zajel: what travels on the wire and what gets stored.
//!
//! Layout:
//! * [`ids`]: user, message and conversation ids; timestamps.
//! * [`limits`]: protocol limits and the validated input types ([`Username`], [`Body`], …).
//! * [`model`]: records (users, sessions, messages, conversation summaries, relations).
//! * [`error`]: the stable wire error codes and the validation errors.
//! * [`protocol`]: the versioned JSON frames (see `docs/protocol.md`).
//! * [`friends`]: the friend-graph rules and [`FriendGraph`].
//! * [`messaging`]: the friends-only send rule.
//! * [`store`]: the storage traits and the in-memory, embedded (redb) and Redis backends.
//!
//! With default features off the crate has no I/O and builds for `wasm32-unknown-unknown`,
//! so the browser client shares these types.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod error;
pub mod friends;
pub mod ids;
pub mod limits;
pub mod messaging;
pub mod model;
pub mod protocol;
pub mod store;
#[cfg(feature = "test-suite")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-suite")))]
pub mod testing;

pub use error::{ErrorCode, HasErrorCode, ValidationError};
pub use friends::{FriendChange, FriendError, FriendGraph, FriendOp, FriendReason, FriendUpdate};
pub use ids::{ConversationId, MessageId, Timestamp, UserId};
pub use limits::{Body, IdempotencyKey, Username};
pub use model::*;
pub use store::{
    ExternalIdentity, FriendStore, IdentityStore, MessageStore, Pruned, RelationEntry,
    SessionStore, Store, StoreError, StoreHealth, StoreResult, UserStore,
};

#[cfg(feature = "embedded")]
#[cfg_attr(docsrs, doc(cfg(feature = "embedded")))]
pub use store::embedded::EmbeddedStore;
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use store::memory::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::redis::RedisStore;
