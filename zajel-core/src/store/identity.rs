//! External identities: the sign-in methods that are not a Zajel password.
//!
//! An [`ExternalIdentity`] is a (provider, subject) pair:
//! * an OpenID Connect identity is (issuer URL, `sub` claim): the only pair the OIDC spec
//!   promises to be stable and unique, so accounts are never matched by e-mail;
//! * an embedding application's user is (`app:<app name>`, the app's own user id), so an app
//!   that mounts the engine can map its users onto Zajel users.
//!
//! [`IdentityStore`] links such pairs to users. A pair belongs to at most one user; a user may
//! have any number of pairs. Creating a user for a first sign-in and linking its identity is
//! one atomic step ([`IdentityStore::create_external_user`]), so a failed or raced sign-in
//! leaves no half-created account behind.

use super::StoreResult;
use crate::ids::{Timestamp, UserId};
use crate::limits::Username;
use crate::model::User;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Prefix of the provider string of an application identity.
pub const APP_PROVIDER_PREFIX: &str = "app:";

/// Longest accepted provider string or subject, in bytes (OIDC caps `sub` at 255 ASCII
/// characters; issuers are URLs).
pub const EXTERNAL_ID_MAX: usize = 255;

/// A sign-in identity held by someone other than Zajel.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExternalIdentity {
    /// The OpenID Connect issuer URL, or `app:<name>` for an embedding application.
    pub provider: String,
    /// The provider's stable id of the person (`sub`, or the app's user id).
    pub subject: String,
}

/// What an [`ExternalIdentity`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityKind {
    /// An OpenID Connect identity (provider = issuer URL).
    Oidc,
    /// An embedding application's user (provider = `app:<name>`).
    App,
}

