//! Accounts and sessions, transport-free: register, log in, resolve a token, revoke.
//!
//! HTTP (`http/accounts.rs`), the WebSocket handshake and a server-side API all call these,
//! so one set of rules (throttling, hashing bounds, revocation) serves every entry point.

use crate::auth;
use crate::engine::Engine;
use crate::error::EngineError;
use std::net::IpAddr;
use zajel_core::{ErrorCode, Session, StoreError, Timestamp, User, UserId, Username};

/// A freshly issued session: the token (shown once) and its expiry.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    /// The bearer token (`zs1.<user>.<secret>`).
    pub token: String,
    /// When the session ends.
    pub expires_at: Timestamp,
}

/// A token resolved to its session.
#[derive(Debug, Clone)]
pub(crate) struct SessionInfo {
    pub(crate) user: User,
    /// SHA-256 (hex) of the token's secret: the session's key in the store.
    pub(crate) hash: String,
    /// When the session ends.
    pub(crate) expires_at: Timestamp,
}

impl SessionInfo {
    fn new(user: User, hash: String, session: &Session) -> Self {
        SessionInfo {
            user,
            hash,
            expires_at: session.expires_at,
        }
    }
}

/// A token resolved for a connection's authentication ([`Sessions::resolve_with_friends`]).
pub(crate) struct ConnectInfo {
    pub(crate) session: SessionInfo,
    /// The user's friends, read with the session.
    pub(crate) friends: Vec<zajel_core::UserId>,
}

/// Account and session operations of an [`Engine`] (see [`Engine::sessions`]).
#[derive(Clone)]
pub struct Sessions {
    engine: Engine,
}

impl Engine {
    /// Account and session operations.
    pub fn sessions(&self) -> Sessions {
        Sessions {
            engine: self.clone(),
        }
    }
}

fn invalid_credentials() -> EngineError {
    EngineError::new(
        ErrorCode::InvalidCredentials,
        "invalid username or password",
    )
}

impl Sessions {
    /// Resolves a session token to its user (and the session's key).
    pub(crate) async fn resolve(&self, token: &str) -> Result<SessionInfo, EngineError> {
        let (user_id, hash) = auth::parse_token(token).ok_or_else(EngineError::unauthenticated)?;
        // One store read for both (every connection's authentication goes through here).
        let (session, user) = self
            .engine
            .store()
            .session_with_user(user_id, &hash, Timestamp::now())
            .await?
            .ok_or_else(EngineError::unauthenticated)?;
        Ok(SessionInfo::new(user, hash, &session))
    }

    /// [`Sessions::resolve`] plus the user's friends, in one store read
    /// ([`Store::session_with_friends`](zajel_core::Store::session_with_friends): one Redis
    /// round trip): for a connection that announces "came online" to them.
    pub(crate) async fn resolve_with_friends(
        &self,
        token: &str,
    ) -> Result<ConnectInfo, EngineError> {
        let (user_id, hash) = auth::parse_token(token).ok_or_else(EngineError::unauthenticated)?;
        let (session, user, friends) = self
            .engine
            .store()
            .session_with_friends(user_id, &hash, Timestamp::now())
            .await?
            .ok_or_else(EngineError::unauthenticated)?;
        Ok(ConnectInfo {
            session: SessionInfo::new(user, hash, &session),
            friends,
        })
    }

    /// Whether the session `hash` of `user` is still valid now.
    pub(crate) async fn is_valid(&self, user: UserId, hash: &str) -> Result<bool, EngineError> {
        Ok(self
            .engine
            .store()
            .session(user, hash, Timestamp::now())
            .await?
            .is_some())
    }

    /// The user a session token belongs to, if the session is valid.
    pub async fn user_of_token(&self, token: &str) -> Result<User, EngineError> {
        Ok(self.resolve(token).await?.user)
    }

