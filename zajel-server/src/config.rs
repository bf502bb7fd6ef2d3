//! [`ServerConfig`]: the engine's limits and policies.
//!
//! Every field has a default (see `docs/server.md` for the full table with the standalone
//! binary's flags and environment variables). The struct deserializes from TOML/JSON with
//! missing fields taken from [`ServerConfig::default`] and unknown fields rejected, so an
//! embedding application can keep it as a section of its own configuration file.

use serde::{Deserialize, Serialize};
use zajel_core::limits::BODY_MAX_BYTES;
use zajel_core::protocol::Limits;

/// The engine's configuration. Durations are in milliseconds or seconds as the field name says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Largest WebSocket text frame accepted, in bytes. Larger: `frame_too_large`, close 1009.
    pub max_frame_bytes: u32,
    /// Largest message body in bytes (capped at the protocol ceiling of 16 KiB).
    pub max_body_bytes: u32,
    /// Sustained frames per second per user, all their connections together (at least 1).
    pub rate_per_second: u32,
    /// Frames a user may send in a burst (at least 1).
    pub rate_burst: u32,
    /// A connection that sends nothing for this long is closed (code 4000). Clients `ping`.
    pub idle_timeout_ms: u64,
    /// A connection must authenticate within this time (else close 1008).
    pub auth_timeout_ms: u64,
    /// Capacity of each connection's outbound event queue. A full queue closes the
    /// connection with 4008 ("lagged"); the client resumes from its cursor.
    pub queue_capacity: usize,
    /// A write to a client that takes longer than this closes the connection.
    pub write_timeout_ms: u64,
    /// Most messages replayed per conversation on resume; larger backlogs are listed in
    /// `synced.truncated` and paged with `history`.
    pub replay_limit: u32,
    /// Most conversations considered on resume (most recently active first).
    pub replay_conversations: u32,
    /// Session token lifetime in seconds (default 30 days).
    pub token_ttl_secs: u64,
    /// Origins (e.g. `https://chat.example.com`) whose WebSocket upgrades may authenticate with
    /// the `zajel_session` cookie. A same-origin upgrade (Origin matches Host) is always allowed.
    pub allowed_origins: Vec<String>,
    /// Origins (e.g. `https://app.example`) whose pages may call the HTTP API cross-origin
    /// (CORS, see `docs/web.md`); `*` allows any. `allowed_origins` are allowed too.
    pub cors_origins: Vec<String>,
    /// Mark the session cookie `Secure` (set this when serving over HTTPS).
    pub cookie_secure: bool,
    /// Failed logins allowed per (account, client address) pair per minute.
    pub login_failures_per_minute: u32,
    /// Login attempts allowed per client address per minute.
    pub login_attempts_per_address_per_minute: u32,
    /// Take the client address from `X-Forwarded-For` when the connection comes from a trusted
    /// proxy (the directly connected peer, or one in `trusted_proxies`): the rightmost
    /// address that is not a trusted proxy. Only behind a reverse proxy that appends to it.
    pub trust_forwarded_for: bool,
    /// Failed logins allowed per account per minute from all addresses together: a looser bound
    /// than `login_failures_per_minute` (which counts per account *and* address), so guessing
    /// from many addresses is bounded while one attacker cannot lock the owner out.
    pub login_failures_per_account_per_minute: u32,
    /// Registrations allowed per client address per minute.
    pub register_per_address_per_minute: u32,
    /// Reverse proxies (IP addresses or CIDR ranges, e.g. `10.0.0.0/8`) whose `X-Forwarded-For`
    /// is believed when `trust_forwarded_for` is on: the client is the rightmost address that
    /// is not one of them. Empty: only the directly connected peer is trusted.
    pub trusted_proxies: Vec<String>,
    /// Most WebSocket connections this node holds; more are refused with 503 `unavailable`.
    pub max_connections: u32,
    /// Most WebSocket connections from one client address (authenticated or not); more are
    /// refused with 429 `rate_limited`.
    pub max_connections_per_address: u32,
    /// Most authenticated WebSocket connections of one user on this node; the `auth` of one more
    /// gets `rate_limited` and a 1008 close.
    pub max_connections_per_user: u32,
    /// Argon2id memory cost in KiB (OWASP: 19456).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations (OWASP: 2).
    pub argon2_iterations: u32,
    /// How long shutdown waits for connections to drain.
    pub shutdown_grace_ms: u64,
    /// Delay suggested to clients in `going_away` at shutdown (the least; each connection's
    /// delay adds its share of the spread, see `reconnect_rate`).
    pub reconnect_after_ms: u64,
    /// Reconnects per second this node wants to absorb after closing many connections at once
    /// (shutdown, a 4008 wave): each closed connection is told to come back after a delay drawn
    /// uniformly over `connections / reconnect_rate` seconds (at most 4 minutes), in a
    /// `going_away` frame sent just before the close.
    pub reconnect_rate: u32,
    /// Most resume replays running at once on this node; further ones wait their turn (after
    /// `auth_ok`), so a population returning together queues instead of stampeding the store.
    pub max_concurrent_replays: u32,
    /// A system message posted into two users' conversation when they become friends (see
    /// `docs/identity.md`, "System messages"), e.g. `"{requester} and {accepter} are now
    /// friends"`: `{requester}` and `{accepter}` become the usernames. Stored before the
    /// acceptance is answered, delivered after the friend events. Off when absent.
    pub friends_notice: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_body_bytes: 4096,
            rate_per_second: 20,
            rate_burst: 40,
            idle_timeout_ms: 60_000,
            auth_timeout_ms: 10_000,
            queue_capacity: 256,
            write_timeout_ms: 10_000,
            replay_limit: 1000,
            replay_conversations: 1000,
            token_ttl_secs: 30 * 24 * 3600,
            allowed_origins: Vec::new(),
            cors_origins: Vec::new(),
            cookie_secure: false,
            login_failures_per_minute: 10,
            login_attempts_per_address_per_minute: 60,
            trust_forwarded_for: false,
            login_failures_per_account_per_minute: 100,
            register_per_address_per_minute: 10,
            trusted_proxies: Vec::new(),
            max_connections: 10_000,
            max_connections_per_address: 64,
            max_connections_per_user: 16,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            shutdown_grace_ms: 10_000,
            reconnect_after_ms: 1000,
            reconnect_rate: 500,
            max_concurrent_replays: 16,
            friends_notice: None,
        }
    }
}

