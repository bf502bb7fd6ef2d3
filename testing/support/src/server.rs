//! The real engine served in-process on a loopback port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use zajel_core::Store;
use zajel_server::{Engine, ServerConfig};

/// A configuration for tests: cheap password hashing (tests register many users), a short
/// reconnect hint and shutdown grace, and a registration throttle that a dozen users from one
/// loopback address do not hit.
pub fn test_config() -> ServerConfig {
    ServerConfig {
        argon2_memory_kib: 256,
        argon2_iterations: 1,
        reconnect_after_ms: 100,
        shutdown_grace_ms: 2_000,
        register_per_address_per_minute: 1_000,
        ..ServerConfig::default()
    }
}

/// An engine served on `127.0.0.1` until [`LoopbackServer::stop`].
pub struct LoopbackServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl LoopbackServer {
    /// Serves `store` with `config` on `addr` (a restart on the same port), or on a free port.
    pub async fn start(
        store: Arc<dyn Store>,
        addr: Option<SocketAddr>,
        config: ServerConfig,
    ) -> Self {
        let bind = addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = tokio::net::TcpListener::bind(bind).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let engine = Engine::new(store, config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(zajel_server::serve(listener, engine, async move {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    /// A fresh in-memory store with [`test_config`], on a free port.
    pub async fn memory() -> Self {
        Self::start(
            Arc::new(zajel_core::MemoryStore::new()),
            None,
            test_config(),
        )
        .await
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shuts down gracefully; panics unless `serve` returns `Ok` within 20 s.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the server stops within 20 s")
            .expect("server task")
            .expect("serve ok");
    }
}
