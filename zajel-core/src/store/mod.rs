//! Storage: narrow async traits per concern, and their implementations.
//!
//! | trait | holds |
//! |---|---|
//! | [`UserStore`] | accounts, password hashes, linked external identities, last-seen |
//! | [`SessionStore`] | sign-in sessions (token hashes) |
//! | [`FriendStore`] | one [`Edge`] per pair, compare-and-swap, and each user's derived relation list |
//! | [`MessageStore`] | per-conversation logs with gap-free sequences, idempotency, read marks, conversation lists |
//! | [`IdentityStore`] | external identities (OpenID Connect, an embedding app's users) linked to users |
//!
//! [`Store`] bundles all five; the server holds an `Arc<dyn Store>` so the backend is a runtime
//! choice. Implementations: `memory::MemoryStore`, `embedded::EmbeddedStore` (redb, the
//! default) and `redis::RedisStore` (each behind its cargo feature). All of them pass the same conformance suite
//! (`conformance`, feature `test-suite`).
//!
//! Guarantees every implementation gives (the suite checks each):
//! * `append` stores before it returns; sequences per conversation are 1, 2, 3, … with no gaps
//!   and no repeats under any concurrency; a repeated (conversation, sender, idempotency key)
//!   returns the first message with `duplicate: true` and stores nothing.
//! * `swap_edge` is atomic: of two racing swaps from the same expected edge, exactly one wins.
//! * `append` and `mark_read` check the friends-only rule (the pair's [`Edge`]) in the same
//!   atomic step as their write: once a `swap_edge` that ends the friendship (block, removal)
//!   has returned, no later `append` or `mark_read` of that pair succeeds, on any node.
//! * A rejected call (typed [`StoreError`]) changes nothing.

use crate::error::{ErrorCode, HasErrorCode};
use crate::friends::{Edge, UserPair};
use crate::ids::{ConversationId, Timestamp, UserId};
use crate::limits::Username;
use crate::model::{
    Appended, ConversationSummary, HistoryPage, HistoryQuery, NewMessage, ReadMark, Relation,
    Session, User,
};
use async_trait::async_trait;
pub use identity::{
    ExternalIdentity, ExternalUser, IdentityKind, IdentityStore, InvalidIdentity, InvalidTicketKey,
    LinkedIdentity, TicketKey, Unlink,
};
use serde::{Deserialize, Serialize};

#[cfg(feature = "test-suite")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-suite")))]
pub mod conformance;
#[cfg(feature = "embedded")]
#[cfg_attr(docsrs, doc(cfg(feature = "embedded")))]
pub mod embedded;
pub mod identity;
#[cfg(feature = "test-suite")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-suite")))]
pub mod identity_conformance;
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub mod memory;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
#[cfg(any(feature = "memory", feature = "embedded"))]
mod tickets;

/// A storage failure or a refused store operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The username (case-insensitively) belongs to another account.
    #[error("username is taken")]
    UsernameTaken,
    /// No user with that id.
    #[error("no such user")]
    UserNotFound,
    /// The external identity is linked to another account.
    #[error("this external identity is linked to another account")]
    IdentityTaken,
    /// The user is not a member of the conversation.
    #[error("not a member of this conversation")]
    NotAMember,
    /// The conversation's two members are not friends (never were, removed, or blocked either
    /// way), so nobody may message or mark read there. Checked in the same atomic step as
    /// the write it refuses; which of the reasons applies is never told (a block stays
    /// hidden).
    #[error("you can only message friends")]
    NotFriends,
    /// A cursor or read mark outside the conversation.
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    /// The backend failed (I/O, connection, …). With a networked backend a lost reply means the
    /// change may or may not have happened; idempotent retries (idempotency keys) make that safe.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The backend is set up in a way that would lose acknowledged data (e.g. a Redis that
    /// evicts keys when full), so the store refuses to work with it. Fix the backend's
    /// configuration; retrying does not help.
    #[error("storage backend is misconfigured: {0}")]
    Misconfigured(String),
    /// The backend cannot serve requests right now (Redis unreachable or timing out, the
    /// embedded store's disk failing). Nothing was changed by this call, except that a
    /// networked backend cannot rule out a write whose reply was lost (idempotent retries make
    /// that safe). Retry after `retry_after_ms`.
    #[error("storage is unavailable: {reason} (retry in {retry_after_ms} ms)")]
    Unavailable {
        /// What is wrong, for logs.
        reason: String,
        /// A hint for when a retry may succeed.
        retry_after_ms: u64,
    },
}

