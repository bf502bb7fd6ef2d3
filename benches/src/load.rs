//! The end-to-end load generator: pairs of friends messaging each other over real WebSockets,
//! every message persisted by the server before it is acknowledged.
//!
//! ```text
//! zajel-benches load [--spawn memory|embedded|redis|redis-aof|redis-cross-node | --url http://HOST:PORT]
//!                    [--pairs N] [--duration S] [--warmup S] [--rate R] [--window W]
//!                    [--grace S] [--idle N [--idle-accounts N]] [--server-pid PID]
//!                    [--setup-concurrency N] [--body-bytes N]
//! ```
//!
//! What a run does:
//! 1. starts the target: an in-process [`zajel_server::Engine`] on `127.0.0.1:0` over the chosen
//!    store (`--spawn`; `redis-cross-node`: two engines with a `RedisBroker` on one Redis, the
//!    two users of every pair on different nodes), or uses a running server (`--url`);
//! 2. with `--idle N`: registers N users, opens one authenticated WebSocket per user and keeps
//!    it idle; the server's resident memory (VmRSS) before and after gives bytes per idle
//!    connection (in-process: `/proc/self/status`; external: `/proc/<--server-pid>/status`);
//! 3. registers `2 × pairs` users over HTTP, opens one WebSocket per user and makes each pair
//!    friends over the protocol;
//! 4. every user sends to its friend for `warmup + duration` seconds: `--rate R` messages per
//!    second (open loop, evenly phased), or with `--rate 0` as fast as acks allow, keeping
//!    `--window W` sends in flight. The body carries the message number and the send time
//!    (microseconds on this process's monotonic clock);
//! 5. waits up to `--grace` seconds for outstanding acks and deliveries, then compares what
//!    each sender had acknowledged with what its friend received.
//!
//! Only messages sent after the warmup (and before the end) count for the latency
//! percentiles; throughput counts `message` events received within the measured window. With
//! `--url … --server-pid PID` the line also has `cpu`: the server's (and its child store
//! process's) CPU µs per message over that window ([`crate::cpu`]).

use anyhow::{Context, Result, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::net;
use crate::others::{self, System};
use crate::relay::{self, RelayStore};

/// How long a setup step (HTTP request, WebSocket handshake, one answer) may take.
const SETUP_WAIT: Duration = Duration::from_secs(60);
/// Idle connections send a `ping` this often (the server's idle timeout defaults to 60 s).
const IDLE_PING_EVERY: Duration = Duration::from_secs(20);
const PASSWORD: &str = "load-bench-password";

pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Where the load goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An engine served in-process on `127.0.0.1:0` over this store.
    Spawn(Backend),
    /// The bare relay (the baseline, [`crate::relay`]) served in-process on `127.0.0.1:0`.
    Relay(RelayStore),
    /// A running server, e.g. `http://127.0.0.1:8080`.
    Url(String),
    /// Socket.IO or Django Channels doing the same workload in processes of their own, with
    /// a throwaway Redis ([`crate::others`]).
    Other(System),
}

impl Target {
    /// A `--spawn` value: `memory|embedded|redis|redis-aof` (Zajel),
    /// `relay-memory|relay-redis|relay-redb` (the bare relay) or `socketio|channels`.
    pub fn parse_spawn(s: &str) -> Result<Self> {
        if let Some(system) = System::parse(s) {
            return Ok(Self::Other(system));
        }
        match s.strip_prefix("relay-") {
            Some(store) => Ok(Self::Relay(RelayStore::parse(store)?)),
            None => Ok(Self::Spawn(Backend::parse(s)?)),
        }
    }

    /// How the JSON line names it: `spawn:redis`, `relay:redis`, `url:http://...`.
    pub fn name(&self) -> String {
        match self {
            Self::Spawn(b) => format!("spawn:{}", b.name()),
            Self::Relay(s) => format!("relay:{}", s.name()),
            Self::Url(u) => format!("url:{u}"),
            Self::Other(s) => format!("{}:redis", s.name()),
        }
    }

    /// The relay a Zajel target is compared with: the same kind of persistence
    /// (embedded → redb with group commit, Redis → SISMEMBER + RPUSH, memory → memory).
    pub fn matching_relay(&self) -> Option<Self> {
        match self {
            Self::Spawn(Backend::Memory) => Some(Self::Relay(RelayStore::Memory)),
            Self::Spawn(Backend::Embedded) => Some(Self::Relay(RelayStore::Redb)),
            Self::Spawn(Backend::Redis | Backend::RedisAof) => Some(Self::Relay(RelayStore::Redis)),
            // Cross-node cost: the same workload with both users of a pair on one node.
            Self::Spawn(Backend::RedisCrossNode) => Some(Self::Spawn(Backend::Redis)),
            Self::Relay(_) | Self::Url(_) | Self::Other(_) => None,
        }
    }
}

/// The store behind a spawned server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `MemoryStore` (nothing persists across restarts).
    Memory,
    /// `EmbeddedStore` (redb, fsync per commit) in a temporary directory.
    Embedded,
    /// `RedisStore` on a throwaway `redis-server` without the append-only file.
    Redis,
    /// Same with `appendonly yes`, `appendfsync always` (no loss of acknowledged writes).
    RedisAof,
    /// Two engines (nodes) on one throwaway `redis-server`, each with a `RedisBroker`; the
    /// two users of every pair are on different nodes, so every message crosses nodes.
    RedisCrossNode,
}

impl Backend {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "memory" => Self::Memory,
            "embedded" => Self::Embedded,
            "redis" => Self::Redis,
            "redis-aof" => Self::RedisAof,
            "redis-cross-node" => Self::RedisCrossNode,
            other => bail!(
                "unknown backend {other} (memory, embedded, redis, redis-aof, redis-cross-node)"
            ),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Embedded => "embedded",
            Self::Redis => "redis",
            Self::RedisAof => "redis-aof",
            Self::RedisCrossNode => "redis-cross-node",
        }
    }
}

/// One run's parameters.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Server to load.
    pub target: Target,
    /// Pairs of friends (two users, two WebSockets each pair).
    pub pairs: usize,
    /// Measured time.
    pub duration: Duration,
    /// Time sending before the measurement starts.
    pub warmup: Duration,
    /// Messages per second per user; 0 = as fast as acks allow (see `window`).
    pub rate: f64,
    /// Sends in flight per user with `rate == 0`.
    pub window: usize,
    /// How long to wait after the last send for acks and deliveries.
    pub grace: Duration,
    /// Extra authenticated idle connections (for memory per idle connection).
    pub idle: usize,
    /// Accounts registered for the idle connections, at least `idle` (0 = `idle`): a profile
    /// of connection setup registers the same number in both of its runs and connects a
    /// different number, so registration cancels out of the difference.
    pub idle_accounts: usize,
    /// Process id of an external server (for its memory and CPU time); ignored with `Spawn`.
    pub server_pid: Option<u32>,
    /// Registrations and pair setups in flight at once.
    pub setup_concurrency: usize,
    /// Approximate message body size in bytes.
    pub body_bytes: usize,
    /// What to compare with in the same invocation (see [`crate::compare`]).
    pub baseline: Baseline,
    /// A name for the line (`label`), e.g. which store an external `--url` server runs on.
    pub label: Option<String>,
    /// Step the rate up to the highest sustained one instead of one run at `rate`.
    pub find_max: bool,
    /// find-max: a step is sustained when e2e p99 is at most this (and nothing is lost).
    pub max_p99_ms: f64,
    /// find-max: each ramp step multiplies the per-user rate by this.
    pub step_factor: f64,
    /// find-max: bisection steps between the last sustained and the first failed rate.
    pub refine_steps: usize,
    /// find-max: at most this many steps in all.
    pub max_steps: usize,
}

