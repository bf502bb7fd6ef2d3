//! Presence: a user's friends learn when they come online and go offline.

use super::ChatService;
use std::time::Duration;
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
        let (first, max) = (Duration::from_secs(1), Duration::from_secs(30));
        self.retry_in_background(first, max, move |chat| async move {
            matches!(
                chat.engine.store().set_last_seen(user, at).await,
                Ok(()) | Err(zajel_core::StoreError::UserNotFound)
            )
        });
    }

    /// Tells `user`'s friends that `user` came online or went offline. If their friend list
    /// cannot be read, the announcement is retried in the background until it can (see
    /// [`ChatService::retry_announce`]).
    pub(crate) async fn announce(&self, user: UserId, online: bool, last_seen: Option<Timestamp>) {
        match self.friend_ids(user).await {
            Ok(friends) => self.announce_to(&friends, user, online, last_seen),
            Err(e) => {
                tracing::warn!(user = %user, error = %e,
                    "presence: could not read friends; retrying");
                let ticket = self.engine.inner.announcements.wait(user);
                self.retry_announce(user, online, last_seen, ticket);
            }
        }
    }

    /// Reads `user`'s friends again in the background (0.2 s doubling to 5 s) until the store
    /// answers, then announces. Stops when a newer announcement of `user` supersedes this one
    /// (it says the newer state) or the engine is dropped.
    fn retry_announce(
        &self,
        user: UserId,
        online: bool,
        last_seen: Option<Timestamp>,
        ticket: u64,
    ) {
        let (first, max) = (Duration::from_millis(200), Duration::from_secs(5));
        self.retry_in_background(first, max, move |chat| async move {
            let pending = &chat.engine.inner.announcements;
            if !pending.is_current(user, ticket) {
                return true;
            }
            let Ok(friends) = chat.friend_ids(user).await else {
                return false;
            };
            pending.complete(user, ticket, || {
                chat.publish_presence(&friends, user, online, last_seen)
            });
            true
        });
    }

    /// Tells `friends` (read by the caller) that `user` came online or went offline.
    pub(crate) fn announce_to(
        &self,
        friends: &[UserId],
        user: UserId,
        online: bool,
        last_seen: Option<Timestamp>,
    ) {
        self.engine.inner.announcements.supersede(user);
        self.publish_presence(friends, user, online, last_seen);
    }

    fn publish_presence(
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
