//! [`Engine`]: the shared state behind the router, and [`serve`].

use crate::broker::RedisBroker;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::hub::{Broker, Event, Hub, LocalBroker};
use crate::metrics::Metrics;
use crate::presence::{LocalPresence, Presence};
use crate::ratelimit::KeyedLimiter;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use zajel_core::protocol::{FriendEntry, ServerFrame};
use zajel_core::{ConversationId, Relation, Store, StoreResult, Timestamp, User, UserId};

/// The chat engine: store, hub, broker, limits and metrics. Cheap to clone (an `Arc` inside);
/// every clone is the same engine.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use std::sync::Arc;
/// use zajel_server::{Engine, ServerConfig};
/// let engine = Engine::new(Arc::new(zajel_core::MemoryStore::new()), ServerConfig::default());
/// let app = axum::Router::new()
///     .route("/hello", axum::routing::get(|| async { "hi" }))
///     .merge(engine.router());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// zajel_server::serve(listener, engine, async { let _ = tokio::signal::ctrl_c().await; }).await
/// # }
/// ```
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: ServerConfig,
    pub(crate) hub: Arc<Hub>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) presence: Arc<dyn Presence>,
    cluster: Option<RedisBroker>,
    pub(crate) metrics: Metrics,
    pub(crate) login_by_account: KeyedLimiter,
    pub(crate) login_by_address: KeyedLimiter,
    shutting_down: AtomicBool,
    shutdown_tx: watch::Sender<bool>,
    active: AtomicUsize,
    idle: Notify,
    conv_locks: Box<[tokio::sync::Mutex<()>]>,
    dummy_hash: OnceLock<String>,
}

const CONV_LOCKS: usize = 256;

/// Builds an [`Engine`]; see [`Engine::builder`].
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    config: ServerConfig,
    redis: Option<RedisBroker>,
}

impl EngineBuilder {
    /// Delivers across nodes and keeps presence cluster-wide through `broker` (many nodes
    /// sharing one Redis). Without it the engine is single-node.
    pub fn redis_broker(mut self, broker: RedisBroker) -> Self {
        self.redis = Some(broker);
        self
    }

    /// The engine. With a Redis broker this starts its background tasks, so it must be called
    /// inside a Tokio runtime.
    pub fn build(self) -> Engine {
        let config = self.config;
        let hub = Arc::new(Hub::new(config.queue_capacity));
        let (broker, presence): (Arc<dyn Broker>, Arc<dyn Presence>) = match &self.redis {
            Some(r) => (Arc::new(r.clone()), Arc::new(r.clone())),
            None => (
                Arc::new(LocalBroker::new(hub.clone())),
                Arc::new(LocalPresence::new(hub.clone())),
            ),
        };
        let (shutdown_tx, _) = watch::channel(false);
        let engine = Engine {
            inner: Arc::new(Inner {
                store: self.store,
                login_by_account: KeyedLimiter::per_minute(config.login_failures_per_minute),
                login_by_address: KeyedLimiter::per_minute(
                    config.login_attempts_per_address_per_minute,
                ),
                config,
                hub: hub.clone(),
                broker,
                presence,
                cluster: self.redis.clone(),
                metrics: Metrics::default(),
                shutting_down: AtomicBool::new(false),
                shutdown_tx,
                active: AtomicUsize::new(0),
                idle: Notify::new(),
                conv_locks: (0..CONV_LOCKS)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                dummy_hash: OnceLock::new(),
            }),
        };
        if let Some(redis) = &self.redis {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<UserId>();
            redis.start(hub, tx);
            // Users whose node died: record last seen and tell their friends.
            let weak = Arc::downgrade(&engine.inner);
            tokio::spawn(async move {
                while let Some(user) = rx.recv().await {
                    let Some(inner) = weak.upgrade() else { return };
                    let engine = Engine { inner };
                    let now = Timestamp::now();
                    if let Err(e) = engine.inner.store.set_last_seen(user, now).await {
                        tracing::warn!(user = %user, error = %e, "could not record last seen");
                    }
                    engine.announce_presence(user, false, Some(now)).await;
                }
            });
        }
        engine
    }
}

