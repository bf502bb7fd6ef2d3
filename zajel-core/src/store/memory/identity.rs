//! [`IdentityStore`] for the in-memory store: every call is one critical section.

use super::MemoryStore;
use crate::ids::{Timestamp, UserId};
use crate::limits::Username;
use crate::model::User;
use crate::store::identity::{ExternalUser, LinkedIdentity, Unlink};
use crate::store::{ExternalIdentity, IdentityStore, StoreError, StoreResult, TicketKey};
use async_trait::async_trait;
use std::time::Duration;

#[async_trait]
impl IdentityStore for MemoryStore {
    async fn create_external_user(
        &self,
        username: &Username,
        identity: &ExternalIdentity,
        at: Timestamp,
    ) -> StoreResult<ExternalUser> {
        let mut s = self.lock();
        if let Some(owner) = s.externals.get(identity) {
            let user =
                s.users.get(owner).map(|r| r.user.clone()).ok_or_else(|| {
                    StoreError::Corrupt(format!("identity owner {owner} missing"))
                })?;
            return Ok(ExternalUser {
                user,
                created: false,
            });
        }
        let key = username.canonical();
        if s.usernames.contains_key(&key) {
            return Err(StoreError::UsernameTaken);
        }
        let user = User {
            id: UserId::new_random(),
            username: username.as_str().to_owned(),
            created_at: at,
        };
        s.usernames.insert(key, user.id);
        s.users.insert(
            user.id,
            super::UserRow {
                user: user.clone(),
                password_hash: None,
                last_seen: None,
            },
        );
        s.externals.insert(identity.clone(), user.id);
        s.user_externals
            .entry(user.id)
            .or_default()
            .insert(identity.clone(), at);
        Ok(ExternalUser {
            user,
            created: true,
        })
    }

    async fn link_external(
        &self,
        identity: &ExternalIdentity,
        user: UserId,
        at: Timestamp,
    ) -> StoreResult<()> {
        let mut s = self.lock();
        if !s.users.contains_key(&user) {
            return Err(StoreError::UserNotFound);
        }
        match s.externals.get(identity) {
            Some(owner) if *owner == user => Ok(()),
            Some(_) => Err(StoreError::IdentityTaken),
            None => {
                s.externals.insert(identity.clone(), user);
                s.user_externals
                    .entry(user)
                    .or_default()
                    .insert(identity.clone(), at);
                Ok(())
            }
        }
    }

    async fn external_user(&self, identity: &ExternalIdentity) -> StoreResult<Option<UserId>> {
        Ok(self.lock().externals.get(identity).copied())
    }

    async fn external_identities(&self, user: UserId) -> StoreResult<Vec<LinkedIdentity>> {
        Ok(self
            .lock()
            .user_externals
            .get(&user)
            .map(|m| {
                m.iter()
                    .map(|(identity, at)| LinkedIdentity {
                        identity: identity.clone(),
                        linked_at: *at,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn unlink_external(
        &self,
        identity: &ExternalIdentity,
        user: UserId,
    ) -> StoreResult<Unlink> {
        let mut s = self.lock();
        if s.externals.get(identity) != Some(&user) {
            return Ok(Unlink::NotLinked);
        }
        let has_password = s
            .users
            .get(&user)
            .is_some_and(|r| r.password_hash.is_some());
        let count = s.user_externals.get(&user).map_or(0, |m| m.len());
        if !has_password && count <= 1 {
            return Ok(Unlink::LastSignInMethod);
        }
        s.externals.remove(identity);
        if let Some(m) = s.user_externals.get_mut(&user) {
            m.remove(identity);
        }
        Ok(Unlink::Removed)
    }

    async fn put_ticket(&self, key: &TicketKey, value: &[u8], ttl: Duration) -> StoreResult<()> {
        self.tickets.put(key, value, ttl);
        Ok(())
    }

    async fn take_ticket(&self, key: &TicketKey) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.tickets.take(key))
    }
}
