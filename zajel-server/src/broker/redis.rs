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
//! **Presence.** Every connection adds 1 to its node's count in the user's presence hash (a
//! Lua script, atomic, returning the whole hash): a user is online iff some live node has a
//! count above 0. Each node refreshes a heartbeat key `P:node:{N}` (`PX node_ttl_ms`) every
//! `heartbeat_ms` and is a member of the set `P:nodes`; the users it holds are in
//! `P:node:{N}:users`. Every `sweep_ms` each node checks the other members' heartbeats; the
//! first node to remove a dead member from `P:nodes` (`SREM` returns 1 to one node only)
//! removes that node's entries from its users' presence hashes and reports the users that are
//! now offline everywhere, which the engine announces to their friends.
//!
//! **Faults.** While Redis is unreachable local delivery continues and remote delivery is lost
//! (counted in [`RedisBroker::lost_total`]). That is safe: every message is stored before it is
//! published, and history is the recovery log. When the subscription comes back after a gap,
//! and when this node finds it was declared dead (its heartbeat expired), it closes every local
//! connection with 4008 ("lagged") so clients resume from their cursors and re-register.

use crate::hub::{Broker, CLOSE_LAGGED, ConnId, Event, Hub};
use crate::presence::Presence;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use zajel_core::{ConversationId, UserId};

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

static PRESENCE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("presence.lua")));
const REAP_LUA: &str = include_str!("reap.lua");

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

struct Shared {
    node: String,
    config: RedisBrokerConfig,
    client: redis::Client,
    con: ConnectionManager,
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
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)));
        let mut con = ConnectionManager::new_with_config(client.clone(), mc).await?;
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
                client,
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

    /// Starts the background tasks (subscriber, publisher, heartbeat and sweep) delivering
    /// into `hub`; users found offline after a node died are sent on `offline`. Must run in a
    /// Tokio runtime. Only the first call has an effect.
    pub(crate) fn start(&self, hub: Arc<Hub>, offline: mpsc::UnboundedSender<UserId>) {
        if self.shared.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.shared.hub.set(hub);
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
        tokio::spawn(heartbeat(self.shared.clone(), offline));
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

    fn user_lock(&self, user: UserId) -> &tokio::sync::Mutex<()> {
        let i = (user.0.as_u128() % self.shared.user_locks.len() as u128) as usize;
        &self.shared.user_locks[i]
    }

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

impl Shared {
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
        if self.shared.out_tx.try_send(out).is_err() {
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("cross-node publish queue full or closed: remote delivery dropped");
        }
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
        let mut pipe = redis::pipe();
        for &u in users {
            pipe.hgetall(self.shared.keys.presence(u));
        }
        let mut con = self.shared.con.clone();
        match pipe.query_async::<Vec<Vec<(String, i64)>>>(&mut con).await {
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

// ---- wire format -------------------------------------------------------------------------

const MAGIC: &str = "z1";

/// `z1\n<origin>\n<conversation or empty>\n<seq>\n<uid>,<uid>…\n<json>`.
fn encode(origin: &str, users: &[UserId], event: &Event) -> Vec<u8> {
    let json = event.text();
    let mut out = String::with_capacity(json.len() + 64 + users.len() * 37);
    out.push_str(MAGIC);
    out.push('\n');
    out.push_str(origin);
    out.push('\n');
    match event.message_seq() {
        Some((c, seq)) => {
            out.push_str(&c.to_string());
            out.push('\n');
            out.push_str(&seq.to_string());
        }
        None => out.push_str("\n0"),
    }
    out.push('\n');
    for (i, u) in users.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&u.to_string());
    }
    out.push('\n');
    out.push_str(json);
    out.into_bytes()
}

/// A received envelope: origin node, recipients and the event.
struct Envelope {
    origin: String,
    users: Vec<UserId>,
    event: Arc<Event>,
}

fn decode(payload: &[u8]) -> Option<Envelope> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(6, '\n');
    if parts.next()? != MAGIC {
        return None;
    }
    let origin = parts.next()?.to_owned();
    let conv = parts.next()?;
    let seq: u64 = parts.next()?.parse().ok()?;
    let users = parts
        .next()?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<UserId>().ok())
        .collect::<Option<Vec<_>>>()?;
    let json = parts.next()?;
    let message = if conv.is_empty() {
        None
    } else {
        Some((conv.parse::<ConversationId>().ok()?, seq))
    };
    Some(Envelope {
        origin,
        users,
        event: Event::from_serialized(json.to_owned(), message),
    })
}

// ---- background tasks --------------------------------------------------------------------

