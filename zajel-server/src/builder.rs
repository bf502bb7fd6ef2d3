//! [`EngineBuilder`]: assembles an [`Engine`] (single node, or one of several on a Redis).

#[cfg(feature = "redis")]
use crate::broker::RedisBroker;
use crate::config::ServerConfig;
use crate::engine::{Engine, Parts};
use crate::hub::{Broker, Hub, LocalBroker};
use crate::presence::{LocalPresence, Presence};
use std::sync::Arc;
use zajel_core::Store;

/// How often expired sessions and old idempotency records are pruned.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Builds an [`Engine`]; see [`Engine::builder`].
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    config: ServerConfig,
    #[cfg(feature = "redis")]
    redis: Option<RedisBroker>,
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
            #[cfg(feature = "redis")]
            redis: None,
        }
    }
}

impl EngineBuilder {
    /// Delivers across nodes and keeps presence cluster-wide through `broker` (many nodes
    /// sharing one Redis). Without it the engine is single-node.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_broker(mut self, broker: RedisBroker) -> Self {
        self.redis = Some(broker);
        self
    }

    /// The engine. With a Redis broker this starts its background tasks, so it must be called
    /// inside a Tokio runtime.
    pub fn build(self) -> Engine {
        let hub = Arc::new(Hub::new(self.config.queue_capacity));
        let local = || -> (Arc<dyn Broker>, Arc<dyn Presence>) {
            (
                Arc::new(LocalBroker::new(hub.clone())),
                Arc::new(LocalPresence::new(hub.clone())),
            )
        };
        #[cfg(feature = "redis")]
        let (broker, presence): (Arc<dyn Broker>, Arc<dyn Presence>) = match &self.redis {
            Some(r) => (Arc::new(r.clone()), Arc::new(r.clone())),
            None => local(),
        };
        #[cfg(not(feature = "redis"))]
        let (broker, presence) = local();
        let engine = Engine::from_parts(Parts {
            store: self.store,
            config: self.config,
            hub: hub.clone(),
            broker,
            presence,
            #[cfg(feature = "redis")]
            cluster: self.redis.clone(),
        });
        // Expired sessions and idempotency records older than the store's dedupe window are
        // deleted in the background. The task holds the engine weakly: it ends with it (and
        // never keeps an embedded store's file open after the engine is gone).
        if tokio::runtime::Handle::try_current().is_ok() {
            let weak = Arc::downgrade(&engine.inner);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PRUNE_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    let store = inner.store.clone();
                    drop(inner);
                    match store.prune(zajel_core::Timestamp::now()).await {
                        Ok(p) => tracing::debug!(
                            sessions = p.sessions,
                            idempotency_records = p.idempotency_records,
                            "pruned expired records"
                        ),
                        Err(e) => tracing::warn!(error = %e, "pruning failed; retrying later"),
                    }
                }
            });
        }
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(zajel_core::UserId, bool)>();
            redis.start(hub, tx);
            // Presence changes the broker finds in the background (users whose node died, a
            // repaired update): tell their friends (and record last seen when offline).
            let weak = Arc::downgrade(&engine.inner);
            tokio::spawn(async move {
                while let Some((user, online)) = rx.recv().await {
                    let Some(inner) = weak.upgrade() else { return };
                    let chat = Engine { inner }.chat();
                    if online {
                        chat.announce(user, true, None).await;
                    } else {
                        chat.went_offline(user).await;
                    }
                }
            });
        }
        engine
    }
}
