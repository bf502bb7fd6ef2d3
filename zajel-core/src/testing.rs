//! Test helpers shared by every crate's tests (feature `test-suite`).
//!
//! [`RedisServer`] starts a real, throwaway `redis-server` on a free loopback port and kills it
//! on drop, so tests never share state or depend on a fixed port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process on `127.0.0.1:<port>`, killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    appendonly: bool,
    cluster: bool,
    /// More `redis-server` arguments (e.g. `--maxmemory 2mb`), kept across restarts.
    extra: Vec<String>,
}

/// Why a Redis server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RedisServerError {
    /// Spawning or talking to the process failed.
    #[error("redis-server: {0}")]
    Io(#[from] std::io::Error),
    /// It did not answer PING in time.
    #[error("redis-server on port {0} did not become ready (log: {1})")]
    NotReady(u16, String),
}

impl RedisServer {
    /// Starts a server with no persistence.
    pub fn start() -> Result<Self, RedisServerError> {
        Self::start_with(false)
    }

    /// Starts a server with the append-only file on (`appendfsync always`), so
    /// [`RedisServer::restart`] keeps every acknowledged write.
    pub fn start_persistent() -> Result<Self, RedisServerError> {
        Self::start_with(true)
    }

    /// Starts a server with no persistence and more `redis-server` arguments, e.g.
    /// `["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]` to test a full Redis.
    pub fn start_with_args(args: &[&str]) -> Result<Self, RedisServerError> {
        Self::start_node_with(false, false, args)
    }

    fn start_with(appendonly: bool) -> Result<Self, RedisServerError> {
        Self::start_node(appendonly, false)
    }

    fn start_node(appendonly: bool, cluster: bool) -> Result<Self, RedisServerError> {
        Self::start_node_with(appendonly, cluster, &[])
    }

    fn start_node_with(
        appendonly: bool,
        cluster: bool,
        extra: &[&str],
    ) -> Result<Self, RedisServerError> {
        let dir = tempfile::tempdir()?;
        let mut server = Self {
            child: None,
            port: 0,
            dir,
            appendonly,
            cluster,
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
        };
        if !cluster {
            server.spawn(free_port()?)?;
            return Ok(server);
        }
        // A cluster node also listens on port + 10000 (the cluster bus): both must be free,
        // and another process may grab either before the server binds it, so retry.
        let mut last = None;
        for _ in 0..5 {
            let port = cluster_port()?;
            match server.spawn(port) {
                Ok(()) => return Ok(server),
                Err(e) => {
                    server.kill();
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| RedisServerError::Io(std::io::Error::other("no port"))))
    }

    fn spawn(&mut self, port: u16) -> Result<(), RedisServerError> {
        let dir = self.dir.path();
        let log = dir.join("redis.log");
        let mut cmd = Command::new(redis_server_binary());
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .arg("--daemonize")
            .arg("no");
        if self.appendonly {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if self.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .arg("--cluster-config-file")
                .arg(dir.join("nodes.conf"));
        }
        cmd.args(&self.extra);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.port = port;
        let ready = wait_ready(&mut child, port, &log);
        self.child = Some(child);
        ready
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (SIGKILL: no chance to save anything extra) and starts it again on the
    /// same port and data directory. After [`RedisServer::kill`] this just starts it again.
    pub fn restart(&mut self) -> Result<(), RedisServerError> {
        self.kill();
        let port = self.port;
        self.spawn(port)
    }

    /// The process id of the running server (`None` after [`RedisServer::kill`]), e.g. to
    /// `SIGSTOP` it and simulate a hung Redis.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (e.g. `"STOP"`, `"CONT"`) to the server with `kill -<signal>`.
    pub fn signal(&self, signal: &str) -> std::io::Result<()> {
        let Some(pid) = self.pid() else {
            return Err(std::io::Error::other("redis-server is not running"));
        };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "kill -{signal} {pid} failed"
            )))
        }
    }

    /// Stops the server without restarting it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_server_binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER").map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}

/// A free port `p` on 127.0.0.1 with `p + 10000` free too (a cluster node's bus port).
fn cluster_port() -> std::io::Result<u16> {
    for _ in 0..100 {
        let port = free_port()?;
        if port <= 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(
        "no free port pair for a cluster node",
    ))
}

/// A currently free TCP port on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until the server answers `PING`. Fails at once if the process has exited (e.g. the
/// port was taken by another process between a [`RedisServer::restart`]'s kill and start:
/// the log then says why) rather than polling a dead server until the deadline.
fn wait_ready(child: &mut Child, port: u16, log: &Path) -> Result<(), RedisServerError> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(RedisServerError::NotReady(
                port,
                format!("redis-server exited ({status}): {text}"),
            ));
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            if s.write_all(b"PING\r\n").is_ok() {
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf)
                    && buf[..n].starts_with(b"+PONG")
                {
                    return Ok(());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    Err(RedisServerError::NotReady(port, text))
}

