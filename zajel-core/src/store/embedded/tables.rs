//! Table layout, value encoding and the lookups shared by read and write transactions.
//!
//! User ids are stored as `u128` (the UUID read big-endian), so numeric key order equals
//! [`UserId`] order and a `(user, peer)` range scan comes back sorted by peer.

use super::super::{RelationEntry, StoreError, StoreResult};
use crate::friends::{Edge, UserPair};
use crate::ids::{ConversationId, Timestamp, UserId};
use crate::model::User;
use redb::{ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// user id → [`UserRow`] (JSON).
pub(super) const USERS: TableDefinition<u128, &[u8]> = TableDefinition::new("users");
/// canonical (lower-case) username → user id.
pub(super) const USERNAMES: TableDefinition<&str, u128> = TableDefinition::new("usernames");
/// External identity (provider, subject) → user id ([`crate::store::IdentityStore`]).
pub(super) const EXTERNALS: TableDefinition<(&str, &str), u128> = TableDefinition::new("externals");
/// (user id, provider, subject) → when it was linked (ms): each user's identity list.
pub(super) const USER_EXTERNALS: TableDefinition<(u128, &str, &str), i64> =
    TableDefinition::new("user_externals");
/// (user id, token hash) → [`crate::model::Session`] (JSON). Keyed by user first so
/// "log out everywhere" is one range delete.
pub(super) const SESSIONS: TableDefinition<(u128, &str), &[u8]> = TableDefinition::new("sessions");
/// (lo, hi) → [`Edge`] (JSON).
pub(super) const EDGES: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("edges");
/// (user, peer) → [`RelationEntry`] (JSON); derived from the edge in the same transaction.
pub(super) const RELATIONS: TableDefinition<(u128, u128), &[u8]> =
    TableDefinition::new("relations");
/// (user, conversation) → (): the user's conversations, written once, by the first message.
pub(super) const MEMBER_CONVERSATIONS: TableDefinition<(u128, &str), ()> =
    TableDefinition::new("member_conversations");
/// (expires_at ms, user id, token hash) → (): sessions by expiry, so pruning is a range scan.
pub(super) const SESSION_EXPIRY: TableDefinition<(u64, u128, &str), ()> =
    TableDefinition::new("session_expiry");
/// user id → when the user was last seen (ms): written at every connection's close, so a
/// fixed-size row of its own rather than a re-encoded [`UserRow`] (layout v4).
pub(super) const LAST_SEEN: TableDefinition<u128, i64> = TableDefinition::new("last_seen");
/// Named counters: [`ACTIVITY_COUNTER`], [`SCHEMA_VERSION`], [`HEALTH_PROBE`].
pub(super) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// Monotonic counter ordering conversation activity (ties broken by it, not by clocks).
pub(super) const ACTIVITY_COUNTER: &str = "activity";
/// Key of the layout version in [`COUNTERS`].
pub(super) const SCHEMA_VERSION: &str = "schema_version";
/// Key in [`COUNTERS`] the writer bumps to prove it can commit again after a failure.
pub(super) const HEALTH_PROBE: &str = "health_probe";
/// The layout this code reads and writes. Version 2 added the expiry indexes; version 3 put a
/// conversation's per-message state into one row and bucketed the idempotency records; version
/// 4 put each conversation's rows into one key range of one table (`conv_rows.rs`) and
/// `last_seen` into a table of its own. Older files are migrated when opened (`migrate.rs`).
pub(super) const CURRENT_SCHEMA: u64 = 4;

/// Index of `user` in a conversation's (lower, higher) participants (into
/// `ConvState::marks`), `None` for a non-member.
pub(super) fn member_side((lo, hi): (UserId, UserId), user: UserId) -> Option<usize> {
    if user == lo {
        Some(0)
    } else if user == hi {
        Some(1)
    } else {
        None
    }
}

/// Start of the idempotency bucket (one `window` wide) that `at` falls in.
pub(super) fn bucket_of(at: Timestamp, window_ms: u64) -> u64 {
    let w = window_ms.max(1);
    ms(at) / w * w
}

/// Everything stored per account.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct UserRow {
    pub user: User,
    pub password_hash: Option<String>,
    /// Only in rows written before layout v4 (which moved it to [`LAST_SEEN`]); the
    /// migration moves it out, so it is never written again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
}

/// Maps any redb error to [`StoreError::Backend`].
pub(super) fn be(e: impl std::fmt::Display) -> StoreError {
    StoreError::backend(e)
}

/// A timestamp as an index key (times before the epoch sort first, as 0).
pub(super) fn ms(t: Timestamp) -> u64 {
    t.0.max(0) as u64
}

pub(super) fn uid(u: UserId) -> u128 {
    u.0.as_u128()
}

pub(super) fn from_uid(u: u128) -> UserId {
    UserId(uuid::Uuid::from_u128(u))
}

pub(super) fn encode<T: Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(be)
}

pub(super) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn parse_conversation(s: &str) -> StoreResult<ConversationId> {
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("conversation id {s:?}: {e}")))
}

// Lookups generic over `ReadableTable`, so read transactions and the writer's validation
// phase decode exactly the same way.

pub(super) fn user_row(
    t: &impl ReadableTable<u128, &'static [u8]>,
    id: UserId,
) -> StoreResult<Option<UserRow>> {
    match t.get(uid(id)).map_err(be)? {
        Some(v) => decode("user", v.value()).map(Some),
        None => Ok(None),
    }
}

/// The user of a row, decoded for a lookup by id: the password hash and last seen are skipped
/// (scanned, not copied) and the stored id is not parsed again (the row was found by it), so a
/// connection's authentication decodes only what it needs.
pub(super) fn user_profile(
    t: &impl ReadableTable<u128, &'static [u8]>,
    id: UserId,
) -> StoreResult<Option<User>> {
    /// [`UserRow`]'s `user` field, which is all that is read.
    #[derive(Deserialize)]
    struct Row {
        user: Profile,
    }
    /// [`User`] without its id.
    #[derive(Deserialize)]
    struct Profile {
        username: String,
        created_at: Timestamp,
    }
    match t.get(uid(id)).map_err(be)? {
        Some(v) => {
            let row: Row = decode("user", v.value())?;
            Ok(Some(User {
                id,
                username: row.user.username,
                created_at: row.user.created_at,
            }))
        }
        None => Ok(None),
    }
}

pub(super) fn edge(
    t: &impl ReadableTable<(u128, u128), &'static [u8]>,
    pair: UserPair,
) -> StoreResult<Edge> {
    match t.get((uid(pair.lo), uid(pair.hi))).map_err(be)? {
        Some(v) => decode("edge", v.value()),
        None => Ok(Edge::default()),
    }
}

pub(super) fn relation_entries(
    t: &impl ReadableTable<(u128, u128), &'static [u8]>,
    user: UserId,
) -> StoreResult<Vec<RelationEntry>> {
    Ok(relation_entries_upto(t, user, usize::MAX)?.unwrap_or_default())
}

/// `user`'s relations if there are at most `limit` of them (`None` when there are more:
/// then no more than `limit + 1` were read).
pub(super) fn relation_entries_upto(
    t: &impl ReadableTable<(u128, u128), &'static [u8]>,
    user: UserId,
    limit: usize,
) -> StoreResult<Option<Vec<RelationEntry>>> {
    let u = uid(user);
    let mut out = Vec::new();
    for entry in t.range((u, 0u128)..=(u, u128::MAX)).map_err(be)? {
        if out.len() == limit {
            return Ok(None);
        }
        let (_, v) = entry.map_err(be)?;
        out.push(decode("relation", v.value())?);
    }
    Ok(Some(out))
}
