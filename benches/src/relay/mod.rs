//! The bare relay: the baseline every load run states Zajel's throughput against.
//!
//! It does the least a chat server that persists before acknowledging must do, and speaks just
//! enough of the Zajel protocol (`docs/protocol.md`) that the same load generator drives it:
//!
//! * `POST /api/register` → `201 {"user": {"id", "username"}, "token"}` (kept in memory);
//! * `GET /ws` (tokio-tungstenite, subprotocol `zajel.v1`, 4 KiB read buffer like Zajel's):
//!   `auth` with the token → `auth_ok`; `friend_request` (crossed requests make friends) →
//!   `friend_ok`; `ping` → `pong`;
//! * `send` → friend check, store, `sent` ack with the seq, and a `message` event to the
//!   recipient if connected (in-memory routing: one map from user to connection).
//!
//! Stores ([`RelayStore`]): `memory` (a seq counter per conversation), `redis` (one `SISMEMBER`
//! for the friend check and one `RPUSH` per message, whose reply is the seq), `redb` (an append
//! to a redb file with group commit, friend check in memory; see [`redb_log`]).
//!
//! Not done, on purpose (this is a baseline, not a product): idempotency keys, resume,
//! history, presence, rate limits, per-connection queues with back-pressure, validation beyond
//! what routing needs. Bad frames get an `error` frame and the connection stays.

pub mod redb_log;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use zajel_core::{ConversationId, MessageId, UserId};

/// What the relay persists to before it acknowledges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayStore {
    /// Nothing persists: a seq counter per conversation.
    Memory,
    /// A throwaway `redis-server` (no append-only file): `SISMEMBER` + `RPUSH` per message.
    Redis,
    /// A redb file in a temporary directory, group commit, fsync per commit.
    Redb,
}

impl RelayStore {
    /// `memory`, `redis` or `redb`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "memory" => Self::Memory,
            "redis" => Self::Redis,
            "redb" => Self::Redb,
            other => bail!("unknown relay store {other} (memory, redis, redb)"),
        })
    }

    /// The name [`RelayStore::parse`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::Redb => "redb",
        }
    }
}

/// A relay serving on the current tokio runtime.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _guard: Box<dyn std::any::Any + Send>,
}

impl Running {
    /// Stops accepting connections (open ones end when their clients close them) and frees
    /// the store (the temporary redb file, the redis-server).
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .context("relay did not stop within 10 s")??;
        Ok(())
    }
}

/// Starts a relay over `store` on `listen` (port 0: any free port).
pub async fn start(store: RelayStore, listen: SocketAddr) -> Result<Running> {
    let (backend, guard): (Backend, Box<dyn std::any::Any + Send>) = match store {
        RelayStore::Memory => (Backend::Memory(Mutex::new(HashMap::new())), Box::new(())),
        RelayStore::Redis => {
            let server = zajel_core::testing::RedisServer::start()?;
            let con = redis::Client::open(server.url())?
                .get_connection_manager()
                .await?;
            (Backend::Redis(con), Box::new(server))
        }
        RelayStore::Redb => {
            let dir = tempfile::tempdir()?;
            let log = redb_log::RedbLog::open(&dir.path().join("relay.redb"))?;
            (Backend::Redb(log), Box::new(dir))
        }
    };
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(State {
        directory: Mutex::new(Directory::default()),
        conns: RwLock::new(HashMap::new()),
        friends: RwLock::new(HashSet::new()),
        backend,
    });
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, state, rx));
    Ok(Running {
        addr,
        stop: Some(tx),
        task,
        _guard: guard,
    })
}

// ---------------------------------------------------------------------------------------------
// State

enum Backend {
    Memory(Mutex<HashMap<String, u64>>),
    Redis(redis::aio::ConnectionManager),
    Redb(redb_log::RedbLog),
}

