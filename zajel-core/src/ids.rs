//! Identifiers and timestamps shared by the protocol and the stores.
//!
//! * [`UserId`] and [`MessageId`] are UUIDs (random v4 for users, time-ordered v7 for
//!   messages) so any node can mint them without coordination.
//! * [`ConversationId`] is derived, not minted: a direct conversation between two users is
//!   `dm.<lower-uuid>.<higher-uuid>`, so both clients can compute it offline and a store can
//!   use it as a Redis Cluster hash tag. Group ids (`g.<uuid>`) are reserved for later.
//! * [`Timestamp`] is milliseconds since the Unix epoch (fits a JSON number exactly).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A user's stable id. Serialized as the lower-case hyphenated UUID string, the only form
/// it is parsed from (see [`parse_uuid`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

/// Why a string is not an id: ids are lower-case hyphenated UUIDs
/// (`1f0c5a52-8d3b-4a7e-9c61-2b7f4e0a9d11`), nothing else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id: expected a lower-case hyphenated UUID")]
pub struct InvalidId;

/// Parses the one accepted spelling of an id. The `uuid` crate also reads upper case, the
/// simple (no hyphens), braced and `urn:uuid:` forms; ids are compared and stored as strings
/// by every SDK and store, so accepting other spellings would make one id look like several.
///
/// ```
/// use zajel_core::ids::parse_uuid;
/// let id = "1f0c5a52-8d3b-4a7e-9c61-2b7f4e0a9d11";
/// assert!(parse_uuid(id).is_ok());
/// assert!(parse_uuid(&id.to_uppercase()).is_err());
/// assert!(parse_uuid(&id.replace('-', "")).is_err());
/// ```
pub fn parse_uuid(s: &str) -> Result<Uuid, InvalidId> {
    // The one spelling, checked on the bytes (every frame carries ids: no re-encoding to
    // compare): 36 characters, hyphens at 8, 13, 18 and 23, lower-case hex elsewhere.
    let canonical = s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
    if !canonical {
        return Err(InvalidId);
    }
    Uuid::try_parse(s).map_err(|_| InvalidId)
}

/// Deserializes an id strictly from text formats (JSON); binary formats carry the raw UUID.
fn deserialize_uuid<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
    if d.is_human_readable() {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        parse_uuid(&s).map_err(serde::de::Error::custom)
    } else {
        Uuid::deserialize(d)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_uuid(d).map(Self)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_uuid(d).map(Self)
    }
}

impl UserId {
    /// The sender of system messages (the nil UUID, `00000000-0000-0000-0000-000000000000`):
    /// notices an embedding app posts into a conversation with
    /// `Engine::send_system`, which no person wrote. No account can hold it (stores mint
    /// random v4 ids, which are never nil), so nobody can sign in as it, befriend it or send
    /// as it; it never has a read mark. A message from it is [`MessageKind::System`]
    /// (`kind: "system"` on the wire).
    ///
    /// [`MessageKind::System`]: crate::MessageKind::System
    ///
    /// ```
    /// use zajel_core::UserId;
    /// assert_eq!(UserId::SYSTEM.to_string(), "00000000-0000-0000-0000-000000000000");
    /// assert!(UserId::SYSTEM.is_system());
    /// ```
    pub const SYSTEM: UserId = UserId(Uuid::nil());

    /// Whether this is [`UserId::SYSTEM`].
    pub fn is_system(self) -> bool {
        self == Self::SYSTEM
    }

    /// A new random id.
    #[cfg(feature = "ids")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ids")))]
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for UserId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_uuid(s).map(Self)
    }
}

/// A message's server-assigned id (UUID v7: sortable by creation time). Parsed like
/// [`UserId`]: lower-case hyphenated only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MessageId(pub Uuid);

impl MessageId {
    /// A new time-ordered id.
    #[cfg(feature = "ids")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ids")))]
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Milliseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time (not available on wasm; the client gets times from the server).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn now() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self(ms)
    }

    /// This time plus `ms` milliseconds (saturating).
    pub fn plus_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}

/// A conversation's id. Today only direct conversations exist: `dm.<a>.<b>` with `a < b`.
///
/// Parsing validates the shape, so an id that reaches a store is always well formed.
///
/// ```
/// use zajel_core::{ConversationId, UserId};
/// let a: UserId = "00000000-0000-4000-8000-000000000001".parse().unwrap();
/// let b: UserId = "00000000-0000-4000-8000-000000000002".parse().unwrap();
/// let c = ConversationId::direct(b, a);
/// assert_eq!(c, ConversationId::direct(a, b));
/// assert_eq!(c.participants(), Some((a, b)));
/// assert!("dm.nope".parse::<ConversationId>().is_err());
/// ```
#[derive(Clone, Debug)]
pub struct ConversationId {
    text: String,
    /// The two members, lower first: parsed once when the id is made (every message asks
    /// for them several times: the peer, the membership check, the stores).
    members: (UserId, UserId),
}

