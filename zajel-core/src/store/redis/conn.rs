//! [`RedisConnection`]: one Redis node or a Redis Cluster behind one type, shared by the store
//! and the server's broker.

use ::redis::aio::ConnectionManager;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, RedisError, RedisResult, Value};

/// A multiplexed connection to one Redis node (a reconnecting
/// [`ConnectionManager`]) or to a Redis Cluster (redis-rs routes each command to its slot's
/// primary and follows `MOVED`/`ASK` after a slot move or a failover). Cheap to clone; clones
/// share the connection.
#[derive(Clone)]
pub enum RedisConnection {
    /// One node (standalone, or a primary behind one URL).
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Whether this is a Cluster connection (pipelines must then stay in one slot, and pub/sub
    /// is sharded).
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConnection::Cluster(_))
    }

    /// Runs `groups` of commands in about one round trip and returns each group's replies, in
    /// order. On one node every group goes into one pipeline. On a Cluster each group is one
    /// pipeline of its own (so a group must stay in one slot; its commands run in order) and
    /// the groups run concurrently, in no particular order relative to each other. Any error
    /// fails the whole call.
    pub async fn query_groups(&self, groups: Vec<Vec<Cmd>>) -> RedisResult<Vec<Vec<Value>>> {
        match self {
            RedisConnection::Single(_) => {
                let mut pipe = ::redis::pipe();
                let lens: Vec<usize> = groups.iter().map(Vec::len).collect();
                for cmd in groups.into_iter().flatten() {
                    pipe.add_command(cmd);
                }
                if lens.iter().all(|&n| n == 0) {
                    return Ok(lens.iter().map(|_| Vec::new()).collect());
                }
                let mut con = self.clone();
                let mut replies: Vec<Value> = pipe.query_async(&mut con).await?;
                let mut out = Vec::with_capacity(lens.len());
                for n in lens.into_iter().rev() {
                    out.push(replies.split_off(replies.len().saturating_sub(n)));
                }
                out.reverse();
                Ok(out)
            }
            RedisConnection::Cluster(_) => {
                let tasks: Vec<_> = groups
                    .into_iter()
                    .map(|group| {
                        let mut con = self.clone();
                        tokio::spawn(async move {
                            if group.is_empty() {
                                return Ok(Vec::new());
                            }
                            let mut pipe = ::redis::pipe();
                            for cmd in group {
                                pipe.add_command(cmd);
                            }
                            pipe.query_async::<Vec<Value>>(&mut con).await
                        })
                    })
                    .collect();
                let mut out = Vec::with_capacity(tasks.len());
                for t in tasks {
                    out.push(t.await.map_err(|e| {
                        RedisError::from(std::io::Error::other(format!("task failed: {e}")))
                    })??);
                }
                Ok(out)
            }
        }
    }
}

impl ::redis::aio::ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> ::redis::RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a ::redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> ::redis::RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}
