//! The other stacks the load generator compares Zajel with: Socket.IO (`benches/compare/
//! socketio`) and Django Channels (`benches/compare/channels`), each doing the workload of the
//! bare relay's Redis store (friend check with `SISMEMBER`, `RPUSH` before the ack, live
//! delivery through the framework's own cross-process mechanism on Redis).
//!
//! `load --spawn socketio|channels` starts a throwaway `redis-server`, writes the friendships
//! into it (`SADD friends:<a> <b>`: registration and friend requests are not what is measured,
//! so users are fresh UUIDs named in the connect URL), starts the server's processes on a free
//! loopback port and stops them by process id afterwards (see [`Running`]). The dependencies
//! must be installed first: `benches/compare/install.sh` (`scripts/bench.sh` runs it).

pub mod engineio;
pub mod socketio;

use anyhow::{Context, Result, bail};
use futures_util::SinkExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::load::{Ws, next_setup_text, read_raw_frame, read_upgrade_head};
use crate::net;

/// How long the server's processes may take to start (Django imports are slow on a busy machine).
const START_WAIT: Duration = Duration::from_secs(60);
/// How long a setup step (handshake, first frame) may take.
const SETUP_WAIT: Duration = Duration::from_secs(60);
/// Worker processes each server runs: one per core of the 2-core machine, as deployed.
pub const WORKERS: usize = 2;

/// A comparison stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// Node, socket.io 4.8 + @socket.io/redis-adapter 8.3, `cluster` with [`WORKERS`] workers.
    SocketIo,
    /// Python, Django + channels 4.3 + channels-redis 4.3 under uvicorn with [`WORKERS`] workers.
    Channels,
}

impl System {
    /// `socketio` or `channels`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "socketio" => Some(Self::SocketIo),
            "channels" => Some(Self::Channels),
            _ => None,
        }
    }

    /// The name in `--spawn` and in the line's `target` (`socketio:redis`).
    pub fn name(self) -> &'static str {
        match self {
            Self::SocketIo => "socketio",
            Self::Channels => "channels",
        }
    }

    /// The WebSocket path (with the user in the query) of one user's connection.
    fn path(self, user: &str) -> String {
        match self {
            Self::SocketIo => format!("/socket.io/?EIO=4&transport=websocket&user={user}"),
            Self::Channels => format!("/ws/?user={user}"),
        }
    }

    /// The folder with the server's code (`benches/compare/<name>`, or under
    /// `$ZAJEL_COMPARE_DIR`).
    pub fn dir(self) -> PathBuf {
        let root = std::env::var_os("ZAJEL_COMPARE_DIR").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compare"),
            PathBuf::from,
        );
        root.join(self.name())
    }

    /// The command that serves it on `port`, and the log line each ready worker prints.
    fn command(self, port: u16, redis_url: &str) -> Result<(Command, &'static str)> {
        let dir = self.dir();
        let (mut cmd, ready) = match self {
            Self::SocketIo => {
                if !dir.join("node_modules/socket.io").is_dir() {
                    bail!(
                        "{} has no node_modules: run benches/compare/install.sh",
                        dir.display()
                    );
                }
                let mut cmd = Command::new("node");
                cmd.arg("server.js")
                    .env("PORT", port.to_string())
                    .env("WORKERS", WORKERS.to_string());
                (cmd, "ready")
            }
            Self::Channels => {
                let uvicorn = dir.join(".venv/bin/uvicorn");
                if !uvicorn.is_file() {
                    bail!(
                        "{} has no .venv: run benches/compare/install.sh",
                        dir.display()
                    );
                }
                let mut cmd = Command::new(uvicorn);
                cmd.args(["chat.asgi:application", "--host", "127.0.0.1", "--port"])
                    .arg(port.to_string())
                    .args(["--workers", &WORKERS.to_string()])
                    .args(["--loop", "uvloop", "--http", "httptools"])
                    .args(["--ws", "websockets-sansio", "--no-access-log"])
                    .args(["--log-level", "info"]);
                (cmd, "Application startup complete")
            }
        };
        cmd.current_dir(&dir)
            .env("HOST", "127.0.0.1")
            .env("REDIS_URL", redis_url)
            .stdin(Stdio::null());
        Ok((cmd, ready))
    }
}