/// The baseline a run is compared with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// The relay matching the target's store ([`Target::matching_relay`]); none for `--url`
    /// and relay targets.
    Auto,
    /// No baseline run.
    None,
    /// This target.
    Target(Target),
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            target: Target::Spawn(Backend::Memory),
            pairs: 50,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            rate: 10.0,
            window: 1,
            grace: Duration::from_secs(5),
            idle: 0,
            idle_accounts: 0,
            server_pid: None,
            setup_concurrency: 16,
            body_bytes: 64,
            baseline: Baseline::Auto,
            label: None,
            find_max: false,
            max_p99_ms: 50.0,
            step_factor: 1.5,
            refine_steps: 2,
            max_steps: 14,
        }
    }
}

/// Usage line of the `load` benchmark.
pub const USAGE: &str = "usage: zajel-benches load [--spawn memory|embedded|redis|redis-aof|redis-cross-node|relay-memory|relay-redis|relay-redb|socketio|channels | --url http://HOST:PORT] [--baseline auto|none|<a --spawn value>] [--pairs N] [--duration S] [--warmup S] [--rate R] [--window W] [--grace S] [--idle N [--idle-accounts N]] [--server-pid PID] [--setup-concurrency N] [--body-bytes N] [--label NAME] [--find-max [--max-p99-ms MS] [--step-factor F] [--refine-steps N] [--max-steps N]]";

impl LoadConfig {
    /// Parses the flags that follow `load` on the command line.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Self> {
        let mut cfg = Self::default();
        let mut it = args.into_iter();
        let secs = |v: &str| -> Result<Duration> {
            let s: f64 = v.parse().with_context(|| format!("not a number: {v}"))?;
            if !(s.is_finite() && s >= 0.0) {
                bail!("not a duration: {v}");
            }
            Ok(Duration::from_secs_f64(s))
        };
        while let Some(flag) = it.next() {
            if flag == "--help" || flag == "-h" {
                bail!("{USAGE}");
            }
            if flag == "--find-max" {
                cfg.find_max = true;
                continue;
            }
            let value = it.next().with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--spawn" => cfg.target = Target::parse_spawn(&value)?,
                "--baseline" => {
                    cfg.baseline = match value.as_str() {
                        "auto" => Baseline::Auto,
                        "none" => Baseline::None,
                        other => Baseline::Target(Target::parse_spawn(other)?),
                    }
                }
                "--label" => cfg.label = Some(value),
                "--max-p99-ms" => cfg.max_p99_ms = value.parse()?,
                "--step-factor" => cfg.step_factor = value.parse()?,
                "--refine-steps" => cfg.refine_steps = value.parse()?,
                "--max-steps" => cfg.max_steps = value.parse()?,
                "--url" => cfg.target = Target::Url(value),
                "--pairs" => cfg.pairs = value.parse()?,
                "--duration" => cfg.duration = secs(&value)?,
                "--warmup" => cfg.warmup = secs(&value)?,
                "--rate" => cfg.rate = value.parse()?,
                "--window" => cfg.window = value.parse()?,
                "--grace" => cfg.grace = secs(&value)?,
                "--idle" => cfg.idle = value.parse()?,
                "--idle-accounts" => cfg.idle_accounts = value.parse()?,
                "--server-pid" => cfg.server_pid = Some(value.parse()?),
                "--setup-concurrency" => cfg.setup_concurrency = value.parse()?,
                "--body-bytes" => cfg.body_bytes = value.parse()?,
                other => bail!("unknown flag {other}\n{USAGE}"),
            }
        }
        if cfg.pairs == 0 || cfg.window == 0 || cfg.setup_concurrency == 0 {
            bail!("--pairs, --window and --setup-concurrency must be at least 1");
        }
        if !(cfg.rate.is_finite() && cfg.rate >= 0.0) {
            bail!("--rate must be >= 0");
        }
        if cfg.duration.is_zero() {
            bail!("--duration must be > 0");
        }
        if cfg.find_max {
            if cfg.rate <= 0.0 {
                bail!(
                    "--find-max steps an open-loop rate: give the starting --rate (per user) > 0"
                );
            }
            if cfg.idle > 0 {
                bail!("--idle and --find-max are separate runs");
            }
            if !(cfg.step_factor.is_finite() && cfg.step_factor > 1.0) || cfg.max_steps == 0 {
                bail!("--step-factor must be > 1 and --max-steps >= 1");
            }
        }
        if cfg.idle_accounts > 0 && cfg.idle_accounts < cfg.idle {
            bail!("--idle-accounts must be at least --idle");
        }
        Ok(cfg)
    }
}

/// What a run measured. `json` is the one line the benchmark prints.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// `send` frames written.
    pub sent: u64,
    /// `sent` acks received.
    pub acked: u64,
    /// `message` events received by the peers (whole run, warmup included).
    pub delivered: u64,
    /// Acked messages the peer never received within the grace period.
    pub lost: u64,
    /// `message` events received more than once.
    pub duplicates: u64,
    /// `message` events whose seq was not above the previous one on that connection.
    pub reorders: u64,
    /// Messages whose delivered seq differs from the acked seq.
    pub seq_mismatches: u64,
    /// Sends that got neither an ack nor an error by the end.
    pub unanswered: u64,
    /// Error frames and connection failures by code.
    pub errors: BTreeMap<String, u64>,
    /// The full report line.
    pub json: Value,
}

// ---------------------------------------------------------------------------------------------
// The target

/// A server the run started in-process.
enum Started {
    Zajel(Spawned),
    Relay(relay::Running),
    Other(others::Running),
}

impl Started {
    async fn stop(self) -> Result<()> {
        match self {
            Self::Zajel(s) => s.stop().await,
            Self::Relay(r) => r.stop().await,
            // Its drop signals the processes and waits for them (up to seconds).
            Self::Other(r) => Ok(tokio::task::spawn_blocking(move || drop(r)).await?),
        }
    }

    /// The root process of a comparison server (its workers are children).
    fn other_pid(&self) -> Option<u32> {
        match self {
            Self::Other(r) => Some(r.pid),
            Self::Zajel(_) | Self::Relay(_) => None,
        }
    }
}

/// Spawned in-process servers (one node, or two sharing a Redis) and what keeps their store
/// alive.
struct Spawned {
    servers: Vec<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    )>,
    _guard: Box<dyn std::any::Any + Send>,
}

impl Spawned {
    async fn stop(self) -> Result<()> {
        for (tx, mut task) in self.servers {
            let _ = tx.send(());
            tokio::time::timeout(Duration::from_secs(30), &mut task)
                .await
                .context("server did not stop within 30 s")???;
        }
        Ok(())
    }
}

/// The engine configuration used with `--spawn` and `serve`: cheap password hashing (the
/// benchmark registers many users; login cost is not what it measures), and neither request
/// rates nor the account throttles and connection caps in the way (the benchmark measures the
/// message path, from a few loopback addresses, not the limiters).
pub fn spawn_config() -> zajel_server::ServerConfig {
    zajel_server::ServerConfig {
        argon2_memory_kib: 256,
        argon2_iterations: 1,
        rate_per_second: 1_000_000,
        rate_burst: 1_000_000,
        login_failures_per_minute: 1_000_000,
        login_attempts_per_address_per_minute: 1_000_000,
        login_failures_per_account_per_minute: 1_000_000,
        register_per_address_per_minute: 1_000_000,
        max_connections: 1_000_000,
        max_connections_per_address: 1_000_000,
        max_connections_per_user: 1_000,
        ..zajel_server::ServerConfig::default()
    }
}

/// The embedded store's options, with the server's own `ZAJEL_EMBEDDED_COMMIT_INTERVAL_US`
/// honoured, so a run can compare commit pacing settings.
pub fn embedded_options_from_env() -> Result<zajel_core::store::embedded::EmbeddedOptions> {
    let mut options = zajel_core::store::embedded::EmbeddedOptions::default();
    if let Ok(us) = std::env::var("ZAJEL_EMBEDDED_COMMIT_INTERVAL_US") {
        options.commit_interval = std::time::Duration::from_micros(us.parse()?);
    }
    Ok(options)
}

