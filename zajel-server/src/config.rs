//! [`ServerConfig`]: the engine's limits and policies.
//!
//! Every field has a default (see `docs/server.md` for the full table with the standalone
//! binary's flags and environment variables). The struct deserializes from TOML/JSON with
//! missing fields taken from [`ServerConfig::default`] and unknown fields rejected, so an
//! embedding application can keep it as a section of its own configuration file.
//!
//! With the feature `cli`, [`Standalone`] is the binary's whole configuration: each option is
//! declared once, as a field that is at the same time a flag, a `ZAJEL_*` environment variable
//! and a key of the TOML file (clap reads the first two, serde the file).

use serde::{Deserialize, Serialize};
use zajel_core::limits::BODY_MAX_BYTES;
use zajel_core::protocol::Limits;

/// The engine's configuration. Durations are in milliseconds or seconds as the field name says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Largest WebSocket text frame accepted, in bytes. Larger: `frame_too_large`, close 1009.
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_MAX_FRAME_BYTES"))]
    pub max_frame_bytes: u32,
    /// Largest message body in bytes (capped at the protocol ceiling of 16 KiB).
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_MAX_BODY_BYTES"))]
    pub max_body_bytes: u32,
    /// Sustained frames per second per user, all their connections together (at least 1).
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_RATE_PER_SECOND"))]
    pub rate_per_second: u32,
    /// Frames a user may send in a burst (at least 1).
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_RATE_BURST"))]
    pub rate_burst: u32,
    /// A connection that sends nothing for this long is closed (code 4000). Clients `ping`.
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_IDLE_TIMEOUT_MS"))]
    pub idle_timeout_ms: u64,
    /// A connection must authenticate within this time (else close 1008).
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_AUTH_TIMEOUT_MS"))]
    pub auth_timeout_ms: u64,
    /// Capacity of each connection's outbound event queue. A full queue closes the
    /// connection with 4008 ("lagged"); the client resumes from its cursor.
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_QUEUE_CAPACITY"))]
    pub queue_capacity: usize,
    /// A write to a client that takes longer than this closes the connection.
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_WRITE_TIMEOUT_MS"))]
    pub write_timeout_ms: u64,
    /// Most messages replayed per conversation on resume; larger backlogs are listed in
    /// `synced.truncated` and paged with `history`.
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_REPLAY_LIMIT"))]
    pub replay_limit: u32,
    /// Most conversations considered on resume (most recently active first).
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_REPLAY_CONVERSATIONS"))]
    pub replay_conversations: u32,
    /// Session token lifetime in seconds (default 30 days).
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_TOKEN_TTL_SECS"))]
    pub token_ttl_secs: u64,
    /// Origins (e.g. `https://chat.example.com`) whose WebSocket upgrades may authenticate with
    /// the `zajel_session` cookie. A same-origin upgrade (Origin matches Host) is always allowed.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "ZAJEL_ALLOWED_ORIGINS", value_delimiter = ',')
    )]
    pub allowed_origins: Vec<String>,
    /// Origins (e.g. `https://app.example`) whose pages may call the HTTP API cross-origin
    /// (CORS, see `docs/web.md`); `*` allows any. `allowed_origins` are allowed too.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "ZAJEL_CORS_ORIGINS", value_delimiter = ',')
    )]
    pub cors_origins: Vec<String>,
    /// Mark the session cookie `Secure` (set this when serving over HTTPS).
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_COOKIE_SECURE", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true"))]
    pub cookie_secure: bool,
    /// Failed logins allowed per (account, client address) pair per minute.
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_LOGIN_FAILURES_PER_MINUTE"))]
    pub login_failures_per_minute: u32,
    /// Login attempts allowed per client address per minute.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "ZAJEL_LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE")
    )]
    pub login_attempts_per_address_per_minute: u32,
    /// Take the client address from `X-Forwarded-For` when the connection comes from a trusted
    /// proxy (the directly connected peer, or one in `trusted_proxies`): the rightmost
    /// address that is not a trusted proxy. Only behind a reverse proxy that appends to it.
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_TRUST_FORWARDED_FOR", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true"))]
    pub trust_forwarded_for: bool,
    /// Failed logins allowed per account per minute from all addresses together: a looser bound
    /// than `login_failures_per_minute` (which counts per account *and* address), so guessing
    /// from many addresses is bounded while one attacker cannot lock the owner out.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "ZAJEL_LOGIN_FAILURES_PER_ACCOUNT_PER_MINUTE")
    )]
    pub login_failures_per_account_per_minute: u32,
    /// Registrations allowed per client address per minute.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "ZAJEL_REGISTER_PER_ADDRESS_PER_MINUTE")
    )]
    pub register_per_address_per_minute: u32,
    /// Reverse proxies (IP addresses or CIDR ranges, e.g. `10.0.0.0/8`) whose `X-Forwarded-For`
    /// is believed when `trust_forwarded_for` is on: the client is the rightmost address that
    /// is not one of them. Empty: only the directly connected peer is trusted.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "ZAJEL_TRUSTED_PROXIES", value_delimiter = ',')
    )]
    pub trusted_proxies: Vec<String>,
    /// Most WebSocket connections this node holds; more are refused with 503 `unavailable`.
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_MAX_CONNECTIONS"))]
    pub max_connections: u32,
    /// Most WebSocket connections from one client address (authenticated or not); more are
    /// refused with 429 `rate_limited`.
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_MAX_CONNECTIONS_PER_ADDRESS"))]
    pub max_connections_per_address: u32,
    /// Most authenticated WebSocket connections of one user on this node; the `auth` of one more
    /// gets `rate_limited` and a 1008 close.
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_MAX_CONNECTIONS_PER_USER"))]
    pub max_connections_per_user: u32,
    /// Argon2id memory cost in KiB (OWASP: 19456).
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_ARGON2_MEMORY_KIB"))]
    pub argon2_memory_kib: u32,
    /// Argon2id iterations (OWASP: 2).
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_ARGON2_ITERATIONS"))]
    pub argon2_iterations: u32,
    /// How long shutdown waits for connections to drain.
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_SHUTDOWN_GRACE_MS"))]
    pub shutdown_grace_ms: u64,
    /// Delay suggested to clients in `going_away` at shutdown (the least; each connection's
    /// delay adds its share of the spread, see `reconnect_rate`).
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_RECONNECT_AFTER_MS"))]
    pub reconnect_after_ms: u64,
    /// Reconnects per second this node wants to absorb after closing many connections at once
    /// (shutdown, a 4008 wave): each closed connection is told to come back after a delay drawn
    /// uniformly over `connections / reconnect_rate` seconds (at most 4 minutes), in a
    /// `going_away` frame sent just before the close.
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_RECONNECT_RATE"))]
    pub reconnect_rate: u32,
    /// Most resume replays running at once on this node; further ones wait their turn (after
    /// `auth_ok`), so a population returning together queues instead of stampeding the store.
    /// One user holds at most a quarter of them (at least one), so a slow reader cannot starve
    /// everyone else.
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_MAX_CONCURRENT_REPLAYS"))]
    pub max_concurrent_replays: u32,
    /// A system message posted into two users' conversation when they become friends (see
    /// `docs/identity.md`, "System messages"), e.g. `"{requester} and {accepter} are now
    /// friends"`: `{requester}` and `{accepter}` become the usernames. Stored before the
    /// acceptance is answered, delivered after the friend events. Off when absent.
    #[cfg_attr(feature = "cli", arg(long, env = "ZAJEL_FRIENDS_NOTICE"))]
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
pub use standalone::{ConfigError, LogFormat, Standalone, StoreChoice};