// Equality, order and hashing follow the text; `members` is a function of it. (The order of
// two canonical ids' texts is also the order of their members: same prefix, fixed-width
// lower-case hex.)
impl PartialEq for ConversationId {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for ConversationId {}

impl PartialOrd for ConversationId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ConversationId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl std::hash::Hash for ConversationId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl Serialize for ConversationId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ConversationId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::try_from(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Why a string is not a [`ConversationId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid conversation id: expected dm.<user-id>.<user-id> with distinct ids in ascending order"
)]
pub struct InvalidConversationId;

impl ConversationId {
    /// The direct conversation between two users (order of the arguments does not matter).
    pub fn direct(a: UserId, b: UserId) -> Self {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        Self {
            text: format!("dm.{lo}.{hi}"),
            members: (lo, hi),
        }
    }

    /// The two participants of a direct conversation, lower id first.
    pub fn participants(&self) -> Option<(UserId, UserId)> {
        Some(self.members)
    }

    /// Whether `user` takes part in this conversation.
    pub fn has_member(&self, user: UserId) -> bool {
        matches!(self.participants(), Some((a, b)) if a == user || b == user)
    }

    /// For a direct conversation, the participant that is not `me`.
    pub fn peer_of(&self, me: UserId) -> Option<UserId> {
        let (a, b) = self.participants()?;
        if a == me {
            Some(b)
        } else if b == me {
            Some(a)
        } else {
            None
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl ConversationId {
    /// Checks `s` is `dm.<lo>.<hi>`: two ids in their one spelling, distinct, ascending. Such
    /// a string is already what [`ConversationId::direct`] would write, so it is kept as is.
    /// Returns the two members.
    fn check(s: &str) -> Result<(UserId, UserId), InvalidConversationId> {
        let rest = s.strip_prefix("dm.").ok_or(InvalidConversationId)?;
        let (a, b) = rest.split_once('.').ok_or(InvalidConversationId)?;
        let a: UserId = a.parse().map_err(|_| InvalidConversationId)?;
        let b: UserId = b.parse().map_err(|_| InvalidConversationId)?;
        if a >= b {
            return Err(InvalidConversationId);
        }
        Ok((a, b))
    }
}

impl FromStr for ConversationId {
    type Err = InvalidConversationId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let members = Self::check(s)?;
        Ok(Self {
            text: s.to_owned(),
            members,
        })
    }
}

impl TryFrom<String> for ConversationId {
    type Error = InvalidConversationId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let members = Self::check(&s)?;
        Ok(Self { text: s, members })
    }
}

impl From<ConversationId> for String {
    fn from(c: ConversationId) -> String {
        c.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_validate() {
        let a: UserId = "1f0c5a52-8d3b-4a7e-9c61-2b7f4e0a9d11".parse().unwrap();
        let b: UserId = "6a4e2c90-3b1d-4f8e-a5c7-90d2e1f3b422".parse().unwrap();
        let c = ConversationId::direct(a, b);
        assert_eq!(c.as_str(), format!("dm.{a}.{b}"));
        assert_eq!(c.peer_of(a), Some(b));
        assert_eq!(c.peer_of(UserId(Uuid::nil())), None);
        // Parsed (from text or JSON), the id is the same value `direct` builds.
        assert_eq!(c.as_str().parse::<ConversationId>().unwrap(), c);
        assert_eq!(ConversationId::try_from(c.to_string()).unwrap(), c);
        assert!(
            "dm.00000000-0000-0000-0000-00000000000g.x"
                .parse::<ConversationId>()
                .is_err()
        );
        // One spelling only: other UUID forms are refused, not canonicalized.
        let upper = a.to_string().to_uppercase();
        let simple = a.to_string().replace('-', "");
        for bad in [
            format!("dm.{upper}.{b}"),
            format!("dm.{simple}.{b}"),
            format!("dm.{{{a}}}.{b}"),
            format!("dm.urn:uuid:{a}.{b}"),
            format!("dm.{b}.{a}"),
            format!("dm.{a}.{a}"),
            format!("dm.{a}"),
            format!("g.{a}.{b}"),
            format!("dm.{a}.{b}.x"),
            String::new(),
        ] {
            assert!(bad.parse::<ConversationId>().is_err(), "{bad:?} accepted");
        }
        assert!(serde_json::from_str::<ConversationId>("\"dm.nope\"").is_err());
        for bad in [
            upper,
            simple,
            format!("{{{a}}}"),
            format!("urn:uuid:{a}"),
            format!(" {a}"),
        ] {
            assert!(bad.parse::<UserId>().is_err(), "{bad:?} accepted");
            let json = serde_json::to_string(&bad).unwrap();
            assert!(
                serde_json::from_str::<UserId>(&json).is_err(),
                "{bad:?} accepted"
            );
            assert!(
                serde_json::from_str::<MessageId>(&json).is_err(),
                "{bad:?} accepted"
            );
        }
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<UserId>(&json).unwrap(), a);
        assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{c}\""));
    }

    /// The members are parsed once, when the id is made: every way of making one gives the
    /// same members, and equality, order and hashing follow the text alone.
    #[test]
    fn members_are_kept_from_every_constructor() {
        use std::hash::BuildHasher;
        let a: UserId = "1f0c5a52-8d3b-4a7e-9c61-2b7f4e0a9d11".parse().unwrap();
        let b: UserId = "6a4e2c90-3b1d-4f8e-a5c7-90d2e1f3b422".parse().unwrap();
        let text = format!("dm.{a}.{b}");
        let json = serde_json::to_string(&text).unwrap();
        let made = [
            ConversationId::direct(b, a),
            text.parse().unwrap(),
            ConversationId::try_from(text.clone()).unwrap(),
            serde_json::from_str(&json).unwrap(),
        ];
        let hasher = std::hash::RandomState::new();
        for c in &made {
            assert_eq!(c.participants(), Some((a, b)));
            assert_eq!((c.peer_of(a), c.peer_of(b)), (Some(b), Some(a)));
            assert_eq!(c, &made[0]);
            assert_eq!(hasher.hash_one(c), hasher.hash_one(&made[0]));
        }
        // Text order is member order.
        let z: UserId = "ffffffff-0000-4000-8000-000000000000".parse().unwrap();
        assert!(ConversationId::direct(a, b) < ConversationId::direct(a, z));
        assert!(ConversationId::direct(a, z) < ConversationId::direct(b, z));
    }
}