/// A comparison server's processes and their Redis. Dropping it stops them (by process id:
/// the root, then every descendant still running).
pub struct Running {
    /// `IP:PORT` to connect to.
    pub host: String,
    /// The root process (node's cluster primary, uvicorn's supervisor); the workers are its
    /// children.
    pub pid: u32,
    /// The Redis the server stores in and routes through.
    pub redis: zajel_core::testing::RedisServer,
    child: Child,
    _log_dir: tempfile::TempDir,
}

/// Starts `system` on a free loopback port with a throwaway `redis-server`; returns once every
/// worker has said it is ready.
pub async fn start(system: System) -> Result<Running> {
    let redis = zajel_core::testing::RedisServer::start()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log_dir = tempfile::tempdir()?;
    // `ZAJEL_COMPARE_LOG_DIR` keeps the servers' output (e.g. to see why one failed).
    let log_path = match std::env::var_os("ZAJEL_COMPARE_LOG_DIR") {
        Some(dir) => PathBuf::from(dir).join(format!("{}-{port}.log", system.name())),
        None => log_dir.path().join("server.log"),
    };
    let log = std::fs::File::create(&log_path)?;
    let (mut cmd, ready) = system.command(port, &redis.url())?;
    cmd.stdout(log.try_clone()?).stderr(log);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting the {} server", system.name()))?;
    let mut running = Running {
        host: format!("127.0.0.1:{port}"),
        pid: child.id(),
        redis,
        child,
        _log_dir: log_dir,
    };
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.matches(ready).count() >= WORKERS {
            break;
        }
        if let Some(status) = running.child.try_wait()? {
            bail!("the {} server exited ({status}): {text}", system.name());
        }
        if t0.elapsed() > START_WAIT {
            bail!("the {} server did not start in time: {text}", system.name());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(running)
}

impl Running {
    /// Resident memory of the root and all its descendants, KiB (the server's whole footprint
    /// without its Redis).
    pub fn rss_kib(&self) -> Option<u64> {
        let mut total = 0;
        for pid in std::iter::once(self.pid).chain(descendants(self.pid)) {
            total += vm_rss_kib(pid)?;
        }
        Some(total)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut pids = vec![self.pid];
        pids.extend(descendants(self.pid));
        signal("-TERM", &pids);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_))) && pids[1..].iter().all(|p| !alive(*p))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let left: Vec<u32> = pids.into_iter().filter(|p| alive(*p)).collect();
        signal("-KILL", &left);
        let _ = self.child.wait();
    }
}

/// Every process below `pid` (children, their children, …).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        for c in crate::cpu::children(p) {
            out.push(c);
            queue.push(c);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by its parent) holds nothing any more.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| !s[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Sends `sig` to these processes (ours: started by [`start`]) with `kill(1)`.
fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(sig)
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    crate::load::vm_rss_kib(&format!("/proc/{pid}/status"))
}

/// Fresh user ids, two per pair, with each pair made friends in `redis` (both directions).
pub async fn make_pairs(redis_url: &str, pairs: usize) -> Result<Vec<(String, String)>> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let users: Vec<(String, String)> = (0..pairs)
        .map(|_| {
            (
                zajel_core::UserId::new_random().to_string(),
                zajel_core::UserId::new_random().to_string(),
            )
        })
        .collect();
    for chunk in users.chunks(1000) {
        let mut pipe = redis::pipe();
        for (a, b) in chunk {
            pipe.cmd("SADD").arg(format!("friends:{a}")).arg(b).ignore();
            pipe.cmd("SADD").arg(format!("friends:{b}")).arg(a).ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
    }
    Ok(users)
}

/// Opens `user`'s WebSocket (tungstenite, 4 KiB read buffer like the Zajel path) and completes
/// the stack's connect: Socket.IO's open packet, `40` and the server's `40{sid}`; Channels'
/// `auth_ok` (sent after the consumer joined its group).
pub async fn connect(system: System, host: &str, user: &str) -> Result<Ws> {
    let req = format!("ws://{host}{}", system.path(user)).into_client_request()?;
    let stream = net::connect(host)
        .await
        .with_context(|| format!("connect {host}"))?;
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) = tokio::time::timeout(
        SETUP_WAIT,
        tokio_tungstenite::client_async_with_config(req, stream, Some(config)),
    )
    .await
    .context("WebSocket handshake timed out")??;
    if system == System::SocketIo {
        match engineio::parse(&next_setup_text(&mut ws).await?)? {
            engineio::Packet::Open(_) => {}
            other => bail!("expected the Engine.IO open packet, got {other:?}"),
        }
        ws.send(Message::Text(engineio::CONNECT.into())).await?;
    }
    loop {
        let text = next_setup_text(&mut ws).await?;
        if connected(system, &text)? {
            return Ok(ws);
        }
    }
}

