//! The server-side API an embedding application calls on [`Engine`]: users for its own user
//! ids, sessions, friendships. (HTTP and WebSocket clients reach the same operations through
//! the router.)

use super::IdentityError;
use super::username::{base_name, candidate};
use crate::chat::Actor;
use crate::engine::Engine;
use axum::http::StatusCode;
use axum::response::Response;
use zajel_core::{
    ErrorCode, ExternalIdentity, FriendOp, StoreError, Timestamp, User, UserId,
    store::{ExternalUser, LinkedIdentity, Unlink},
};

/// How many usernames a first sign-in tries before giving up (the later ones carry a random
/// suffix, so reaching the limit means the store is failing, not that names ran out).
const NAME_ATTEMPTS: u32 = 12;

/// A session issued by [`Engine::issue_session`]: the same token a password login returns.
#[derive(Clone, Debug)]
pub struct SessionGrant {
    /// The signed-in user.
    pub user: User,
    /// The bearer token (`Authorization: Bearer …`, the WebSocket `auth` frame, or the cookie).
    pub token: String,
    /// When it stops being valid.
    pub expires_at: Timestamp,
}

impl SessionGrant {
    /// The login answer: JSON `{user, token, expires_at}` with the session cookie set, exactly
    /// like `POST /api/login`.
    pub fn into_response(self, engine: &Engine, status: StatusCode) -> Response {
        crate::http::session_response(
            engine,
            status,
            self.user,
            crate::sessions::IssuedSession {
                token: self.token,
                expires_at: self.expires_at,
            },
        )
    }
}

impl Engine {
    /// The Zajel user for an embedding app's own user id, created on first sight (password-less,
    /// named after `username_hint` made valid and unique) and linked as
    /// (`app:<app>`, `app_user_id`). Racing first calls create one user.
    ///
    /// ```no_run
    /// # async fn demo(engine: zajel_server::Engine) -> Result<(), zajel_server::identity::IdentityError> {
    /// let alice = engine.app_user("shop", "customer-42", Some("alice")).await?;
    /// let session = engine.issue_session(alice.id).await?;
    /// // hand `session.token` to the app's client for the WebSocket `auth` frame
    /// # Ok(()) }
    /// ```
    pub async fn app_user(
        &self,
        app: &str,
        app_user_id: &str,
        username_hint: Option<&str>,
    ) -> Result<User, IdentityError> {
        let identity = ExternalIdentity::app(app, app_user_id)
            .map_err(|e| IdentityError::BadRequest(e.to_string()))?;
        Ok(self
            .user_for_identity(&identity, &[username_hint])
            .await?
            .user)
    }

    /// The user linked to `identity`, or a new password-less one linked to it (named from the
    /// first usable of `hints`). One atomic store step per attempt: never half-created.
    pub async fn user_for_identity(
        &self,
        identity: &ExternalIdentity,
        hints: &[Option<&str>],
    ) -> Result<ExternalUser, IdentityError> {
        let store = &self.store();
        if let Some(id) = store
            .external_user(identity)
            .await
            .map_err(IdentityError::store)?
            && let Some(user) = store.user(id).await.map_err(IdentityError::store)?
        {
            return Ok(ExternalUser {
                user,
                created: false,
            });
        }
        let base = base_name(hints);
        for n in 0..NAME_ATTEMPTS {
            let Some(name) = candidate(&base, n) else {
                continue;
            };
            match store
                .create_external_user(&name, identity, Timestamp::now())
                .await
            {
                Ok(u) => {
                    if u.created {
                        tracing::info!(user = %u.user.id, username = %u.user.username,
                            provider = %identity.provider, "account created from external identity");
                        self.emit(|| crate::events::EngineEvent::UserCreated {
                            user: u.user.clone(),
                        });
                    }
                    return Ok(u);
                }
                Err(StoreError::UsernameTaken) => continue,
                Err(e) => return Err(IdentityError::store(e)),
            }
        }
        Err(IdentityError::internal(
            "no free username after several attempts",
        ))
    }