async fn publisher(shared: Arc<Shared>, mut rx: mpsc::Receiver<Outgoing>) {
    let mut stop = shared.stop.subscribe();
    let mut con = shared.con.clone();
    loop {
        let first = tokio::select! {
            _ = stop.changed() => return,
            ev = rx.recv() => match ev {
                Some(ev) => ev,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(ev) => batch.push(ev),
                Err(_) => break,
            }
        }
        // 1. Where are the recipients? One pipelined round trip.
        let mut users: Vec<UserId> = batch.iter().flat_map(|o| o.users.iter().copied()).collect();
        users.sort_unstable();
        users.dedup();
        let mut pipe = redis::pipe();
        for &u in &users {
            pipe.hkeys(shared.keys.presence(u));
        }
        let nodes: Vec<Vec<String>> = match pipe.query_async(&mut con).await {
            Ok(n) => n,
            Err(e) => {
                shared.lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::warn!(error = %e, events = batch.len(), "cross-node lookup failed; remote delivery lost");
                continue;
            }
        };
        let dead = shared
            .dead
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let located: HashMap<UserId, Vec<String>> = users
            .into_iter()
            .zip(nodes)
            .map(|(u, ns)| {
                let remote = ns
                    .into_iter()
                    .filter(|n| *n != shared.node && !dead.contains(n))
                    .collect();
                (u, remote)
            })
            .collect();
        // 2. Each event once to each other node holding a recipient, in publish order.
        let mut pipe = redis::pipe();
        let mut count = 0u64;
        // (target node, recipients on it), one per PUBLISH, to mark missed deliveries.
        let mut sent: Vec<(&str, Vec<UserId>)> = Vec::new();
        for out in &batch {
            let mut targets: Vec<&str> = out
                .users
                .iter()
                .filter_map(|u| located.get(u))
                .flatten()
                .map(String::as_str)
                .collect();
            if targets.is_empty() {
                continue;
            }
            targets.sort_unstable();
            targets.dedup();
            let payload = encode(&shared.node, &out.users, &out.event);
            for t in targets {
                pipe.publish(shared.keys.channel(t), &payload[..]);
                let on_t = out
                    .users
                    .iter()
                    .filter(|u| located.get(u).is_some_and(|ns| ns.iter().any(|n| n == t)))
                    .copied()
                    .collect();
                sent.push((t, on_t));
                count += 1;
            }
        }
        if count == 0 {
            continue;
        }
        match pipe.query_async::<Vec<i64>>(&mut con).await {
            Ok(receivers) => {
                shared.published.fetch_add(count, Ordering::Relaxed);
                // A node that holds recipients but was not subscribed (its subscription is
                // reconnecting) missed the event: tell it which users to resync.
                let mut missed = redis::pipe();
                let mut any = false;
                for ((t, users), n) in sent.iter().zip(receivers) {
                    if n == 0 && !users.is_empty() {
                        let key = shared.keys.missed(t);
                        let ids: Vec<String> = users.iter().map(UserId::to_string).collect();
                        missed.sadd(&key, ids).ignore();
                        missed.pexpire(&key, 60_000).ignore();
                        any = true;
                    }
                }
                if any && let Err(e) = missed.query_async::<()>(&mut con).await {
                    tracing::warn!(error = %e, "could not record missed cross-node deliveries");
                }
            }
            Err(e) => {
                shared.lost.fetch_add(count, Ordering::Relaxed);
                tracing::warn!(error = %e, "cross-node publish failed; remote delivery lost");
            }
        }
    }
}

