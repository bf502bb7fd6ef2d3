//! [`RedisBroker`]: many nodes sharing one Redis.
//!
//! **Channel layout: one channel per node.** Node `N` subscribes to `P:node:{N}:events` and
//! to nothing else. Where a user is connected is the registry `P:{u:<uid>}:presence` (a hash
//! node id → connection count), which is also the cluster-wide presence. Publishing an event:
//!
//! 1. deliver to the local hub right away (no Redis round trip for local recipients);
//! 2. a background publisher takes events in order, batches them, looks the recipients up in
//!    one pipelined round trip (`HKEYS` per recipient), and `PUBLISH`es each event once to
//!    each *other* node that holds at least one recipient, in a second pipelined round trip.
//!
//! The payload is the event's JSON exactly as serialized once by the origin, behind a small
//! text header with the origin node, the message's conversation and sequence (for resume
//! de-duplication) and the recipient ids; the receiving node hands it to its hub without
//! parsing the JSON.
//!
//! **Presence.** Every connection opening or closing writes its node's count (the hub's) into
//! the user's presence hash (a Lua script, atomic, returning the previous count and the
//! hash): a user is online iff some live node has a count above 0. A write Redis does not
//! take marks the user dirty; a repair task writes the count again until it is taken
//! (`presence.rs`). Each node refreshes a heartbeat key `P:node:{N}` (`PX node_ttl_ms`) every
//! `heartbeat_ms` and is a member of the set `P:nodes`; the users it holds are in
//! `P:node:{N}:users`. Every `sweep_ms` each node checks the other members' heartbeats; the
//! first node to remove a dead member from `P:nodes` (`SREM` returns 1 to one node only)
//! removes that node's entries from its users' presence hashes and reports the users that are
//! now offline everywhere, which the engine announces to their friends.
//!
//! **Redis Cluster** ([`RedisBroker::connect_cluster`]): every key carries a hash tag (a
//! user's presence hash lives in the user's slot; a node's heartbeat, users, missed set and
//! channel in the slot of `{N}`), commands that span slots are sent as concurrent single-slot
//! groups instead of one pipeline, and the node channels use **sharded pub/sub**:
//! `SPUBLISH` (routed to the primary owning the channel's slot) and `SSUBSCRIBE` on a RESP3
//! connection to that primary (`sharded.rs`), re-resolved after a disconnection or a slot
//! move, like any other gap.
//!
//! **Faults.** While Redis is unreachable local delivery continues and remote delivery is lost
//! (counted in [`RedisBroker::lost_total`]). That is safe: every message is stored before it is
//! published, and history is the recovery log. When the subscription comes back after a gap,
//! and when this node finds it was declared dead (its heartbeat expired), it closes every local
//! connection with 4008 ("lagged") so clients resume from their cursors and re-register.

mod envelope;
mod presence;
mod sharded;
mod tasks;

use crate::hub::{Broker, CLOSE_LAGGED, ConnId, Event, Hub};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, IntoConnectionInfo};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use tasks::{heartbeat, publisher, repair, subscriber};
use tokio::sync::{mpsc, watch};
use zajel_core::UserId;
use zajel_core::store::redis::RedisConnection;

/// Settings of a [`RedisBroker`]. Durations in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisBrokerConfig {
    /// This node's id: 1–64 characters of `A-Z a-z 0-9 _ - .`, unique among the nodes sharing
    /// the Redis. [`RedisBrokerConfig::default`] picks a random one.
    pub node_id: String,
    /// Key prefix; must equal the store's prefix when both share a Redis (default `zajel`).
    pub prefix: String,
    /// How often the node refreshes its heartbeat key (default 3000).
    pub heartbeat_ms: u64,
    /// Lifetime of the heartbeat key: a node silent this long is dead (default 10000).
    pub node_ttl_ms: u64,
    /// How often the node looks for dead nodes (default 3000).
    pub sweep_ms: u64,
    /// Events waiting for the background publisher; beyond this, remote delivery of new events
    /// is dropped (and recovered by resume) rather than blocking the request path
    /// (default 65536).
    pub publish_queue: usize,
}

impl Default for RedisBrokerConfig {
    fn default() -> Self {
        Self {
            node_id: random_node_id(),
            prefix: zajel_core::store::redis::DEFAULT_PREFIX.to_owned(),
            heartbeat_ms: 3_000,
            node_ttl_ms: 10_000,
            sweep_ms: 3_000,
            publish_queue: 65_536,
        }
    }
}

