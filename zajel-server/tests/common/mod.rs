//! Shared helpers: an in-process server on a free loopback port, a tiny HTTP/1.1 client, and a
//! WebSocket client that matches answers by request id.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use zajel_core::Store;
use zajel_server::{Engine, ServerConfig};

/// How long `expect` waits for a frame.
pub const WAIT: Duration = Duration::from_secs(10);

/// A config with cheap password hashing (tests register many users).
pub fn test_config() -> ServerConfig {
    ServerConfig {
        argon2_memory_kib: 256,
        argon2_iterations: 1,
        ..ServerConfig::default()
    }
}

/// [`test_config`] with the per-address register and login throttles wide open: for tests that
/// register and sign in many users from one address (loopback).
pub fn open_config() -> ServerConfig {
    ServerConfig {
        register_per_address_per_minute: 1_000_000,
        login_attempts_per_address_per_minute: 1_000_000,
        ..test_config()
    }
}

/// [`test_config`] for tests that push many large messages: 16 KiB bodies, and the per-socket
/// rate limit out of the way.
pub fn bulk_config() -> ServerConfig {
    ServerConfig {
        max_body_bytes: 16 * 1024,
        rate_per_second: 100_000,
        rate_burst: 100_000,
        ..test_config()
    }
}

/// An engine served in-process on 127.0.0.1:0.
pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: Engine,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start(store: Arc<dyn Store>, config: ServerConfig) -> Self {
        Self::serve(Engine::new(store, config)).await
    }

    /// Serves an already built engine.
    pub async fn serve(engine: Engine) -> Self {
        let app = engine.router();
        Self::serve_app(engine, app).await
    }

    /// Serves `app`: an application router that merged `engine.router()` with more routes
    /// (OpenID Connect sign-in, an app's own authenticator).
    pub async fn serve_app(engine: Engine, app: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(zajel_server::serve_router(
            listener,
            app,
            engine.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            addr,
            engine,
            stop: Some(tx),
            task,
        }
    }

    /// On a fresh in-memory store with [`test_config`].
    pub async fn memory() -> Self {
        Self::memory_with(test_config()).await
    }

    /// On a fresh in-memory store with `config`.
    pub async fn memory_with(config: ServerConfig) -> Self {
        Self::start(Arc::new(zajel_core::MemoryStore::new()), config).await
    }

    /// [`TestServer::stop`] with `clients` still connected, as a real client is at a shutdown:
    /// each reads its `going_away` and the close (1001) and answers it. A client nobody reads
    /// never answers, and the server's teardown waits out its close linger (1 s) for it.
    pub async fn stop_with(self, clients: impl IntoIterator<Item = Client>) {
        let closes = futures_util::future::join_all(clients.into_iter().map(|mut c| async move {
            let (code, frames) = c.expect_close().await;
            assert_eq!(code, 1001, "{}: {frames:?}", c.name);
        }));
        tokio::join!(self.stop(), closes);
    }

    /// Triggers graceful shutdown and waits for `serve` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task")
            .expect("serve ok");
    }
}

/// The issuer of the OpenID Connect provider [`with_oidc_routes`] configures: nothing listens
/// there.
#[cfg(feature = "oidc")]
pub const UNCONTACTED_ISSUER: &str = "http://127.0.0.1:9";

