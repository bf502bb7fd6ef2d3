//! Hard limits of the protocol and the validated input types that enforce them.
//!
//! A value of [`Username`], [`Body`] or [`IdempotencyKey`] is valid by construction, so a store
//! never sees an over-long username or body. Servers may configure *lower* limits (for example
//! a smaller body size); these constants are the ceilings every store and SDK can rely on.

use crate::error::ValidationError;
use serde::{Deserialize, Serialize};

/// Shortest username, in characters.
pub const USERNAME_MIN: usize = 3;
/// Longest username, in characters.
pub const USERNAME_MAX: usize = 32;
/// Largest message body in bytes (UTF-8). Servers may configure a lower limit.
pub const BODY_MAX_BYTES: usize = 16 * 1024;
/// Longest idempotency key.
pub const IDEMPOTENCY_KEY_MAX: usize = 64;
/// Longest request id.
pub const REQUEST_ID_MAX: usize = 64;
/// Largest history or conversation-list page.
pub const PAGE_MAX: u32 = 200;
/// Page size used when a request gives none.
pub const PAGE_DEFAULT: u32 = 50;

/// A validated username. Display form keeps the user's casing; uniqueness is by
/// [`Username::canonical`] (ASCII lower case), so `Alice` and `alice` are the same account.
///
/// ```
/// use zajel_core::Username;
/// assert_eq!(Username::parse("Alice_1").unwrap().canonical(), "alice_1");
/// assert!(Username::parse("a").is_err());
/// assert!(Username::parse("_alice").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    /// Validates `s` as a username.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let ok_len = (USERNAME_MIN..=USERNAME_MAX).contains(&s.len());
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        let ok_start = s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        if ok_len && ok_chars && ok_start {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::InvalidUsername)
        }
    }

    /// The name as the user typed it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lower-case form used for uniqueness and lookups.
    pub fn canonical(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl TryFrom<String> for Username {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Username> for String {
    fn from(u: Username) -> String {
        u.0
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated message body: not empty (after trimming whitespace) and at most `max` bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Body(String);

impl Body {
    /// Validates against the protocol ceiling [`BODY_MAX_BYTES`].
    pub fn parse(s: impl Into<String>) -> Result<Self, ValidationError> {
        Self::parse_with_max(s, BODY_MAX_BYTES)
    }

    /// Validates against a (lower) configured limit; never above [`BODY_MAX_BYTES`].
    pub fn parse_with_max(s: impl Into<String>, max: usize) -> Result<Self, ValidationError> {
        let s = s.into();
        let max = max.min(BODY_MAX_BYTES);
        if s.trim().is_empty() {
            Err(ValidationError::EmptyBody)
        } else if s.len() > max {
            Err(ValidationError::BodyTooLong { len: s.len(), max })
        } else {
            Ok(Self(s))
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client-chosen key that makes a send idempotent: the same sender sending the same key into
/// the same conversation stores one message, and every retry gets that message back.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates `s`: 1 to [`IDEMPOTENCY_KEY_MAX`] printable ASCII characters.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if !s.is_empty()
            && s.len() <= IDEMPOTENCY_KEY_MAX
            && s.bytes().all(|b| b.is_ascii_graphic())
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::InvalidIdempotencyKey)
        }
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<IdempotencyKey> for String {
    fn from(k: IdempotencyKey) -> String {
        k.0
    }
}

/// Checks a requested page size, applying [`PAGE_DEFAULT`] when absent.
pub fn page_limit(limit: Option<u32>) -> Result<u32, ValidationError> {
    match limit {
        None => Ok(PAGE_DEFAULT),
        Some(n) if (1..=PAGE_MAX).contains(&n) => Ok(n),
        Some(_) => Err(ValidationError::InvalidLimit { max: PAGE_MAX }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(Username::parse("abc").is_ok());
        assert!(Username::parse(&"a".repeat(USERNAME_MAX)).is_ok());
        assert_eq!(
            Username::parse(&"a".repeat(USERNAME_MAX + 1)),
            Err(ValidationError::InvalidUsername)
        );
        for bad in ["ab", "", "a b", "-abc", "ålice", "bob!", "a\u{0}b"] {
            assert!(Username::parse(bad).is_err(), "{bad:?} accepted");
        }
        // Deserializing validates too.
        assert!(serde_json::from_str::<Username>("\"x\"").is_err());
    }

    #[test]
    fn bodies() {
        assert!(Body::parse("hi").is_ok());
        assert_eq!(Body::parse(" \n\t"), Err(ValidationError::EmptyBody));
        let max = "é".repeat(BODY_MAX_BYTES / 2);
        assert!(Body::parse(max.clone()).is_ok());
        assert_eq!(
            Body::parse(format!("{max}x")),
            Err(ValidationError::BodyTooLong {
                len: BODY_MAX_BYTES + 1,
                max: BODY_MAX_BYTES
            })
        );
        // A configured limit above the ceiling is capped.
        assert!(Body::parse_with_max("x".repeat(BODY_MAX_BYTES + 1), usize::MAX).is_err());
    }

    #[test]
    fn idempotency_keys_and_limits() {
        assert!(IdempotencyKey::parse("k-1").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(IDEMPOTENCY_KEY_MAX)).is_ok());
        for bad in ["", "with space", "tab\t", "ключ"] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(IDEMPOTENCY_KEY_MAX + 1)).is_err());
        assert_eq!(page_limit(None), Ok(PAGE_DEFAULT));
        assert_eq!(page_limit(Some(PAGE_MAX)), Ok(PAGE_MAX));
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(PAGE_MAX + 1)).is_err());
    }
}