/// Why an identity's parts were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid external identity: {0}")]
pub struct InvalidIdentity(pub &'static str);

fn check(part: &str, what: &'static str) -> Result<(), InvalidIdentity> {
    if part.is_empty() || part.len() > EXTERNAL_ID_MAX || part.chars().any(char::is_control) {
        return Err(InvalidIdentity(what));
    }
    Ok(())
}

impl ExternalIdentity {
    /// An OpenID Connect identity: the issuer URL and the `sub` claim.
    pub fn oidc(issuer: &str, subject: &str) -> Result<Self, InvalidIdentity> {
        check(
            issuer,
            "issuer must be 1-255 bytes without control characters",
        )?;
        check(
            subject,
            "subject must be 1-255 bytes without control characters",
        )?;
        if issuer.starts_with(APP_PROVIDER_PREFIX) {
            return Err(InvalidIdentity("an issuer cannot start with \"app:\""));
        }
        Ok(Self {
            provider: issuer.to_owned(),
            subject: subject.to_owned(),
        })
    }

    /// An embedding application's user: the app's name and its own id for the user.
    pub fn app(app: &str, user_id: &str) -> Result<Self, InvalidIdentity> {
        check(
            app,
            "app name must be 1-250 bytes without control characters",
        )?;
        check(
            user_id,
            "app user id must be 1-255 bytes without control characters",
        )?;
        let provider = format!("{APP_PROVIDER_PREFIX}{app}");
        check(
            &provider,
            "app name must be 1-250 bytes without control characters",
        )?;
        Ok(Self {
            provider,
            subject: user_id.to_owned(),
        })
    }

    /// Whether this is an OpenID Connect or an application identity.
    pub fn kind(&self) -> IdentityKind {
        if self.provider.starts_with(APP_PROVIDER_PREFIX) {
            IdentityKind::App
        } else {
            IdentityKind::Oidc
        }
    }

    /// A single string naming the pair unambiguously (length-prefixed provider), for
    /// backends that key by one string.
    pub fn key(&self) -> String {
        format!("{}:{}{}", self.provider.len(), self.provider, self.subject)
    }
}

/// Longest [`TicketKey`], in bytes.
pub const TICKET_KEY_MAX: usize = 128;

/// The name of a one-time ticket ([`IdentityStore::put_ticket`]): 1-128 bytes of ASCII
/// letters, digits and `_ - . :`, so every backend can use it in a key as it is.
///
/// ```
/// use zajel_core::store::TicketKey;
/// assert!(TicketKey::new("oidc:3f2a").is_ok());
/// assert!(TicketKey::new("").is_err());
/// assert!(TicketKey::new("with space").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TicketKey(String);

/// Why a [`TicketKey`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a ticket key is 1-128 bytes of ASCII letters, digits and _ - . :")]
pub struct InvalidTicketKey;

impl TicketKey {
    /// Checks `key`.
    pub fn new(key: &str) -> Result<Self, InvalidTicketKey> {
        let ok = !key.is_empty()
            && key.len() <= TICKET_KEY_MAX
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if ok {
            Ok(Self(key.to_owned()))
        } else {
            Err(InvalidTicketKey)
        }
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An identity linked to a user, with when it was linked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedIdentity {
    /// The identity.
    pub identity: ExternalIdentity,
    /// When it was linked.
    pub linked_at: Timestamp,
}

/// The outcome of [`IdentityStore::unlink_external`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unlink {
    /// The identity was linked to the user and is not any more.
    Removed,
    /// The identity is not linked to this user (unknown, or linked to someone else): nothing changed.
    NotLinked,
    /// Refused: it is the user's last way to sign in (no password, no other identity).
    LastSignInMethod,
}

/// The result of [`IdentityStore::create_external_user`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalUser {
    /// The user the identity is linked to.
    pub user: User,
    /// True when this call created the user; false when the identity was already linked.
    pub created: bool,
}

/// Links external identities to users. Every change is atomic: a refused call changes nothing.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// The user `identity` is linked to; if none, creates a password-less user named
    /// `username` and links `identity` to it, in one atomic step. `UsernameTaken` (nothing
    /// created) if the name belongs to someone else, so callers can retry with another name.
    async fn create_external_user(
        &self,
        username: &Username,
        identity: &ExternalIdentity,
        at: Timestamp,
    ) -> StoreResult<ExternalUser>;
    /// Links `identity` to an existing `user`. Idempotent for the same user; `IdentityTaken`
    /// if it is linked to another user; `UserNotFound` for unknown users.
    async fn link_external(
        &self,
        identity: &ExternalIdentity,
        user: UserId,
        at: Timestamp,
    ) -> StoreResult<()>;
    /// The user `identity` is linked to.
    async fn external_user(&self, identity: &ExternalIdentity) -> StoreResult<Option<UserId>>;
    /// Every identity linked to `user`, sorted by (provider, subject).
    async fn external_identities(&self, user: UserId) -> StoreResult<Vec<LinkedIdentity>>;
    /// Unlinks `identity` from `user`. Refuses ([`Unlink::LastSignInMethod`]) when the user
    /// has no password and this is their only identity; the check and the removal are one
    /// atomic step, so two racing unlinks cannot remove both of the last two identities.
    async fn unlink_external(
        &self,
        identity: &ExternalIdentity,
        user: UserId,
    ) -> StoreResult<Unlink>;
    /// Keeps `value` under `key` for `ttl` as a one-time ticket every node on this store can
    /// take: what a sign-in in progress needs when its callback may reach another node than
    /// the one that started it (an OpenID Connect flow's PKCE verifier and nonce). A second
    /// put under the same key replaces the first. Tickets are short-lived state, not
    /// history: the in-process stores (memory, embedded) keep them in memory, so they do not
    /// survive a restart (a sign-in in progress is started again).
    async fn put_ticket(&self, key: &TicketKey, value: &[u8], ttl: Duration) -> StoreResult<()>;
    /// Takes the ticket under `key`: one caller gets it, on any node, and it is gone;
    /// `None` when there is none, it was taken, or its `ttl` has passed.
    async fn take_ticket(&self, key: &TicketKey) -> StoreResult<Option<Vec<u8>>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_validate_and_never_collide() {
        let a = ExternalIdentity::oidc("https://idp", "42").unwrap();
        assert_eq!(a.kind(), IdentityKind::Oidc);
        let b = ExternalIdentity::app("shop", "42").unwrap();
        assert_eq!(b.kind(), IdentityKind::App);
        assert_eq!(b.provider, "app:shop");
        assert!(ExternalIdentity::oidc("app:shop", "42").is_err());
        assert!(ExternalIdentity::oidc("", "42").is_err());
        assert!(ExternalIdentity::oidc("https://idp", "").is_err());
        assert!(ExternalIdentity::oidc("https://idp", "a\nb").is_err());
        assert!(ExternalIdentity::app("shop", &"x".repeat(256)).is_err());
        // The key is unambiguous even when provider and subject share characters.
        let x = ExternalIdentity::oidc("https://a", "b:c").unwrap();
        let y = ExternalIdentity::oidc("https://a:b", "c").unwrap();
        assert_ne!(x.key(), y.key());
    }

    #[test]
    fn ticket_keys_are_plain_bounded_ascii() {
        assert!(TicketKey::new("oidc:AZaz09_-.").is_ok());
        assert!(TicketKey::new(&"k".repeat(TICKET_KEY_MAX)).is_ok());
        for bad in [
            "",
            "a b",
            "a{b}",
            "a\nb",
            "é",
            &"k".repeat(TICKET_KEY_MAX + 1),
        ] {
            assert_eq!(TicketKey::new(bad), Err(InvalidTicketKey), "{bad:?}");
        }
    }
}