impl ServerConfig {
    /// The message body limit actually enforced (never above the protocol ceiling).
    pub fn effective_max_body(&self) -> usize {
        (self.max_body_bytes as usize).clamp(1, BODY_MAX_BYTES)
    }

    /// The limits announced to clients in `auth_ok`.
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_body_bytes: self.effective_max_body() as u32,
            requests_per_second: self.rate_per_second,
            idle_timeout_ms: self.idle_timeout_ms,
        }
    }
}

#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub use standalone::{
    Cli, ConfigError, EngineArgs, FileConfig, LogFormat, NodeSettings, Standalone, StoreChoice,
    StoreSettings,
};

/// The standalone binary's configuration: clap flags > `ZAJEL_*` environment > TOML file >
/// defaults (feature `cli`).
#[cfg(feature = "cli")]
mod standalone {
    use super::ServerConfig;
    use serde::Deserialize;
    use std::net::SocketAddr;
    use std::path::PathBuf;

    /// Command line of `zajel-server`. Every option can also come from the environment
    /// (`ZAJEL_<NAME>`) or the config file; flags win over the environment, which wins over the
    /// file.
    #[derive(Debug, Clone, clap::Parser)]
    #[command(name = "zajel-server", version, about = "Zajel real-time chat server")]
    pub struct Cli {
        /// TOML configuration file.
        #[arg(long, env = "ZAJEL_CONFIG")]
        pub config: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, env = "ZAJEL_LISTEN")]
        pub listen: Option<SocketAddr>,
        /// Directory of the embedded store [default: ./zajel-data].
        #[arg(long, env = "ZAJEL_DATA_DIR")]
        pub data_dir: Option<PathBuf>,
        /// Use Redis (e.g. redis://127.0.0.1:6379/) instead of the embedded store.
        #[arg(long, env = "ZAJEL_REDIS_URL")]
        pub redis_url: Option<String>,
        /// Use a Redis Cluster (Redis 7+): seed nodes, comma-separated
        /// (e.g. redis://10.0.0.1:7000,redis://10.0.0.2:7000); the rest are discovered.
        #[arg(long, env = "ZAJEL_REDIS_CLUSTER", value_delimiter = ',')]
        pub redis_cluster: Option<Vec<String>>,
        /// Longest wait for one Redis reply, in ms [default: 2000].
        #[arg(long, env = "ZAJEL_REDIS_COMMAND_TIMEOUT_MS")]
        pub redis_command_timeout_ms: Option<u64>,
        /// Longest wait for a Redis connection, in ms [default: 1000].
        #[arg(long, env = "ZAJEL_REDIS_CONNECT_TIMEOUT_MS")]
        pub redis_connect_timeout_ms: Option<u64>,
        /// Embedded store: writes that may wait for the writer thread [default: 4096].
        #[arg(long, env = "ZAJEL_EMBEDDED_QUEUE_CAPACITY")]
        pub embedded_queue_capacity: Option<usize>,
        /// How long a retried send is recognised as a duplicate, in ms (either store)
        /// [default: 86400000 = 24 h].
        #[arg(long, env = "ZAJEL_DEDUPE_WINDOW_MS")]
        pub dedupe_window_ms: Option<u64>,
        /// This node's id when several nodes share the Redis of `--redis-url` (1-64 of
        /// `A-Z a-z 0-9 _ - .`) [default: random].
        #[arg(long, env = "ZAJEL_NODE_ID")]
        pub node_id: Option<String>,
        /// Node heartbeat period in ms (with `--redis-url`) [default: 3000].
        #[arg(long, env = "ZAJEL_NODE_HEARTBEAT_MS")]
        pub node_heartbeat_ms: Option<u64>,
        /// A node whose heartbeat is older than this (ms) is dead [default: 10000].
        #[arg(long, env = "ZAJEL_NODE_TTL_MS")]
        pub node_ttl_ms: Option<u64>,
        /// How often to look for dead nodes, in ms [default: 3000].
        #[arg(long, env = "ZAJEL_NODE_SWEEP_MS")]
        pub node_sweep_ms: Option<u64>,
        /// Serve a built web app from this directory at `/` (index.html fallback).
        #[arg(long, env = "ZAJEL_STATIC_DIR")]
        pub static_dir: Option<PathBuf>,
        /// Keep everything in memory (nothing persists; for demos and tests).
        #[arg(long, env = "ZAJEL_MEMORY", num_args = 0..=1, default_missing_value = "true")]
        pub memory: Option<bool>,
        /// Log filter (tracing `EnvFilter` syntax) [default: info]; `RUST_LOG` wins if set.
        #[arg(long, env = "ZAJEL_LOG")]
        pub log: Option<String>,
        /// Log line format: `text` (colours only on a terminal) or `json` (one object per
        /// line) [default: text].
        #[arg(long, env = "ZAJEL_LOG_FORMAT", value_enum)]
        pub log_format: Option<LogFormat>,
        /// Externally visible base URL, for OpenID Connect redirect URLs
        /// (`<url>/api/auth/oidc/<id>/callback`); overrides `[oidc] public_url`.
        #[arg(long, env = "ZAJEL_PUBLIC_URL")]
        pub public_url: Option<String>,
        /// Google sign-in: OAuth client id (with `--google-client-secret`).
        #[arg(long, env = "ZAJEL_GOOGLE_CLIENT_ID")]
        pub google_client_id: Option<String>,
        /// Google sign-in: OAuth client secret.
        #[arg(long, env = "ZAJEL_GOOGLE_CLIENT_SECRET", hide_env_values = true)]
        pub google_client_secret: Option<String>,
        /// Engine limits and policies.
        #[command(flatten)]
        pub engine: EngineArgs,
    }

    /// Engine options on the command line (see [`ServerConfig`] for their meaning).
    #[derive(Debug, Clone, Default, clap::Args)]
    pub struct EngineArgs {
        /// Largest WebSocket frame in bytes [default: 65536].
        #[arg(long, env = "ZAJEL_MAX_FRAME_BYTES")]
        pub max_frame_bytes: Option<u32>,
        /// Largest message body in bytes, at most 16384 [default: 4096].
        #[arg(long, env = "ZAJEL_MAX_BODY_BYTES")]
        pub max_body_bytes: Option<u32>,
        /// Frames per second per connection [default: 20].
        #[arg(long, env = "ZAJEL_RATE_PER_SECOND")]
        pub rate_per_second: Option<u32>,
        /// Frame burst per connection [default: 40].
        #[arg(long, env = "ZAJEL_RATE_BURST")]
        pub rate_burst: Option<u32>,
        /// Idle timeout in ms [default: 60000].
        #[arg(long, env = "ZAJEL_IDLE_TIMEOUT_MS")]
        pub idle_timeout_ms: Option<u64>,
        /// Time allowed to authenticate, in ms [default: 10000].
        #[arg(long, env = "ZAJEL_AUTH_TIMEOUT_MS")]
        pub auth_timeout_ms: Option<u64>,
        /// Outbound queue per connection, in events [default: 256].
        #[arg(long, env = "ZAJEL_QUEUE_CAPACITY")]
        pub queue_capacity: Option<usize>,
        /// Write timeout per frame, in ms [default: 10000].
        #[arg(long, env = "ZAJEL_WRITE_TIMEOUT_MS")]
        pub write_timeout_ms: Option<u64>,
        /// Messages replayed per conversation on resume [default: 1000].
        #[arg(long, env = "ZAJEL_REPLAY_LIMIT")]
        pub replay_limit: Option<u32>,
        /// Conversations considered on resume [default: 1000].
        #[arg(long, env = "ZAJEL_REPLAY_CONVERSATIONS")]
        pub replay_conversations: Option<u32>,
        /// Session lifetime in seconds [default: 2592000 = 30 days].
        #[arg(long, env = "ZAJEL_TOKEN_TTL_SECS")]
        pub token_ttl_secs: Option<u64>,
        /// Origins allowed to authenticate WebSockets with the session cookie (comma-separated).
        #[arg(long, env = "ZAJEL_ALLOWED_ORIGINS", value_delimiter = ',')]
        pub allowed_origins: Option<Vec<String>>,
        /// Origins whose pages may call the HTTP API cross-origin (CORS; comma-separated, `*`
        /// for any).
        #[arg(long, env = "ZAJEL_CORS_ORIGINS", value_delimiter = ',')]
        pub cors_origins: Option<Vec<String>>,
        /// Mark the session cookie Secure [default: false].
        #[arg(long, env = "ZAJEL_COOKIE_SECURE", num_args = 0..=1, default_missing_value = "true")]
        pub cookie_secure: Option<bool>,
        /// Failed logins per (account, client address) pair per minute [default: 10].
        #[arg(long, env = "ZAJEL_LOGIN_FAILURES_PER_MINUTE")]
        pub login_failures_per_minute: Option<u32>,
        /// Login attempts per client address per minute [default: 60].
        #[arg(long, env = "ZAJEL_LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE")]
        pub login_attempts_per_address_per_minute: Option<u32>,
        /// Trust X-Forwarded-For for the client address [default: false].
        #[arg(long, env = "ZAJEL_TRUST_FORWARDED_FOR", num_args = 0..=1, default_missing_value = "true")]
        pub trust_forwarded_for: Option<bool>,
        /// Failed logins per account per minute, all addresses together [default: 100].
        #[arg(long, env = "ZAJEL_LOGIN_FAILURES_PER_ACCOUNT_PER_MINUTE")]
        pub login_failures_per_account_per_minute: Option<u32>,
        /// Registrations per client address per minute [default: 10].
        #[arg(long, env = "ZAJEL_REGISTER_PER_ADDRESS_PER_MINUTE")]
        pub register_per_address_per_minute: Option<u32>,
        /// Trusted reverse proxies, IPs or CIDRs (comma-separated).
        #[arg(long, env = "ZAJEL_TRUSTED_PROXIES", value_delimiter = ',')]
        pub trusted_proxies: Option<Vec<String>>,
        /// Most WebSocket connections on this node [default: 10000].
        #[arg(long, env = "ZAJEL_MAX_CONNECTIONS")]
        pub max_connections: Option<u32>,
        /// Most WebSocket connections per client address [default: 64].
        #[arg(long, env = "ZAJEL_MAX_CONNECTIONS_PER_ADDRESS")]
        pub max_connections_per_address: Option<u32>,
        /// Most WebSocket connections per user on this node [default: 16].
        #[arg(long, env = "ZAJEL_MAX_CONNECTIONS_PER_USER")]
        pub max_connections_per_user: Option<u32>,
        /// Argon2id memory cost in KiB [default: 19456].
        #[arg(long, env = "ZAJEL_ARGON2_MEMORY_KIB")]
        pub argon2_memory_kib: Option<u32>,
        /// Argon2id iterations [default: 2].
        #[arg(long, env = "ZAJEL_ARGON2_ITERATIONS")]
        pub argon2_iterations: Option<u32>,
        /// Shutdown drain limit in ms [default: 10000].
        #[arg(long, env = "ZAJEL_SHUTDOWN_GRACE_MS")]
        pub shutdown_grace_ms: Option<u64>,
        /// Reconnect delay suggested in going_away, in ms [default: 1000].
        #[arg(long, env = "ZAJEL_RECONNECT_AFTER_MS")]
        pub reconnect_after_ms: Option<u64>,
        /// Reconnects per second a mass close is spread for [default: 500].
        #[arg(long, env = "ZAJEL_RECONNECT_RATE")]
        pub reconnect_rate: Option<u32>,
        /// Most resume replays running at once [default: 16].
        #[arg(long, env = "ZAJEL_MAX_CONCURRENT_REPLAYS")]
        pub max_concurrent_replays: Option<u32>,
        /// System message posted when two users become friends; `{requester}` and
        /// `{accepter}` become their usernames [default: none].
        #[arg(long, env = "ZAJEL_FRIENDS_NOTICE")]
        pub friends_notice: Option<String>,
    }

    /// The TOML file: standalone keys at the top, engine options in `[engine]`.
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct FileConfig {
        /// See `--listen`.
        pub listen: Option<SocketAddr>,
        /// See `--data-dir`.
        pub data_dir: Option<PathBuf>,
        /// See `--redis-url`.
        pub redis_url: Option<String>,
        /// See `--static-dir`.
        pub static_dir: Option<PathBuf>,
        /// See `--redis-cluster` (a list of URLs).
        pub redis_cluster: Option<Vec<String>>,
        /// See `--redis-command-timeout-ms`.
        pub redis_command_timeout_ms: Option<u64>,
        /// See `--redis-connect-timeout-ms`.
        pub redis_connect_timeout_ms: Option<u64>,
        /// See `--embedded-queue-capacity`.
        pub embedded_queue_capacity: Option<usize>,
        /// See `--dedupe-window-ms`.
        pub dedupe_window_ms: Option<u64>,
        /// See `--node-id`.
        pub node_id: Option<String>,
        /// See `--node-heartbeat-ms`.
        pub node_heartbeat_ms: Option<u64>,
        /// See `--node-ttl-ms`.
        pub node_ttl_ms: Option<u64>,
        /// See `--node-sweep-ms`.
        pub node_sweep_ms: Option<u64>,
        /// See `--memory`.
        pub memory: Option<bool>,
        /// See `--log`.
        pub log: Option<String>,
        /// See `--log-format`.
        pub log_format: Option<LogFormat>,
        /// Engine options.
        pub engine: ServerConfig,
        /// OpenID Connect sign-in (`[oidc]` with `[[oidc.providers]]`, see `docs/identity.md`).
        pub oidc: Option<crate::identity::oidc::OidcConfig>,
    }

    /// The resolved configuration.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Standalone {
        /// Listen address.
        pub listen: SocketAddr,
        /// Embedded store directory.
        pub data_dir: PathBuf,
        /// Redis URL (replaces the embedded store).
        pub redis_url: Option<String>,
        /// Static web app directory.
        pub static_dir: Option<PathBuf>,
        /// Store settings: Redis Cluster seeds, timeouts, embedded store options.
        pub store_options: StoreSettings,
        /// Node settings used with `redis_url` (several nodes on one Redis).
        pub node: NodeSettings,
        /// In-memory store.
        pub memory: bool,
        /// Log filter.
        pub log: String,
        /// Log line format.
        pub log_format: LogFormat,
        /// Engine configuration.
        pub engine: ServerConfig,
        /// OpenID Connect sign-in, when a provider is configured.
        pub oidc: Option<crate::identity::oidc::OidcConfig>,
    }

    /// Settings of this node among several sharing one Redis (see `RedisBrokerConfig` in
    /// [`crate::broker`], feature `redis`); `None` = that config's default.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct NodeSettings {
        /// Node id (random when absent).
        pub id: Option<String>,
        /// Heartbeat period, ms.
        pub heartbeat_ms: Option<u64>,
        /// Heartbeat lifetime, ms.
        pub ttl_ms: Option<u64>,
        /// Dead-node sweep period, ms.
        pub sweep_ms: Option<u64>,
    }

    impl NodeSettings {
        /// The broker configuration these settings describe.
        #[cfg(feature = "redis")]
        pub fn broker_config(&self) -> crate::broker::RedisBrokerConfig {
            let mut c = crate::broker::RedisBrokerConfig::default();
            if let Some(id) = &self.id {
                c.node_id = id.clone();
            }
            if let Some(v) = self.heartbeat_ms {
                c.heartbeat_ms = v;
            }
            if let Some(v) = self.ttl_ms {
                c.node_ttl_ms = v;
            }
            if let Some(v) = self.sweep_ms {
                c.sweep_ms = v;
            }
            c
        }
    }

    /// How log lines are written (to stderr).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
    #[serde(rename_all = "lowercase")]
    pub enum LogFormat {
        /// Human-readable lines; ANSI colours only when stderr is a terminal.
        #[default]
        Text,
        /// One JSON object per line, for log collectors.
        Json,
    }

    /// Store settings beyond the choice of store; `None` = the store's default.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct StoreSettings {
        /// Redis Cluster seed nodes (empty: no Cluster).
        pub redis_cluster: Vec<String>,
        /// Redis reply timeout, ms.
        pub redis_command_timeout_ms: Option<u64>,
        /// Redis connect timeout, ms.
        pub redis_connect_timeout_ms: Option<u64>,
        /// Embedded store write queue, in operations.
        pub embedded_queue_capacity: Option<usize>,
        /// Idempotency window, ms (either store).
        pub dedupe_window_ms: Option<u64>,
    }

    impl StoreSettings {
        /// The Redis store options these settings describe.
        #[cfg(feature = "redis")]
        pub fn redis_options(&self) -> zajel_core::store::redis::RedisOptions {
            let mut o = zajel_core::store::redis::RedisOptions::default();
            if let Some(ms) = self.redis_command_timeout_ms {
                o.command_timeout = std::time::Duration::from_millis(ms.max(1));
            }
            if let Some(ms) = self.redis_connect_timeout_ms {
                o.connect_timeout = std::time::Duration::from_millis(ms.max(1));
            }
            if let Some(ms) = self.dedupe_window_ms {
                o.dedupe_window_ms = ms;
            }
            o
        }

        /// The embedded store options these settings describe.
        #[cfg(feature = "embedded")]
        pub fn embedded_options(&self) -> zajel_core::store::embedded::EmbeddedOptions {
            let mut o = zajel_core::store::embedded::EmbeddedOptions::default();
            if let Some(n) = self.embedded_queue_capacity {
                o.queue_capacity = n.max(1);
            }
            if let Some(ms) = self.dedupe_window_ms {
                o.dedupe_window_ms = ms;
            }
            o
        }
    }

    /// The store a configuration asks for: `memory` wins over `redis_url`, which wins over
    /// `redis_cluster`, which wins over the embedded store in `data_dir` (`load` refuses a URL
    /// and seeds together).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum StoreChoice {
        /// The in-memory store (feature `memory`).
        Memory,
        /// Redis at this URL, store and broker (feature `redis`).
        Redis(String),
        /// A Redis Cluster through these seed nodes, store and broker (feature `redis`).
        RedisCluster(Vec<String>),
        /// The embedded store in this directory (feature `embedded`).
        Embedded(PathBuf),
    }

    impl StoreChoice {
        /// The cargo feature that compiles this store in.
        pub fn feature(&self) -> &'static str {
            match self {
                StoreChoice::Memory => "memory",
                StoreChoice::Redis(_) | StoreChoice::RedisCluster(_) => "redis",
                StoreChoice::Embedded(_) => "embedded",
            }
        }

        /// Whether this binary was built with that feature.
        pub fn is_compiled(&self) -> bool {
            match self {
                StoreChoice::Memory => cfg!(feature = "memory"),
                StoreChoice::Redis(_) | StoreChoice::RedisCluster(_) => cfg!(feature = "redis"),
                StoreChoice::Embedded(_) => cfg!(feature = "embedded"),
            }
        }
    }

    /// A configuration that cannot be used.
    #[derive(Debug, thiserror::Error)]
    pub enum ConfigError {
        /// Unreadable file.
        #[error("cannot read config file {0}: {1}")]
        Read(PathBuf, std::io::Error),
        /// Invalid TOML or unknown keys.
        #[error("invalid config file {0}: {1}")]
        Parse(PathBuf, toml::de::Error),
        /// The configuration asks for a store this binary was built without.
        #[error(
            "the configuration asks for the {0} store, but this zajel-server was built without \
             the `{0}` feature (reinstall with `--features {0}`, or choose another store)"
        )]
        StoreNotCompiled(&'static str),
        /// Options that exclude each other.
        #[error("invalid configuration: {0}")]
        Conflict(&'static str),
    }

    impl Standalone {
        /// Reads the file named by `--config` (if any) and applies the precedence rules.
        pub fn load(cli: Cli) -> Result<Self, ConfigError> {
            let file = match &cli.config {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| ConfigError::Read(path.clone(), e))?;
                    toml::from_str(&text).map_err(|e| ConfigError::Parse(path.clone(), e))?
                }
                None => FileConfig::default(),
            };
            let config = Self::resolve(cli, file);
            if config.redis_url.is_some() && !config.store_options.redis_cluster.is_empty() {
                return Err(ConfigError::Conflict(
                    "give either a Redis URL (redis_url) or Redis Cluster seeds (redis_cluster), not both",
                ));
            }
            config.check_store()?;
            Ok(config)
        }

        /// The store this configuration asks for.
        pub fn store(&self) -> StoreChoice {
            let seeds = &self.store_options.redis_cluster;
            match (&self.redis_url, self.memory) {
                (_, true) => StoreChoice::Memory,
                (Some(url), false) => StoreChoice::Redis(url.clone()),
                (None, false) if !seeds.is_empty() => StoreChoice::RedisCluster(seeds.clone()),
                (None, false) => StoreChoice::Embedded(self.data_dir.clone()),
            }
        }

        /// Refuses a store this binary was built without, naming the feature.
        pub fn check_store(&self) -> Result<(), ConfigError> {
            self.check_store_against(StoreChoice::is_compiled)
        }

        /// [`check_store`](Self::check_store) with the compiled-in stores given, so the tests
        /// of a full build also show what a lean binary answers (no second, lean build in CI).
        fn check_store_against(
            &self,
            compiled: impl Fn(&StoreChoice) -> bool,
        ) -> Result<(), ConfigError> {
            let store = self.store();
            if compiled(&store) {
                Ok(())
            } else {
                Err(ConfigError::StoreNotCompiled(store.feature()))
            }
        }

        /// Flags/env (already merged by clap) over the file over the defaults.
        pub fn resolve(cli: Cli, file: FileConfig) -> Self {
            let mut engine = file.engine;
            let args = cli.engine;
            macro_rules! over {
                ($($field:ident),* $(,)?) => {$(
                    if let Some(v) = args.$field { engine.$field = v; }
                )*};
            }
            over!(
                max_frame_bytes,
                max_body_bytes,
                rate_per_second,
                rate_burst,
                idle_timeout_ms,
                auth_timeout_ms,
                queue_capacity,
                write_timeout_ms,
                replay_limit,
                replay_conversations,
                token_ttl_secs,
                allowed_origins,
                cors_origins,
                cookie_secure,
                login_failures_per_minute,
                login_attempts_per_address_per_minute,
                trust_forwarded_for,
                login_failures_per_account_per_minute,
                register_per_address_per_minute,
                trusted_proxies,
                max_connections,
                max_connections_per_address,
                max_connections_per_user,
                argon2_memory_kib,
                argon2_iterations,
                shutdown_grace_ms,
                reconnect_after_ms,
                reconnect_rate,
                max_concurrent_replays,
            );
            if let Some(notice) = args.friends_notice {
                engine.friends_notice = Some(notice);
            }
            Self {
                listen: cli
                    .listen
                    .or(file.listen)
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
                data_dir: cli
                    .data_dir
                    .or(file.data_dir)
                    .unwrap_or_else(|| PathBuf::from("zajel-data")),
                redis_url: cli.redis_url.or(file.redis_url),
                static_dir: cli.static_dir.or(file.static_dir),
                store_options: StoreSettings {
                    redis_cluster: cli
                        .redis_cluster
                        .or(file.redis_cluster)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect(),
                    redis_command_timeout_ms: cli
                        .redis_command_timeout_ms
                        .or(file.redis_command_timeout_ms),
                    redis_connect_timeout_ms: cli
                        .redis_connect_timeout_ms
                        .or(file.redis_connect_timeout_ms),
                    embedded_queue_capacity: cli
                        .embedded_queue_capacity
                        .or(file.embedded_queue_capacity),
                    dedupe_window_ms: cli.dedupe_window_ms.or(file.dedupe_window_ms),
                },
                node: NodeSettings {
                    id: cli.node_id.or(file.node_id),
                    heartbeat_ms: cli.node_heartbeat_ms.or(file.node_heartbeat_ms),
                    ttl_ms: cli.node_ttl_ms.or(file.node_ttl_ms),
                    sweep_ms: cli.node_sweep_ms.or(file.node_sweep_ms),
                },
                memory: cli.memory.or(file.memory).unwrap_or(false),
                log: cli.log.or(file.log).unwrap_or_else(|| "info".into()),
                log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
                engine,
                oidc: oidc_settings(
                    file.oidc,
                    cli.public_url,
                    cli.google_client_id,
                    cli.google_client_secret,
                ),
            }
        }
    }

    /// The file's `[oidc]` with the flags applied; `None` when no provider is configured.
    fn oidc_settings(
        file: Option<crate::identity::oidc::OidcConfig>,
        public_url: Option<String>,
        google_id: Option<String>,
        google_secret: Option<String>,
    ) -> Option<crate::identity::oidc::OidcConfig> {
        use crate::identity::oidc::OidcProvider;
        let mut oidc = file.unwrap_or_default();
        if let Some(url) = public_url {
            oidc.public_url = url;
        }
        if let (Some(id), Some(secret)) = (google_id, google_secret) {
            oidc.providers.retain(|p| p.id != "google");
            oidc.providers.insert(0, OidcProvider::google(id, secret));
        }
        (!oidc.providers.is_empty()).then_some(oidc)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use clap::Parser;

        #[test]
        fn oidc_from_file_and_flags() {
            let file: FileConfig = toml::from_str(
                "[oidc]\npublic_url = \"https://f.example\"\n[[oidc.providers]]\nid = \"corp\"\nname = \"Corp\"\nissuer = \"https://sso.example\"\nclient_id = \"c\"\n",
            )
            .unwrap();
            let cli = Cli::try_parse_from([
                "zajel-server",
                "--public-url",
                "https://chat.example",
                "--google-client-id",
                "gid",
                "--google-client-secret",
                "gsecret",
            ])
            .unwrap();
            let s = Standalone::resolve(cli, file);
            let oidc = s.oidc.expect("oidc configured");
            assert_eq!(oidc.public_url, "https://chat.example");
            let ids: Vec<&str> = oidc.providers.iter().map(|p| p.id.as_str()).collect();
            assert_eq!(ids, ["google", "corp"]);
            assert_eq!(oidc.providers[1].scopes, ["email", "profile"]);
            let none = Standalone::resolve(
                Cli::try_parse_from(["zajel-server"]).unwrap(),
                FileConfig::default(),
            );
            assert!(none.oidc.is_none());
            assert!(toml::from_str::<FileConfig>("[oidc]\npublic_ur = \"x\"").is_err());
        }

        #[test]
        fn defaults_without_options() {
            let cli = Cli::try_parse_from(["zajel-server"]).unwrap();
            let s = Standalone::resolve(cli, FileConfig::default());
            assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
            assert_eq!(s.data_dir, PathBuf::from("zajel-data"));
            assert!(!s.memory && s.redis_url.is_none() && s.static_dir.is_none());
            assert_eq!(s.engine, ServerConfig::default());
        }

        #[test]
        fn flags_override_the_file_which_overrides_defaults() {
            let file: FileConfig = toml::from_str(
                "listen = \"0.0.0.0:9000\"\ndata_dir = \"/var/lib/zajel\"\n[engine]\nmax_body_bytes = 100\nrate_burst = 7\nallowed_origins = [\"https://a.example\"]\n",
            )
            .unwrap();
            let cli = Cli::try_parse_from([
                "zajel-server",
                "--listen",
                "127.0.0.1:0",
                "--max-body-bytes",
                "200",
                "--memory",
                "--allowed-origins",
                "https://b.example,https://c.example",
            ])
            .unwrap();
            let s = Standalone::resolve(cli, file);
            assert_eq!(s.listen, "127.0.0.1:0".parse().unwrap());
            assert_eq!(s.data_dir, PathBuf::from("/var/lib/zajel"));
            assert!(s.memory);
            assert_eq!(s.engine.max_body_bytes, 200);
            assert_eq!(s.engine.rate_burst, 7);
            assert_eq!(s.engine.idle_timeout_ms, 60_000);
            assert_eq!(
                s.engine.allowed_origins,
                vec!["https://b.example", "https://c.example"]
            );
        }

        /// Each store is accepted exactly when its feature is compiled in; otherwise the error
        /// names the feature (a lean binary is simulated by the compiled-in set given).
        #[test]
        fn a_store_not_compiled_in_is_refused_with_its_feature() {
            for (args, feature) in [
                (&["zajel-server", "--memory"][..], "memory"),
                (
                    &["zajel-server", "--redis-url", "redis://127.0.0.1:1/"][..],
                    "redis",
                ),
                (
                    &["zajel-server", "--redis-cluster", "redis://127.0.0.1:1/"][..],
                    "redis",
                ),
                (&["zajel-server", "--data-dir", "/tmp/z"][..], "embedded"),
            ] {
                let s = Standalone::resolve(Cli::try_parse_from(args).unwrap(), Default::default());
                assert_eq!(s.store().feature(), feature);
                // This build.
                assert_eq!(
                    s.check_store().is_ok(),
                    s.store().is_compiled(),
                    "{feature}"
                );
                // A binary built without that store: refused, naming the feature.
                let Err(e) = s.check_store_against(|_| false) else {
                    panic!("{feature}: a store not compiled in was accepted");
                };
                assert!(
                    e.to_string().contains(&format!("`{feature}` feature")),
                    "{e}"
                );
                // A binary built with only that store: accepted.
                assert!(s.check_store_against(|c| c.feature() == feature).is_ok());
            }
        }

        #[test]
        #[cfg(all(feature = "redis", feature = "embedded"))]
        fn redis_cluster_seeds_and_store_options() {
            let file: FileConfig = toml::from_str(
                "redis_cluster = [\"redis://f1:7000\"]\nredis_command_timeout_ms = 500\nembedded_queue_capacity = 64\n",
            )
            .unwrap();
            let s =
                Standalone::resolve(Cli::try_parse_from(["zajel-server"]).unwrap(), file.clone());
            assert_eq!(s.store_options.redis_cluster, ["redis://f1:7000"]);
            assert_eq!(
                s.store_options.redis_options().command_timeout,
                std::time::Duration::from_millis(500)
            );
            assert_eq!(s.store_options.embedded_options().queue_capacity, 64);
            let cli = Cli::try_parse_from([
                "zajel-server",
                "--redis-cluster",
                "redis://a:7000, redis://b:7000,",
                "--dedupe-window-ms",
                "1000",
            ])
            .unwrap();
            let s = Standalone::resolve(cli, file);
            assert_eq!(
                s.store_options.redis_cluster,
                ["redis://a:7000", "redis://b:7000"]
            );
            assert_eq!(s.store_options.redis_options().dedupe_window_ms, 1000);
            assert_eq!(s.store_options.embedded_options().dedupe_window_ms, 1000);
            // A URL and seeds together are refused.
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("z.toml");
            std::fs::write(&path, "redis_url = \"redis://x:6379\"\n").unwrap();
            let cli = Cli::try_parse_from([
                "zajel-server",
                "--config",
                path.to_str().unwrap(),
                "--redis-cluster",
                "redis://a:7000",
            ])
            .unwrap();
            assert!(matches!(
                Standalone::load(cli),
                Err(ConfigError::Conflict(_))
            ));
        }

        #[test]
        fn unknown_file_keys_are_errors() {
            assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
            assert!(toml::from_str::<FileConfig>("[engine]\nmax_bdy = 1").is_err());
        }
    }
}
