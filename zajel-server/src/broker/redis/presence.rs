//! Cluster-wide presence: per-user connection counts by node (see the module docs).
//!
//! Every update writes this node's count of the user **as its hub holds it** (absolute, not
//! ±1), so the registry converges to the hub whatever Redis dropped: an update Redis does not
//! take (full under `noeviction`, a timeout, a failover) marks the user dirty, and the repair
//! task (`tasks::repair`) writes their count again until Redis takes it, then announces what
//! the update would have. Until then other nodes do not publish to this node for that user
//! (see `docs/server.md`, "Presence updates Redis does not take").

use super::{RedisBroker, Shared};
use crate::hub::CLOSE_LAGGED;
use crate::presence::Presence;
use redis::{AsyncCommands, Script};
use std::sync::LazyLock;
use zajel_core::UserId;

static PRESENCE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("presence.lua")));

/// What one presence write changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Written {
    /// This node's count before the write, as the registry had it.
    prev: i64,
    /// This node's count now (its hub's).
    mine: i64,
    /// Whether another live node has a connection of the user.
    others: bool,
}

impl Written {
    /// `Some(true)` if the write took the user online cluster-wide, `Some(false)` offline,
    /// else `None`: the announcement the write owes the user's friends.
    pub(super) fn transition(self) -> Option<bool> {
        if self.others {
            return None;
        }
        match (self.prev > 0, self.mine > 0) {
            (false, true) => Some(true),
            (true, false) => Some(false),
            _ => None,
        }
    }

    /// Whether the user is online anywhere after the write.
    fn online(self) -> bool {
        self.mine > 0 || self.others
    }
}

/// A user whose entry for this node may be wrong in Redis (an update it did not take).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Dirty {
    /// What this node announced for the user from its own view meanwhile.
    announced: Option<bool>,
    /// The failure does not prove that nothing was stored meanwhile (a timeout, a lost
    /// connection, a Cluster): other nodes may have stored events for the user and, not
    /// finding this node in the registry, not published them here. If the repair finds the
    /// node was missing, it closes the user's connections here with 4008 so they resume.
    resume: bool,
}

impl Dirty {
    /// Folds a later failure into this one; `announced` is the latest thing said, unless
    /// the later one said nothing.
    fn merge(&mut self, later: Dirty) {
        if later.announced.is_some() {
            self.announced = later.announced;
        }
        self.resume |= later.resume;
    }
}

/// What a repair announces, given its write and what this node announced from its own view
/// (`announced`) when the updates failed: the write's transition unless that was already
/// said, else a correction if the earlier announcement turned out wrong.
pub(super) fn repair_announcement(w: Written, announced: Option<bool>) -> Option<bool> {
    match (w.transition(), announced) {
        (Some(t), a) if a != Some(t) => Some(t),
        (None, Some(a)) if a != w.online() => Some(w.online()),
        _ => None,
    }
}

impl Shared {
    /// The number of connections `user` has on this node.
    fn local_count(&self, user: UserId) -> i64 {
        self.hub.get().map_or(0, |h| {
            i64::try_from(h.connections_of(user)).unwrap_or(i64::MAX)
        })
    }

    /// Writes this node's count of `user` (its hub's) into the user's presence hash, and
    /// keeps `P:node:{N}:users` in step (always when `repair`, else only when the count
    /// crossed 0). On one Redis both are one script call (one round trip); on a Cluster the
    /// set is in another slot, so it is a second command after the script. Call under the
    /// user's lock. A failed set update after the count was taken marks the user dirty.
    pub(super) async fn write_presence(
        &self,
        user: UserId,
        repair: bool,
    ) -> redis::RedisResult<Written> {
        let n = self.local_count(user);
        let mut con = self.con.clone();
        let cluster = con.is_cluster();
        let node_users = self.keys.node_users(&self.node);
        let member = user.to_string();
        let mut call = PRESENCE_SCRIPT.key(self.keys.presence(user));
        if !cluster {
            call.key(&node_users);
        }
        let (prev, hash): (i64, Vec<(String, i64)>) = call
            .arg(&self.node)
            .arg(n)
            .arg(if repair { "1" } else { "0" })
            .arg(&member)
            .invoke_async(&mut con)
            .await?;
        let (_, others) = self.split_counts(&hash);
        let set = if !cluster {
            Ok(())
        } else if n > 0 && (repair || prev <= 0) {
            con.sadd::<_, _, ()>(node_users, member).await
        } else if n <= 0 && (repair || prev > 0) {
            con.srem::<_, _, ()>(node_users, member).await
        } else {
            Ok(())
        };
        if let Err(e) = set {
            // The reaper reads that set if this node dies: a user missing from it would stay
            // online forever.
            tracing::warn!(user = %user, error = %e, "presence: could not update the node's users; will retry");
            self.mark_dirty(user, None, None);
        }
        Ok(Written {
            prev,
            mine: n,
            others,
        })
    }

