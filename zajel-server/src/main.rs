//! The standalone `zajel-server` binary: configuration, store choice, signals. Everything else
//! is the library (see `docs/server.md`).

use anyhow::Context;
use std::io::IsTerminal;
use std::sync::Arc;
use tower_http::services::{ServeDir, ServeFile};
use tracing_subscriber::EnvFilter;
#[allow(unused_imports)] // only the arms of the stores compiled in name it
use zajel_server::config::StoreChoice;
use zajel_server::config::{LogFormat, Standalone};
use zajel_server::{Engine, Store, serve_router};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Standalone::from_command_line()?;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log))
        .context("invalid log filter")?;
    // Colour codes only for a person at a terminal, never into a file or a log collector.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    let store = open_store(&config).await?;
    #[allow(unused_mut)] // without the `redis` feature nothing is added
    let mut builder = Engine::builder(store, config.engine.clone());
    #[cfg(feature = "redis")]
    if let Some(broker) = match config.store() {
        StoreChoice::Redis(url) => {
            Some(zajel_server::broker::RedisBroker::connect(&url, config.broker_config()).await)
        }
        StoreChoice::RedisCluster(seeds) => Some(
            zajel_server::broker::RedisBroker::connect_cluster(&seeds, config.broker_config())
                .await,
        ),
        _ => None,
    } {
        // Several nodes may share this Redis: cross-node delivery and cluster-wide presence.
        let broker = broker.context("cannot start the Redis broker")?;
        tracing::info!(
            node = broker.node_id(),
            "Redis broker on: this node shares the Redis with others"
        );
        builder = builder.redis_broker(broker);
    }
    let engine = builder.build();
    let mut app = engine.router();
    if let Some(oidc) = &config.oidc {
        let sign_in = zajel_server::identity::oidc::OidcSignIn::new(engine.clone(), oidc.clone())
            .map_err(|e| anyhow::anyhow!("invalid [oidc] configuration: {e}"))?;
        for p in &oidc.providers {
            tracing::info!(provider = %p.id, redirect_url = sign_in.redirect_url(&p.id).unwrap_or(""),
                "OpenID Connect sign-in on");
        }
        app = app.merge(sign_in.router());
    }
    if let Some(dir) = &config.static_dir {
        tracing::info!(dir = %dir.display(), "serving static files at /");
        app = app
            .fallback_service(ServeDir::new(dir).fallback(ServeFile::new(dir.join("index.html"))));
    }
    let shutdown = shutdown_signal();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    println!("zajel-server listening on http://{addr}");
    tracing::info!(%addr, "listening");
    serve_router(listener, app, engine, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Opens the configured store. Loading the configuration already refused a store that is not
/// compiled in; the `unreachable_patterns` arm keeps that a typed error, not a panic.
async fn open_store(config: &Standalone) -> anyhow::Result<Arc<dyn Store>> {
    match config.store() {
        #[cfg(feature = "memory")]
        StoreChoice::Memory => {
            tracing::warn!("using the in-memory store: nothing is persisted");
            Ok(Arc::new(zajel_server::MemoryStore::new()))
        }
        #[cfg(feature = "redis")]
        StoreChoice::Redis(url) => {
            let options = config.redis_options();
            let store = zajel_server::RedisStore::connect_with(&url, options)
                .await
                .context("cannot connect to Redis")?;
            tracing::info!("Redis store connected");
            Ok(Arc::new(store))
        }
        #[cfg(feature = "redis")]
        StoreChoice::RedisCluster(seeds) => {
            let options = config.redis_options();
            let store = zajel_server::RedisStore::connect_cluster(&seeds, options)
                .await
                .context("cannot connect to the Redis Cluster")?;
            tracing::info!(seeds = seeds.len(), "Redis Cluster store connected");
            Ok(Arc::new(store))
        }
        #[cfg(feature = "embedded")]
        StoreChoice::Embedded(dir) => {
            let options = config.embedded_options();
            let store = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create data directory {}", dir.display()))?;
                zajel_server::EmbeddedStore::open_with(&dir, options)
                    .with_context(|| format!("cannot open the embedded store in {}", dir.display()))
            })
            .await??;
            tracing::info!(file = %store.path().display(), "embedded store opened");
            Ok(Arc::new(store))
        }
        #[allow(unreachable_patterns)]
        other => Err(zajel_server::config::ConfigError::StoreNotCompiled(other.feature()).into()),
    }
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled, so a signal that arrives right after the "listening" line still
/// shuts down gracefully instead of killing the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    async move {
        #[cfg(unix)]
        match signals {
            (Ok(mut int), Ok(mut term)) => tokio::select! {
                _ = int.recv() => tracing::info!("SIGINT received"),
                _ = term.recv() => tracing::info!("SIGTERM received"),
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for SIGINT/SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("SIGINT received");
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("SIGINT received");
        }
    }
}