/// A throwaway Redis Cluster on loopback: `masters` primaries sharing the 16384 slots evenly,
/// each with `replicas_per_master` replicas (node timeout 1 s, so a failover takes a few
/// seconds). Every node is a [`RedisServer`], killed on drop.
pub struct RedisCluster {
    /// Primaries first (in slot order), then replicas.
    nodes: Vec<RedisServer>,
    masters: usize,
}

impl RedisCluster {
    /// Starts the nodes and forms the cluster: slots assigned with `CLUSTER ADDSLOTSRANGE`,
    /// nodes joined with `CLUSTER MEET`, replicas attached with `CLUSTER REPLICATE` (no
    /// `redis-cli --cluster create`, which sleeps between steps). Returns once every node
    /// reports `cluster_state:ok`.
    pub fn start(masters: usize, replicas_per_master: usize) -> Result<Self, RedisServerError> {
        let total = masters * (1 + replicas_per_master);
        let nodes = (0..total)
            .map(|_| RedisServer::start_node(false, true))
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = Self { nodes, masters };
        let per = 16384 / masters;
        for i in 0..masters {
            let first = i * per;
            let last = if i + 1 == masters {
                16383
            } else {
                first + per - 1
            };
            cluster.cli(
                i,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            )?;
        }
        for i in 1..total {
            let port = cluster.nodes[i].port().to_string();
            cluster.cli(0, &["CLUSTER", "MEET", "127.0.0.1", &port])?;
        }
        cluster.wait_for(|c| c.all_know(total))?;
        for r in masters..total {
            let master = (r - masters) % masters;
            let id = cluster.cli(master, &["CLUSTER", "MYID"])?;
            // A replica can only follow a master it already knows: retry until gossip has it.
            cluster.wait_for(|c| {
                Ok(c.cli(r, &["CLUSTER", "REPLICATE", id.trim()])?
                    .starts_with("OK"))
            })?;
        }
        cluster.wait_for(|c| c.all_ok())?;
        Ok(cluster)
    }

    /// `redis://127.0.0.1:<port>/` of every node (the seed list).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The node at `index` (primaries first).
    pub fn node(&mut self, index: usize) -> &mut RedisServer {
        &mut self.nodes[index]
    }

