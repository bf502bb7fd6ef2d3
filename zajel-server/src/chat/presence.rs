//! Presence: a user's friends learn when they come online and go offline.

use super::ChatService;
use zajel_core::protocol::{Push, ServerFrame};
use zajel_core::{Timestamp, UserId};

impl ChatService {
    /// Registers a new connection of `user` cluster-wide (`first_local`: their first on this
    /// node); true when the user just came online (then [`ChatService::announce`] it).
    /// Returns only once later publications to `user` reach this node.
    pub(crate) async fn connected(&self, user: UserId, first_local: bool) -> bool {
        self.engine
            .inner
            .presence
            .connected(user, first_local)
            .await
    }

    /// A connection of `user` ended (`last_local`: their last on this node); when the user
    /// is now offline everywhere, records last seen and tells their friends.
    pub(crate) async fn disconnected(&self, user: UserId, last_local: bool) {
        if self
            .engine
            .inner
            .presence
            .disconnected(user, last_local)
            .await
        {
            self.went_offline(user).await;
        }
    }

    /// `user` is offline everywhere (their last connection ended, or their node died):
    /// records last seen and tells their friends.
    pub(crate) async fn went_offline(&self, user: UserId) {
        let now = Timestamp::now();
        if let Err(e) = self.engine.store().set_last_seen(user, now).await {
            tracing::warn!(user = %user, error = %e, "could not record last seen; retrying");
            self.retry_last_seen(user, now);
        }
        self.announce(user, false, Some(now)).await;
    }

    /// Records `user`'s last seen `at` in the background until the store takes it (1 s
    /// doubling to 30 s; stops when the engine is dropped or the user is gone). Safe to land
    /// late: the store keeps the later of two times, so it never hides a newer one.
    fn retry_last_seen(&self, user: UserId, at: Timestamp) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = std::sync::Arc::downgrade(&self.engine.inner);
        runtime.spawn(async move {
            let mut wait = std::time::Duration::from_secs(1);
            loop {
                tokio::time::sleep(wait).await;
                let Some(inner) = weak.upgrade() else { return };
                let store = inner.store.clone();
                drop(inner);
                match store.set_last_seen(user, at).await {
                    Ok(()) | Err(zajel_core::StoreError::UserNotFound) => return,
                    Err(_) => wait = (wait * 2).min(std::time::Duration::from_secs(30)),
                }
            }
        });
    }

    /// Tells `user`'s friends that `user` came online or went offline.
    pub(crate) async fn announce(&self, user: UserId, online: bool, last_seen: Option<Timestamp>) {
        match self.friend_ids(user).await {
            Ok(friends) => self.announce_to(&friends, user, online, last_seen),
            Err(e) => tracing::warn!(error = %e, "presence: could not read friends"),
        }
    }

    /// Tells `friends` (read by the caller) that `user` came online or went offline.
    pub(crate) fn announce_to(
        &self,
        friends: &[UserId],
        user: UserId,
        online: bool,
        last_seen: Option<Timestamp>,
    ) {
        if friends.is_empty() {
            return;
        }
        let frame = ServerFrame::Push(Push::Presence {
            user,
            online,
            last_seen,
        });
        self.engine.publish(friends, &frame, None);
    }
}