/// A random node id (16 hex digits).
pub fn random_node_id() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        b = (t ^ u64::from(std::process::id())).to_le_bytes();
    }
    hex::encode(b)
}

/// Why a [`RedisBroker`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The node id is empty, too long or has characters outside `A-Z a-z 0-9 _ - .`.
    #[error("invalid node id {0:?}: use 1-64 characters of A-Z a-z 0-9 _ - .")]
    InvalidNodeId(String),
    /// Another live node already uses this id.
    #[error("node id {0:?} is in use by a live node")]
    NodeIdInUse(String),
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Key and channel names (`P` = prefix; braces = Cluster hash tag).
struct Keys {
    prefix: String,
}

impl Keys {
    /// `P:nodes`: the registered nodes.
    fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    /// `P:node:{N}`: heartbeat, expires after `node_ttl_ms`.
    fn heartbeat(&self, node: &str) -> String {
        format!("{}:node:{{{node}}}", self.prefix)
    }
    /// `P:node:{N}:users`: users with a connection on node N.
    fn node_users(&self, node: &str) -> String {
        format!("{}:node:{{{node}}}:users", self.prefix)
    }
    /// `P:node:{N}:missed`: users with events published to node N while nobody listened.
    fn missed(&self, node: &str) -> String {
        format!("{}:node:{{{node}}}:missed", self.prefix)
    }
    /// `P:node:{N}:events`: node N's pub/sub channel.
    fn channel(&self, node: &str) -> String {
        format!("{}:node:{{{node}}}:events", self.prefix)
    }
    /// `P:{u:<uid>}:presence`: node id → connection count.
    fn presence(&self, user: UserId) -> String {
        format!("{}:{{u:{user}}}:presence", self.prefix)
    }
}

/// One event waiting for the publisher.
struct Outgoing {
    users: Vec<UserId>,
    event: Arc<Event>,
}

/// Where the subscriber listens for this node's channel.
enum Source {
    /// One Redis: `SUBSCRIBE` on a pub/sub connection of this client.
    Single(redis::Client),
    /// A Cluster: `SSUBSCRIBE` on a connection to the primary owning the channel's slot; the
    /// seed's settings (credentials, TLS) with that primary's address.
    Cluster(redis::ConnectionInfo),
}

struct Shared {
    node: String,
    config: RedisBrokerConfig,
    source: Source,
    con: RedisConnection,
    keys: Keys,
    hub: OnceLock<Arc<Hub>>,
    /// Nodes whose heartbeat was missing at the last sweep.
    dead: RwLock<HashSet<String>>,
    out_tx: mpsc::Sender<Outgoing>,
    out_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    /// Serializes one user's presence updates on this node (count + node users set).
    user_locks: Box<[tokio::sync::Mutex<()>]>,
    stop: watch::Sender<bool>,
    started: AtomicBool,
    /// Connections with an id below this may have missed events published while this node had
    /// no subscription: `u64::MAX` while unsubscribed, else the first id after the last
    /// (re)subscription.
    missable_before: AtomicU64,
    published: AtomicU64,
    received: AtomicU64,
    lost: AtomicU64,
    /// Recipients of events whose cross-node delivery was lost (queue full, lookup or publish
    /// failed): the heartbeat marks them missed on the nodes holding them, which close their
    /// connections with 4008 so they resume.
    lost_users: Mutex<HashSet<UserId>>,
    /// Users whose entry for this node in their presence hash may be wrong (an update Redis
    /// did not take); the repair task rewrites them (see `presence.rs`).
    dirty: Mutex<HashMap<UserId, presence::Dirty>>,
    dirty_wake: tokio::sync::Notify,
    /// Dead nodes this node claimed (won the `SREM`) and has not finished reaping.
    reaping: Mutex<HashSet<String>>,
    /// Where presence changes found in the background go (user, online): the engine tells
    /// the user's friends (and records last seen when offline).
    announcements: OnceLock<mpsc::UnboundedSender<(UserId, bool)>>,
}

/// Cross-node delivery and cluster-wide presence over one Redis (see the module docs).
/// Cheap to clone; clones are the same broker.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use zajel_server::broker::{RedisBroker, RedisBrokerConfig};
/// use zajel_server::{Engine, ServerConfig};
/// let url = "redis://127.0.0.1:6379/";
/// let store = Arc::new(zajel_core::RedisStore::connect(url).await?);
/// let broker = RedisBroker::connect(url, RedisBrokerConfig::default()).await?;
/// let engine = Engine::builder(store, ServerConfig::default())
///     .redis_broker(broker)
///     .build();
/// # let _ = engine; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBroker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("node", &self.shared.node)
            .finish_non_exhaustive()
    }
}

