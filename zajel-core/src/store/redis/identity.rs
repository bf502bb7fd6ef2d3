//! [`IdentityStore`] for Redis, in single-slot steps so it runs the same on one Redis and on
//! a Cluster (the identity, its user and a username live in three different slots).
//!
//! Keys: `<prefix>:{x:<identity>}:ext` (the identity's **claim**: a string holding its
//! user's id; the commit point of every link), `<prefix>:{u:<id>}:ext` (hash: identity JSON
//! → linked_at ms, the user's list, derived from the claims), one-time tickets in
//! `<prefix>:{t:<key>}:ticket` (a string with a `PX` expiry, taken by `GETDEL`). Every step
//! is idempotent, so a retry after a lost reply gives the same answer; what a crash between
//! steps leaves, and how the next call repairs it, is said at each method and in
//! docs/storage-redis.md ("External identities").

use super::{RELEASE_CLAIM, RedisStore, corrupt, fields, int, opt_string, parse, tag_safe};
use crate::ids::{Timestamp, UserId};
use crate::limits::Username;
use crate::model::User;
use crate::store::identity::{ExternalUser, LinkedIdentity, Unlink};
use crate::store::{
    ExternalIdentity, IdentityStore, StoreError, StoreResult, TicketKey, UserStore,
};
use ::redis::{Script, Value};
use async_trait::async_trait;
use std::sync::LazyLock;
use std::time::Duration;

static RECORD: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("external_record.lua")));
static UNLINK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("external_unlink.lua")));

/// A user whose creation for an identity stopped after its name was claimed (a crash) is
/// finished by a later sign-in of the same identity once it is this old; younger ones are a
/// racing sign-in still at work.
const ADOPT_AFTER_MS: i64 = 10_000;

impl RedisStore {
    fn ext_claim_key(&self, identity: &ExternalIdentity) -> String {
        format!(
            "{}:{{x:{}}}:ext",
            self.keys.prefix,
            tag_safe(&identity.key())
        )
    }

    fn ticket_key(&self, key: &TicketKey) -> String {
        // A `TicketKey` has no braces, so it is its own hash tag as it is.
        format!("{}:{{t:{}}}:ticket", self.keys.prefix, key.as_str())
    }

    fn user_ext_key(&self, user: UserId) -> String {
        format!("{}:{{u:{user}}}:ext", self.keys.prefix)
    }

    /// Runs a script under the store's command timeout and circuit breaker; with `retry`,
    /// once more after a connection failure (the scripts that allow it give the same answer
    /// when their first run did commit).
    async fn run_script(
        &self,
        inv: &::redis::ScriptInvocation<'_>,
        retry: bool,
    ) -> StoreResult<Value> {
        let mut con = self.con.clone();
        self.guarded(async move {
            match inv.invoke_async::<Value>(&mut con).await {
                Err(e) if retry && super::is_connection_error(&e) => {
                    inv.invoke_async::<Value>(&mut con).await
                }
                r => r,
            }
        })
        .await
    }

    /// `SET key owner NX GET`: claims `key` for `owner`, or returns whoever holds it. A
    /// repeat after a lost reply finds its own claim (`Some(owner)`).
    async fn claim(&self, key: String, owner: &str) -> StoreResult<Option<String>> {
        opt_string(
            self.query(::redis::cmd("SET").arg(key).arg(owner).arg("NX").arg("GET"))
                .await?,
        )
    }

    /// Deletes the claim `key` if `owner` holds it.
    async fn release(&self, key: String, owner: &str) -> StoreResult<()> {
        self.query(
            ::redis::cmd("EVAL")
                .arg(RELEASE_CLAIM)
                .arg(1)
                .arg(key)
                .arg(owner),
        )
        .await?;
        Ok(())
    }

    /// Deletes a user record that never became reachable (its claims were lost).
    async fn discard_record(&self, user: UserId) -> StoreResult<()> {
        self.query(
            ::redis::cmd("DEL")
                .arg(self.keys.user(user))
                .arg(self.user_ext_key(user)),
        )
        .await?;
        Ok(())
    }