#[derive(Default)]
struct Directory {
    by_name: HashMap<String, UserId>,
    names: HashMap<UserId, String>,
    tokens: HashMap<String, UserId>,
    /// Friend requests (from, to) not answered yet.
    pending: HashSet<(UserId, UserId)>,
}

type Outbox = mpsc::UnboundedSender<Message>;

struct State {
    directory: Mutex<Directory>,
    /// The routing table: user → the writer of their (latest) connection.
    conns: RwLock<HashMap<UserId, Outbox>>,
    /// Friendships both ways, for the memory and redb stores (Redis keeps them in sets).
    friends: RwLock<HashSet<(UserId, UserId)>>,
    backend: Backend,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl State {
    async fn are_friends(&self, a: UserId, b: UserId) -> Result<bool> {
        match &self.backend {
            Backend::Redis(con) => {
                let mut con = con.clone();
                let member: bool = redis::cmd("SISMEMBER")
                    .arg(format!("relay:friends:{a}"))
                    .arg(b.to_string())
                    .query_async(&mut con)
                    .await?;
                Ok(member)
            }
            _ => Ok(self
                .friends
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&(a, b))),
        }
    }

    async fn make_friends(&self, a: UserId, b: UserId) -> Result<()> {
        match &self.backend {
            Backend::Redis(con) => {
                let mut con = con.clone();
                redis::pipe()
                    .cmd("SADD")
                    .arg(format!("relay:friends:{a}"))
                    .arg(b.to_string())
                    .ignore()
                    .cmd("SADD")
                    .arg(format!("relay:friends:{b}"))
                    .arg(a.to_string())
                    .ignore()
                    .query_async::<()>(&mut con)
                    .await?;
            }
            _ => {
                let mut f = self
                    .friends
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                f.insert((a, b));
                f.insert((b, a));
            }
        }
        Ok(())
    }

    /// Persists `payload` in `conversation` and returns its seq.
    async fn store(&self, conversation: &str, payload: Vec<u8>) -> Result<u64> {
        match &self.backend {
            Backend::Memory(seqs) => {
                let mut seqs = lock(seqs);
                let seq = seqs.entry(conversation.to_owned()).or_insert(0);
                *seq += 1;
                Ok(*seq)
            }
            Backend::Redis(con) => {
                let mut con = con.clone();
                let len: u64 = redis::cmd("RPUSH")
                    .arg(format!("relay:msgs:{conversation}"))
                    .arg(payload)
                    .query_async(&mut con)
                    .await?;
                Ok(len)
            }
            Backend::Redb(log) => log
                .append(conversation, payload)
                .await
                .map_err(anyhow::Error::msg),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connections

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stop: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = state.clone();
                    tokio::spawn(async move {
                        let _ = connection(stream, state).await;
                    });
                }
                // Out of descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

async fn connection(stream: TcpStream, state: Arc<State>) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut head = [0u8; 4];
    loop {
        let n = stream.peek(&mut head).await?;
        if n == 0 {
            return Ok(());
        }
        if n == head.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if &head == b"POST" {
        register(stream, &state).await
    } else {
        websocket(stream, state).await
    }
}

/// `POST /api/register` with `{"username"}` (the password is not checked: registration is
/// not what the benchmark measures).
async fn register(mut stream: TcpStream, state: &State) -> Result<()> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 2048];
    let body_start = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("request ended early");
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if raw.len() > 64 * 1024 {
            bail!("request head too large");
        }
    };
    let head = String::from_utf8_lossy(&raw[..body_start]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
        .min(64 * 1024);
    while raw.len() < body_start + length {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("body ended early");
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let username = serde_json::from_slice::<serde_json::Value>(&raw[body_start..])
        .ok()
        .and_then(|v| v["username"].as_str().map(str::to_owned));
    let (status, body) = match username {
        None => (
            "400 Bad Request",
            json!({"code": "bad_request", "message": "username missing"}),
        ),
        Some(name) => {
            let mut dir = lock(&state.directory);
            if dir.by_name.contains_key(&name) {
                (
                    "409 Conflict",
                    json!({"code": "username_taken", "message": "username taken"}),
                )
            } else {
                let id = UserId::new_random();
                let token = UserId::new_random().to_string();
                dir.by_name.insert(name.clone(), id);
                dir.names.insert(id, name.clone());
                dir.tokens.insert(token.clone(), id);
                (
                    "201 Created",
                    json!({"user": {"id": id, "username": name, "created_at": now_ms()}, "token": token}),
                )
            }
        }
    };
    let body = body.to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// The client frames the relay understands (a subset of Zajel's).
#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    token: Option<String>,
    username: Option<String>,
    conversation: Option<String>,
    body: Option<String>,
    idempotency_key: Option<String>,
}

fn error_frame(re: Option<&str>, code: &str, message: &str) -> Message {
    Message::Text(
        json!({"type": "error", "re": re, "code": code, "message": message})
            .to_string()
            .into(),
    )
}

/// The handshake callback: answers the `zajel.v1` subprotocol when the client offers it (the
/// load generator's WebSocket client insists). The `Err` type is tungstenite's.
#[allow(clippy::result_large_err)]
fn offer_zajel_protocol(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let wants_zajel = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == "zajel.v1"));
    if wants_zajel {
        resp.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("zajel.v1"),
        );
    }
    Ok(resp)
}