impl HasErrorCode for StoreError {
    fn code(&self) -> ErrorCode {
        match self {
            StoreError::UsernameTaken => ErrorCode::UsernameTaken,
            StoreError::UserNotFound => ErrorCode::UserNotFound,
            StoreError::IdentityTaken => ErrorCode::InvalidCredentials,
            StoreError::NotAMember => ErrorCode::ConversationNotFound,
            StoreError::NotFriends => ErrorCode::NotFriends,
            StoreError::InvalidCursor(_) => ErrorCode::InvalidCursor,
            StoreError::Backend(_) | StoreError::Corrupt(_) | StoreError::Misconfigured(_) => {
                ErrorCode::Internal
            }
            StoreError::Unavailable { .. } => ErrorCode::Unavailable,
        }
    }
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(e: impl std::fmt::Display) -> Self {
        StoreError::Backend(e.to_string())
    }
    /// Wraps a decoding error.
    pub fn corrupt(e: impl std::fmt::Display) -> Self {
        StoreError::Corrupt(e.to_string())
    }
    /// The backend is away; retry after `retry_after_ms`.
    pub fn unavailable(reason: impl std::fmt::Display, retry_after_ms: u64) -> Self {
        StoreError::Unavailable {
            reason: reason.to_string(),
            retry_after_ms,
        }
    }
    /// The retry hint of [`StoreError::Unavailable`].
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            StoreError::Unavailable { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        }
    }
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// One entry of a user's relation list (everything but [`Relation::None`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationEntry {
    /// The other user.
    pub peer: UserId,
    /// How the list's owner sees the peer.
    pub relation: Relation,
    /// When it last changed.
    pub since: Timestamp,
}

/// Accounts and credentials.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates an account. `UsernameTaken` if the canonical name exists.
    async fn create_user(
        &self,
        username: &Username,
        password_hash: Option<&str>,
        at: Timestamp,
    ) -> StoreResult<User>;
    /// The user with this id.
    async fn user(&self, id: UserId) -> StoreResult<Option<User>>;
    /// The user with this username (case-insensitive).
    async fn user_by_username(&self, username: &Username) -> StoreResult<Option<User>>;
    /// The stored password hash (PHC string), if the account has a password.
    async fn password_hash(&self, id: UserId) -> StoreResult<Option<String>>;
    /// Sets or replaces the password hash. `UserNotFound` for unknown ids.
    async fn set_password_hash(&self, id: UserId, hash: &str) -> StoreResult<()>;
    /// Changes a user's username to `new` (the same uniqueness as `create_user`, case-
    /// insensitive; a change of case only is allowed) and frees the old name. Returns the
    /// updated user. `UsernameTaken` (nothing changed) if another user has the name;
    /// `UserNotFound` for unknown ids.
    async fn rename_user(&self, id: UserId, new: &Username) -> StoreResult<User>;
    /// Records when the user was last online. `UserNotFound` for unknown ids.
    async fn set_last_seen(&self, id: UserId, at: Timestamp) -> StoreResult<()>;
    /// When the user was last online.
    async fn last_seen(&self, id: UserId) -> StoreResult<Option<Timestamp>>;
}