    /// Whether `owner` of a username is a user created for `identity` whose creation
    /// stopped before the identity was claimed (and long enough ago not to be a racing
    /// sign-in still at work): then this sign-in finishes it.
    async fn abandoned_creation_for(
        &self,
        owner: UserId,
        identity_json: &str,
        claim: &str,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let reply = self
            .query(
                ::redis::cmd("HMGET")
                    .arg(self.keys.user(owner))
                    .arg("xp")
                    .arg("created_at"),
            )
            .await?;
        let mut it = super::array(reply)?.into_iter();
        let xp = opt_string(it.next().unwrap_or(Value::Nil))?;
        let created = opt_string(it.next().unwrap_or(Value::Nil))?;
        let old_enough = created
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| now.0.saturating_sub(c) >= ADOPT_AFTER_MS);
        if xp.as_deref() != Some(identity_json) || !old_enough {
            return Ok(false);
        }
        let holder = opt_string(self.query(::redis::cmd("GET").arg(claim)).await?)?;
        Ok(holder.is_none_or(|h| h == owner.to_string()))
    }
}

fn identity_json(identity: &ExternalIdentity) -> StoreResult<String> {
    serde_json::to_string(identity).map_err(StoreError::backend)
}

#[async_trait]
impl IdentityStore for RedisStore {
    /// Three single-slot steps: (1) the new user's record and identity list, unreachable
    /// (`external_record.lua`); (2) the username claim; (3) the identity claim, the commit
    /// point. A lost name claim or a lost identity claim (a racing first sign-in of the same
    /// identity won) undoes what this call wrote. A crash after (1) leaves a record nobody can
    /// reach; after (2) a user holding the name without the identity: the identity's next
    /// first sign-in finds it through the name (its `xp` names this identity) and finishes it.
    async fn create_external_user(
        &self,
        username: &Username,
        identity: &ExternalIdentity,
        at: Timestamp,
    ) -> StoreResult<ExternalUser> {
        let claim = self.ext_claim_key(identity);
        let existing = |owner: String| async move {
            let owner: UserId = parse(&owner, "identity owner")?;
            Ok(ExternalUser {
                user: self.user_of(owner).await?,
                created: false,
            })
        };
        if let Some(owner) = opt_string(self.query(::redis::cmd("GET").arg(&claim)).await?)? {
            return existing(owner).await;
        }
        let json = identity_json(identity)?;
        let fresh = UserId::new_random();
        let mut inv = RECORD.prepare_invoke();
        inv.key(self.keys.user(fresh))
            .key(self.user_ext_key(fresh))
            .arg(fresh.to_string())
            .arg(username.as_str())
            .arg(at.0)
            .arg(&json);
        self.run_script(&inv, true).await?;

        let name_key = self.keys.username(&username.canonical());
        let mut user = fresh;
        if let Some(holder) = self.claim(name_key.clone(), &fresh.to_string()).await?
            && holder != fresh.to_string()
        {
            self.discard_record(fresh).await?;
            let holder: UserId = parse(&holder, "username owner")?;
            if !self
                .abandoned_creation_for(holder, &json, &claim, at)
                .await?
            {
                return Err(StoreError::UsernameTaken);
            }
            user = holder;
        }
        let me = user.to_string();
        match self.claim(claim, &me).await? {
            Some(winner) if winner != me => {
                // A racing first sign-in of this identity committed first: undo ours.
                if user == fresh {
                    self.release(name_key, &me).await?;
                    self.discard_record(fresh).await?;
                }
                existing(winner).await
            }
            _ if user == fresh => Ok(ExternalUser {
                user: User {
                    id: fresh,
                    username: username.as_str().to_owned(),
                    created_at: at,
                },
                created: true,
            }),
            _ => Ok(ExternalUser {
                user: self.user_of(user).await?,
                created: true,
            }),
        }
    }