async fn websocket(stream: TcpStream, state: Arc<State>) -> Result<()> {
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, offer_zajel_protocol, Some(config))
            .await?;
    let (mut sink, mut stream) = ws.split();

    // The first frame must be a valid `auth`.
    let me = loop {
        let Some(msg) = stream.next().await else {
            return Ok(());
        };
        let Message::Text(text) = msg? else { continue };
        let frame: Frame = match serde_json::from_str(text.as_str()) {
            Ok(f) => f,
            Err(e) => {
                sink.send(error_frame(None, "bad_frame", &e.to_string()))
                    .await?;
                continue;
            }
        };
        let user = (frame.kind == "auth")
            .then(|| {
                let dir = lock(&state.directory);
                let id = *dir.tokens.get(frame.token.as_deref()?)?;
                Some((id, dir.names.get(&id)?.clone()))
            })
            .flatten();
        let Some((id, name)) = user else {
            sink.send(error_frame(
                frame.id.as_deref(),
                "unauthorized",
                "auth first",
            ))
            .await?;
            sink.close().await?;
            return Ok(());
        };
        let ok = json!({"type": "auth_ok", "re": frame.id, "protocol": 1,
            "user": {"id": id, "username": name}});
        sink.send(Message::Text(ok.to_string().into())).await?;
        break id;
    };

    let (outbox, mut rx) = mpsc::unbounded_channel::<Message>();
    state
        .conns
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(me, outbox.clone());
    // The writer: everything queued since the last flush goes out in one write.
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            sink.feed(first).await?;
            while let Ok(more) = rx.try_recv() {
                sink.feed(more).await?;
            }
            sink.flush().await?;
        }
        let _ = sink.close().await;
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    });

    while let Some(msg) = stream.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        if let Err(reply) = handle(&state, me, text.as_str(), &outbox).await {
            let _ = outbox.send(reply);
        }
    }

    // Unroute this connection (unless a newer one of the same user replaced it).
    {
        let mut conns = state
            .conns
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if conns.get(&me).is_some_and(|tx| tx.same_channel(&outbox)) {
            conns.remove(&me);
        }
    }
    drop(outbox);
    let _ = writer.await;
    Ok(())
}