/// Opens the store a spawned server uses, and what keeps it alive (temp dir, redis-server).
pub async fn open_backend(
    backend: Backend,
) -> Result<(Arc<dyn zajel_core::Store>, Box<dyn std::any::Any + Send>)> {
    Ok(match backend {
        Backend::Memory => (Arc::new(zajel_core::MemoryStore::new()), Box::new(())),
        Backend::Embedded => {
            let dir = tempfile::tempdir()?;
            let store = zajel_core::EmbeddedStore::open_with(
                dir.path().join("load.redb"),
                embedded_options_from_env()?,
            )?;
            (Arc::new(store), Box::new(dir))
        }
        Backend::Redis | Backend::RedisAof | Backend::RedisCrossNode => {
            let server = if backend == Backend::RedisAof {
                zajel_core::testing::RedisServer::start_persistent()?
            } else {
                zajel_core::testing::RedisServer::start()?
            };
            let store = zajel_core::RedisStore::connect(&server.url()).await?;
            (Arc::new(store), Box::new(server))
        }
    })
}

/// Serves `backend` in-process: one engine, or two nodes sharing one Redis for
/// `redis-cross-node`. Returns each node's address.
async fn spawn_server(backend: Backend) -> Result<(Vec<SocketAddr>, Spawned)> {
    let (store, guard) = open_backend(backend).await?;
    let engines = if backend == Backend::RedisCrossNode {
        let server = guard
            .downcast_ref::<zajel_core::testing::RedisServer>()
            .context("redis-cross-node runs on a redis-server")?;
        let mut engines = Vec::new();
        for node in ["bench-node-1", "bench-node-2"] {
            let config = zajel_server::broker::RedisBrokerConfig {
                node_id: node.into(),
                ..Default::default()
            };
            let broker = zajel_server::broker::RedisBroker::connect(&server.url(), config).await?;
            let store = zajel_core::RedisStore::connect(&server.url()).await?;
            engines.push(
                zajel_server::Engine::builder(Arc::new(store), spawn_config())
                    .redis_broker(broker)
                    .build(),
            );
        }
        engines
    } else {
        vec![zajel_server::Engine::new(store, spawn_config())]
    };
    let mut addrs = Vec::new();
    let mut servers = Vec::new();
    for engine in engines {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(zajel_server::serve(listener, engine, async move {
            let _ = rx.await;
        }));
        servers.push((tx, task));
    }
    Ok((
        addrs,
        Spawned {
            servers,
            _guard: guard,
        },
    ))
}

/// `http://host:port[/]` → `host:port`.
fn host_port(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .context("--url must start with http:// (TLS is not supported by the load generator)")?;
    let hp = rest.trim_end_matches('/');
    if hp.is_empty() || hp.contains('/') {
        bail!("--url must be http://HOST:PORT");
    }
    Ok(hp.to_owned())
}

// ---------------------------------------------------------------------------------------------
// HTTP: a tiny HTTP/1.1 client (one request per connection)

async fn http_post(host: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let mut s = net::connect(host)
        .await
        .with_context(|| format!("connect {host}"))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(SETUP_WAIT, s.read_to_end(&mut raw))
        .await
        .context("HTTP response timed out")??;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("HTTP response without status")?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let Some(chunk) = rest.get(..n) else { break };
        if n == 0 {
            break;
        }
        out.push_str(chunk);
        s = rest.get(n..).unwrap_or("").trim_start_matches("\r\n");
    }
    out
}

#[derive(Clone, Debug)]
struct Account {
    id: String,
    username: String,
    token: String,
}

impl Account {
    /// A user of a comparison server: a fresh id, no registration, no token.
    fn unregistered(id: String) -> Self {
        Self {
            username: id.clone(),
            id,
            token: String::new(),
        }
    }
}

/// An idle connection: Zajel's bare socket, or a comparison server's (which must answer pings).
enum IdleSocket {
    Zajel(TcpStream),
    Other(BufReader<TcpStream>),
}

async fn register(host: &str, username: &str) -> Result<Account> {
    let body = json!({"username": username, "password": PASSWORD}).to_string();
    let (status, text) = http_post(host, "/api/register", &body).await?;
    if status != 201 {
        bail!("register {username}: HTTP {status}: {text}");
    }
    let v: Value = serde_json::from_str(&text).context("register: response is not JSON")?;
    let field = |p: &str| -> Result<String> {
        v.pointer(p)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("register: no {p} in {text}"))
    };
    Ok(Account {
        id: field("/user/id")?,
        username: field("/user/username")?,
        token: field("/token")?,
    })
}

/// Registers `names` with at most `concurrency` requests in flight, keeping their order.
async fn register_all(host: &str, names: Vec<String>, concurrency: usize) -> Result<Vec<Account>> {
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(names.len());
    for name in names {
        let sem = sem.clone();
        let host = host.to_owned();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            register(&host, &name).await
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// WebSocket setup (request/answer by id)

async fn ws_connect(host: &str) -> Result<Ws> {
    let mut req = format!("ws://{host}/ws").into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("zajel.v1"),
    );
    let stream = net::connect(host)
        .await
        .with_context(|| format!("connect {host}"))?;
    // tungstenite's default read buffer is 128 KiB, and it zero-fills the free part before
    // every read: a third of the load generator's CPU at 5,000 msgs/s went to that memset
    // (perf), CPU the server under test then lacked on the shared cores. Frames here are a
    // few hundred bytes (the relay and the server use small buffers for the same reason).
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) = tokio::time::timeout(
        SETUP_WAIT,
        tokio_tungstenite::client_async_with_config(req, stream, Some(config)),
    )
    .await
    .context("WebSocket handshake timed out")??;
    Ok(ws)
}

async fn next_frame(ws: &mut Ws) -> Result<Value> {
    let text = next_setup_text(ws).await?;
    serde_json::from_str(text.as_str()).context("server sent non-JSON")
}

/// The next text frame during setup (waits up to `SETUP_WAIT`; a close is an error).
pub(crate) async fn next_setup_text(
    ws: &mut Ws,
) -> Result<tokio_tungstenite::tungstenite::Utf8Bytes> {
    loop {
        let msg = tokio::time::timeout(SETUP_WAIT, ws.next())
            .await
            .context("no frame in time")?
            .context("connection ended")??;
        match msg {
            Message::Text(t) => return Ok(t),
            Message::Close(c) => bail!("closed by server: {c:?}"),
            _ => {}
        }
    }
}

/// Sends `frame` with `id` and returns the answer (events meanwhile are dropped: the run
/// ignores friend and presence events anyway).
async fn call(ws: &mut Ws, id: &str, mut frame: Value) -> Result<Value> {
    frame["id"] = json!(id);
    ws.send(Message::Text(frame.to_string().into())).await?;
    loop {
        let f = next_frame(ws).await?;
        if f["re"] == id {
            return Ok(f);
        }
    }
}

async fn login(host: &str, acc: &Account) -> Result<Ws> {
    let mut ws = ws_connect(host).await?;
    let ok = call(
        &mut ws,
        "auth",
        json!({"type": "auth", "protocol": 1, "token": acc.token}),
    )
    .await?;
    if ok["type"] != "auth_ok" {
        bail!("auth {}: {ok}", acc.username);
    }
    Ok(ws)
}