    /// Checks the user exists, claims the identity (the commit point), then adds it to the
    /// user's list with `HSETNX` (keeping the first `linked_at`). A crash between the claim
    /// and the list leaves the identity working but unlisted; linking it again lists it.
    async fn link_external(
        &self,
        identity: &ExternalIdentity,
        user: UserId,
        at: Timestamp,
    ) -> StoreResult<()> {
        let exists = self
            .query(::redis::cmd("EXISTS").arg(self.keys.user(user)))
            .await?;
        if int::<u8>(exists, "exists")? == 0 {
            return Err(StoreError::UserNotFound);
        }
        let me = user.to_string();
        if let Some(owner) = self.claim(self.ext_claim_key(identity), &me).await?
            && owner != me
        {
            return Err(StoreError::IdentityTaken);
        }
        self.query(
            ::redis::cmd("HSETNX")
                .arg(self.user_ext_key(user))
                .arg(identity_json(identity)?)
                .arg(at.0),
        )
        .await?;
        Ok(())
    }

    async fn external_user(&self, identity: &ExternalIdentity) -> StoreResult<Option<UserId>> {
        let reply = self
            .query(::redis::cmd("GET").arg(self.ext_claim_key(identity)))
            .await?;
        opt_string(reply)?
            .map(|s| parse(&s, "identity owner"))
            .transpose()
    }

    async fn external_identities(&self, user: UserId) -> StoreResult<Vec<LinkedIdentity>> {
        let reply = self
            .query(::redis::cmd("HGETALL").arg(self.user_ext_key(user)))
            .await?;
        let mut out = fields(reply)?
            .into_iter()
            .map(|(k, v)| {
                Ok(LinkedIdentity {
                    identity: super::json(&k, "identity")?,
                    linked_at: Timestamp(int(v, "linked_at")?),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by(|a, b| a.identity.cmp(&b.identity));
        Ok(out)
    }

    /// Sees the claim point to `user`, takes the identity off the user's list unless it is
    /// the last way to sign in (`external_unlink.lua`, atomic in the user's slot, so two
    /// racing unlinks cannot remove both of the last two), then releases the claim. A crash
    /// before the release leaves the identity signing in but unlisted; unlinking it again
    /// finishes.
    async fn unlink_external(
        &self,
        identity: &ExternalIdentity,
        user: UserId,
    ) -> StoreResult<Unlink> {
        let claim = self.ext_claim_key(identity);
        let me = user.to_string();
        let holder = opt_string(self.query(::redis::cmd("GET").arg(&claim)).await?)?;
        if holder.as_deref() != Some(me.as_str()) {
            return Ok(Unlink::NotLinked);
        }
        let mut inv = UNLINK.prepare_invoke();
        inv.key(self.keys.user(user))
            .key(self.user_ext_key(user))
            .arg(identity_json(identity)?);
        // A repeat after a lost reply gives the same answer (the identity still counts).
        if int::<u8>(self.run_script(&inv, true).await?, "unlink reply")? == 2 {
            return Ok(Unlink::LastSignInMethod);
        }
        self.release(claim, &me).await?;
        Ok(Unlink::Removed)
    }

    async fn put_ticket(&self, key: &TicketKey, value: &[u8], ttl: Duration) -> StoreResult<()> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(self.ticket_key(key)).arg(value).arg("PX").arg(ms);
        // A repeat after a lost reply writes the same value again: safe to retry.
        self.query(&cmd).await?;
        Ok(())
    }

    async fn take_ticket(&self, key: &TicketKey) -> StoreResult<Option<Vec<u8>>> {
        let mut cmd = ::redis::cmd("GETDEL");
        cmd.arg(self.ticket_key(key));
        // No retry: a repeat after a lost reply would find the ticket already taken.
        let mut con = self.con.clone();
        let reply = self
            .guarded(async move { cmd.query_async::<Value>(&mut con).await })
            .await?;
        match reply {
            Value::Nil => Ok(None),
            Value::BulkString(b) => Ok(Some(b)),
            other => Err(corrupt(format_args!(
                "ticket: expected bytes, got {other:?}"
            ))),
        }
    }
}

impl RedisStore {
    async fn user_of(&self, id: UserId) -> StoreResult<User> {
        self.user(id)
            .await?
            .ok_or_else(|| corrupt(format_args!("identity owner {id} missing")))
    }
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