/// Sign-in sessions. Keyed by (user, token hash) so all of a user's sessions live together
/// (one Redis Cluster slot) and "log out everywhere" is a single atomic delete.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a session. `UserNotFound` for unknown users.
    async fn create_session(&self, session: &Session) -> StoreResult<()>;
    /// The session, if it exists and has not expired at `now`.
    async fn session(
        &self,
        user: UserId,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<Session>>;
    /// The session (as [`SessionStore::session`]) together with its user, in one read: what
    /// authenticating a connection needs. `None` if the session does not exist, has expired
    /// at `now`, or its user does not exist. Backends answer it with one transaction (one
    /// Redis round trip) instead of two calls, so every connection setup saves one.
    async fn session_with_user(
        &self,
        user: UserId,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<(Session, User)>>;
    /// Deletes one session; true if it existed.
    async fn delete_session(&self, user: UserId, token_hash: &str) -> StoreResult<bool>;
    /// Deletes every session of a user; returns how many.
    async fn delete_user_sessions(&self, user: UserId) -> StoreResult<u64>;
}

/// The friend graph's persistence: one [`Edge`] per pair, swapped atomically.
#[async_trait]
pub trait FriendStore: Send + Sync {
    /// The pair's edge (`Edge::default()` if they never interacted).
    async fn edge(&self, pair: UserPair) -> StoreResult<Edge>;
    /// Replaces the edge with `new` if it still equals `expected`, and updates both users'
    /// relation lists in the same atomic step. Returns false (changing nothing) if it did not.
    async fn swap_edge(&self, pair: UserPair, expected: Edge, new: Edge) -> StoreResult<bool>;
    /// Everyone `user` has a relation with (friends, requests both ways, users they block),
    /// sorted by peer id.
    async fn relations(&self, user: UserId) -> StoreResult<Vec<RelationEntry>>;

    /// The ids of `user`'s friends (the [`Relation::Friends`] entries of
    /// [`FriendStore::relations`]), sorted: who hears that `user` came online or went
    /// offline. Backends may answer it more cheaply than the whole list (Redis reads only
    /// each entry's relation).
    async fn friend_ids(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        Ok(self
            .relations(user)
            .await?
            .into_iter()
            .filter(|r| r.relation == Relation::Friends)
            .map(|r| r.peer)
            .collect())
    }
}

/// Conversation logs. The durable history is also the recovery log clients resume from.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Appends messages, returning one result per input, in order. Backends batch the whole
    /// slice (one transaction, one pipeline) so callers can coalesce concurrent sends.
    /// Each message is stored before its `Ok` is returned. `NotAMember` if the sender is not in
    /// the conversation; `NotFriends` (nothing written, not even for a repeated idempotency
    /// key) unless the two members are friends at the moment of the append: the check reads
    /// the pair's edge in the same atomic step as the write.
    async fn append(&self, batch: Vec<NewMessage>) -> Vec<StoreResult<Appended>>;
    /// A page of history (see [`HistoryQuery`]); `InvalidCursor` for bounds outside the log.
    async fn history(
        &self,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> StoreResult<HistoryPage>;
    /// Sequence of the newest message (0 if none).
    async fn last_seq(&self, conversation: &ConversationId) -> StoreResult<u64>;
    /// The user's conversations, most recently active first.
    async fn conversations(
        &self,
        user: UserId,
        limit: u32,
    ) -> StoreResult<Vec<ConversationSummary>>;
    /// Moves the user's read mark forward to `seq` (never back). `InvalidCursor` if `seq`
    /// is past the newest message; `NotAMember` if the user is not in the conversation;
    /// `NotFriends` (nothing changed) unless the two members are friends, checked atomically
    /// with the write like [`MessageStore::append`].
    async fn mark_read(
        &self,
        conversation: &ConversationId,
        user: UserId,
        seq: u64,
    ) -> StoreResult<ReadMark>;
}

/// Whether a store can write right now (see [`Store::health`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreHealth {
    /// Writes are expected to succeed.
    Ok,
    /// Writes fail right now but the store is recovering by itself (Redis unreachable: the
    /// circuit breaker is open; the embedded store's disk failed and it is reopening the file).
    Unavailable {
        /// What is wrong, for logs and `/healthz`.
        reason: String,
        /// When the next recovery attempt is due.
        retry_after_ms: u64,
    },
    /// The store gave up and will not recover in this process (e.g. the database file can no
    /// longer be opened). A server should exit non-zero so a supervisor restarts it.
    Failed {
        /// What is wrong.
        reason: String,
    },
}

impl StoreHealth {
    /// True for [`StoreHealth::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, StoreHealth::Ok)
    }
}

/// What one [`Store::prune`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Expired sessions deleted.
    pub sessions: u64,
    /// Idempotency records older than the dedupe window deleted.
    pub idempotency_records: u64,
}

/// How long an idempotency record deduplicates retries unless configured otherwise: 24 h.
pub const DEFAULT_DEDUPE_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// Everything a server needs, as one object.
#[async_trait]
pub trait Store:
    UserStore + SessionStore + FriendStore + MessageStore + IdentityStore + 'static
{
    /// Whether the store can write right now. Cheap (no I/O): it reports state the store
    /// already tracks, so `/healthz` can call it on every probe.
    fn health(&self) -> StoreHealth {
        StoreHealth::Ok
    }

    /// Durable commits (each one fsync) since the store was opened, for stores that group
    /// writes into commits of their own (the embedded store); `None` for the others. Cheap (no
    /// I/O). Compared with the number of messages stored it shows how well concurrent writes
    /// share commits (served as `zajel_store_commits_total`).
    fn commits_total(&self) -> Option<u64> {
        None
    }

    /// Deletes what has expired at `now`: sessions whose `expires_at <= now`, and idempotency
    /// records older than the store's dedupe window (recorded at the message's `sent_at`).
    /// Call it periodically ([`spawn_pruner`]). A repeat of a send within the window is always
    /// a `duplicate`; after the window it is a new message once a prune has run. Backends whose
    /// data expires by itself (Redis TTLs) may report zero.
    async fn prune(&self, now: Timestamp) -> StoreResult<Pruned> {
        let _ = now;
        Ok(Pruned::default())
    }

    /// What authenticating a connection reads: the session and its user (as
    /// [`SessionStore::session_with_user`]) and the user's friends (as
    /// [`FriendStore::friend_ids`], for the "came online" announcement). `None` exactly when
    /// `session_with_user` says `None`. The Redis store answers it in one round trip (one
    /// pipeline on the user's slot); the default makes the two calls.
    async fn session_with_friends(
        &self,
        user: UserId,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<(Session, User, Vec<UserId>)>> {
        let Some((session, found)) = self.session_with_user(user, token_hash, now).await? else {
            return Ok(None);
        };
        let friends = self.friend_ids(user).await?;
        Ok(Some((session, found, friends)))
    }
}

/// Runs [`Store::prune`] every `interval` with the system clock, for as long as the returned
/// task is not aborted (and the runtime runs). Failures are retried at the next tick.
#[cfg(any(feature = "embedded", feature = "redis"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "embedded", feature = "redis"))))]
pub fn spawn_pruner(
    store: std::sync::Arc<dyn Store>,
    interval: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            // A failed prune loses nothing: the next tick deletes the same records.
            let _ = store.prune(Timestamp::now()).await;
        }
    })
}