async fn subscriber(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let channel = shared.keys.channel(&shared.node);
    let mut backoff = Duration::from_millis(100);
    // Set when a subscription is lost: connections older than this may have missed events.
    let mut gap_from: Option<ConnId> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let attempt = async {
            let mut ps = shared.client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        let ps = tokio::select! {
            _ = stop.changed() => return,
            r = attempt => r,
        };
        match ps {
            Ok(ps) => {
                backoff = Duration::from_millis(100);
                if let Some(h) = shared.hub.get() {
                    shared
                        .missable_before
                        .store(h.next_conn_id(), Ordering::Release);
                }
                if let Some(before) = gap_from.take() {
                    // Events published to this node while it was not subscribed are lost.
                    shared.resync(before, "cross-node subscription restored after a gap");
                }
                tracing::debug!(channel = %channel, "subscribed");
                let mut stream = ps.into_on_message();
                loop {
                    let msg = tokio::select! {
                        _ = stop.changed() => return,
                        m = stream.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    match decode(msg.get_payload_bytes()) {
                        Some(env) if env.origin != shared.node => {
                            shared.received.fetch_add(1, Ordering::Relaxed);
                            if let Some(hub) = shared.hub.get() {
                                hub.deliver(&env.users, &env.event, None);
                            }
                        }
                        Some(_) => {}
                        None => tracing::warn!("ignoring a malformed cross-node event"),
                    }
                }
                tracing::warn!("cross-node subscription lost; reconnecting");
                shared.missable_before.store(u64::MAX, Ordering::Release);
                if gap_from.is_none() {
                    gap_from = shared.hub.get().map(|h| h.next_conn_id());
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot subscribe to Redis");
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn heartbeat(shared: Arc<Shared>, offline: mpsc::UnboundedSender<UserId>) {
    let mut stop = shared.stop.subscribe();
    let mut beat = tokio::time::interval(Duration::from_millis(shared.config.heartbeat_ms.max(1)));
    let mut sweep = tokio::time::interval(Duration::from_millis(shared.config.sweep_ms.max(1)));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut con = shared.con.clone();
    let mut registered = false;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = beat.tick() => {
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(shared.keys.heartbeat(&shared.node))
                    .arg("1")
                    .arg("PX")
                    .arg(shared.config.node_ttl_ms.max(1))
                    .ignore()
                    .sadd(shared.keys.nodes(), &shared.node);
                match pipe.query_async::<(i64,)>(&mut con).await {
                    Ok((added,)) => {
                        if added == 1 && registered {
                            // Another node declared this one dead (or Redis lost its data):
                            // our presence entries are gone; make clients re-register.
                            let before = shared.hub.get().map_or(0, |h| h.next_conn_id());
                            shared.resync(before, "this node was missing from the node registry");
                        }
                        registered = true;
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
                let key = shared.keys.missed(&shared.node);
                let taken = redis::pipe()
                    .atomic()
                    .smembers(&key)
                    .del(&key)
                    .ignore()
                    .query_async::<(Vec<String>,)>(&mut con)
                    .await;
                if let (Ok((users,)), Some(hub)) = (taken, shared.hub.get()) {
                    // Connections registered after the (re)subscription receive every later
                    // publish, and a resume reads history after registering: spare them.
                    let before = shared.missable_before.load(Ordering::Acquire);
                    for u in users.iter().filter_map(|u| u.parse::<UserId>().ok()) {
                        tracing::info!(user = %u, "missed a cross-node event: closing (4008) to resume");
                        hub.close_user_older(u, before, CLOSE_LAGGED);
                    }
                }
            }
            _ = sweep.tick() => {
                if let Err(e) = sweep_dead(&shared, &mut con, &offline).await {
                    tracing::warn!(error = %e, "dead-node sweep failed");
                }
            }
        }
    }
}

/// Finds nodes whose heartbeat expired, claims each (one node wins the `SREM`), removes its
/// presence entries and reports users now offline everywhere.
async fn sweep_dead(
    shared: &Shared,
    con: &mut ConnectionManager,
    offline: &mpsc::UnboundedSender<UserId>,
) -> redis::RedisResult<()> {
    let members: Vec<String> = con.smembers(shared.keys.nodes()).await?;
    let others: Vec<String> = members.into_iter().filter(|n| *n != shared.node).collect();
    if others.is_empty() {
        shared
            .dead
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for n in &others {
        pipe.exists(shared.keys.heartbeat(n));
    }
    let alive: Vec<bool> = pipe.query_async(con).await?;
    let dead: Vec<String> = others
        .into_iter()
        .zip(alive)
        .filter(|(_, a)| !a)
        .map(|(n, _)| n)
        .collect();
    *shared.dead.write().unwrap_or_else(|e| e.into_inner()) = dead.iter().cloned().collect();
    for node in dead {
        let claimed: i64 = con.srem(shared.keys.nodes(), &node).await?;
        if claimed != 1 {
            continue;
        }
        tracing::info!(node = %node, "node is dead (heartbeat expired); reaping its presence");
        let users: Vec<String> = con.smembers(shared.keys.node_users(&node)).await?;
        for chunk in users.chunks(BATCH) {
            let ids: Vec<UserId> = chunk.iter().filter_map(|u| u.parse().ok()).collect();
            let mut pipe = redis::pipe();
            for &u in &ids {
                // EVAL (not EVALSHA): runs once per dead node, no NOSCRIPT handling needed.
                pipe.cmd("EVAL")
                    .arg(REAP_LUA)
                    .arg(1)
                    .arg(shared.keys.presence(u))
                    .arg(&node);
            }
            let hashes: Vec<Vec<(String, i64)>> = pipe.query_async(con).await?;
            for (u, h) in ids.into_iter().zip(hashes) {
                let (mine, others) = shared.split_counts(&h);
                if mine <= 0 && !others {
                    let _ = offline.send(u);
                }
            }
        }
        con.del::<_, ()>(&[shared.keys.node_users(&node), shared.keys.missed(&node)])
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zajel_core::protocol::ServerFrame;

    #[test]
    fn envelope_round_trips_without_reserializing() {
        let a: UserId = "00000000-0000-4000-8000-000000000001"
            .parse()
            .expect("uuid");
        let b: UserId = "00000000-0000-4000-8000-000000000002"
            .parse()
            .expect("uuid");
        let ev = Event::new(&ServerFrame::Typing {
            conversation: ConversationId::direct(a, b),
            user: a,
            active: true,
        });
        let bytes = encode("node-1", &[a, b], &ev);
        let env = decode(&bytes).expect("decodes");
        assert_eq!(env.origin, "node-1");
        assert_eq!(env.users, vec![a, b]);
        assert_eq!(env.event.text(), ev.text());
        assert!(env.event.message_seq().is_none());
        assert!(decode(b"z2\nx").is_none());
        assert!(decode(b"z1\nn\n\n0\nnot-a-uuid\n{}").is_none());
    }

    #[test]
    fn node_ids_are_checked() {
        assert!(valid_node_id("node-a_1.x"));
        assert!(!valid_node_id(""));
        assert!(!valid_node_id("a}b"));
        assert!(!valid_node_id(&"x".repeat(65)));
        assert!(valid_node_id(&random_node_id()));
    }
}