/// `engine`'s router with the OpenID Connect routes merged, for one provider (`test`, at
/// [`UNCONTACTED_ISSUER`]) that is never contacted: enough for the routes that only read and
/// write the store (`/api/identities`, `/api/identities/unlink`).
#[cfg(feature = "oidc")]
pub fn with_oidc_routes(engine: &Engine) -> axum::Router {
    use zajel_server::identity::oidc::{OidcConfig, OidcProvider, OidcSignIn};
    let provider = OidcProvider::generic("test", "Test", UNCONTACTED_ISSUER, "client", None);
    let config = OidcConfig {
        providers: vec![provider],
        ..OidcConfig::default()
    };
    let oidc = OidcSignIn::new(engine.clone(), config).expect("oidc configuration");
    engine.router().merge(oidc.router())
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`); a body is sent as
/// `application/json`.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let body = body.map(|b| (Some("application/json"), b));
    http_with_type(addr, method, path, body, headers).await
}

/// Like [`http`], with the body's `Content-Type` given (`None`: no such header).
pub async fn http_with_type(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(Option<&str>, &str)>,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some((content_type, b)) = body {
        if let Some(t) = content_type {
            req.push_str(&format!("Content-Type: {t}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    if let Some((_, b)) = body {
        req.push_str(b);
    }
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("http response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("http head");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A registered user.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: String,
    pub username: String,
    pub token: String,
}

pub async fn register(addr: SocketAddr, username: &str) -> Account {
    let body = json!({"username": username, "password": "correct horse battery"}).to_string();
    let res = http(addr, "POST", "/api/register", Some(&body), &[]).await;
    assert_eq!(res.status, 201, "register {username}: {}", res.body);
    let v = res.json();
    Account {
        id: v["user"]["id"].as_str().expect("user id").to_owned(),
        username: v["user"]["username"].as_str().expect("username").to_owned(),
        token: v["token"].as_str().expect("token").to_owned(),
    }
}

/// The direct conversation id of two users.
pub fn dm(a: &Account, b: &Account) -> String {
    let a: zajel_core::UserId = a.id.parse().expect("uuid");
    let b: zajel_core::UserId = b.id.parse().expect("uuid");
    zajel_core::ConversationId::direct(a, b).to_string()
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client speaking the Zajel protocol.
pub struct Client {
    ws: Ws,
    next_id: u64,
    /// Frames received while waiting for something else.
    pending: VecDeque<Value>,
    pub name: String,
    /// How long a read waits for the next frame before the test fails ([`WAIT`]); longer for
    /// a client whose next frame legitimately waits its turn (a queued replay).
    pub wait: Duration,
}

impl Client {
    pub async fn connect(addr: SocketAddr, name: &str) -> Self {
        Self::connect_with(addr, name, &[]).await
    }

    pub async fn connect_with(addr: SocketAddr, name: &str, headers: &[(&str, &str)]) -> Self {
        let mut req = format!("ws://{addr}/ws")
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "zajel.v1".parse().expect("header"),
        );
        for (k, v) in headers {
            req.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        let (ws, res) = tokio_tungstenite::connect_async(req)
            .await
            .expect("ws connect");
        assert_eq!(
            res.headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some("zajel.v1")
        );
        Self {
            ws,
            next_id: 0,
            pending: VecDeque::new(),
            wait: WAIT,
            name: name.to_owned(),
        }
    }

    /// Connects and authenticates (no resume); returns the `auth_ok` frame.
    pub async fn login(addr: SocketAddr, account: &Account) -> (Self, Value) {
        let mut c = Self::connect(addr, &account.username).await;
        let ok = c.auth(&account.token, None).await;
        assert_eq!(ok["type"], "auth_ok", "{}: {ok}", c.name);
        (c, ok)
    }

    pub fn id(&mut self) -> String {
        self.next_id += 1;
        format!("r{}", self.next_id)
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("ws send");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("ws send");
    }

    /// The next frame (pending ones first), or the close code if the server closes.
    pub async fn next_or_close(&mut self) -> Result<Value, u16> {
        match self.pending.pop_front() {
            Some(f) => Ok(f),
            None => self.read_socket().await,
        }
    }

    /// The next text frame from the socket (ignores control frames), or the close code.
    async fn read_socket(&mut self) -> Result<Value, u16> {
        loop {
            let wait = self.wait;
            let msg = tokio::time::timeout(wait, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{}: no frame within {wait:?}", self.name))
                .unwrap_or_else(|| panic!("{}: connection ended", self.name))
                .unwrap_or_else(|e| panic!("{}: ws error {e}", self.name));
            match msg {
                Message::Text(t) => {
                    return Ok(serde_json::from_str(t.as_str()).expect("server sends JSON"));
                }
                Message::Close(c) => {
                    self.answer_close().await;
                    return Err(c.map(|c| u16::from(c.code)).unwrap_or(1005));
                }
                _ => {}
            }
        }
    }

    /// The next text frame from the socket (ignores control frames); panics on close.
    async fn read(&mut self) -> Value {
        let name = self.name.clone();
        self.read_socket()
            .await
            .unwrap_or_else(|code| panic!("{name}: closed unexpectedly: {code}"))
    }

    /// Sends `frame` with a fresh `id` and returns the frame answering it (`re` == id).
    /// Other frames that arrive meanwhile are kept for `expect`.
    pub async fn call(&mut self, mut frame: Value) -> Value {
        let id = self.id();
        frame["id"] = json!(id);
        self.send_raw(&frame.to_string()).await;
        self.answer(&id).await
    }

    /// Waits for the frame answering `id`.
    pub async fn answer(&mut self, id: &str) -> Value {
        if let Some(i) = self.pending.iter().position(|f| f["re"] == id) {
            return self.pending.remove(i).expect("index");
        }
        loop {
            let f = self.read().await;
            if f["re"] == id {
                return f;
            }
            self.pending.push_back(f);
        }
    }

    /// Sends `auth` (with optional resume cursors) and returns the answer.
    pub async fn auth(&mut self, token: &str, resume: Option<Value>) -> Value {
        let mut f = json!({"type": "auth", "protocol": 1, "token": token});
        if let Some(r) = resume {
            f["resume"] = r;
        }
        self.call(f).await
    }

    /// The next event or frame of type `ty`. Presence events are skipped unless asked for;
    /// anything else of another type is a test failure.
    pub async fn expect(&mut self, ty: &str) -> Value {
        loop {
            let f = match self.pending.pop_front() {
                Some(f) => f,
                None => self.read().await,
            };
            if f["type"] == ty {
                return f;
            }
            if f["type"] == "presence" {
                continue;
            }
            panic!("{}: expected {ty}, got {f}", self.name);
        }
    }

    /// The frame answering `id` if it arrives within `ms` (requests that answer nothing on
    /// success, like `typing`, give `None`).
    pub async fn answer_within(&mut self, id: &str, ms: u64) -> Option<Value> {
        tokio::time::timeout(Duration::from_millis(ms), self.answer(id))
            .await
            .ok()
    }

    /// Every frame but presence that arrives within `ms` (plus any kept from before).
    pub async fn frames_within(&mut self, ms: u64) -> Vec<Value> {
        let mut out: Vec<Value> = self.pending.drain(..).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        while let Ok(next) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            match next {
                Some(Ok(Message::Text(t))) => {
                    out.push(serde_json::from_str(t.as_str()).expect("json"));
                }
                Some(Ok(Message::Close(c))) => panic!("{}: closed: {c:?}", self.name),
                Some(Ok(_)) => {}
                other => panic!("{}: connection ended: {other:?}", self.name),
            }
        }
        out.retain(|f| f["type"] != "presence");
        out
    }

    /// Asserts nothing but presence arrives within `ms`.
    pub async fn expect_silence(&mut self, ms: u64) {
        self.pending.retain(|f| f["type"] == "presence");
        assert!(
            self.pending.is_empty() || self.pending.iter().all(|f| f["type"] == "presence"),
            "{}: unexpected frames {:?}",
            self.name,
            self.pending
        );
        self.pending.clear();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let f: Value = serde_json::from_str(t.as_str()).expect("json");
                    assert_eq!(f["type"], "presence", "{}: unexpected frame {f}", self.name);
                }
                Ok(Some(Ok(Message::Close(c)))) => panic!("{}: closed: {c:?}", self.name),
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("{}: connection ended: {other:?}", self.name),
            }
        }
    }

    /// Waits for the server to close; returns the close code. Text frames before the close
    /// are returned too.
    pub async fn expect_close(&mut self) -> (u16, Vec<Value>) {
        let mut frames: Vec<Value> = self.pending.drain(..).collect();
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{}: not closed within {WAIT:?}", self.name))
            {
                Some(Ok(Message::Text(t))) => {
                    frames.push(serde_json::from_str(t.as_str()).expect("json"));
                }
                Some(Ok(Message::Close(c))) => {
                    self.answer_close().await;
                    return (c.map(|c| u16::from(c.code)).unwrap_or(1005), frames);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("{}: error instead of close frame: {e}", self.name),
                None => panic!("{}: ended without close frame", self.name),
            }
        }
    }

    /// Sends the echo of the server's close, which tungstenite queued when it read the close
    /// but only sends on the next read, write or flush: as a real client does, so the server
    /// stops waiting for it (it lingers up to 1 s) and its teardown is done.
    async fn answer_close(&mut self) {
        let _ = tokio::time::timeout(WAIT, self.ws.flush()).await;
    }

    /// Asserts the connection is usable: a `ping` gets its `pong`.
    pub async fn assert_alive(&mut self) {
        let pong = self.call(json!({"type": "ping"})).await;
        assert_eq!(pong["type"], "pong", "{}: {pong}", self.name);
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Drain until the server's close so the server side has finished its teardown.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Sends a message and returns the `sent` ack.
    pub async fn send_message(&mut self, conversation: &str, body: &str, key: &str) -> Value {
        let ack = self
            .call(json!({"type": "send", "conversation": conversation, "body": body, "idempotency_key": key}))
            .await;
        assert_eq!(ack["type"], "sent", "{}: {ack}", self.name);
        ack
    }

    /// `history` request; returns the answer.
    pub async fn history(&mut self, conversation: &str, extra: Value) -> Value {
        let mut f = json!({"type": "history", "conversation": conversation});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                f[k] = v;
            }
        }
        self.call(f).await
    }
}

/// Sequences of the messages in a `history` answer.
pub fn seqs(history: &Value) -> Vec<u64> {
    history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

/// Makes `a` and `b` friends over their connections; drains the friend events.
pub async fn befriend(a: &mut Client, a_acc: &Account, b: &mut Client, b_acc: &Account) {
    let r = a
        .call(json!({"type": "friend_request", "username": b_acc.username}))
        .await;
    assert_eq!(r["type"], "friend_ok", "{r}");
    b.expect("friend").await;
    let r = b
        .call(json!({"type": "friend_accept", "user_id": a_acc.id}))
        .await;
    assert_eq!(r["relation"], "friends", "{r}");
    a.expect("friend").await;
}

/// alice and bob: registered, each signed in on one connection, and friends.
pub struct Pair {
    pub alice: Account,
    pub bob: Account,
    pub a: Client,
    pub b: Client,
    /// Their direct conversation.
    pub conv: String,
}

/// Registers alice and bob at `addr`, signs each in and makes them friends.
pub async fn alice_and_bob(addr: SocketAddr) -> Pair {
    let alice = register(addr, "alice").await;
    let bob = register(addr, "bob").await;
    let (mut a, _) = Client::login(addr, &alice).await;
    let (mut b, _) = Client::login(addr, &bob).await;
    befriend(&mut a, &alice, &mut b, &bob).await;
    let conv = dm(&alice, &bob);
    Pair {
        alice,
        bob,
        a,
        b,
        conv,
    }
}

/// [`alice_and_bob`], with one message from alice (seq 1) that bob has received.
pub async fn alice_and_bob_after_hello(addr: SocketAddr) -> Pair {
    let mut p = alice_and_bob(addr).await;
    p.a.send_message(&p.conv, "hello", "k1").await;
    p.b.expect("message").await;
    p
}

/// Logs `a_acc` in at `a_addr` and `b_acc` at `b_addr` (e.g. two nodes) and makes them
/// friends; returns their connections.
pub async fn friends_at(
    a_addr: SocketAddr,
    a_acc: &Account,
    b_addr: SocketAddr,
    b_acc: &Account,
) -> (Client, Client) {
    let (mut a, _) = Client::login(a_addr, a_acc).await;
    let (mut b, _) = Client::login(b_addr, b_acc).await;
    befriend(&mut a, a_acc, &mut b, b_acc).await;
    (a, b)
}

/// `a` sends `k1` and `b` answers with `k2` in `conv` (seqs 1 and 2): each arrives live at the
/// other, as the message that was acknowledged.
pub async fn exchange(a: &mut Client, b: &mut Client, conv: &str) {
    let ack = a.send_message(conv, "hello from A", "k1").await;
    let m = b.expect("message").await;
    assert_eq!(m["message"]["id"], ack["message"]["id"]);
    assert_eq!(m["message"]["body"], "hello from A");
    let ack = b.send_message(conv, "hello from B", "k2").await;
    let m = a.expect("message").await;
    assert_eq!(m["message"]["id"], ack["message"]["id"]);
    assert_eq!(m["message"]["seq"], 2);
}

/// `POST /api/logout-all` with `token`; asserts 204.
pub async fn logout_all(addr: SocketAddr, token: &str) {
    let bearer = format!("Bearer {token}");
    let r = http(
        addr,
        "POST",
        "/api/logout-all",
        None,
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 204);
}

/// A `zajel-server` binary run as a child process.
pub struct Binary {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Binary {
    /// Starts the binary with `args` (plus `--listen 127.0.0.1:0`) and waits for its
    /// "listening on" line.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(args, &[])
    }

    /// Like `start`, with extra environment variables.
    pub fn start_with(args: &[&str], envs: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_zajel-server"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .envs(envs.iter().copied())
            .env("ZAJEL_ARGON2_MEMORY_KIB", "256")
            .env("ZAJEL_ARGON2_ITERATIONS", "1")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn zajel-server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("zajel-server printed its address")
                .expect("read stdout");
            if let Some(rest) = line.strip_prefix("zajel-server listening on http://") {
                break rest.trim().parse().expect("address");
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, addr }
    }

    /// Sends SIGTERM and waits for the exit status code.
    pub fn terminate(mut self) -> Option<i32> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "zajel-server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Changes what the Redis at `port` lets its default user (the store's) run, e.g. `-xadd`
/// (refuse every command of that name, inside scripts too) then `+xadd`: a real Redis that
/// refuses one kind of write or read while everything else works.
pub fn redis_acl(port: u16, rule: &str) {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "ACL", "SETUSER", "default", rule])
        .output()
        .expect("run redis-cli");
    let answer = String::from_utf8_lossy(&out.stdout);
    assert_eq!(answer.trim(), "OK", "ACL SETUSER default {rule}: {answer}");
}

/// Waits (up to [`WAIT`]) until the Redis at `port` has refused `command` to a client
/// (`ACL LOG` lists it): the write or read under test was tried and failed.
pub async fn wait_for_acl_refusal(port: u16, command: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "ACL", "LOG"])
            .output()
            .expect("run redis-cli");
        if String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == command)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis did not refuse {command} within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