    /// Remembers that `user`'s entry for this node may be wrong in Redis after `error`;
    /// `announced` is what this node told their friends from its own view meanwhile (kept
    /// until a repair).
    pub(super) fn mark_dirty(
        &self,
        user: UserId,
        announced: Option<bool>,
        error: Option<&redis::RedisError>,
    ) {
        let later = Dirty {
            announced,
            resume: error.is_some_and(|e| !self.nothing_stored_during(e)),
        };
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(user)
            .or_default()
            .merge(later);
        self.dirty_wake.notify_one();
    }

    /// Whether `error` shows that the store could not take writes either: one Redis (the
    /// store's) refusing every write. Then no event was stored, so none was missed.
    fn nothing_stored_during(&self, error: &redis::RedisError) -> bool {
        !self.con.is_cluster()
            && matches!(
                error.code(),
                Some("OOM" | "MISCONF" | "READONLY" | "NOREPLICAS")
            )
    }

    /// Puts back a user whose repair failed, under anything marked since.
    pub(super) fn requeue_dirty(&self, user: UserId, earlier: Dirty) {
        let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        let e = dirty.entry(user).or_default();
        let later = *e;
        *e = earlier;
        e.merge(later);
    }

    /// Rewrites `user`'s entry for this node and announces what the failed updates owed.
    pub(super) async fn repair_user(&self, user: UserId, dirty: Dirty) -> redis::RedisResult<()> {
        let _g = self.user_lock(user).lock().await;
        let w = self.write_presence(user, true).await?;
        if let Some(online) = repair_announcement(w, dirty.announced) {
            tracing::info!(user = %user, online, "presence repaired in Redis; announcing");
            self.announce(user, online);
        }
        if dirty.resume
            && w.prev <= 0
            && w.mine > 0
            && self.other_nodes_registered().await?
            && let Some(hub) = self.hub.get()
        {
            tracing::info!(user = %user, "presence repaired after events may have been missed: closing (4008) to resume");
            hub.close_user_older(user, hub.next_conn_id(), CLOSE_LAGGED, 1);
        }
        Ok(())
    }

    /// Whether `P:nodes` holds a node besides this one. Only other nodes' events can have
    /// missed a connection whose registration failed (this node delivers its own events
    /// through its hub, registry or not), so with none there is nothing to resume for and the
    /// repair spares the connection its 4008 (the common case: one node whose Redis
    /// restarted).
    async fn other_nodes_registered(&self) -> redis::RedisResult<bool> {
        let mut con = self.con.clone();
        let nodes: Vec<String> = con.smembers(self.keys.nodes()).await?;
        Ok(nodes.iter().any(|n| *n != self.node))
    }

    /// Asks the engine to tell `user`'s friends that they came online or went offline
    /// (offline also records last seen).
    pub(super) fn announce(&self, user: UserId, online: bool) {
        if let Some(tx) = self.announcements.get() {
            let _ = tx.send((user, online));
        }
    }

    pub(super) fn user_lock(&self, user: UserId) -> &tokio::sync::Mutex<()> {
        let i = (user.0.as_u128() % self.user_locks.len() as u128) as usize;
        &self.user_locks[i]
    }
}