const USER_LOCKS: usize = 256;
const BATCH: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

impl RedisBroker {
    /// Connects to Redis at `url` (e.g. `redis://127.0.0.1:6379/`) and checks that the node id
    /// is valid and not held by a live node. Nothing runs until the broker is given to
    /// [`crate::EngineBuilder::redis_broker`] and the engine is built.
    pub async fn connect(url: &str, config: RedisBrokerConfig) -> Result<Self, BrokerError> {
        if !valid_node_id(&config.node_id) {
            return Err(BrokerError::InvalidNodeId(config.node_id));
        }
        let client = redis::Client::open(url)?;
        let mc = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let con = ConnectionManager::new_with_config(client.clone(), mc).await?;
        Self::start_with(RedisConnection::Single(con), Source::Single(client), config).await
    }

    /// Connects to a Redis Cluster (Redis 7 or later: sharded pub/sub) through any of its
    /// nodes (`seeds`: `redis://host:port/` URLs; the rest are discovered) and checks the node
    /// id as [`RedisBroker::connect`] does. Node channels use `SPUBLISH`/`SSUBSCRIBE`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use zajel_server::broker::{RedisBroker, RedisBrokerConfig};
    /// let seeds = ["redis://10.0.0.1:7000/".to_owned(), "redis://10.0.0.2:7000/".to_owned()];
    /// let broker = RedisBroker::connect_cluster(&seeds, RedisBrokerConfig::default()).await?;
    /// # let _ = broker; Ok(()) }
    /// ```
    pub async fn connect_cluster(
        seeds: &[String],
        config: RedisBrokerConfig,
    ) -> Result<Self, BrokerError> {
        if !valid_node_id(&config.node_id) {
            return Err(BrokerError::InvalidNodeId(config.node_id));
        }
        let Some(first) = seeds.first() else {
            return Err(BrokerError::Redis(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no Redis Cluster seed node given",
            ))));
        };
        let info = first.as_str().into_connection_info()?;
        let client = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .build()?;
        let con = client.get_async_connection().await?;
        Self::start_with(RedisConnection::Cluster(con), Source::Cluster(info), config).await
    }

    async fn start_with(
        mut con: RedisConnection,
        source: Source,
        config: RedisBrokerConfig,
    ) -> Result<Self, BrokerError> {
        let keys = Keys {
            prefix: config.prefix.clone(),
        };
        let taken: bool = con.exists(keys.heartbeat(&config.node_id)).await?;
        if taken {
            return Err(BrokerError::NodeIdInUse(config.node_id));
        }
        let (out_tx, out_rx) = mpsc::channel(config.publish_queue.max(1));
        let (stop, _) = watch::channel(false);
        Ok(Self {
            shared: Arc::new(Shared {
                node: config.node_id.clone(),
                config,
                source,
                con,
                keys,
                hub: OnceLock::new(),
                dead: RwLock::new(HashSet::new()),
                out_tx,
                out_rx: Mutex::new(Some(out_rx)),
                user_locks: (0..USER_LOCKS)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                stop,
                started: AtomicBool::new(false),
                missable_before: AtomicU64::new(u64::MAX),
                published: AtomicU64::new(0),
                received: AtomicU64::new(0),
                lost: AtomicU64::new(0),
                lost_users: Mutex::new(HashSet::new()),
                dirty: Mutex::new(HashMap::new()),
                dirty_wake: tokio::sync::Notify::new(),
                reaping: Mutex::new(HashSet::new()),
                announcements: OnceLock::new(),
            }),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared.node
    }

    /// Events published to other nodes (one per event and target node).
    pub fn published_total(&self) -> u64 {
        self.shared.published.load(Ordering::Relaxed)
    }

    /// Events received from other nodes.
    pub fn received_total(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// Events whose remote delivery was lost (Redis unreachable or publish queue full).
    pub fn lost_total(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Starts the background tasks (subscriber, publisher, heartbeat and sweep, presence
    /// repair) delivering into `hub`; presence changes found in the background (users offline
    /// after their node died, a repaired update) are sent on `announcements` as (user,
    /// online). Must run in a Tokio runtime. Only the first call has an effect.
    pub(crate) fn start(
        &self,
        hub: Arc<Hub>,
        announcements: mpsc::UnboundedSender<(UserId, bool)>,
    ) {
        if self.shared.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.shared.hub.set(hub);
        let _ = self.shared.announcements.set(announcements);
        let rx = self
            .shared
            .out_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rx) = rx {
            tokio::spawn(publisher(self.shared.clone(), rx));
        }
        tokio::spawn(subscriber(self.shared.clone()));
        tokio::spawn(heartbeat(self.shared.clone()));
        tokio::spawn(repair(self.shared.clone()));
    }

    /// Leaves the cluster after a graceful shutdown: stops the background tasks and deletes
    /// the heartbeat, so other nodes reap whatever this node still held at their next sweep.
    pub async fn leave(&self) {
        if self.shared.stop.send_replace(true) {
            return;
        }
        let mut con = self.shared.con.clone();
        let key = self.shared.keys.heartbeat(&self.shared.node);
        if let Err(e) = con.del::<_, ()>(key).await {
            tracing::warn!(error = %e, "could not delete the node heartbeat");
        }
    }

    fn hub(&self) -> Option<&Arc<Hub>> {
        self.shared.hub.get()
    }
}

impl Shared {
    /// `PUBLISH` to node `node`'s channel, or `SPUBLISH` on a Cluster (sharded pub/sub: the
    /// message stays on the shard owning the channel's slot).
    fn publish_cmd(&self, node: &str, payload: &[u8]) -> Cmd {
        let name = if self.con.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let mut cmd = redis::cmd(name);
        cmd.arg(self.keys.channel(node)).arg(payload);
        cmd
    }

    fn lock_reaping(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.reaping.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers recipients whose cross-node delivery was lost (see `lost_users`).
    fn lose(&self, users: &[UserId]) {
        self.lost_users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(users.iter().copied());
    }

    /// (this node's count, whether another live node has a count above 0).
    fn split_counts(&self, hash: &[(String, i64)]) -> (i64, bool) {
        let dead = self.dead.read().unwrap_or_else(|e| e.into_inner());
        let mut mine = 0;
        let mut others = false;
        for (node, count) in hash {
            if *node == self.node {
                mine = *count;
            } else if *count > 0 && !dead.contains(node) {
                others = true;
            }
        }
        (mine, others)
    }

    /// Closes (4008) the local connections that existed before connection id `before`.
    fn resync(&self, before: ConnId, why: &str) {
        if let Some(hub) = self.hub.get() {
            let n = hub.close_older(before, CLOSE_LAGGED);
            tracing::warn!(
                connections = n,
                "{why}: closing local connections (4008) so they resume"
            );
        }
    }
}

impl Broker for RedisBroker {
    fn publish(&self, users: &[UserId], event: Arc<Event>, skip: Option<ConnId>) {
        if let Some(hub) = self.hub() {
            hub.deliver(users, &event, skip);
        }
        let out = Outgoing {
            users: users.to_vec(),
            event,
        };
        if let Err(e) = self.shared.out_tx.try_send(out) {
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
            let out = match e {
                mpsc::error::TrySendError::Full(o) | mpsc::error::TrySendError::Closed(o) => o,
            };
            self.shared.lose(&out.users);
            tracing::warn!("cross-node publish queue full or closed: remote delivery dropped");
        }
    }

    fn close_user(&self, user: UserId, session: Option<&str>, code: u16) {
        if let Some(hub) = self.hub() {
            hub.close_user(user, session, code);
        }
        let shared = self.shared.clone();
        let session = session.map(str::to_owned);
        // In the background (the trait must not block). If Redis is away the close is lost
        // here, but connections re-check their session periodically (see `ws/socket.rs`).
        tokio::spawn(async move {
            let mut con = shared.con.clone();
            let nodes: Vec<String> = match con.hkeys(shared.keys.presence(user)).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look up where a revoked session is connected");
                    return;
                }
            };
            let payload = envelope::encode_close(&shared.node, user, session.as_deref(), code);
            let others: Vec<&String> = nodes.iter().filter(|n| **n != shared.node).collect();
            if others.is_empty() {
                return;
            }
            let groups = others
                .into_iter()
                .map(|n| vec![shared.publish_cmd(n, &payload)])
                .collect();
            if let Err(e) = shared.con.query_groups(groups).await {
                tracing::warn!(error = %e, "could not tell other nodes to close revoked sessions");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_checked() {
        assert!(valid_node_id("node-a_1.x"));
        assert!(!valid_node_id(""));
        assert!(!valid_node_id("a}b"));
        assert!(!valid_node_id(&"x".repeat(65)));
        assert!(valid_node_id(&random_node_id()));
    }
}
