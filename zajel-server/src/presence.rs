//! Who is online: the [`Presence`] seam.
//!
//! The engine asks a `Presence` three things: a connection of a user was registered (did the
//! user just come online?), a connection ended (did the user just go offline?), and which of a
//! list of users are online (for `friends_list` and `synced`). [`LocalPresence`] answers from
//! this node's [`Hub`]; the Redis broker's presence
//! ([`RedisBroker`](crate::broker::redis::RedisBroker)) answers for every node sharing the
//! Redis, and expires the users of a node that died.

use crate::hub::Hub;
use std::sync::Arc;
use zajel_core::UserId;

/// Cluster-wide (or single-node) online state.
#[async_trait::async_trait]
pub trait Presence: Send + Sync + 'static {
    /// A connection of `user` was registered on this node; `first_local` says whether it is
    /// the user's first connection on this node. Returns true when the user just came online
    /// (no other connection anywhere), i.e. when friends must be told `online`.
    ///
    /// Returns only once later publications to `user` will reach this node (for the Redis
    /// broker: once Redis took the registration; if it did not, the broker's repair task
    /// registers the connection as soon as Redis takes writes again).
    async fn connected(&self, user: UserId, first_local: bool) -> bool;

    /// A connection of `user` on this node ended; `last_local` says whether it was the user's
    /// last one on this node. Returns true when the user just went offline everywhere.
    async fn disconnected(&self, user: UserId, last_local: bool) -> bool;

    /// Whether each of `users` is online (same order).
    async fn online(&self, users: &[UserId]) -> Vec<bool>;

    /// Whether this presence is this node's alone: every user it reports online is
    /// connected to this node, so every friendship that could race a connection's
    /// registration is made on this node. A connection then reads its friend list together
    /// with its session (one store read; a counter of the friendship changes made on this
    /// node tells it when to read again); otherwise it reads the list after its
    /// registration. Default `false` (the safe answer).
    fn node_local(&self) -> bool {
        false
    }
}

/// Single-node presence: a user is online while they have a connection in this node's hub.
pub struct LocalPresence {
    hub: Arc<Hub>,
}

impl LocalPresence {
    /// Presence read from `hub`.
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

#[async_trait::async_trait]
impl Presence for LocalPresence {
    async fn connected(&self, _user: UserId, first_local: bool) -> bool {
        first_local
    }

    async fn disconnected(&self, _user: UserId, last_local: bool) -> bool {
        last_local
    }

    async fn online(&self, users: &[UserId]) -> Vec<bool> {
        users.iter().map(|&u| self.hub.is_online(u)).collect()
    }

    fn node_local(&self) -> bool {
        true
    }
}
