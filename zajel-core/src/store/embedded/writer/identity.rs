//! The writer's [`crate::store::IdentityStore`] operations (validate first, then mutate).

use super::{OpResult, Tx, fatal};
use crate::ids::{Timestamp, UserId};
use crate::model::User;
use crate::store::embedded::tables::{from_uid, uid, user_row};
use crate::store::identity::{ExternalUser, Unlink};
use crate::store::{ExternalIdentity, StoreError};
use redb::ReadableTable;

impl Tx<'_> {
    fn external_owner(&mut self, identity: &ExternalIdentity) -> OpResult<Option<UserId>> {
        Ok(self
            .externals()?
            .get((identity.provider.as_str(), identity.subject.as_str()))
            .map_err(crate::store::embedded::tables::be)?
            .map(|v| from_uid(v.value())))
    }

    fn put_external(
        &mut self,
        identity: &ExternalIdentity,
        user: UserId,
        at: Timestamp,
    ) -> OpResult<()> {
        let (p, s) = (identity.provider.as_str(), identity.subject.as_str());
        self.externals()?.insert((p, s), uid(user)).map_err(fatal)?;
        self.user_externals()?
            .insert((uid(user), p, s), at.0)
            .map_err(fatal)?;
        Ok(())
    }

    pub(in crate::store::embedded) fn create_external_user(
        &mut self,
        display: &str,
        canonical: &str,
        identity: &ExternalIdentity,
        at: Timestamp,
    ) -> OpResult<ExternalUser> {
        if let Some(owner) = self.external_owner(identity)? {
            let row = user_row(self.users()?, owner)?
                .ok_or_else(|| StoreError::Corrupt(format!("identity owner {owner} missing")))?;
            return Ok(ExternalUser {
                user: row.user,
                created: false,
            });
        }
        // `create_user` validates (UsernameTaken) before it mutates.
        let user: User = self.create_user(display, canonical, None, at)?;
        self.put_external(identity, user.id, at)?;
        Ok(ExternalUser {
            user,
            created: true,
        })
    }

    pub(in crate::store::embedded) fn link_external(
        &mut self,
        identity: &ExternalIdentity,
        user: UserId,
        at: Timestamp,
    ) -> OpResult<()> {
        self.existing_user(user)?;
        match self.external_owner(identity)? {
            Some(owner) if owner == user => Ok(()),
            Some(_) => Err(StoreError::IdentityTaken.into()),
            None => self.put_external(identity, user, at),
        }
    }

    pub(in crate::store::embedded) fn unlink_external(
        &mut self,
        identity: &ExternalIdentity,
        user: UserId,
    ) -> OpResult<Unlink> {
        if self.external_owner(identity)? != Some(user) {
            return Ok(Unlink::NotLinked);
        }
        let has_password = self.existing_user(user)?.password_hash.is_some();
        let u = uid(user);
        let mut count = 0usize;
        for entry in self
            .user_externals()?
            .range((u, "", "")..)
            .map_err(crate::store::embedded::tables::be)?
        {
            let (k, _) = entry.map_err(crate::store::embedded::tables::be)?;
            if k.value().0 != u {
                break;
            }
            count += 1;
            if count > 1 {
                break;
            }
        }
        if !has_password && count <= 1 {
            return Ok(Unlink::LastSignInMethod);
        }
        let (p, s) = (identity.provider.as_str(), identity.subject.as_str());
        self.externals()?.remove((p, s)).map_err(fatal)?;
        self.user_externals()?.remove((u, p, s)).map_err(fatal)?;
        Ok(Unlink::Removed)
    }
}