    /// Issues a new session for `user` (lifetime `token_ttl_secs`).
    pub async fn issue(&self, user: UserId) -> Result<IssuedSession, EngineError> {
        let (token, hash) = auth::new_token(user).map_err(EngineError::internal)?;
        let now = Timestamp::now();
        let ttl_ms = i64::try_from(self.engine.config().token_ttl_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        let expires_at = now.plus_millis(ttl_ms);
        self.engine
            .store()
            .create_session(&Session {
                user_id: user,
                token_hash: hash,
                created_at: now,
                expires_at,
            })
            .await?;
        Ok(IssuedSession { token, expires_at })
    }

    /// Creates a password account and its first session.
    /// `addr` is the client's address (for throttling), when known.
    pub async fn register(
        &self,
        username: &str,
        password: String,
        addr: Option<IpAddr>,
    ) -> Result<(User, IssuedSession), EngineError> {
        if let Some(addr) = addr {
            self.engine
                .inner
                .register_by_address
                .take(addr)
                .map_err(EngineError::rate_limited)?;
        }
        let username = Username::parse(username)?;
        if !auth::password_ok(&password) {
            return Err(EngineError::new(
                ErrorCode::InvalidPassword,
                format!(
                    "password must be {} to {} characters",
                    auth::PASSWORD_MIN,
                    auth::PASSWORD_MAX
                ),
            ));
        }
        if self.engine.is_shutting_down() {
            return Err(EngineError::shutting_down());
        }
        let hash = self.hash(password).await?;
        let user = match self
            .engine
            .store()
            .create_user(&username, Some(&hash), Timestamp::now())
            .await
        {
            Ok(u) => u,
            Err(StoreError::UsernameTaken) => {
                return Err(EngineError::new(
                    ErrorCode::UsernameTaken,
                    "username is taken",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(user = %user.id, username = %user.username, "registered");
        self.engine
            .emit(|| crate::events::EngineEvent::UserCreated { user: user.clone() });
        let session = self.issue(user.id).await?;
        Ok((user, session))
    }

    /// Checks a username and password and issues a session. `addr` is the client's address
    /// (for throttling), when known.
    pub async fn login(
        &self,
        username: &str,
        password: String,
        addr: Option<IpAddr>,
    ) -> Result<(User, IssuedSession), EngineError> {
        let inner = &self.engine.inner;
        // Throttling (docs/server.md, "Throttling"): per address, per (account, address)
        // pair, and a looser per-account bound over all addresses. Every attempt takes a cell
        // before any password work, so a flood costs no argon2. Someone guessing at a victim's
        // account from one address exhausts only their own pair's budget; the owner, from
        // another address, still gets in unless the per-account bound is exhausted too.
        // Account keys are the canonical (lower-case) name, hashed to a fixed size.
        let account_key = username.to_ascii_lowercase();
        if let Some(addr) = addr {
            inner
                .login_by_address
                .take(addr)
                .map_err(EngineError::rate_limited)?;
        }
        inner
            .login_by_pair
            .take((&account_key, addr))
            .map_err(EngineError::rate_limited)?;
        inner
            .login_by_account
            .take(&account_key)
            .map_err(EngineError::rate_limited)?;
        let store = self.engine.store();
        let user = match Username::parse(username) {
            Ok(name) => store.user_by_username(&name).await?,
            Err(_) => None,
        };
        let stored = match &user {
            Some(u) => store.password_hash(u.id).await?,
            None => None,
        };
        // Always run one argon2 verification so timing does not reveal whether the user
        // exists or has a password. An account without a password hash (created by a
        // server-side API or OpenID Connect) can never log in with a password.
        let has_password = stored.is_some();
        let phc = match stored {
            Some(phc) => phc,
            None => self.dummy_hash().await?,
        };
        let verified = self.verify(password, phc).await? && has_password;
        let Some(user) = user.filter(|_| verified) else {
            return Err(invalid_credentials());
        };
        let session = self.issue(user.id).await?;
        Ok((user, session))
    }

    /// Ends one session (by its key) and closes its WebSockets with 4001.
    pub(crate) async fn revoke(&self, user: UserId, hash: &str) -> Result<(), EngineError> {
        self.engine.store().delete_session(user, hash).await?;
        // Every node: the broker closes this node's sockets and tells the others.
        self.engine
            .inner
            .broker
            .close_user(user, Some(hash), crate::ws::CLOSE_UNAUTHENTICATED);
        Ok(())
    }

    /// Ends every session of `user` and closes their WebSockets with 4001; returns how many
    /// sessions ended.
    pub async fn revoke_all(&self, user: UserId) -> Result<u64, EngineError> {
        let n = self.engine.store().delete_user_sessions(user).await?;
        self.engine
            .inner
            .broker
            .close_user(user, None, crate::ws::CLOSE_UNAUTHENTICATED);
        tracing::info!(user = %user, sessions = n, "logged out everywhere");
        Ok(n as u64)
    }

    /// Hashes a password with argon2id on the blocking pool, at most one run per core at a
    /// time.
    async fn hash(&self, password: String) -> Result<String, EngineError> {
        let cfg = self.engine.config();
        let (m, t) = (cfg.argon2_memory_kib, cfg.argon2_iterations);
        let _permit = self
            .engine
            .inner
            .hashing
            .acquire()
            .await
            .map_err(EngineError::internal)?;
        tokio::task::spawn_blocking(move || auth::hash_password(&password, m, t))
            .await
            .map_err(EngineError::internal)?
            .map_err(EngineError::internal)
    }

    /// Verifies a password like [`Sessions::hash`] (bounded, off the runtime).
    async fn verify(&self, password: String, phc: String) -> Result<bool, EngineError> {
        let _permit = self
            .engine
            .inner
            .hashing
            .acquire()
            .await
            .map_err(EngineError::internal)?;
        tokio::task::spawn_blocking(move || auth::verify_password(&password, &phc))
            .await
            .map_err(EngineError::internal)
    }

    /// A hash to verify against when the account has no password, so every login costs the
    /// same. Computed once on the blocking pool; a failure is an error, never an empty hash.
    async fn dummy_hash(&self) -> Result<String, EngineError> {
        self.engine
            .inner
            .dummy_hash
            .get_or_try_init(|| self.hash("not-a-real-password".to_owned()))
            .await
            .cloned()
    }
}
