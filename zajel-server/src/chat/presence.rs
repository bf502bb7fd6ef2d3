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
            tracing::warn!(user = %user, error = %e, "could not record last seen");
        }
        self.announce(user, false, Some(now)).await;
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