    /// Changes `user`'s username to `new`, with registration's rules: valid characters and
    /// length, unique ignoring case (`username_taken` otherwise, and nothing changes); a
    /// change of case only is allowed. The old name is free again at once. Friends see the new
    /// name in their next friends list or sync (their entries are looked up by id); the
    /// engine's subscribers get [`EngineEvent::UserRenamed`](crate::events::EngineEvent).
    ///
    /// ```no_run
    /// # async fn demo(engine: zajel_server::Engine, id: zajel_core::UserId) -> Result<(), zajel_server::EngineError> {
    /// let user = engine.rename_user(id, "alice_b").await?;
    /// assert_eq!(user.username, "alice_b");
    /// # Ok(()) }
    /// ```
    pub async fn rename_user(&self, user: UserId, new: &str) -> Result<User, crate::EngineError> {
        let name = zajel_core::Username::parse(new)?;
        let store = self.store();
        let previous = store
            .user(user)
            .await?
            .ok_or_else(|| crate::EngineError::new(ErrorCode::UserNotFound, "no such user"))?
            .username;
        let renamed = match store.rename_user(user, &name).await {
            Ok(u) => u,
            Err(StoreError::UsernameTaken) => {
                return Err(crate::EngineError::new(
                    ErrorCode::UsernameTaken,
                    "username is taken",
                ));
            }
            Err(StoreError::UserNotFound) => {
                return Err(crate::EngineError::new(
                    ErrorCode::UserNotFound,
                    "no such user",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(user = %user, from = %previous, to = %renamed.username, "renamed");
        let event_user = renamed.clone();
        self.emit(move || crate::events::EngineEvent::UserRenamed {
            user: event_user,
            previous,
        });
        Ok(renamed)
    }

    /// Issues a session for `user`: the same token and expiry as a password login.
    pub async fn issue_session(&self, user: UserId) -> Result<SessionGrant, IdentityError> {
        let user = self
            .inner
            .store
            .user(user)
            .await
            .map_err(IdentityError::store)?
            .ok_or(IdentityError::Unauthenticated)?;
        let session = self.sessions().issue(user.id).await?;
        Ok(SessionGrant {
            user,
            token: session.token,
            expires_at: session.expires_at,
        })
    }

    /// Revokes every session of `user` and closes their WebSockets on this node with 4001
    /// ("log out everywhere"). Returns how many sessions there were.
    pub async fn revoke_sessions(&self, user: UserId) -> Result<u64, IdentityError> {
        Ok(self.sessions().revoke_all(user).await?)
    }

    /// Makes `a` and `b` friends (an app deciding who may talk, e.g. a buyer and a seller),
    /// whatever their current relation short of a block; idempotent.
    pub async fn make_friends(&self, a: UserId, b: UserId) -> Result<(), IdentityError> {
        let chat = self.chat();
        for (from, to, op) in [(a, b, FriendOp::Request), (b, a, FriendOp::Accept)] {
            // Through the chat service, so both users' devices get the friend events.
            match chat.friend(Actor::user(from), to, op).await {
                Ok(outcome) => {
                    chat.commit(outcome);
                }
                Err(e) if e.code == ErrorCode::AlreadyFriends => return Ok(()),
                Err(e) => return Err(IdentityError::BadRequest(e.message)),
            }
        }
        Ok(())
    }

    /// Sends `body` from `user` to their friend `to` (the direct conversation), as if they had
    /// sent it from a device: stored before it returns, delivered to both users' devices. A
    /// repeat with the same `idempotency_key` stores nothing new (`duplicate: true`).
    pub async fn send_as(
        &self,
        user: UserId,
        to: UserId,
        body: &str,
        idempotency_key: &str,
    ) -> Result<zajel_core::Appended, crate::EngineError> {
        let chat = self.chat();
        let conversation = zajel_core::ConversationId::direct(user, to);
        let outcome = chat
            .send(Actor::user(user), &conversation, body, idempotency_key)
            .await?;
        Ok(chat.commit(outcome))
    }

    /// Posts a **system message** into the direct conversation of `a` and `b`: a notice no
    /// person wrote ("alice and bob are now friends", "your order shipped"). It is stored before
    /// this returns and delivered live to every device of both users, marked as a system
    /// message (sender [`UserId::SYSTEM`], `"kind": "system"` on the wire); it is in history and
    /// replayed on resume like any message, counts as unread for both users and moves nobody's
    /// read mark. A repeat with the same `idempotency_key` (scoped to the system in that
    /// conversation) stores nothing new (`duplicate: true`).
    ///
    /// No friendship is required and blocks do not stop it: the app decides whether a notice
    /// fits the relation (see [`Engine::relation`]). Errors: `user_not_found` when either user
    /// has no account, `conversation_not_found` for `a == b` or [`UserId::SYSTEM`] as a
    /// member, `empty_body` / `body_too_long` / `invalid_idempotency_key` like a send,
    /// `unavailable` when the store is away (nothing stored: retry with the same key).
    ///
    /// ```no_run
    /// # async fn demo(engine: zajel_server::Engine) -> Result<(), Box<dyn std::error::Error>> {
    /// let alice = engine.app_user("shop", "customer-42", Some("alice")).await?;
    /// let bob = engine.app_user("shop", "seller-7", Some("bob")).await?;
    /// engine.make_friends(alice.id, bob.id).await?;
    /// let notice = engine
    ///     .send_system(alice.id, bob.id, "alice and bob are now connected", "connected")
    ///     .await?;
    /// assert!(notice.message.is_system());
    /// # Ok(()) }
    /// ```
    pub async fn send_system(
        &self,
        a: UserId,
        b: UserId,
        body: &str,
        idempotency_key: &str,
    ) -> Result<zajel_core::Appended, crate::EngineError> {
        if a == b {
            return Err(crate::EngineError::new(
                ErrorCode::ConversationNotFound,
                "a conversation needs two different users",
            ));
        }
        let chat = self.chat();
        let conversation = zajel_core::ConversationId::direct(a, b);
        let outcome = chat
            .send_system(&conversation, body, idempotency_key)
            .await?;
        Ok(chat.commit(outcome))
    }

    /// How `user` sees `other` (`friends`, `blocked` when `user` blocks `other`, …; a user who
    /// is blocked sees `none`, so ask both ways to learn of a block either way; `none` for
    /// oneself). For an app
    /// deciding, e.g., whether to post a [`Engine::send_system`] notice.
    pub async fn relation(
        &self,
        user: UserId,
        other: UserId,
    ) -> Result<zajel_core::Relation, crate::EngineError> {
        Ok(zajel_core::FriendGraph::new(self.store())
            .relation(user, other)
            .await?)
    }

    /// The external identities linked to `user`.
    pub async fn identities(&self, user: UserId) -> Result<Vec<LinkedIdentity>, IdentityError> {
        self.inner
            .store
            .external_identities(user)
            .await
            .map_err(IdentityError::store)
    }

    /// Links `identity` to `user` (an explicit action of a signed-in user).
    pub async fn link_identity(
        &self,
        user: UserId,
        identity: &ExternalIdentity,
    ) -> Result<(), IdentityError> {
        self.inner
            .store
            .link_external(identity, user, Timestamp::now())
            .await
            .map_err(IdentityError::store)
    }

    /// Unlinks `identity` from `user`, refusing to remove the last way to sign in.
    pub async fn unlink_identity(
        &self,
        user: UserId,
        identity: &ExternalIdentity,
    ) -> Result<(), IdentityError> {
        match self
            .inner
            .store
            .unlink_external(identity, user)
            .await
            .map_err(IdentityError::store)?
        {
            Unlink::Removed => Ok(()),
            Unlink::NotLinked => Err(IdentityError::NotLinked),
            Unlink::LastSignInMethod => Err(IdentityError::LastSignInMethod),
        }
    }
}