/// Connects both users of a pair (`a` at `host_a`, `b` at `host_b`: the same server, or two
/// nodes) and makes them friends (crossed requests: the second one makes them friends at
/// once).
async fn setup_pair(host_a: &str, host_b: &str, a: &Account, b: &Account) -> Result<(Ws, Ws)> {
    let mut wa = login(host_a, a).await?;
    let mut wb = login(host_b, b).await?;
    let r = call(
        &mut wa,
        "f1",
        json!({"type": "friend_request", "username": b.username}),
    )
    .await?;
    if r["type"] != "friend_ok" {
        bail!("friend_request {} -> {}: {r}", a.username, b.username);
    }
    let r = call(
        &mut wb,
        "f2",
        json!({"type": "friend_request", "username": a.username}),
    )
    .await?;
    if r["relation"] != "friends" {
        bail!("friend_request {} -> {}: {r}", b.username, a.username);
    }
    Ok((wa, wb))
}

fn direct_conversation(a: &Account, b: &Account) -> Result<String> {
    let a: zajel_core::UserId = a.id.parse().context("user id is not a UUID")?;
    let b: zajel_core::UserId = b.id.parse().context("user id is not a UUID")?;
    Ok(zajel_core::ConversationId::direct(a, b).to_string())
}

// ---------------------------------------------------------------------------------------------
// Idle connections: a raw WebSocket client that holds nothing but the socket

const MASK: [u8; 4] = [0x5a, 0x3c, 0x96, 0x11];

fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x81);
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        f.push(0x80 | 126);
        f.extend(l.to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend((len as u64).to_be_bytes());
    }
    f.extend(MASK);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

/// Reads one frame; returns (opcode, payload).
pub(crate) async fn read_raw_frame(s: &mut (impl AsyncRead + Unpin)) -> Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await?;
    let opcode = h[0] & 0x0f;
    let masked = h[1] & 0x80 != 0;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).await?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b).await?;
        len = u64::from_be_bytes(b);
    }
    if len > 1 << 20 {
        bail!("frame of {len} bytes");
    }
    let mut mask = [0u8; 4];
    if masked {
        s.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((opcode, payload))
}

/// Opens `/ws`, authenticates and returns the bare socket once `auth_ok` has arrived.
///
/// This is the client side of the connect benchmark, so it does as little as a client can:
/// the upgrade response and the frames are read through one small buffer (a read call per
/// segment, not per byte), and `auth_ok` is recognised by its `type` alone.
async fn idle_connect(host: &str, token: &str) -> Result<TcpStream> {
    let s = net::connect(host).await?;
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: zajel.v1\r\n\r\n"
    );
    // Small: the 101 head and `auth_ok` are a few hundred bytes; a larger frame still reads.
    let mut s = BufReader::with_capacity(1024, s);
    s.get_mut().write_all(req.as_bytes()).await?;
    read_upgrade_head(&mut s).await?;
    // `type` first, as the SDKs write it (`json!` sorts keys, which would put it last and send
    // the frame through the server decoder's buffered path).
    let auth = format!(
        r#"{{"type":"auth","id":"a","protocol":1,"token":{}}}"#,
        serde_json::to_string(token)?
    );
    s.get_mut().write_all(&text_frame(auth.as_bytes())).await?;
    loop {
        let (op, payload) = read_raw_frame(&mut s).await?;
        match op {
            0x1 => {
                /// Only the `type` of the answer matters here.
                #[derive(serde::Deserialize)]
                struct Kind<'a> {
                    #[serde(rename = "type", borrow)]
                    kind: &'a str,
                }
                let v: Kind = serde_json::from_slice(&payload).context("non-JSON frame")?;
                if v.kind == "auth_ok" {
                    // Whatever the server sent after `auth_ok` (nothing, for a user without
                    // friends) is not read by an idle client anyway.
                    return Ok(s.into_inner());
                }
                bail!("auth failed: {}", String::from_utf8_lossy(&payload));
            }
            0x8 => bail!("closed during auth"),
            _ => {}
        }
    }
}

/// Reads an HTTP response head up to its blank line; an error unless it is `101`.
pub(crate) async fn read_upgrade_head(s: &mut (impl AsyncBufRead + Unpin)) -> Result<()> {
    let mut line = Vec::with_capacity(128);
    let mut total = 0;
    let mut first = true;
    loop {
        line.clear();
        let n = s.read_until(b'\n', &mut line).await?;
        total += n;
        if n == 0 || total > 16 * 1024 {
            bail!("bad upgrade response");
        }
        if first {
            if !line.starts_with(b"HTTP/1.1 101") {
                bail!("upgrade refused: {}", String::from_utf8_lossy(&line));
            }
            first = false;
        } else if line == b"\r\n" {
            return Ok(());
        }
    }
}