/// Whether `text` is the frame that completes the connect (an error if it refuses it).
fn connected(system: System, text: &str) -> Result<bool> {
    match system {
        System::SocketIo => match engineio::parse(text)? {
            engineio::Packet::Connect(_) => Ok(true),
            engineio::Packet::ConnectError(e) => bail!("Socket.IO connect refused: {e}"),
            _ => Ok(false),
        },
        System::Channels => {
            Ok(text.starts_with(r#"{"type": "auth_ok""#)
                || text.starts_with(r#"{"type":"auth_ok""#))
        }
    }
}

/// An idle connection on the minimal client (the bare socket and a 1 KiB buffer, like the
/// Zajel idle client): upgrade, the stack's connect, then returned for [`keep_alive`].
pub async fn idle_connect(system: System, host: &str, user: &str) -> Result<BufReader<TcpStream>> {
    let s = net::connect(host).await?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        system.path(user)
    );
    let mut s = BufReader::with_capacity(1024, s);
    s.get_mut().write_all(req.as_bytes()).await?;
    read_upgrade_head(&mut s).await?;
    loop {
        let (op, payload) = read_raw_frame(&mut s).await?;
        match op {
            0x1 => {
                let text = std::str::from_utf8(&payload).context("non-UTF-8 text frame")?;
                if system == System::SocketIo
                    && matches!(engineio::parse(text)?, engineio::Packet::Open(_))
                {
                    s.get_mut()
                        .write_all(&masked_frame(0x1, engineio::CONNECT.as_bytes()))
                        .await?;
                } else if connected(system, text)? {
                    return Ok(s);
                }
            }
            0x8 => bail!("closed during connect"),
            0x9 => s.get_mut().write_all(&masked_frame(0xA, &payload)).await?,
            _ => {}
        }
    }
}

/// Keeps an idle connection open until `stop`: answers the server's keep-alives (WebSocket
/// pings from uvicorn, Engine.IO pings from Socket.IO), drops everything else.
pub async fn keep_alive(mut s: BufReader<TcpStream>, mut stop: watch::Receiver<bool>) {
    loop {
        let frame = tokio::select! {
            f = read_raw_frame(&mut s) => f,
            _ = stop.wait_for(|s| *s) => return,
        };
        let reply = match frame {
            Ok((0x9, payload)) => masked_frame(0xA, &payload),
            Ok((0x1, payload)) if payload == b"2" => masked_frame(0x1, engineio::PONG.as_bytes()),
            Ok((0x8, _)) | Err(_) => return,
            Ok(_) => continue,
        };
        if s.get_mut().write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// A client frame (masked) of `opcode` with a short payload (< 126 bytes: pings and pongs).
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x5a, 0x3c, 0x96, 0x11];
    let len = payload.len().min(125);
    let mut f = vec![0x80 | opcode, 0x80 | len as u8];
    f.extend(MASK);
    f.extend(
        payload[..len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i % 4]),
    );
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        for s in [System::SocketIo, System::Channels] {
            assert_eq!(System::parse(s.name()), Some(s));
        }
        assert_eq!(System::parse("django"), None);
        assert_eq!(
            System::SocketIo.path("u"),
            "/socket.io/?EIO=4&transport=websocket&user=u"
        );
        assert!(System::Channels.dir().ends_with("compare/channels"));
    }

    #[test]
    fn connect_frames() {
        assert!(connected(System::SocketIo, r#"40{"sid":"s"}"#).expect("ok"));
        assert!(!connected(System::SocketIo, "2").expect("ok"));
        assert!(connected(System::SocketIo, r#"44{"message":"no"}"#).is_err());
        assert!(connected(System::Channels, r#"{"type": "auth_ok", "user": "u"}"#).expect("ok"));
        assert!(!connected(System::Channels, r#"{"type": "message"}"#).expect("ok"));
    }

    #[test]
    fn pong_frame_is_masked() {
        let f = masked_frame(0xA, b"hi");
        assert_eq!(&f[..2], &[0x8A, 0x82]);
        assert_eq!(f[6] ^ f[2], b'h');
        assert_eq!(f[7] ^ f[3], b'i');
    }
}