/// The standalone binary's configuration (feature `cli`).
#[cfg(feature = "cli")]
mod standalone {
    use super::ServerConfig;
    use crate::identity::oidc::{OidcConfig, OidcProvider};
    use clap::{ArgMatches, Args, FromArgMatches};
    use serde::Deserialize;
    use std::ffi::OsString;
    use std::net::SocketAddr;
    use std::path::PathBuf;

    /// Everything `zajel-server` is configured with. Each field is a flag (`--data-dir`), an
    /// environment variable (`ZAJEL_DATA_DIR`) and a key of the TOML file (`data_dir`; the
    /// engine's options under `[engine]`, OpenID Connect under `[oidc]`). Precedence: flags >
    /// environment > file > [`Default`]: the file is read into this struct, then clap overwrites
    /// the fields that the command line or the environment gave.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, clap::Args)]
    #[command(about = "Zajel real-time chat server", long_about = None)]
    #[serde(default, deny_unknown_fields)]
    pub struct Standalone {
        /// TOML configuration file.
        #[arg(long, env = "ZAJEL_CONFIG")]
        #[serde(skip)]
        pub config: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, env = "ZAJEL_LISTEN")]
        pub listen: SocketAddr,
        /// Directory of the embedded store [default: ./zajel-data].
        #[arg(long, env = "ZAJEL_DATA_DIR")]
        pub data_dir: PathBuf,
        /// Use Redis (e.g. redis://127.0.0.1:6379/) instead of the embedded store.
        #[arg(long, env = "ZAJEL_REDIS_URL")]
        pub redis_url: Option<String>,
        /// Use a Redis Cluster (Redis 7+): seed nodes, comma-separated
        /// (e.g. redis://10.0.0.1:7000,redis://10.0.0.2:7000); the rest are discovered.
        #[arg(long, env = "ZAJEL_REDIS_CLUSTER", value_delimiter = ',')]
        pub redis_cluster: Vec<String>,
        /// Longest wait for one Redis reply, in ms [default: 2000].
        #[arg(long, env = "ZAJEL_REDIS_COMMAND_TIMEOUT_MS")]
        pub redis_command_timeout_ms: Option<u64>,
        /// Longest wait for a Redis connection, in ms [default: 1000].
        #[arg(long, env = "ZAJEL_REDIS_CONNECT_TIMEOUT_MS")]
        pub redis_connect_timeout_ms: Option<u64>,
        /// Embedded store: writes that may wait for the writer thread [default: 4096].
        #[arg(long, env = "ZAJEL_EMBEDDED_QUEUE_CAPACITY")]
        pub embedded_queue_capacity: Option<usize>,
        /// Embedded store: shortest time between two commits' starts while senders are
        /// concurrent, in µs; 0 commits as soon as anything is queued [default: 1000].
        #[arg(long, env = "ZAJEL_EMBEDDED_COMMIT_INTERVAL_US")]
        pub embedded_commit_interval_us: Option<u64>,
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
        #[arg(long, env = "ZAJEL_MEMORY", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        pub memory: bool,
        /// Log filter (tracing `EnvFilter` syntax) [default: info]; `RUST_LOG` wins if set.
        #[arg(long, env = "ZAJEL_LOG")]
        pub log: String,
        /// Log line format: `text` (colours only on a terminal) or `json` (one object per
        /// line) [default: text].
        #[arg(long, env = "ZAJEL_LOG_FORMAT", value_enum)]
        pub log_format: LogFormat,
        /// Externally visible base URL, for OpenID Connect redirect URLs
        /// (`<url>/api/auth/oidc/<id>/callback`); overrides `[oidc] public_url`.
        #[arg(long, env = "ZAJEL_PUBLIC_URL")]
        #[serde(skip)]
        pub public_url: Option<String>,
        /// Google sign-in: OAuth client id (with `--google-client-secret`).
        #[arg(long, env = "ZAJEL_GOOGLE_CLIENT_ID")]
        #[serde(skip)]
        pub google_client_id: Option<String>,
        /// Google sign-in: OAuth client secret.
        #[arg(long, env = "ZAJEL_GOOGLE_CLIENT_SECRET", hide_env_values = true)]
        #[serde(skip)]
        pub google_client_secret: Option<String>,
        /// Engine limits and policies.
        #[command(flatten)]
        pub engine: ServerConfig,
        /// OpenID Connect sign-in (`[oidc]` with `[[oidc.providers]]`, see `docs/identity.md`).
        /// Once loaded, with `--public-url` and the Google flags applied, and
        /// `None` when no provider is configured.
        #[arg(skip)]
        pub oidc: Option<OidcConfig>,
    }

    impl Default for Standalone {
        fn default() -> Self {
            Self {
                config: None,
                listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
                data_dir: PathBuf::from("zajel-data"),
                redis_url: None,
                redis_cluster: Vec::new(),
                redis_command_timeout_ms: None,
                redis_connect_timeout_ms: None,
                embedded_queue_capacity: None,
                embedded_commit_interval_us: None,
                dedupe_window_ms: None,
                node_id: None,
                node_heartbeat_ms: None,
                node_ttl_ms: None,
                node_sweep_ms: None,
                static_dir: None,
                memory: false,
                log: "info".into(),
                log_format: LogFormat::default(),
                public_url: None,
                google_client_id: None,
                google_client_secret: None,
                engine: ServerConfig::default(),
                oidc: None,
            }
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
        /// A flag or environment variable that does not parse (or `--help`, `--version`:
        /// [`clap::Error::exit`] prints those).
        #[error("{0}")]
        Args(#[from] clap::Error),
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
        /// Reads the process's command line and environment, then the file they name, and
        /// applies the precedence rules. `--help`, `--version` and malformed flags print
        /// clap's answer and exit, as in any clap program.
        pub fn from_command_line() -> Result<Self, ConfigError> {
            Self::load(&Self::command().get_matches())
        }

        /// [`from_command_line`](Self::from_command_line) with these arguments (the first is
        /// the program name); the environment is still read. A parse error is returned.
        pub fn try_from_args<I, T>(args: I) -> Result<Self, ConfigError>
        where
            I: IntoIterator<Item = T>,
            T: Into<OsString> + Clone,
        {
            Self::load(&Self::command().try_get_matches_from(args)?)
        }

        /// The command line: every field's flag, none required (an absent flag leaves the
        /// file's value or the default).
        fn command() -> clap::Command {
            let command = clap::Command::new("zajel-server").version(env!("CARGO_PKG_VERSION"));
            Self::augment_args_for_update(command)
        }

        /// Reads the file named by `--config` (if any), lays the flags and environment over it
        /// and checks the result.
        fn load(args: &ArgMatches) -> Result<Self, ConfigError> {
            let file = match args.get_one::<PathBuf>("config") {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| ConfigError::Read(path.clone(), e))?;
                    toml::from_str(&text).map_err(|e| ConfigError::Parse(path.clone(), e))?
                }
                None => Self::default(),
            };
            let config = file.resolve(args)?;
            if config.redis_url.is_some() && !config.redis_cluster.is_empty() {
                return Err(ConfigError::Conflict(
                    "give either a Redis URL (redis_url) or Redis Cluster seeds (redis_cluster), not both",
                ));
            }
            config.check_store()?;
            Ok(config)
        }

        /// `self` (the file, or the defaults) with what the flags and the environment gave
        /// written over it.
        fn resolve(mut self, args: &ArgMatches) -> Result<Self, ConfigError> {
            self.update_from_arg_matches(args)?;
            self.redis_cluster = std::mem::take(&mut self.redis_cluster)
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            self.oidc = self.oidc_settings();
            Ok(self)
        }

        /// The file's `[oidc]` with the flags applied; `None` when no provider is configured.
        fn oidc_settings(&self) -> Option<OidcConfig> {
            let mut oidc = self.oidc.clone().unwrap_or_default();
            if let Some(url) = &self.public_url {
                oidc.public_url = url.clone();
            }
            if let (Some(id), Some(secret)) = (&self.google_client_id, &self.google_client_secret) {
                oidc.providers.retain(|p| p.id != "google");
                oidc.providers
                    .insert(0, OidcProvider::google(id.clone(), secret.clone()));
            }
            (!oidc.providers.is_empty()).then_some(oidc)
        }

        /// The store this configuration asks for.
        pub fn store(&self) -> StoreChoice {
            match (&self.redis_url, self.memory) {
                (_, true) => StoreChoice::Memory,
                (Some(url), false) => StoreChoice::Redis(url.clone()),
                (None, false) if !self.redis_cluster.is_empty() => {
                    StoreChoice::RedisCluster(self.redis_cluster.clone())
                }
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

        /// The Redis store options this configuration describes.
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

        /// The embedded store options this configuration describes.
        #[cfg(feature = "embedded")]
        pub fn embedded_options(&self) -> zajel_core::store::embedded::EmbeddedOptions {
            let mut o = zajel_core::store::embedded::EmbeddedOptions::default();
            if let Some(n) = self.embedded_queue_capacity {
                o.queue_capacity = n.max(1);
            }
            if let Some(us) = self.embedded_commit_interval_us {
                o.commit_interval = std::time::Duration::from_micros(us);
            }
            if let Some(ms) = self.dedupe_window_ms {
                o.dedupe_window_ms = ms;
            }
            o
        }

        /// The broker configuration of this node among several sharing one Redis.
        #[cfg(feature = "redis")]
        pub fn broker_config(&self) -> crate::broker::RedisBrokerConfig {
            let mut c = crate::broker::RedisBrokerConfig::default();
            if let Some(id) = &self.node_id {
                c.node_id = id.clone();
            }
            if let Some(v) = self.node_heartbeat_ms {
                c.heartbeat_ms = v;
            }
            if let Some(v) = self.node_ttl_ms {
                c.node_ttl_ms = v;
            }
            if let Some(v) = self.node_sweep_ms {
                c.sweep_ms = v;
            }
            c
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// `file` (TOML) under `args`, as `load` merges them (without the checks).
        fn resolve(file: &str, args: &[&str]) -> Standalone {
            let file: Standalone = toml::from_str(file).expect("valid TOML");
            let args = Standalone::command()
                .try_get_matches_from(std::iter::once("zajel-server").chain(args.iter().copied()))
                .expect("valid flags");
            file.resolve(&args).expect("resolves")
        }

        #[test]
        fn oidc_from_file_and_flags() {
            let s = resolve(
                "[oidc]\npublic_url = \"https://f.example\"\nca_files = [\"/etc/zajel/corp-ca.pem\"]\n[[oidc.providers]]\nid = \"corp\"\nname = \"Corp\"\nissuer = \"https://sso.example\"\nclient_id = \"c\"\n",
                &[
                    "--public-url",
                    "https://chat.example",
                    "--google-client-id",
                    "gid",
                    "--google-client-secret",
                    "gsecret",
                ],
            );
            let oidc = s.oidc.expect("oidc configured");
            assert_eq!(oidc.public_url, "https://chat.example");
            let ids: Vec<&str> = oidc.providers.iter().map(|p| p.id.as_str()).collect();
            assert_eq!(ids, ["google", "corp"]);
            assert_eq!(oidc.providers[1].scopes, ["email", "profile"]);
            assert_eq!(
                oidc.ca_files,
                [std::path::PathBuf::from("/etc/zajel/corp-ca.pem")]
            );
            assert!(resolve("", &[]).oidc.is_none());
            assert!(toml::from_str::<Standalone>("[oidc]\npublic_ur = \"x\"").is_err());
        }

        #[test]
        fn defaults_without_options() {
            let s = resolve("", &[]);
            assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
            assert_eq!(s.data_dir, PathBuf::from("zajel-data"));
            assert!(!s.memory && s.redis_url.is_none() && s.static_dir.is_none());
            assert_eq!((s.log.as_str(), s.log_format), ("info", LogFormat::Text));
            assert_eq!(s.engine, ServerConfig::default());
            assert_eq!(s, Standalone::default());
        }

        /// Fields of every kind (address, path, bool, number, list, enum, optional), in the file
        /// and on the command line: the flag wins, the file wins over the default. (Flags over
        /// the environment is clap's own rule; `tests/binary.rs` runs the binary with all three.)
        #[test]
        fn flags_override_the_file_which_overrides_defaults() {
            let file = "listen = \"0.0.0.0:9000\"\ndata_dir = \"/var/lib/zajel\"\nlog_format = \"json\"\n\
                        memory = true\nnode_ttl_ms = 5\n\
                        [engine]\nmax_body_bytes = 100\nrate_burst = 7\ncookie_secure = true\n\
                        allowed_origins = [\"https://a.example\"]\n";
            let s = resolve(
                file,
                &[
                    "--listen",
                    "127.0.0.1:0",
                    "--max-body-bytes",
                    "200",
                    "--memory=false",
                    "--cookie-secure",
                    "false",
                    "--log-format",
                    "text",
                    "--node-ttl-ms",
                    "6",
                    "--allowed-origins",
                    "https://b.example,https://c.example",
                ],
            );
            assert_eq!(s.listen, "127.0.0.1:0".parse().unwrap());
            assert_eq!(s.data_dir, PathBuf::from("/var/lib/zajel"));
            assert!(!s.memory && !s.engine.cookie_secure);
            assert_eq!(s.log_format, LogFormat::Text);
            assert_eq!(s.node_ttl_ms, Some(6));
            assert_eq!(s.engine.max_body_bytes, 200);
            assert_eq!(s.engine.rate_burst, 7);
            assert_eq!(s.engine.idle_timeout_ms, 60_000);
            assert_eq!(
                s.engine.allowed_origins,
                vec!["https://b.example", "https://c.example"]
            );
            // Without flags the file's values stand, bools and lists included.
            let s = resolve(file, &[]);
            assert!(s.memory && s.engine.cookie_secure);
            assert_eq!(s.log_format, LogFormat::Json);
            assert_eq!(s.node_ttl_ms, Some(5));
            assert_eq!(s.engine.allowed_origins, vec!["https://a.example"]);
            // A bare boolean flag means true.
            assert!(resolve("", &["--memory", "--trust-forwarded-for"]).memory);
            assert!(
                resolve("", &["--trust-forwarded-for"])
                    .engine
                    .trust_forwarded_for
            );
        }

        /// Each store is accepted exactly when its feature is compiled in; otherwise the error
        /// names the feature (a lean binary is simulated by the compiled-in set given).
        #[test]
        fn a_store_not_compiled_in_is_refused_with_its_feature() {
            for (args, feature) in [
                (&["--memory"][..], "memory"),
                (&["--redis-url", "redis://127.0.0.1:1/"][..], "redis"),
                (&["--redis-cluster", "redis://127.0.0.1:1/"][..], "redis"),
                (&["--data-dir", "/tmp/z"][..], "embedded"),
            ] {
                let s = resolve("", args);
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
            let file = "redis_cluster = [\"redis://f1:7000\"]\nredis_command_timeout_ms = 500\nembedded_queue_capacity = 64\nembedded_commit_interval_us = 500\n";
            let s = resolve(file, &[]);
            assert_eq!(s.redis_cluster, ["redis://f1:7000"]);
            assert_eq!(
                s.redis_options().command_timeout,
                std::time::Duration::from_millis(500)
            );
            assert_eq!(s.embedded_options().queue_capacity, 64);
            assert_eq!(
                s.embedded_options().commit_interval,
                std::time::Duration::from_micros(500)
            );
            let s = resolve(
                file,
                &[
                    "--redis-cluster",
                    "redis://a:7000, redis://b:7000,",
                    "--dedupe-window-ms",
                    "1000",
                ],
            );
            assert_eq!(s.redis_cluster, ["redis://a:7000", "redis://b:7000"]);
            assert_eq!(s.redis_options().dedupe_window_ms, 1000);
            assert_eq!(s.embedded_options().dedupe_window_ms, 1000);
            // A URL and seeds together are refused.
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("z.toml");
            std::fs::write(&path, "redis_url = \"redis://x:6379\"\n").unwrap();
            let loaded = Standalone::try_from_args([
                "zajel-server",
                "--config",
                path.to_str().unwrap(),
                "--redis-cluster",
                "redis://a:7000",
            ]);
            assert!(
                matches!(loaded, Err(ConfigError::Conflict(_))),
                "{loaded:?}"
            );
        }

        #[test]
        fn bad_files_and_flags_are_typed_errors() {
            assert!(toml::from_str::<Standalone>("lisen = \"x\"").is_err());
            assert!(toml::from_str::<Standalone>("[engine]\nmax_bdy = 1").is_err());
            // Flag-only options are not file keys.
            assert!(toml::from_str::<Standalone>("google_client_secret = \"s\"").is_err());
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("z.toml");
            std::fs::write(&path, "memory = \"yes\"\n").unwrap();
            let p = path.to_str().unwrap();
            assert!(matches!(
                Standalone::try_from_args(["zajel-server", "--config", p]),
                Err(ConfigError::Parse(..))
            ));
            assert!(matches!(
                Standalone::try_from_args(["zajel-server", "--config", "/nonexistent/z.toml"]),
                Err(ConfigError::Read(..))
            ));
            assert!(matches!(
                Standalone::try_from_args(["zajel-server", "--max-body-bytes", "-1"]),
                Err(ConfigError::Args(_))
            ));
        }
    }
}
