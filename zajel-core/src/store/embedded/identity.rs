//! [`IdentityStore`] for the embedded store: writes through the writer thread, reads in
//! read transactions.

use super::EmbeddedStore;
use super::tables::{EXTERNALS, USER_EXTERNALS, be, from_uid, uid};
use crate::ids::{Timestamp, UserId};
use crate::limits::Username;
use crate::store::identity::{ExternalUser, LinkedIdentity, Unlink};
use crate::store::{ExternalIdentity, IdentityStore, StoreResult, TicketKey};
use async_trait::async_trait;
use std::time::Duration;

#[async_trait]
impl IdentityStore for EmbeddedStore {
    async fn create_external_user(
        &self,
        username: &Username,
        identity: &ExternalIdentity,
        at: Timestamp,
    ) -> StoreResult<ExternalUser> {
        let (display, canonical) = (username.as_str().to_owned(), username.canonical());
        let identity = identity.clone();
        self.write(move |tx| tx.create_external_user(&display, &canonical, &identity, at))
            .await
    }

    async fn link_external(
        &self,
        identity: &ExternalIdentity,
        user: UserId,
        at: Timestamp,
    ) -> StoreResult<()> {
        let identity = identity.clone();
        self.write(move |tx| tx.link_external(&identity, user, at))
            .await
    }

    async fn external_user(&self, identity: &ExternalIdentity) -> StoreResult<Option<UserId>> {
        let identity = identity.clone();
        self.read(move |txn| {
            let t = txn.open_table(EXTERNALS).map_err(be)?;
            Ok(
                t.get((identity.provider.as_str(), identity.subject.as_str()))
                    .map_err(be)?
                    .map(|v| from_uid(v.value())),
            )
        })
        .await
    }

    async fn external_identities(&self, user: UserId) -> StoreResult<Vec<LinkedIdentity>> {
        self.read(move |txn| {
            let t = txn.open_table(USER_EXTERNALS).map_err(be)?;
            let u = uid(user);
            let mut out = Vec::new();
            for entry in t.range((u, "", "")..).map_err(be)? {
                let (k, v) = entry.map_err(be)?;
                let (owner, provider, subject) = k.value();
                if owner != u {
                    break;
                }
                out.push(LinkedIdentity {
                    identity: ExternalIdentity {
                        provider: provider.to_owned(),
                        subject: subject.to_owned(),
                    },
                    linked_at: Timestamp(v.value()),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn unlink_external(
        &self,
        identity: &ExternalIdentity,
        user: UserId,
    ) -> StoreResult<Unlink> {
        let identity = identity.clone();
        self.write(move |tx| tx.unlink_external(&identity, user))
            .await
    }

    async fn put_ticket(&self, key: &TicketKey, value: &[u8], ttl: Duration) -> StoreResult<()> {
        self.inner.tickets.put(key, value, ttl);
        Ok(())
    }

    async fn take_ticket(&self, key: &TicketKey) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.inner.tickets.take(key))
    }
}