/// Resident set size in KiB from a `/proc/<pid>/status` file.
pub(crate) fn vm_rss_kib(status_path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status_path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Descriptors a run holds at once: one per WebSocket here and, with an in-process server,
/// one more per WebSocket there, plus registrations in flight and a margin.
pub fn open_files_needed(cfg: &LoadConfig) -> u64 {
    let sockets = (cfg.idle + 2 * cfg.pairs + cfg.setup_concurrency.max(32)) as u64;
    let sides = match cfg.target {
        Target::Spawn(_) | Target::Relay(_) => 2,
        Target::Url(_) | Target::Other(_) => 1,
    };
    sides * sockets + 256
}

/// Refuses a run that would run out of descriptors half-way (with a way out in the message).
fn check_open_files(cfg: &LoadConfig) -> Result<()> {
    let needed = open_files_needed(cfg);
    match nofile_limit() {
        Some(limit) if limit < needed => bail!(
            "this run needs about {needed} open files and the limit is {limit}: raise it \
             (ulimit -n, up to ulimit -Hn) or serve from another process and use --url \
             (then this process holds one side only)"
        ),
        _ => Ok(()),
    }
}

/// The 1/5/15-minute load averages from `/proc/loadavg` (how busy the machine was).
pub fn loadavg() -> Value {
    let Ok(text) = std::fs::read_to_string("/proc/loadavg") else {
        return Value::Null;
    };
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    json!(v)
}

/// The soft open-file limit of this process, from `/proc/self/limits`.
fn nofile_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// The run

/// Shared clock and counters. Times are microseconds since `epoch`.
pub(crate) struct Shared {
    epoch: Instant,
    measure_from_us: u64,
    measure_to_us: u64,
    pub(crate) sent: AtomicU64,
    pub(crate) answered: AtomicU64,
    acked: AtomicU64,
    received: AtomicU64,
}

impl Shared {
    pub(crate) fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
    fn us_since_epoch(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_micros() as u64
    }
    fn in_window(&self, t: u64) -> bool {
        t >= self.measure_from_us && t < self.measure_to_us
    }
}

/// What one user's reader saw.
#[derive(Default)]
pub(crate) struct UserStats {
    /// My message number → seq from its ack.
    acked: HashMap<u64, u64>,
    /// Peer's message number → seq from its `message` event.
    received: HashMap<u64, u64>,
    duplicates: u64,
    reorders: u64,
    last_seq: u64,
    e2e_us: Vec<u64>,
    ack_us: Vec<u64>,
    delivered_in_window: u64,
    errors: BTreeMap<String, u64>,
}

impl UserStats {
    pub(crate) fn error(&mut self, code: &str) {
        *self.errors.entry(code.to_owned()).or_default() += 1;
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Body: `"<n> <send time us> <padding>"`.
fn parse_body(body: &str) -> Option<(u64, u64)> {
    let mut it = body.split(' ');
    let n = it.next()?.parse().ok()?;
    let t = it.next()?.parse().ok()?;
    Some((n, t))
}

async fn writer(
    mut sink: SplitSink<Ws, Message>,
    conversation: String,
    tag: String,
    shared: Arc<Shared>,
    pacing: Pacing,
    stop_at: tokio::time::Instant,
    padding: String,
) -> Result<SplitSink<Ws, Message>> {
    let mut n: u64 = 0;
    let mut pacing = pacing;
    let conversation = serde_json::to_string(&conversation)?;
    while let Some(due_us) = next_due(&mut pacing, &shared, stop_at).await? {
        n += 1;
        let body = format!("{n} {due_us} {padding}");
        // `type` first, as the SDKs write it (`json!` sorts keys, which put it last and sent
        // every frame through the server decoder's buffered path).
        let frame = format!(
            r#"{{"type":"send","id":"m{n}","conversation":{conversation},"body":{},"idempotency_key":{}}}"#,
            serde_json::to_string(&body)?,
            serde_json::to_string(&format!("{tag}-{n}"))?,
        );
        sink.send(Message::Text(frame.into())).await?;
        shared.sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok(sink)
}

/// When the next message is due (µs since the epoch), or `None` once `stop_at` has come.
///
/// Open loop: the time a message is *due*, not when the writer got round to it, so a server
/// that falls behind shows as latency (no coordinated omission). Cancel-safe (a writer selects
/// on it beside other work).
pub(crate) async fn next_due(
    pacing: &mut Pacing,
    shared: &Shared,
    stop_at: tokio::time::Instant,
) -> Result<Option<u64>> {
    let due_us = match pacing {
        Pacing::Rate(iv) => {
            tokio::select! {
                due = iv.tick() => shared.us_since_epoch(due.into_std()),
                _ = tokio::time::sleep_until(stop_at) => return Ok(None),
            }
        }
        Pacing::Window(sem) => {
            tokio::select! {
                p = sem.acquire() => p?.forget(),
                _ = tokio::time::sleep_until(stop_at) => return Ok(None),
            }
            shared.now_us()
        }
    };
    if tokio::time::Instant::now() >= stop_at {
        return Ok(None);
    }
    Ok(Some(due_us))
}

/// How a writer paces its sends: an open-loop rate, or a window of sends in flight.
pub(crate) enum Pacing {
    Rate(tokio::time::Interval),
    Window(Arc<Semaphore>),
}

/// The next text frame, or `None` at `stop` or when the connection ends (counted in `st`).
pub(crate) async fn next_text(
    stream: &mut SplitStream<Ws>,
    stop: &mut watch::Receiver<bool>,
    st: &mut UserStats,
) -> Option<tokio_tungstenite::tungstenite::Utf8Bytes> {
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = stopped(stop) => return None,
        };
        match msg {
            Some(Ok(Message::Text(t))) => return Some(t),
            Some(Ok(Message::Close(c))) => {
                let code = c.map_or(1005, |c| u16::from(c.code));
                st.error(&format!("closed_{code}"));
                return None;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => {
                st.error("ws_error");
                return None;
            }
            None => {
                st.error("ws_ended");
                return None;
            }
        }
    }
}

async fn reader(
    mut stream: SplitStream<Ws>,
    me: String,
    shared: Arc<Shared>,
    window: Option<Arc<Semaphore>>,
    mut stop: watch::Receiver<bool>,
) -> UserStats {
    let mut st = UserStats::default();
    while let Some(text) = next_text(&mut stream, &mut stop, &mut st).await {
        let now = shared.now_us();
        // Fast path: the two frames of the workload, fields borrowed from the text.
        if let Ok(f) = serde_json::from_str::<InFrame>(text.as_str()) {
            let m = f.message.as_ref();
            let body = m.map(|m| m.body.as_ref());
            let seq = m.map(|m| m.seq);
            match f.kind.as_ref() {
                "sent" => {
                    on_sent(
                        &mut st,
                        &shared,
                        window.as_ref(),
                        now,
                        body,
                        seq,
                        f.duplicate,
                    );
                    continue;
                }
                "message" => {
                    let sender = m.and_then(|m| m.sender.as_deref());
                    on_message(&mut st, &shared, &me, now, sender, body, seq);
                    continue;
                }
                "error" => {}
                // presence, friend, read, typing: not part of the workload.
                _ => continue,
            }
        }
        let Ok(f) = serde_json::from_str::<Value>(text.as_str()) else {
            st.error("bad_json");
            continue;
        };
        match f["type"].as_str() {
            Some("sent") => {
                let m = &f["message"];
                let body = m["body"].as_str();
                let dup = f["duplicate"] == true;
                on_sent(
                    &mut st,
                    &shared,
                    window.as_ref(),
                    now,
                    body,
                    m["seq"].as_u64(),
                    dup,
                );
            }
            Some("message") => {
                let m = &f["message"];
                let (sender, body) = (m["sender"].as_str(), m["body"].as_str());
                on_message(&mut st, &shared, &me, now, sender, body, m["seq"].as_u64());
            }
            Some("error") => {
                let code = f["code"].as_str().unwrap_or("unknown").to_owned();
                st.error(&code);
                if f["re"].as_str().is_some_and(|r| r.starts_with('m')) {
                    shared.answered.fetch_add(1, Ordering::Relaxed);
                    if let Some(w) = &window {
                        w.add_permits(1);
                    }
                }
            }
            // presence, friend, read, typing: not part of the workload.
            _ => {}
        }
    }
    st
}

/// The fields of a `sent` or `message` frame the reader uses, borrowed from the text (a
/// `serde_json::Value` tree per frame was ~13% of the load generator's CPU). Other shapes
/// (an `error`'s `message` is a string) fail this and take the `Value` path.
#[derive(serde::Deserialize)]
struct InFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    duplicate: bool,
    #[serde(borrow)]
    message: Option<InMessage<'a>>,
}

#[derive(serde::Deserialize)]
pub(crate) struct InMessage<'a> {
    #[serde(borrow)]
    pub(crate) body: std::borrow::Cow<'a, str>,
    pub(crate) seq: u64,
    #[serde(borrow)]
    pub(crate) sender: Option<std::borrow::Cow<'a, str>>,
}

/// A `sent` ack for one of this user's messages.
pub(crate) fn on_sent(
    st: &mut UserStats,
    shared: &Shared,
    window: Option<&Arc<Semaphore>>,
    now: u64,
    body: Option<&str>,
    seq: Option<u64>,
    duplicate: bool,
) {
    shared.answered.fetch_add(1, Ordering::Relaxed);
    shared.acked.fetch_add(1, Ordering::Relaxed);
    if let Some(w) = window {
        w.add_permits(1);
    }
    let (Some((n, t)), Some(seq)) = (body.and_then(parse_body), seq) else {
        st.error("bad_ack");
        return;
    };
    if duplicate {
        st.error("duplicate_ack");
    }
    if shared.in_window(t) {
        st.ack_us.push(now.saturating_sub(t));
    }
    st.acked.insert(n, seq);
}

/// A `message` event delivered to this user.
pub(crate) fn on_message(
    st: &mut UserStats,
    shared: &Shared,
    me: &str,
    now: u64,
    sender: Option<&str>,
    body: Option<&str>,
    seq: Option<u64>,
) {
    shared.received.fetch_add(1, Ordering::Relaxed);
    if sender == Some(me) {
        st.error("own_message_echoed");
        return;
    }
    let (Some((n, t)), Some(seq)) = (body.and_then(parse_body), seq) else {
        st.error("bad_message");
        return;
    };
    if st.received.insert(n, seq).is_some() {
        st.duplicates += 1;
        return;
    }
    if seq <= st.last_seq {
        st.reorders += 1;
    } else {
        st.last_seq = seq;
    }
    if shared.in_window(t) {
        st.e2e_us.push(now.saturating_sub(t));
    }
    if shared.in_window(now) {
        st.delivered_in_window += 1;
    }
}

fn percentiles_ms(sorted_us: &[u64]) -> Value {
    let p = |q: f64| -> Value {
        if sorted_us.is_empty() {
            return Value::Null;
        }
        let idx = ((sorted_us.len() as f64 - 1.0) * q).round() as usize;
        let ms = sorted_us[idx.min(sorted_us.len() - 1)] as f64 / 1000.0;
        json!((ms * 1000.0).round() / 1000.0)
    };
    json!({
        "count": sorted_us.len(),
        "p50": p(0.50),
        "p90": p(0.90),
        "p99": p(0.99),
        "max": p(1.0),
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Runs the load benchmark and returns its report (the caller prints `report.json`).
pub async fn run(cfg: LoadConfig) -> Result<LoadReport> {
    let started = Instant::now();
    check_open_files(&cfg)?;
    let loadavg_before = loadavg();
    let target_name = cfg.target.name();
    // `host_b`: where the second user of each pair connects (another node with
    // `redis-cross-node`, else the same server).
    let (host, host_b, spawned) = match &cfg.target {
        Target::Spawn(b) => {
            let (addrs, s) = spawn_server(*b).await?;
            let first = addrs.first().context("no server")?.to_string();
            let last = addrs.last().context("no server")?.to_string();
            (first, last, Some(Started::Zajel(s)))
        }
        Target::Relay(store) => {
            let r = relay::start(*store, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            let addr = r.addr.to_string();
            (addr.clone(), addr, Some(Started::Relay(r)))
        }
        Target::Url(u) => {
            let h = host_port(u)?;
            (h.clone(), h, None)
        }
        Target::Other(system) => {
            let r = others::start(*system).await?;
            let h = r.host.clone();
            (h.clone(), h, Some(Started::Other(r)))
        }
    };
    let system = match &cfg.target {
        Target::Other(s) => Some(*s),
        _ => None,
    };
    let other_pid = spawned.as_ref().and_then(Started::other_pid);
    // Unique names per run, so repeated runs against one external server do not collide.
    let run_tag = format!(
        "l{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
            & 0xff_ffff_ffff
    );

    // Idle connections first, on a quiet server.
    let rss_path = match (&cfg.target, cfg.server_pid) {
        (Target::Spawn(_) | Target::Relay(_), _) => Some("/proc/self/status".to_owned()),
        (Target::Url(_), Some(pid)) => Some(format!("/proc/{pid}/status")),
        (Target::Url(_) | Target::Other(_), _) => None,
    };
    // A comparison server's memory: the sum over its processes (primary/supervisor + workers).
    let read_rss = || match &spawned {
        Some(Started::Other(r)) => r.rss_kib(),
        _ => rss_path.as_deref().and_then(vm_rss_kib),
    };
    let (idle_stop_tx, idle_stop_rx) = watch::channel(false);
    let mut idle_report = Value::Null;
    let mut idle_task = None;
    if cfg.idle > 0 {
        let names = (0..cfg.idle.max(cfg.idle_accounts))
            .map(|i| format!("{run_tag}_i{i}"))
            .collect();
        let mut accounts = match system {
            None => register_all(&host, names, cfg.setup_concurrency).await?,
            // No registration: a fresh user id in the connect URL.
            Some(_) => names
                .into_iter()
                .map(|_: String| {
                    Account::unregistered(zajel_core::UserId::new_random().to_string())
                })
                .collect(),
        };
        accounts.truncate(cfg.idle);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = read_rss();
        let server_pid = match &cfg.target {
            Target::Url(_) => cfg.server_pid,
            Target::Other(_) => other_pid,
            Target::Spawn(_) | Target::Relay(_) => None,
        };
        let cpu_before = crate::cpu::Sample::take_optional(server_pid);
        let t0 = Instant::now();
        let sem = Arc::new(Semaphore::new(cfg.setup_concurrency.max(32)));
        let mut tasks = Vec::with_capacity(accounts.len());
        for acc in accounts {
            let sem = sem.clone();
            let host = host.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await?;
                let connect = async {
                    Ok::<_, anyhow::Error>(match system {
                        None => IdleSocket::Zajel(idle_connect(&host, &acc.token).await?),
                        Some(s) => {
                            IdleSocket::Other(others::idle_connect(s, &host, &acc.id).await?)
                        }
                    })
                };
                tokio::time::timeout(SETUP_WAIT, connect)
                    .await
                    .context("idle connect timed out")?
            }));
        }
        let mut sockets = Vec::with_capacity(tasks.len());
        let mut other_sockets = Vec::new();
        // A comparison server that fails some connects (Channels under load: a Redis timeout
        // in the consumer's group_add answers the upgrade with 500) still gets its line, with
        // the failures counted; for Zajel any failure ends the run.
        let mut connect_failures: BTreeMap<String, u64> = BTreeMap::new();
        for t in tasks {
            match t.await? {
                Ok(IdleSocket::Zajel(s)) => sockets.push(s),
                Ok(IdleSocket::Other(s)) => other_sockets.push(s),
                Err(e) if system.is_some() => {
                    let what = e.to_string().chars().take(60).collect::<String>();
                    *connect_failures.entry(what).or_default() += 1;
                }
                Err(e) => return Err(e),
            }
        }
        let connected = (sockets.len() + other_sockets.len()).max(1);
        let connect_s = t0.elapsed().as_secs_f64();
        let cpu_after = crate::cpu::Sample::take_optional(server_pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = read_rss();
        let per_conn = match (before, after) {
            (Some(b), Some(a)) => {
                json!(((a as f64 - b as f64) * 1024.0 / connected as f64).round())
            }
            _ => Value::Null,
        };
        idle_report = json!({
            "connections": cfg.idle,
            "connect_seconds": round2(connect_s),
            "source_addresses": (cfg.idle as u64).min(u64::from(net::SOURCE_ADDRESSES)),
            "rss_source": match &cfg.target {
                Target::Spawn(_) | Target::Relay(_) => "in-process (/proc/self/status; includes the idle clients' bare sockets)",
                Target::Url(_) if rss_path.is_some() => "/proc/<server-pid>/status",
                Target::Url(_) => "unknown (pass --server-pid)",
                Target::Other(_) => "sum of the server's processes (primary/supervisor + workers; not its redis-server)",
            },
            "rss_before_kib": before,
            "rss_after_kib": after,
            "bytes_per_idle_connection": per_conn,
            "connect_failures": connect_failures,
            // CPU seconds spent while the connections were opened (the timed part): the load
            // generator (with --spawn: the server too, one process) and, with --url and
            // --server-pid, the server process and its child store process (redis-server).
            "cpu_seconds": crate::cpu::seconds(cpu_before, cpu_after),
        });
        // Keep them open (and alive) during the load run.
        if system.is_some() {
            // Socket.IO and uvicorn ping their clients: each connection answers its own.
            let stop = idle_stop_rx.clone();
            idle_task = Some(tokio::spawn(async move {
                let alive: Vec<_> = other_sockets
                    .into_iter()
                    .map(|s| tokio::spawn(others::keep_alive(s, stop.clone())))
                    .collect();
                for a in alive {
                    let _ = a.await;
                }
            }));
        } else {
            let mut stop = idle_stop_rx.clone();
            idle_task = Some(tokio::spawn(async move {
                let ping = text_frame(br#"{"type":"ping","id":"k"}"#);
                let mut iv = tokio::time::interval(IDLE_PING_EVERY);
                iv.tick().await;
                loop {
                    tokio::select! {
                        _ = iv.tick() => {
                            for s in &mut sockets {
                                let _ = s.write_all(&ping).await;
                            }
                        }
                        _ = stopped(&mut stop) => break,
                    }
                }
                drop(sockets);
            }));
        }
    }

    // Users and friendships.
    let setup_t0 = Instant::now();
    let names = (0..cfg.pairs)
        .flat_map(|i| [format!("{run_tag}_a{i}"), format!("{run_tag}_b{i}")])
        .collect();
    let accounts = match (&spawned, system) {
        (Some(Started::Other(r)), Some(_)) => {
            // Friendships written straight into the server's Redis (not measured).
            others::make_pairs(&r.redis.url(), cfg.pairs)
                .await?
                .into_iter()
                .flat_map(|(a, b)| [Account::unregistered(a), Account::unregistered(b)])
                .collect()
        }
        _ => register_all(&host, names, cfg.setup_concurrency).await?,
    };
    let sem = Arc::new(Semaphore::new(cfg.setup_concurrency));
    let mut tasks = Vec::with_capacity(cfg.pairs);
    for pair in accounts.chunks(2) {
        let [a, b] = pair else {
            bail!("odd account list")
        };
        let (a, b) = (a.clone(), b.clone());
        let sem = sem.clone();
        let (host, host_b) = (host.clone(), host_b.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let (wa, wb) = match system {
                None => setup_pair(&host, &host_b, &a, &b).await?,
                Some(s) => (
                    others::connect(s, &host, &a.id).await?,
                    others::connect(s, &host_b, &b.id).await?,
                ),
            };
            Ok::<_, anyhow::Error>((a, wa, b, wb))
        }));
    }
    let mut pairs = Vec::with_capacity(cfg.pairs);
    for t in tasks {
        pairs.push(t.await??);
    }
    let setup_s = setup_t0.elapsed().as_secs_f64();

    // The run.
    let epoch = Instant::now();
    let start = tokio::time::Instant::from_std(epoch);
    let stop_at = start + cfg.warmup + cfg.duration;
    let shared = Arc::new(Shared {
        epoch,
        measure_from_us: cfg.warmup.as_micros() as u64,
        measure_to_us: (cfg.warmup + cfg.duration).as_micros() as u64,
        sent: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        received: AtomicU64::new(0),
    });
    // The server's CPU over the measured window (a server in a process of its own only).
    let cpu_pid = match &cfg.target {
        Target::Url(_) => cfg.server_pid,
        Target::Other(_) => other_pid,
        Target::Spawn(_) | Target::Relay(_) => None,
    };
    let cpu_window = match cpu_pid {
        Some(pid) => {
            let (from, to) = (start + cfg.warmup, stop_at);
            Some(tokio::spawn(async move {
                tokio::time::sleep_until(from).await;
                let before = crate::cpu::Sample::take(pid);
                tokio::time::sleep_until(to).await;
                Some((before?, crate::cpu::Sample::take(pid)?))
            }))
        }
        _ => None,
    };
    // A comparison server's redis-server is not its child: read on its own.
    let redis_window = match &spawned {
        Some(Started::Other(r)) => r.redis.pid().map(|pid| {
            let (from, to) = (start + cfg.warmup, stop_at);
            tokio::spawn(async move {
                tokio::time::sleep_until(from).await;
                let before = crate::cpu::process_ticks(pid);
                tokio::time::sleep_until(to).await;
                Some((before?, crate::cpu::process_ticks(pid)?))
            })
        }),
        _ => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let users = cfg.pairs * 2;
    let padding = "x".repeat(cfg.body_bytes.saturating_sub(24).max(1));
    let mut writers = Vec::with_capacity(users);
    let mut readers = Vec::with_capacity(users);
    let mut index = 0usize;
    for (a, wa, b, wb) in pairs {
        let conversation = direct_conversation(&a, &b)?;
        for (me, ws) in [(a.clone(), wa), (b.clone(), wb)] {
            let (sink, stream) = ws.split();
            let (pacing, window) = if cfg.rate > 0.0 {
                let period = Duration::from_secs_f64(1.0 / cfg.rate);
                // Evenly phased starts, so the users do not send in lockstep.
                let phase = period.mul_f64(index as f64 / users as f64);
                let mut iv = tokio::time::interval_at(start + phase, period);
                iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                (Pacing::Rate(iv), None)
            } else {
                let sem = Arc::new(Semaphore::new(cfg.window));
                (Pacing::Window(sem.clone()), Some(sem))
            };
            if system == Some(System::SocketIo) {
                // Socket.IO's framing; the reader hands Engine.IO pongs to the writer.
                let (pong_tx, pong_rx) = tokio::sync::mpsc::unbounded_channel();
                writers.push(tokio::spawn(others::socketio::writer(
                    sink,
                    conversation.clone(),
                    shared.clone(),
                    pacing,
                    stop_at,
                    padding.clone(),
                    pong_rx,
                )));
                readers.push(tokio::spawn(others::socketio::reader(
                    stream,
                    me.id.clone(),
                    shared.clone(),
                    window,
                    stop_rx.clone(),
                    pong_tx,
                )));
                index += 1;
                continue;
            }
            // Zajel, the relay and the Channels consumer read and write Zajel's frames.
            writers.push(tokio::spawn(writer(
                sink,
                conversation.clone(),
                format!("{}-{index}", run_tag),
                shared.clone(),
                pacing,
                stop_at,
                padding.clone(),
            )));
            readers.push(tokio::spawn(reader(
                stream,
                me.id.clone(),
                shared.clone(),
                window,
                stop_rx.clone(),
            )));
            index += 1;
        }
    }
    let mut sinks = Vec::with_capacity(users);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for w in writers {
        match w.await? {
            Ok(s) => sinks.push(s),
            Err(_) => *errors.entry("send_failed".into()).or_default() += 1,
        }
    }
    // Grace: wait for every send to be answered and every ack to be delivered.
    let grace_t0 = Instant::now();
    let grace_deadline = tokio::time::Instant::now() + cfg.grace;
    loop {
        let sent = shared.sent.load(Ordering::Relaxed);
        let answered = shared.answered.load(Ordering::Relaxed);
        let acked = shared.acked.load(Ordering::Relaxed);
        let received = shared.received.load(Ordering::Relaxed);
        if (answered >= sent && received >= acked) || tokio::time::Instant::now() >= grace_deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_s = grace_t0.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let mut stats = Vec::with_capacity(users);
    for r in readers {
        stats.push(r.await?);
    }
    for mut s in sinks {
        let _ = tokio::time::timeout(Duration::from_secs(1), s.close()).await;
    }
    let _ = idle_stop_tx.send(true);
    if let Some(t) = idle_task {
        let _ = t.await;
    }
    if let Some(s) = spawned {
        s.stop().await?;
    }

    // Compare each sender's acks with what its friend received.
    let (mut lost, mut seq_mismatches, mut duplicates, mut reorders) = (0u64, 0u64, 0u64, 0u64);
    let (mut delivered_in_window, mut acked_total, mut delivered_total) = (0u64, 0u64, 0u64);
    let mut e2e = Vec::new();
    let mut ack = Vec::new();
    for pair in stats.chunks(2) {
        let [a, b] = pair else {
            bail!("odd stats list")
        };
        for (sender, receiver) in [(a, b), (b, a)] {
            for (n, seq) in &sender.acked {
                match receiver.received.get(n) {
                    None => lost += 1,
                    Some(s) if s != seq => seq_mismatches += 1,
                    Some(_) => {}
                }
            }
        }
    }
    for st in stats {
        duplicates += st.duplicates;
        reorders += st.reorders;
        delivered_in_window += st.delivered_in_window;
        acked_total += st.acked.len() as u64;
        delivered_total += st.received.len() as u64;
        e2e.extend(st.e2e_us);
        ack.extend(st.ack_us);
        for (k, v) in st.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    e2e.sort_unstable();
    ack.sort_unstable();
    let secs = cfg.duration.as_secs_f64();
    let cpu = match cpu_window {
        Some(t) => match t.await? {
            Some((before, after)) => {
                let mut cpu = crate::cpu::report(before, after, secs, delivered_in_window);
                if system.is_some() {
                    cpu["processes"] = json!(
                        "server_*: the cluster primary / uvicorn supervisor; store_process_*: \
                         its worker processes (the servers); redis_*: its redis-server"
                    );
                    let redis = match redis_window {
                        Some(t) => t.await?,
                        None => None,
                    };
                    if let (Some((b, a)), true) = (redis, delivered_in_window > 0) {
                        let us = a.saturating_sub(b) as f64 * 1e6 / crate::cpu::TICKS_PER_S;
                        cpu["redis_us_per_msg"] =
                            json!((us / delivered_in_window as f64 * 10.0).round() / 10.0);
                        cpu["redis_cores"] = json!((us / 1e6 / secs * 100.0).round() / 100.0);
                    }
                }
                cpu
            }
            None => Value::Null,
        },
        None => Value::Null,
    };
    let sent = shared.sent.load(Ordering::Relaxed);
    let answered = shared.answered.load(Ordering::Relaxed);
    let json = json!({
        "bench": "load",
        "target": target_name,
        "label": cfg.label,
        "same_host": true,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "nofile_limit": nofile_limit(),
        "config": {
            "pairs": cfg.pairs,
            "users": users,
            "rate_per_user": cfg.rate,
            "window": if cfg.rate > 0.0 { Value::Null } else { json!(cfg.window) },
            "duration_s": secs,
            "warmup_s": cfg.warmup.as_secs_f64(),
            "grace_s": cfg.grace.as_secs_f64(),
            "body_bytes": cfg.body_bytes,
            "idle": cfg.idle,
            "server_rate_limit": match &cfg.target {
                Target::Spawn(_) => json!("off (1e6/s)"),
                Target::Relay(_) | Target::Other(_) => json!("none"),
                Target::Url(_) => json!("server's own"),
            },
        },
        "setup_seconds": round2(setup_s),
        "drain_seconds": round2(drain_s),
        "sent": sent,
        "acked": acked_total,
        "delivered": delivered_total,
        "delivered_in_window": delivered_in_window,
        "throughput_msgs_per_s": round2(delivered_in_window as f64 / secs),
        "e2e_latency_ms": percentiles_ms(&e2e),
        "ack_latency_ms": percentiles_ms(&ack),
        "lost": lost,
        "duplicates": duplicates,
        "reorders": reorders,
        "seq_mismatches": seq_mismatches,
        "unanswered": sent.saturating_sub(answered),
        "errors": errors,
        "idle": idle_report,
        "cpu": cpu,
        "total_seconds": round2(started.elapsed().as_secs_f64()),
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg(),
    });
    Ok(LoadReport {
        sent,
        acked: acked_total,
        delivered: delivered_total,
        lost,
        duplicates,
        reorders,
        seq_mismatches,
        unanswered: sent.saturating_sub(answered),
        errors,
        json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_mask() {
        let f = text_frame(b"hello");
        assert_eq!(f[0], 0x81);
        assert_eq!(f[1], 0x80 | 5);
        let unmasked: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i % 4])
            .collect();
        assert_eq!(unmasked, b"hello");
        let long = text_frame(&[b'a'; 300]);
        assert_eq!(long[1], 0x80 | 126);
        assert_eq!(u16::from_be_bytes([long[2], long[3]]), 300);
    }

    /// The idle client's buffered reads: a head that arrives in pieces, with the first frame
    /// right behind it in the same segment, is read up to its blank line and the frame is
    /// still there; a refusal, a cut-off head and an endless head are errors.
    #[tokio::test]
    async fn upgrade_head_then_frame_through_one_buffer() {
        let (client, mut server) = tokio::io::duplex(64);
        let feeder = tokio::spawn(async move {
            let mut bytes =
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
            // An unmasked server frame: text, "ok".
            bytes.extend([0x81, 2, b'o', b'k']);
            for piece in bytes.chunks(7) {
                server.write_all(piece).await.expect("write");
            }
            server
        });
        let mut r = BufReader::with_capacity(1024, client);
        read_upgrade_head(&mut r).await.expect("101 head");
        assert_eq!(
            read_raw_frame(&mut r).await.expect("frame"),
            (1, b"ok".to_vec())
        );
        drop(feeder.await);

        let refused = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n";
        let err = read_upgrade_head(&mut &refused[..])
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("401"), "{err}");
        let cut = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: webs";
        assert!(read_upgrade_head(&mut &cut[..]).await.is_err());
        let mut endless = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
        endless.extend(b"X-Pad: y\r\n".repeat(2000));
        assert!(read_upgrade_head(&mut &endless[..]).await.is_err());
    }

    #[test]
    fn body_and_url_parsing() {
        assert_eq!(parse_body("12 3456 xxxx"), Some((12, 3456)));
        assert_eq!(parse_body("garbage"), None);
        assert_eq!(
            host_port("http://127.0.0.1:8080/").ok().as_deref(),
            Some("127.0.0.1:8080")
        );
        assert!(host_port("https://x").is_err());
        assert_eq!(dechunk("5\r\nhello\r\n0\r\n\r\n"), "hello");
        assert_eq!(dechunk("ff\r\nshort"), "");
    }

    #[test]
    fn flags() {
        let cfg = LoadConfig::from_args(
            [
                "--spawn",
                "redis",
                "--pairs",
                "3",
                "--rate",
                "0",
                "--duration",
                "1.5",
            ]
            .map(String::from),
        )
        .expect("valid flags");
        assert_eq!(cfg.target, Target::Spawn(Backend::Redis));
        assert_eq!(cfg.pairs, 3);
        assert_eq!(cfg.duration, Duration::from_millis(1500));
        let cfg = LoadConfig::from_args(
            [
                "--spawn",
                "relay-redb",
                "--find-max",
                "--baseline",
                "relay-redis",
                "--rate",
                "2",
            ]
            .map(String::from),
        )
        .expect("valid flags");
        assert_eq!(cfg.target, Target::Relay(RelayStore::Redb));
        assert!(cfg.find_max);
        assert_eq!(
            cfg.baseline,
            Baseline::Target(Target::Relay(RelayStore::Redis))
        );
        assert_eq!(
            Target::Spawn(Backend::Embedded).matching_relay(),
            Some(Target::Relay(RelayStore::Redb))
        );
        assert_eq!(Target::Relay(RelayStore::Redb).matching_relay(), None);
        // find-max needs an open-loop starting rate, and is not an idle-memory run.
        assert!(LoadConfig::from_args(["--find-max", "--rate", "0"].map(String::from)).is_err());
        assert!(LoadConfig::from_args(["--find-max", "--idle", "10"].map(String::from)).is_err());
        // A connection-setup profile registers more idle accounts than it connects, never fewer.
        let idle =
            LoadConfig::from_args(["--idle", "10", "--idle-accounts", "30"].map(String::from))
                .expect("ok");
        assert_eq!((idle.idle, idle.idle_accounts), (10, 30));
        assert!(
            LoadConfig::from_args(["--idle", "10", "--idle-accounts", "5"].map(String::from))
                .is_err()
        );
        // Any spawnable target is a baseline (e.g. one node for the cross-node mode).
        assert_eq!(
            LoadConfig::from_args(["--baseline", "redis"].map(String::from))
                .expect("ok")
                .baseline,
            Baseline::Target(Target::Spawn(Backend::Redis))
        );
        assert!(LoadConfig::from_args(["--baseline", "nothing"].map(String::from)).is_err());
        assert!(LoadConfig::from_args(["--spawn", "relay-sqlite"].map(String::from)).is_err());
        assert!(LoadConfig::from_args(["--pairs".to_owned()]).is_err());
        // In-process, both ends of every WebSocket are descriptors of this process.
        let spawned = LoadConfig::from_args(["--idle", "10000"].map(String::from)).expect("ok");
        let url = LoadConfig::from_args(
            ["--idle", "10000", "--url", "http://127.0.0.1:1"].map(String::from),
        )
        .expect("ok");
        assert!(open_files_needed(&spawned) > 20_000);
        assert!(open_files_needed(&url) < 11_000);
        assert!(LoadConfig::from_args(["--bogus", "1"].map(String::from)).is_err());
    }
}