/// Handles one frame after `auth`; `Err` is the error frame to answer with.
async fn handle(state: &State, me: UserId, text: &str, outbox: &Outbox) -> Result<(), Message> {
    let frame: Frame =
        serde_json::from_str(text).map_err(|e| error_frame(None, "bad_frame", &e.to_string()))?;
    let re = frame.id.as_deref();
    match frame.kind.as_str() {
        "ping" => {
            let _ = outbox.send(Message::Text(
                json!({"type": "pong", "re": re}).to_string().into(),
            ));
        }
        "friend_request" => {
            let name = frame
                .username
                .as_deref()
                .ok_or_else(|| error_frame(re, "bad_request", "username missing"))?;
            let (other, makes_friends) = {
                let mut dir = lock(&state.directory);
                let other = *dir
                    .by_name
                    .get(name)
                    .ok_or_else(|| error_frame(re, "not_found", "no such user"))?;
                let crossed = dir.pending.remove(&(other, me));
                if !crossed {
                    dir.pending.insert((me, other));
                }
                (other, crossed)
            };
            if makes_friends {
                state
                    .make_friends(me, other)
                    .await
                    .map_err(|e| error_frame(re, "internal", &e.to_string()))?;
            }
            let relation = if makes_friends {
                "friends"
            } else {
                "request_sent"
            };
            let ok = json!({"type": "friend_ok", "re": re, "relation": relation,
                "user": {"id": other, "username": name}});
            let _ = outbox.send(Message::Text(ok.to_string().into()));
        }
        "send" => send(state, me, frame, outbox).await?,
        _ => return Err(error_frame(re, "bad_frame", "unknown frame type")),
    }
    Ok(())
}

/// A message as stored (without conversation and seq: the key says them) and as sent.
#[derive(Serialize)]
struct Stored<'a> {
    id: MessageId,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    sender: UserId,
    body: &'a str,
    sent_at: u64,
    idempotency_key: Option<&'a str>,
}

/// The per-message path: friend check, store, ack, deliver.
async fn send(state: &State, me: UserId, frame: Frame, outbox: &Outbox) -> Result<(), Message> {
    let re = frame.id.as_deref();
    let (Some(conversation), Some(body)) = (frame.conversation.as_deref(), frame.body) else {
        return Err(error_frame(
            re,
            "bad_request",
            "conversation and body required",
        ));
    };
    let conversation: ConversationId = conversation
        .parse()
        .map_err(|_| error_frame(re, "bad_request", "bad conversation"))?;
    let peer = match conversation.participants() {
        Some((a, b)) if a == me => b,
        Some((a, b)) if b == me => a,
        _ => return Err(error_frame(re, "not_member", "not your conversation")),
    };
    match state.are_friends(me, peer).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(error_frame(
                re,
                "not_friends",
                "you can only message friends",
            ));
        }
        Err(e) => return Err(error_frame(re, "internal", &e.to_string())),
    }
    let conv = conversation.to_string();
    let mut message = Stored {
        id: MessageId::new_v7(),
        conversation: None,
        seq: None,
        sender: me,
        body: &body,
        sent_at: now_ms(),
        idempotency_key: frame.idempotency_key.as_deref(),
    };
    let stored =
        serde_json::to_vec(&message).map_err(|e| error_frame(re, "internal", &e.to_string()))?;
    let seq = state
        .store(&conv, stored)
        .await
        .map_err(|e| error_frame(re, "internal", &e.to_string()))?;
    // Serialized once, shared by the ack and the event.
    message.conversation = Some(&conv);
    message.seq = Some(seq);
    let message =
        serde_json::to_string(&message).map_err(|e| error_frame(re, "internal", &e.to_string()))?;
    let re = serde_json::to_string(&re).unwrap_or_else(|_| "null".into());
    let _ = outbox.send(Message::Text(
        format!(r#"{{"type":"sent","re":{re},"duplicate":false,"message":{message}}}"#).into(),
    ));
    let peer_outbox = state
        .conns
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&peer)
        .cloned();
    if let Some(tx) = peer_outbox {
        let _ = tx.send(Message::Text(
            format!(r#"{{"type":"message","message":{message}}}"#).into(),
        ));
    }
    Ok(())
}