/// The inclusive sequence range a [`HistoryQuery`] selects. Sequences are gap-free, so a
/// backend only has to fetch `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqRange {
    /// First sequence to return (empty when `first > last`).
    pub first: u64,
    /// Last sequence to return.
    pub last: u64,
    /// More messages exist beyond the page in the paging direction.
    pub has_more: bool,
}

impl SeqRange {
    /// Whether the page is empty.
    pub fn is_empty(&self) -> bool {
        self.first > self.last
    }
}

/// Validates `query` against a log whose newest sequence is `last_seq` and plans the page.
pub fn plan_page(query: HistoryQuery, last_seq: u64) -> StoreResult<SeqRange> {
    let limit = u64::from(query.limit.max(1));
    if query.before == Some(0) {
        return Err(StoreError::InvalidCursor(
            "before must be at least 1".into(),
        ));
    }
    if let Some(b) = query.before
        && b > last_seq + 1
    {
        return Err(StoreError::InvalidCursor(format!(
            "before={b} is past the end of the conversation (last seq {last_seq})"
        )));
    }
    if let Some(a) = query.after
        && a > last_seq
    {
        return Err(StoreError::InvalidCursor(format!(
            "after={a} is past the end of the conversation (last seq {last_seq})"
        )));
    }
    // Highest sequence the query may return.
    let ceiling = query.before.map_or(last_seq, |b| b - 1).min(last_seq);
    if let (Some(a), Some(b)) = (query.after, query.before)
        && a >= b
    {
        return Err(StoreError::InvalidCursor(format!(
            "after={a} must be below before={b}"
        )));
    }
    Ok(match query.after {
        Some(a) => {
            let first = a + 1;
            let last = ceiling.min(a.saturating_add(limit));
            SeqRange {
                first,
                last,
                has_more: last < ceiling,
            }
        }
        None => {
            let first = ceiling.saturating_sub(limit - 1).max(1);
            SeqRange {
                first,
                last: ceiling,
                has_more: first > 1,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(before: Option<u64>, after: Option<u64>, limit: u32) -> HistoryQuery {
        HistoryQuery {
            before,
            after,
            limit,
        }
    }

    #[test]
    fn pages_backwards_and_forwards() {
        assert_eq!(
            plan_page(q(None, None, 3), 10),
            Ok(SeqRange {
                first: 8,
                last: 10,
                has_more: true
            })
        );
        assert_eq!(
            plan_page(q(Some(8), None, 3), 10),
            Ok(SeqRange {
                first: 5,
                last: 7,
                has_more: true
            })
        );
        assert_eq!(
            plan_page(q(Some(3), None, 3), 10),
            Ok(SeqRange {
                first: 1,
                last: 2,
                has_more: false
            })
        );
        assert_eq!(
            plan_page(q(None, Some(0), 3), 10),
            Ok(SeqRange {
                first: 1,
                last: 3,
                has_more: true
            })
        );
        assert_eq!(
            plan_page(q(None, Some(8), 3), 10),
            Ok(SeqRange {
                first: 9,
                last: 10,
                has_more: false
            })
        );
        assert_eq!(
            plan_page(q(Some(6), Some(2), 10), 10),
            Ok(SeqRange {
                first: 3,
                last: 5,
                has_more: false
            })
        );
        assert!(plan_page(q(None, Some(10), 3), 10).unwrap().is_empty());
        assert!(plan_page(q(None, None, 3), 0).unwrap().is_empty());
    }

    #[test]
    fn rejects_out_of_range_cursors() {
        assert!(plan_page(q(Some(0), None, 3), 10).is_err());
        assert!(plan_page(q(Some(12), None, 3), 10).is_err());
        assert!(plan_page(q(None, Some(11), 3), 10).is_err());
        assert!(plan_page(q(Some(4), Some(4), 3), 10).is_err());
        assert!(plan_page(q(Some(11), None, 3), 10).is_ok());
    }
}
