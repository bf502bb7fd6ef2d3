//! [`Engine`]: the shared state every part of the server works on (store, hub, broker,
//! presence, limits, metrics, shutdown). It depends on no transport: the chat service
//! ([`crate::chat`]), the WebSocket side ([`crate::ws`]) and the HTTP side ([`crate::http`])
//! are built on it, never the other way round (see `docs/architecture.md`).

#[cfg(feature = "redis")]
use crate::broker::RedisBroker;
use crate::config::ServerConfig;
use crate::error::EngineError;
use crate::hub::{Broker, Event, Hub};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::ratelimit::{KeyedLimiter, UserLimiter};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, watch};
use zajel_core::protocol::ServerFrame;
use zajel_core::{ConversationId, ErrorCode, Store, UserId};

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
    #[cfg(feature = "redis")]
    pub(crate) cluster: Option<RedisBroker>,
    pub(crate) metrics: Metrics,
    /// Login attempts per (account, address) pair (`login_failures_per_minute`).
    pub(crate) login_by_pair: KeyedLimiter,
    /// Login attempts per account from all addresses (the looser bound).
    pub(crate) login_by_account: KeyedLimiter,
    pub(crate) login_by_address: KeyedLimiter,
    pub(crate) register_by_address: KeyedLimiter,
    /// Frames per user, all their connections together.
    pub(crate) frames_by_user: UserLimiter,
    /// Open WebSocket connections by client address (see `ws/limits.rs`).
    pub(crate) conns_by_address: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>,
    shutting_down: AtomicBool,
    shutdown_tx: watch::Sender<bool>,
    active: AtomicUsize,
    idle: Notify,
    conv_locks: Box<[Arc<Mutex<()>>]>,
    /// Bounds concurrent argon2 runs (see `sessions.rs`).
    pub(crate) hashing: Arc<tokio::sync::Semaphore>,
    /// The hash verified when a login names no usable account (computed once, off the runtime).
    pub(crate) dummy_hash: tokio::sync::OnceCell<String>,
    /// Bounds concurrent resume replays (`max_concurrent_replays`).
    pub(crate) replays: crate::ws::ReplayGate,
    /// Engine events for the embedding app (see `events.rs`).
    pub(crate) events: crate::events::EventBus,
    /// Presence announcements retried until their friend list can be read.
    pub(crate) announcements: crate::chat::PendingAnnouncements,
    /// Friends notices retried until the store takes them.
    pub(crate) notices: crate::chat::PendingNotices,
}

const CONV_LOCKS: usize = 256;

/// The parts an [`Engine`] is made of (see `builder.rs`).
pub(crate) struct Parts {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: ServerConfig,
    pub(crate) hub: Arc<Hub>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) presence: Arc<dyn Presence>,
    #[cfg(feature = "redis")]
    pub(crate) cluster: Option<RedisBroker>,
}

impl Engine {
    /// Assembles the shared state.
    pub(crate) fn from_parts(p: Parts) -> Engine {
        let (shutdown_tx, _) = watch::channel(false);
        Engine {
            inner: Arc::new(Inner {
                replays: crate::ws::ReplayGate::new(p.config.max_concurrent_replays),
                login_by_pair: KeyedLimiter::per_minute(p.config.login_failures_per_minute),
                login_by_account: KeyedLimiter::per_minute(
                    p.config.login_failures_per_account_per_minute,
                ),
                register_by_address: KeyedLimiter::per_minute(
                    p.config.register_per_address_per_minute,
                ),
                frames_by_user: UserLimiter::per_second(
                    p.config.rate_per_second,
                    p.config.rate_burst,
                ),
                conns_by_address: std::sync::Mutex::new(std::collections::HashMap::new()),
                login_by_address: KeyedLimiter::per_minute(
                    p.config.login_attempts_per_address_per_minute,
                ),
                store: p.store,
                config: p.config,
                hub: p.hub,
                broker: p.broker,
                presence: p.presence,
                #[cfg(feature = "redis")]
                cluster: p.cluster,
                metrics: Metrics::default(),
                shutting_down: AtomicBool::new(false),
                shutdown_tx,
                active: AtomicUsize::new(0),
                idle: Notify::new(),
                conv_locks: (0..CONV_LOCKS).map(|_| Arc::new(Mutex::new(()))).collect(),
                hashing: Arc::new(tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(1, |n| n.get()),
                )),
                dummy_hash: tokio::sync::OnceCell::new(),
                events: crate::events::EventBus::new(),
                announcements: Default::default(),
                notices: Default::default(),
            }),
        }
    }

    /// Takes one request from `user`'s rate (`rate_per_second`, `rate_burst`: the budget every
    /// WebSocket frame of the user's connections draws from), for the HTTP requests that write
    /// for a signed-in user; `rate_limited` with `retry_after_ms` when it is spent.
    pub(crate) fn take_user_request(&self, user: UserId) -> Result<(), EngineError> {
        self.inner.frames_by_user.take(user).map_err(|wait| {
            EngineError::new(ErrorCode::RateLimited, "too many requests; slow down")
                .retry_after(wait)
        })
    }

    /// The store.
    pub(crate) fn store(&self) -> &dyn Store {
        &*self.inner.store
    }

    /// This engine's Redis broker, when it runs as one of several nodes.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_broker(&self) -> Option<&RedisBroker> {
        self.inner.cluster.as_ref()
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
            // Connections that are live learn it from the hub, through the close request each
            // of them waits on anyway (no per-connection wait on the shutdown channel: that
            // future would be held for each connection's whole life). One that registers
            // after this loop checks `is_shutting_down` once it is in the hub.
            self.inner.hub.close_all(crate::ws::CLOSE_GOING_AWAY);
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
        #[cfg(feature = "redis")]
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

    /// Open WebSocket connections on this node.
    pub(crate) fn connection_count(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// Counts a live connection until the guard drops (metrics and shutdown drain).
    pub(crate) fn enter_connection(&self) -> ActiveGuard {
        self.inner.active.fetch_add(1, Ordering::AcqRel);
        self.inner.metrics.connections.inc();
        self.inner.metrics.connections_total.inc();
        ActiveGuard(self.clone())
    }

    /// Publishes a frame (serialized once) to `users`.
    pub(crate) fn publish(&self, users: &[UserId], frame: &ServerFrame, skip: Option<u64>) {
        self.inner.broker.publish(users, Event::new(frame), skip);
    }

    /// Locks `c`'s ordering lock: it keeps one conversation's appends, their publication and
    /// the friendship changes of its two members in one order on this node.
    pub(crate) async fn lock_conversation(&self, c: &ConversationId) -> OwnedMutexGuard<()> {
        // The members' ids are random (minted by the stores), so their low bits pick the lock
        // as well as a hash of the 81-byte text would, for a fraction of the work.
        let i = match c.participants() {
            Some((lo, hi)) => (lo.0.as_u128() ^ hi.0.as_u128()) as usize,
            None => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                c.hash(&mut h);
                h.finish() as usize
            }
        } % self.inner.conv_locks.len();
        self.inner.conv_locks[i].clone().lock_owned().await
    }
}

/// Counts one live connection (see [`Engine::enter_connection`]).
pub(crate) struct ActiveGuard(Engine);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let inner = &self.0.inner;
        inner.metrics.connections.dec();
        if inner.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            inner.idle.notify_waiters();
        }
    }
}
