//! [`IdentityStore`] for Redis: one Lua script per change (`external_*.lua`).
//!
//! Keys: `<prefix>:{x:<identity>}:ext` (claim: identity → user id) and
//! `<prefix>:{u:<id>}:ext` (hash: identity JSON → linked_at ms), one-time tickets in
//! `<prefix>:{t:<key>}:ticket` (a string with a `PX` expiry, taken by `GETDEL`). The scripts
//! are invoked through [`::redis::Script`], which reloads them itself after a `NOSCRIPT`.

use super::{RedisStore, corrupt, fields, int, opt_string, parse, string, tag_safe};
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

static LINK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("external_link.lua")));
static CREATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("external_create.lua")));
static UNLINK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("external_unlink.lua")));

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
}

fn identity_json(identity: &ExternalIdentity) -> StoreResult<String> {
    serde_json::to_string(identity).map_err(StoreError::backend)
}

#[async_trait]
impl IdentityStore for RedisStore {
    async fn create_external_user(
        &self,
        username: &Username,
        identity: &ExternalIdentity,
        at: Timestamp,
    ) -> StoreResult<ExternalUser> {
        let new = UserId::new_random();
        let mut inv = CREATE.prepare_invoke();
        inv.key(self.ext_claim_key(identity))
            .key(self.keys.username(&username.canonical()))
            .key(self.keys.user(new))
            .key(self.user_ext_key(new))
            .arg(new.to_string())
            .arg(username.as_str())
            .arg(at.0)
            .arg(identity_json(identity)?);
        let reply = super::array(self.run_script(&inv, true).await?)?;
        let mut it = reply.into_iter();
        let status: u8 = int(it.next().ok_or_else(|| corrupt("empty reply"))?, "status")?;
        match status {
            2 => Err(StoreError::UsernameTaken),
            1 => Ok(ExternalUser {
                user: User {
                    id: new,
                    username: username.as_str().to_owned(),
                    created_at: at,
                },
                created: true,
            }),
            0 => {
                let owner: UserId = parse(
                    &string(it.next().ok_or_else(|| corrupt("no owner"))?)?,
                    "identity owner",
                )?;
                let user = self.user_of(owner).await?;
                Ok(ExternalUser {
                    user,
                    created: false,
                })
            }
            s => Err(corrupt(format_args!("unexpected create status {s}"))),
        }
    }

    async fn link_external(
        &self,
        identity: &ExternalIdentity,
        user: UserId,
        at: Timestamp,
    ) -> StoreResult<()> {
        let mut inv = LINK.prepare_invoke();
        inv.key(self.ext_claim_key(identity))
            .key(self.keys.user(user))
            .key(self.user_ext_key(user))
            .arg(user.to_string())
            .arg(identity_json(identity)?)
            .arg(at.0);
        match int::<u8>(self.run_script(&inv, true).await?, "link reply")? {
            1 => Ok(()),
            0 => Err(StoreError::IdentityTaken),
            _ => Err(StoreError::UserNotFound),
        }
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

    async fn unlink_external(
        &self,
        identity: &ExternalIdentity,
        user: UserId,
    ) -> StoreResult<Unlink> {
        let mut inv = UNLINK.prepare_invoke();
        inv.key(self.ext_claim_key(identity))
            .key(self.keys.user(user))
            .key(self.user_ext_key(user))
            .arg(user.to_string())
            .arg(identity_json(identity)?);
        // No retry: a repeat after a lost reply would report `NotLinked` for a removal.
        match int::<u8>(self.run_script(&inv, false).await?, "unlink reply")? {
            1 => Ok(Unlink::Removed),
            2 => Ok(Unlink::LastSignInMethod),
            _ => Ok(Unlink::NotLinked),
        }
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
            other => Err(corrupt(format_args!("ticket: expected bytes, got {other:?}"))),
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
