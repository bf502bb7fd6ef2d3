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

    fn start_with(appendonly: bool) -> Result<Self, RedisServerError> {
        let dir = tempfile::tempdir()?;
        let mut server = Self {
            child: None,
            port: 0,
            dir,
            appendonly,
        };
        server.spawn(free_port()?)?;
        Ok(server)
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
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        self.port = port;
        wait_ready(port, &log)
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

/// A currently free TCP port on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_ready(port: u16, log: &Path) -> Result<(), RedisServerError> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
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