    /// Index of the primary currently serving `key`'s slot, as the live nodes see it.
    pub fn master_of(&self, key: &str) -> Result<usize, RedisServerError> {
        let bad = |what: &str| RedisServerError::Io(std::io::Error::other(what.to_owned()));
        let slot: u32 = self
            .cli_any(&["CLUSTER", "KEYSLOT", key])?
            .trim()
            .parse()
            .map_err(|_| bad("bad CLUSTER KEYSLOT reply"))?;
        // Lines: <id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <state> <slots>…
        for line in self.cli_any(&["CLUSTER", "NODES"])?.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let serves = f[8..].iter().any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                matches!((a.parse::<u32>(), b.parse::<u32>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
            });
            let port = f[1]
                .split(['@', ','])
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok());
            if let (true, Some(port)) = (serves, port) {
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port() == port)
                    .ok_or_else(|| bad("primary is not one of ours"));
            }
        }
        Err(bad(&format!("no live primary serves slot {slot}")))
    }

    /// Waits (up to 20 s) until every live node reports `cluster_state:ok`, e.g. after a
    /// failover.
    pub fn wait_until_ok(&self) -> Result<(), RedisServerError> {
        self.wait_for(|c| c.all_ok())
    }

    /// Waits (up to 20 s) until every replica of the primary at `index` has acknowledged all
    /// of its writes (replica offset = the primary's `master_repl_offset`), so everything the
    /// primary acknowledged until now survives its failover. Fails if it has no replica.
    pub fn wait_replicated(&self, index: usize) -> Result<(), RedisServerError> {
        self.wait_for(|c| {
            let info = c.cli(index, &["INFO", "replication"])?;
            let primary = info
                .lines()
                .find_map(|l| l.strip_prefix("master_repl_offset:"))
                .and_then(|v| v.trim().parse::<u64>().ok());
            // slave0:ip=127.0.0.1,port=…,state=online,offset=1234,lag=0
            let replicas: Vec<Option<u64>> = info
                .lines()
                .filter(|l| l.starts_with("slave") && l.contains("offset="))
                .map(|l| {
                    l.split(',')
                        .find_map(|kv| kv.strip_prefix("offset="))
                        .and_then(|v| v.trim().parse().ok())
                })
                .collect();
            Ok(primary.is_some() && !replicas.is_empty() && replicas.iter().all(|&o| o == primary))
        })
    }

    /// Kills (SIGKILL) the primary serving `key`'s slot and waits (up to 20 s) until one of its
    /// replicas has been promoted in its place and every live node reports
    /// `cluster_state:ok`. Returns (killed, promoted) node indices.
    pub fn kill_master_of(&mut self, key: &str) -> Result<(usize, usize), RedisServerError> {
        let old = self.master_of(key)?;
        self.nodes[old].kill();
        let mut promoted = old;
        self.wait_for(|c| match c.master_of(key) {
            Ok(i) if i != old => {
                promoted = i;
                c.all_ok()
            }
            _ => Ok(false),
        })?;
        Ok((old, promoted))
    }

    fn all_know(&self, total: usize) -> Result<bool, RedisServerError> {
        for i in 0..self.nodes.len() {
            let info = self.cli(i, &["CLUSTER", "INFO"])?;
            if !info.contains(&format!("cluster_known_nodes:{total}")) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn all_ok(&self) -> Result<bool, RedisServerError> {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.child.is_some()
                && !self
                    .cli(i, &["CLUSTER", "INFO"])?
                    .contains("cluster_state:ok")
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn wait_for(
        &self,
        mut done: impl FnMut(&Self) -> Result<bool, RedisServerError>,
    ) -> Result<(), RedisServerError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if done(self)? {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(RedisServerError::NotReady(
                    self.nodes[0].port(),
                    format!("cluster did not converge (masters: {})", self.masters),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn cli_any(&self, args: &[&str]) -> Result<String, RedisServerError> {
        let i = self
            .nodes
            .iter()
            .position(|n| n.child.is_some())
            .ok_or_else(|| RedisServerError::Io(std::io::Error::other("no node is running")))?;
        self.cli(i, args)
    }

    fn cli(&self, node: usize, args: &[&str]) -> Result<String, RedisServerError> {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.nodes[node].port().to_string())
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The send time of [`message`]: a fixed instant, so results do not depend on the clock.
pub const T0: crate::Timestamp = crate::Timestamp(1_700_000_000_000);

/// A message of `body` from `sender` in `conv` with idempotency key `key`, sent at [`T0`]: the
/// input most store tests append. Panics on an invalid body or key (test input).
///
/// ```
/// use zajel_core::{ConversationId, UserId};
/// let (a, b) = (UserId::new_random(), UserId::new_random());
/// let conv = ConversationId::direct(a, b);
/// let m = zajel_core::testing::message(&conv, a, "hi", "k1");
/// assert_eq!(m.sender, a);
/// ```
pub fn message(
    conv: &crate::ConversationId,
    sender: crate::UserId,
    body: &str,
    key: &str,
) -> crate::NewMessage {
    crate::NewMessage {
        conversation: conv.clone(),
        sender,
        body: crate::Body::parse(body).expect("valid body"),
        idempotency_key: crate::IdempotencyKey::parse(key).expect("valid key"),
        sent_at: T0,
    }
}

/// Makes `a` and `b` friends directly in the store (one `swap_edge` from "never met"), for
/// tests that append messages: stores refuse messages between non-friends.
/// Panics if the pair already has an edge or the store fails (test code).
pub async fn befriend<S: crate::FriendStore + ?Sized>(
    store: &S,
    a: crate::UserId,
    b: crate::UserId,
) {
    use crate::friends::{Edge, Link, UserPair};
    let pair = UserPair::new(a, b).expect("two distinct users");
    let friends = Edge {
        link: Link::Friends,
        ..Edge::default()
    };
    let swapped = store.swap_edge(pair, Edge::default(), friends).await;
    assert_eq!(swapped, Ok(true), "befriend {a} and {b}");
}

/// Sends one raw command (`args[0]` and its arguments) on `con`: for tests that set Redis up
/// or read what a store or broker wrote, outside the code under test.
#[cfg(feature = "redis")]
pub async fn redis_cmd(
    con: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> redis::RedisResult<redis::Value> {
    let Some((name, rest)) = args.split_first() else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "redis_cmd: no command",
        )));
    };
    let mut c = redis::cmd(name);
    for a in rest {
        c.arg(*a);
    }
    c.query_async(con).await
}

/// Fills the Redis at `url` with filler keys (`filler:<n>`, not a store's) until even a tiny
/// write answers `OOM`: big values first, then smaller ones (a refused big value frees its
/// query buffer, which leaves room for small writes). For a server started with a small
/// `--maxmemory` under `noeviction`. Returns the connection it filled through: keep it open
/// while Redis should stay full (closing it frees its buffers, room for a few small writes).
/// Panics if Redis never refuses (test code).
#[cfg(feature = "redis")]
pub async fn fill_until_oom(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("redis url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let mut i = 0;
    for size in [64 * 1024, 4096, 256, 16] {
        let blob = "x".repeat(size);
        loop {
            i += 1;
            let set = redis::cmd("SET")
                .arg(format!("filler:{i}"))
                .arg(&blob)
                .query_async::<redis::Value>(&mut con)
                .await;
            match set {
                Ok(_) => assert!(i < 100_000, "maxmemory never reached"),
                Err(e) => {
                    assert_eq!(e.code(), Some("OOM"), "{e}");
                    break;
                }
            }
        }
    }
    con
}