impl Engine {
    /// An engine over `store` with `config`, delivering through the local hub (one node).
    pub fn new(store: Arc<dyn Store>, config: ServerConfig) -> Engine {
        Self::builder(store, config).build()
    }

    /// A builder, for options beyond [`Engine::new`] (e.g. [`EngineBuilder::redis_broker`]
    /// to run several nodes on one Redis).
    pub fn builder(store: Arc<dyn Store>, config: ServerConfig) -> EngineBuilder {
        EngineBuilder {
            store,
            config,
            redis: None,
        }
    }

    /// This engine's Redis broker, when it runs as one of several nodes.
    pub fn redis_broker(&self) -> Option<&RedisBroker> {
        self.inner.cluster.as_ref()
    }

    /// The HTTP API and the WebSocket endpoint as a `Router` with its state applied, ready to
    /// `merge` into an application's router (or `nest` under a prefix).
    ///
    /// Routes: `POST /api/register`, `POST /api/login`, `POST /api/logout`,
    /// `POST /api/logout-all`, `GET /api/me`, `GET /healthz`, `GET /metrics`, `GET /ws`.
    pub fn router(&self) -> axum::Router {
        crate::http::router(self.clone())
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Whether [`Engine::shutdown`] has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Graceful shutdown: refuses new WebSocket connections, sends `going_away` to every
    /// connected client and closes it with 1001, then waits (up to `shutdown_grace_ms`) until
    /// every connection has finished its teardown (last-seen times written). Idempotent: every
    /// caller waits for the same drain.
    pub async fn shutdown(&self) {
        if !self.inner.shutting_down.swap(true, Ordering::AcqRel) {
            tracing::info!(
                connections = self.inner.active.load(Ordering::Acquire),
                "shutting down: telling clients to go away"
            );
            self.inner.shutdown_tx.send_replace(true);
        }
        let grace = Duration::from_millis(self.inner.config.shutdown_grace_ms);
        if tokio::time::timeout(grace, self.wait_idle()).await.is_err() {
            tracing::warn!(
                remaining = self.inner.active.load(Ordering::Acquire),
                "shutdown grace period over; dropping remaining connections"
            );
        } else {
            tracing::info!("all connections drained");
        }
        if let Some(redis) = &self.inner.cluster {
            redis.leave().await;
        }
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.active.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// A receiver that changes to `true` when shutdown begins. Subscribe *before* checking
    /// [`Engine::is_shutting_down`] so the signal cannot be missed.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown_tx.subscribe()
    }

    /// Counts a live connection until the guard drops (metrics and shutdown drain).
    pub(crate) fn enter_connection(&self) -> ActiveGuard {
        self.inner.active.fetch_add(1, Ordering::AcqRel);
        self.inner
            .metrics
            .connections
            .fetch_add(1, Ordering::Relaxed);
        self.inner
            .metrics
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    /// Publishes a frame (serialized once) to `users`.
    pub(crate) fn publish(&self, users: &[UserId], frame: &ServerFrame, skip: Option<u64>) {
        self.inner.broker.publish(users, Event::new(frame), skip);
    }

    /// The lock that keeps one conversation's appends and their publication in order.
    pub(crate) fn conversation_lock(&self, c: &ConversationId) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        c.hash(&mut h);
        &self.inner.conv_locks[(h.finish() as usize) % self.inner.conv_locks.len()]
    }

    /// A hash to verify against when the user does not exist, so unknown users cost the same.
    pub(crate) fn dummy_hash(&self) -> &str {
        self.inner.dummy_hash.get_or_init(|| {
            crate::auth::hash_password(
                "not-a-real-password",
                self.inner.config.argon2_memory_kib,
                self.inner.config.argon2_iterations,
            )
            .unwrap_or_default()
        })
    }

    /// Resolves a session token to its user and token hash.
    pub(crate) async fn session_user(&self, token: &str) -> Result<(User, String), ApiError> {
        let (user_id, hash) =
            crate::auth::parse_token(token).ok_or_else(ApiError::unauthenticated)?;
        let store = &self.inner.store;
        let session = store
            .session(user_id, &hash, Timestamp::now())
            .await
            .map_err(|e| ApiError::from(&e))?;
        if session.is_none() {
            return Err(ApiError::unauthenticated());
        }
        let user = store
            .user(user_id)
            .await
            .map_err(|e| ApiError::from(&e))?
            .ok_or_else(ApiError::unauthenticated)?;
        Ok((user, hash))
    }

    /// Ids of `user`'s friends.
    pub(crate) async fn friend_ids(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        Ok(self
            .inner
            .store
            .relations(user)
            .await?
            .into_iter()
            .filter(|r| r.relation == Relation::Friends)
            .map(|r| r.peer)
            .collect())
    }

    /// `user`'s relations with presence, for `friends_list` and `synced`.
    pub(crate) async fn friend_entries(&self, user: UserId) -> StoreResult<Vec<FriendEntry>> {
        let store = &self.inner.store;
        let relations = store.relations(user).await?;
        let friends: Vec<UserId> = relations
            .iter()
            .filter(|r| r.relation == Relation::Friends)
            .map(|r| r.peer)
            .collect();
        let online: std::collections::HashSet<UserId> = friends
            .iter()
            .zip(self.inner.presence.online(&friends).await)
            .filter_map(|(&u, on)| on.then_some(u))
            .collect();
        let mut out = Vec::with_capacity(relations.len());
        for r in relations {
            let Some(peer) = store.user(r.peer).await? else {
                continue;
            };
            let friends = r.relation == Relation::Friends;
            out.push(FriendEntry {
                online: friends && online.contains(&r.peer),
                last_seen: if friends {
                    store.last_seen(r.peer).await?
                } else {
                    None
                },
                user: peer,
                relation: r.relation,
                since: r.since,
            });
        }
        Ok(out)
    }

    /// Tells `user`'s friends that `user` came online or went offline.
    pub(crate) async fn announce_presence(
        &self,
        user: UserId,
        online: bool,
        last_seen: Option<Timestamp>,
    ) {
        match self.friend_ids(user).await {
            Ok(friends) if !friends.is_empty() => {
                let frame = ServerFrame::Presence {
                    user,
                    online,
                    last_seen,
                };
                self.publish(&friends, &frame, None);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "presence: could not read friends"),
        }
    }
}

/// Counts one live connection (see [`Engine::enter_connection`]).
pub(crate) struct ActiveGuard(Engine);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let inner = &self.0.inner;
        inner.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        if inner.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            inner.idle.notify_waiters();
        }
    }
}

/// Serves `engine`'s router on `listener` until `signal` completes, then shuts down
/// gracefully: stops accepting, sends `going_away` to every WebSocket client, closes them with
/// 1001, waits for connections to drain (bounded by `shutdown_grace_ms`) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Engine,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = engine.router();
    serve_router(listener, app, engine, signal).await
}

/// Like [`serve`], for an application router that merged (or nested) `engine.router()` next to
/// its own routes. Client addresses are provided (`ConnectInfo`) for login throttling.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    engine: Engine,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let on_signal = engine.clone();
    // Chat frames are small and latency-bound: without TCP_NODELAY a second small write
    // waits for the peer's delayed ACK (measured: p90 ~43 ms, 3x lower throughput).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        signal.await;
        // Start telling WebSocket clients now: upgraded connections are no longer HTTP
        // requests the HTTP server would wait for.
        let engine = on_signal.clone();
        tokio::spawn(async move { engine.shutdown().await });
    })
    .await?;
    engine.shutdown().await;
    Ok(())
}