impl RedisBroker {
    /// Writes `user`'s count after one of their connections here opened (`online`) or closed
    /// (`!online`); `edge` says whether it was their first (last) on this node. Returns true
    /// when the user just went `online` (offline) cluster-wide. A write that settles the
    /// opposite transition (another connection's failed update) announces that one itself.
    /// If Redis does not take the write, the user is marked for repair and the node's own view
    /// (`edge`) answers.
    async fn update_presence(&self, user: UserId, online: bool, edge: bool) -> bool {
        let shared = &self.shared;
        let _g = shared.user_lock(user).lock().await;
        match shared.write_presence(user, false).await {
            Ok(w) => match w.transition() {
                Some(t) if t == online => true,
                Some(t) => {
                    shared.announce(user, t);
                    false
                }
                None => false,
            },
            Err(e) => {
                tracing::warn!(user = %user, error = %e, "presence: Redis did not take the update; will repair");
                shared.mark_dirty(user, edge.then_some(online), Some(&e));
                edge
            }
        }
    }
}

#[async_trait::async_trait]
impl Presence for RedisBroker {
    async fn connected(&self, user: UserId, first_local: bool) -> bool {
        self.update_presence(user, true, first_local).await
    }

    async fn disconnected(&self, user: UserId, last_local: bool) -> bool {
        self.update_presence(user, false, last_local).await
    }

    async fn online(&self, users: &[UserId]) -> Vec<bool> {
        if users.is_empty() {
            return Vec::new();
        }
        // One group per user: on a Cluster each presence hash is in its user's slot.
        let groups = users
            .iter()
            .map(|&u| {
                let mut c = redis::cmd("HGETALL");
                c.arg(self.shared.keys.presence(u));
                vec![c]
            })
            .collect();
        let hashes = self.shared.con.query_groups(groups).await.and_then(|r| {
            r.into_iter()
                .map(|mut g| match g.pop() {
                    Some(v) => Ok(redis::from_redis_value::<Vec<(String, i64)>>(v)?),
                    None => Ok(Vec::new()),
                })
                .collect::<redis::RedisResult<Vec<_>>>()
        });
        match hashes {
            Ok(hashes) => hashes
                .iter()
                .map(|h| {
                    let (mine, others) = self.shared.split_counts(h);
                    mine > 0 || others
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "presence: Redis read failed; answering from this node");
                users
                    .iter()
                    .map(|&u| self.hub().is_some_and(|h| h.is_online(u)))
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(prev: i64, mine: i64, others: bool) -> Written {
        Written { prev, mine, others }
    }

    #[test]
    fn transitions_are_those_of_the_increment_script() {
        assert_eq!(w(0, 1, false).transition(), Some(true));
        assert_eq!(w(0, 2, false).transition(), Some(true));
        assert_eq!(w(1, 2, false).transition(), None);
        assert_eq!(w(1, 0, false).transition(), Some(false));
        assert_eq!(w(0, 0, false).transition(), None);
        assert_eq!(w(0, 1, true).transition(), None);
        assert_eq!(w(1, 0, true).transition(), None);
    }

    #[test]
    fn later_failures_keep_the_latest_announcement_and_any_resume() {
        let mut d = Dirty {
            announced: Some(true),
            resume: true,
        };
        d.merge(Dirty {
            announced: None,
            resume: false,
        });
        assert_eq!(
            d,
            Dirty {
                announced: Some(true),
                resume: true
            }
        );
        d.merge(Dirty {
            announced: Some(false),
            resume: false,
        });
        assert_eq!(d.announced, Some(false));
        assert!(d.resume);
    }

    #[test]
    fn a_repair_says_what_was_owed_once_and_corrects_wrong_guesses() {
        // Connected while Redis refused: announced online from the node's view; the repair
        // registers the connection and does not say it again.
        assert_eq!(repair_announcement(w(0, 1, false), Some(true)), None);
        // Nothing was announced (not the first local connection): the repair's transition.
        assert_eq!(repair_announcement(w(0, 1, false), None), Some(true));
        // Last local connection closed while Redis refused, but the user is on another node:
        // the offline guess was wrong.
        assert_eq!(repair_announcement(w(1, 0, true), Some(false)), Some(true));
        // Offline guessed and true: the repair removes the field silently.
        assert_eq!(repair_announcement(w(1, 0, false), Some(false)), None);
        // Connected while Redis refused (online said), then the disconnect's write found nothing
        // to remove: offline is owed.
        assert_eq!(repair_announcement(w(0, 0, false), Some(true)), Some(false));
        // Nothing owed.
        assert_eq!(repair_announcement(w(2, 2, false), None), None);
        assert_eq!(repair_announcement(w(0, 0, true), None), None);
    }
}
