//! Cluster-wide presence: per-user connection counts by node (see the module docs).

use super::RedisBroker;
use crate::presence::Presence;
use redis::{AsyncCommands, Script};
use std::sync::LazyLock;
use zajel_core::UserId;

static PRESENCE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("presence.lua")));
impl RedisBroker {
    /// Runs the presence script with `delta`; returns (this node's count, whether another
    /// live node has a connection of `user`).
    async fn update_presence(&self, user: UserId, delta: i64) -> redis::RedisResult<(i64, bool)> {
        let mut con = self.shared.con.clone();
        let hash: Vec<(String, i64)> = PRESENCE_SCRIPT
            .key(self.shared.keys.presence(user))
            .arg(&self.shared.node)
            .arg(delta)
            .invoke_async(&mut con)
            .await?;
        Ok(self.shared.split_counts(&hash))
    }
}

#[async_trait::async_trait]
impl Presence for RedisBroker {
    async fn connected(&self, user: UserId, first_local: bool) -> bool {
        let _g = self.user_lock(user).lock().await;
        match self.update_presence(user, 1).await {
            Ok((mine, others)) => {
                if mine == 1 {
                    let mut con = self.shared.con.clone();
                    let key = self.shared.keys.node_users(&self.shared.node);
                    if let Err(e) = con.sadd::<_, _, ()>(key, user.to_string()).await {
                        tracing::warn!(error = %e, "presence: could not record the node's user");
                    }
                }
                mine == 1 && !others
            }
            Err(e) => {
                tracing::warn!(user = %user, error = %e, "presence: Redis update failed");
                first_local
            }
        }
    }

    async fn disconnected(&self, user: UserId, last_local: bool) -> bool {
        let _g = self.user_lock(user).lock().await;
        match self.update_presence(user, -1).await {
            Ok((mine, others)) => {
                if mine <= 0 {
                    let mut con = self.shared.con.clone();
                    let key = self.shared.keys.node_users(&self.shared.node);
                    if let Err(e) = con.srem::<_, _, ()>(key, user.to_string()).await {
                        tracing::warn!(error = %e, "presence: could not update the node's users");
                    }
                }
                mine <= 0 && !others
            }
            Err(e) => {
                tracing::warn!(user = %user, error = %e, "presence: Redis update failed");
                last_local
            }
        }
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
