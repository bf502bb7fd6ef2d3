//! The connection driver: one task per client that owns the socket, the outbox, the resume
//! cursors and the pending requests, and talks to the [`crate::Client`] handles through a
//! command channel. Nothing here is platform specific: sockets come from a
//! [`Connector`] and time from [`crate::rt`].

use crate::backoff::Backoff;
use crate::cursor::Cursors;
use crate::error::Error;
use crate::event::{ConnectionState, Event, HistoryQuery, Target};
use crate::rt;
use crate::transport::{Connector, Incoming, Socket};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use zajel_core::protocol::{ClientFrame, ErrorFrame, Limits, RequestId, ServerFrame};
use zajel_core::{ConversationId, ErrorCode, Message, User, UserId};

/// Tuning knobs (see [`crate::ClientBuilder`]).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub backoff: Backoff,
    /// Give up after this many failed attempts in a row (None: never).
    pub max_attempts: Option<u32>,
    /// Budget for connect + auth + sync of one attempt.
    pub connect_timeout: Duration,
    /// Budget for a request (not a send) from the call to the answer.
    pub request_timeout: Duration,
    /// Ping when nothing was sent for this long (capped by a third of the server's idle timeout).
    pub ping_interval: Duration,
    /// Drop the connection when a ping is not answered within this long.
    pub pong_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            max_attempts: None,
            connect_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
        }
    }
}

/// A request other than `send`.
#[derive(Clone, Debug)]
pub(crate) enum ReqKind {
    FriendRequest(String),
    FriendAccept(UserId),
    FriendDecline(UserId),
    FriendCancel(UserId),
    FriendRemove(UserId),
    Block(UserId),
    Unblock(UserId),
    FriendsList,
    History(ConversationId, HistoryQuery),
    Conversations(Option<u32>),
    MarkRead(ConversationId, u64),
    Ping,
}

impl ReqKind {
    fn frame(&self, id: RequestId) -> ClientFrame {
        use ReqKind::*;
        match self.clone() {
            FriendRequest(username) => ClientFrame::FriendRequest { id, username },
            FriendAccept(user_id) => ClientFrame::FriendAccept { id, user_id },
            FriendDecline(user_id) => ClientFrame::FriendDecline { id, user_id },
            FriendCancel(user_id) => ClientFrame::FriendCancel { id, user_id },
            FriendRemove(user_id) => ClientFrame::FriendRemove { id, user_id },
            Block(user_id) => ClientFrame::Block { id, user_id },
            Unblock(user_id) => ClientFrame::Unblock { id, user_id },
            FriendsList => ClientFrame::FriendsList { id },
            History(conversation, q) => ClientFrame::History {
                id,
                conversation,
                before: q.before,
                after: q.after,
                limit: q.limit,
            },
            Conversations(limit) => ClientFrame::Conversations { id, limit },
            MarkRead(conversation, seq) => ClientFrame::MarkRead {
                id,
                conversation,
                seq,
            },
            Ping => ClientFrame::Ping { id },
        }
    }

    /// Reads and idempotent writes are re-sent after a reconnect; friend operations are not
    /// (their outcome is unknown once sent).
    fn repeatable(&self) -> bool {
        matches!(
            self,
            ReqKind::FriendsList
                | ReqKind::History(..)
                | ReqKind::Conversations(_)
                | ReqKind::MarkRead(..)
                | ReqKind::Ping
        )
    }
}

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// What the handles ask of the driver.
pub(crate) enum Command {
    Request {
        kind: ReqKind,
        reply: Reply<ServerFrame>,
    },
    Send {
        target: Target,
        body: String,
        key: String,
        reply: Reply<Message>,
    },
    Typing {
        conversation: ConversationId,
        active: bool,
    },
    /// Stop for good, ending in the given terminal state.
    Stop(ConnectionState),
}

/// State shared between the driver and the handles.
pub(crate) struct Shared {
    pub state: watch::Sender<ConnectionState>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Event>>>,
    pub user: Mutex<Option<User>>,
    pub cursors: Mutex<Cursors>,
    pub last_error: Mutex<Option<Error>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn new(cursors: Cursors) -> Self {
        Self {
            state: watch::Sender::new(ConnectionState::Connecting),
            subscribers: Mutex::new(Vec::new()),
            user: Mutex::new(None),
            cursors: Mutex::new(cursors),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn subscribe(&self) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        // A stopped client's streams end at once.
        if !self.state.borrow().is_terminal() {
            lock(&self.subscribers).push(tx);
        }
        rx
    }

    fn emit(&self, event: Event) {
        lock(&self.subscribers).retain(|s| s.send(event.clone()).is_ok());
    }

    fn set_state(&self, s: ConnectionState) {
        if *self.state.borrow() != s {
            self.state.send_replace(s.clone());
            self.emit(Event::State(s));
        }
    }

    fn set_error(&self, e: Error) {
        *lock(&self.last_error) = Some(e);
    }
}

struct OutboxEntry {
    key: String,
    target: Target,
    body: String,
    reply: Option<Reply<Message>>,
    /// Request id while in flight on the current connection.
    inflight: Option<String>,
    /// Not before this time (ms, [`rt::now_ms`]) after a retryable error.
    not_before: u64,
    retries: u32,
}

struct PendingRequest {
    kind: ReqKind,
    reply: Reply<ServerFrame>,
    deadline: u64,
    not_before: u64,
    retries: u32,
}

enum Inflight {
    Request(PendingRequest),
    Send,
    CatchUp(ConversationId),
    Ping,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Authenticating,
    Syncing,
    Online,
}

/// How a connection ended.
enum End {
    /// Stop for good.
    Stop(ConnectionState),
    /// Reconnect; `online` says whether this connection got online (resets the attempt count),
    /// `hint` is a server-suggested delay.
    Retry {
        online: bool,
        hint: Option<Duration>,
    },
}

/// Close code: the session token is unknown, expired or revoked.
const CLOSE_UNAUTHENTICATED: u16 = 4001;
/// Retryable failures are retried this many times before the call fails.
const MAX_RETRIES: u32 = 8;
/// Page size for catching up truncated conversations.
const CATCH_UP_PAGE: u32 = 200;

pub(crate) struct Driver {
    shared: Arc<Shared>,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    connector: Connector,
    ws_url: String,
    token: String,
    config: Config,
    next_id: u64,
    outbox: VecDeque<OutboxEntry>,
    pending: VecDeque<PendingRequest>,
    inflight: HashMap<String, Inflight>,
    me: Option<User>,
    limits: Option<Limits>,
    synced_once: bool,
}

/// One live connection.
struct Conn {
    socket: Socket,
    phase: Phase,
    auth_id: String,
    started: u64,
    last_sent: u64,
    ping: Option<(String, u64)>,
    hint: Option<Duration>,
}

enum Wake {
    Sock(Option<Incoming>),
    Cmd(Option<Command>),
    Timer,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        cmd_rx: mpsc::UnboundedReceiver<Command>,
        connector: Connector,
        ws_url: String,
        token: String,
        config: Config,
    ) -> Self {
        Self {
            shared,
            cmd_rx,
            connector,
            ws_url,
            token,
            config,
            next_id: 0,
            outbox: VecDeque::new(),
            pending: VecDeque::new(),
            inflight: HashMap::new(),
            me: None,
            limits: None,
            synced_once: false,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut attempt: u32 = 0;
        let mut delay: Option<Duration> = None;
        loop {
            if let Some(d) = delay {
                self.shared.set_state(ConnectionState::Reconnecting {
                    attempt,
                    retry_in: d,
                });
                if let Some(stop) = self.wait_offline(d).await {
                    return self.finish(stop);
                }
            }
            match self.connection().await {
                End::Stop(state) => return self.finish(state),
                End::Retry { online, hint } => {
                    if online {
                        attempt = 0;
                    }
                    attempt = attempt.saturating_add(1);
                    if self.config.max_attempts.is_some_and(|m| attempt > m) {
                        return self.finish(ConnectionState::Closed);
                    }
                    let backoff = self.config.backoff.delay(attempt, rt::random_unit());
                    delay = Some(match hint {
                        // Spread a server-suggested delay over [hint, 1.5 × hint].
                        Some(h) => h.mul_f64(1.0 + 0.5 * rt::random_unit()),
                        None => backoff,
                    });
                }
            }
        }
    }

    fn finish(mut self, state: ConnectionState) {
        let err = match state {
            ConnectionState::SignedOut => Error::SignedOut,
            _ => Error::Closed,
        };
        for e in self.outbox.drain(..) {
            if let Some(r) = e.reply {
                let _ = r.send(Err(err.clone()));
            }
        }
        for p in self.pending.drain(..) {
            let _ = p.reply.send(Err(err.clone()));
        }
        for (_, i) in self.inflight.drain() {
            if let Inflight::Request(p) = i {
                let _ = p.reply.send(Err(err.clone()));
            }
        }
        self.cmd_rx.close();
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            match cmd {
                Command::Request { reply, .. } => {
                    let _ = reply.send(Err(err.clone()));
                }
                Command::Send { reply, .. } => {
                    let _ = reply.send(Err(err.clone()));
                }
                _ => {}
            }
        }
        self.shared.set_state(state);
        // End every event stream.
        lock(&self.shared.subscribers).clear();
    }

    fn new_id(&mut self, prefix: char) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    /// Sleeps `d` while queueing commands. Returns a terminal state if asked to stop.
    async fn wait_offline(&mut self, d: Duration) -> Option<ConnectionState> {
        let mut timer = rt::sleep(d);
        loop {
            let wake = poll_fn(|cx| {
                if let Poll::Ready(c) = self.cmd_rx.poll_recv(cx) {
                    return Poll::Ready(Wake::Cmd(c));
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Timer);
                }
                Poll::Pending
            })
            .await;
            match wake {
                Wake::Cmd(None) => return Some(ConnectionState::Closed),
                Wake::Cmd(Some(Command::Stop(s))) => return Some(s),
                Wake::Cmd(Some(cmd)) => self.queue_command(cmd),
                Wake::Timer => {
                    self.expire_requests(rt::now_ms());
                    return None;
                }
                Wake::Sock(_) => {}
            }
        }
    }

    /// Accepts a command while not online.
    fn queue_command(&mut self, cmd: Command) {
        let now = rt::now_ms();
        match cmd {
            Command::Request { kind, reply } => self.pending.push_back(PendingRequest {
                kind,
                reply,
                deadline: now + ms(self.config.request_timeout),
                not_before: 0,
                retries: 0,
            }),
            Command::Send {
                target,
                body,
                key,
                reply,
            } => {
                if let Err(e) = self.check_body(&body) {
                    let _ = reply.send(Err(e));
                    return;
                }
                self.outbox.push_back(OutboxEntry {
                    key,
                    target,
                    body,
                    reply: Some(reply),
                    inflight: None,
                    not_before: 0,
                    retries: 0,
                });
            }
            // Typing is ephemeral: nothing to do offline.
            Command::Typing { .. } | Command::Stop(_) => {}
        }
    }

    fn check_body(&self, body: &str) -> Result<(), Error> {
        if body.trim().is_empty() {
            return Err(Error::rejected(
                ErrorCode::EmptyBody,
                "message body is empty",
            ));
        }
        let max = self.limits.map_or(zajel_core::limits::BODY_MAX_BYTES, |l| {
            l.max_body_bytes as usize
        });
        if body.len() > max {
            return Err(Error::rejected(
                ErrorCode::BodyTooLong,
                format!("message body is {} bytes; the maximum is {max}", body.len()),
            ));
        }
        Ok(())
    }

    fn expire_requests(&mut self, now: u64) {
        let mut kept = VecDeque::new();
        for p in self.pending.drain(..) {
            if p.deadline <= now {
                let _ = p.reply.send(Err(Error::Timeout));
            } else {
                kept.push_back(p);
            }
        }
        self.pending = kept;
        let expired: Vec<String> = self
            .inflight
            .iter()
            .filter(|(_, i)| matches!(i, Inflight::Request(p) if p.deadline <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            if let Some(Inflight::Request(p)) = self.inflight.remove(&k) {
                let _ = p.reply.send(Err(Error::Timeout));
            }
        }
    }

    /// One connection: connect, authenticate, sync, serve. Returns how it ended.
    async fn connection(&mut self) -> End {
        let connect = (self.connector)(self.ws_url.clone());
        let socket = {
            let mut connect = connect;
            let mut timer = rt::sleep(self.config.connect_timeout);
            poll_fn(|cx| {
                if let Poll::Ready(r) = connect.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await
        };
        let socket = match socket {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                self.shared.set_error(e);
                return End::Retry {
                    online: false,
                    hint: None,
                };
            }
            None => {
                self.shared.set_error(Error::Timeout);
                return End::Retry {
                    online: false,
                    hint: None,
                };
            }
        };
        let now = rt::now_ms();
        let mut conn = Conn {
            socket,
            phase: Phase::Authenticating,
            auth_id: self.new_id('a'),
            started: now,
            last_sent: now,
            ping: None,
            hint: None,
        };
        let resume = lock(&self.shared.cursors).resume_state();
        let auth = ClientFrame::Auth {
            id: req_id(&conn.auth_id),
            protocol: zajel_core::protocol::PROTOCOL_VERSION,
            token: Some(self.token.clone()),
            resume: Some(resume),
        };
        send_frame(&mut conn, &auth);
        let end = self.serve(&mut conn).await;
        self.connection_lost();
        let online = conn.phase == Phase::Online;
        match end {
            End::Retry { hint, .. } => End::Retry {
                online,
                hint: hint.or(conn.hint),
            },
            stop => stop,
        }
    }

    async fn serve(&mut self, conn: &mut Conn) -> End {
        loop {
            let deadline = self.next_deadline(conn);
            let mut timer = rt::sleep(Duration::from_millis(deadline.saturating_sub(rt::now_ms())));
            let wake = poll_fn(|cx| {
                if let Poll::Ready(i) = conn.socket.rx.poll_recv(cx) {
                    return Poll::Ready(Wake::Sock(i));
                }
                if let Poll::Ready(c) = self.cmd_rx.poll_recv(cx) {
                    return Poll::Ready(Wake::Cmd(c));
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Timer);
                }
                Poll::Pending
            })
            .await;
            let flow = match wake {
                Wake::Sock(Some(Incoming::Text(text))) => match ServerFrame::decode(&text) {
                    Ok(frame) => self.on_frame(conn, frame),
                    // A frame we cannot parse at all: skip it rather than drop the connection.
                    Err(_) => None,
                },
                Wake::Sock(Some(Incoming::Closed { code, reason })) => {
                    Some(self.on_close(conn, code, reason))
                }
                Wake::Sock(None) => Some(End::Retry {
                    online: false,
                    hint: None,
                }),
                Wake::Cmd(None) => Some(End::Stop(ConnectionState::Closed)),
                Wake::Cmd(Some(Command::Stop(s))) => Some(End::Stop(s)),
                Wake::Cmd(Some(Command::Typing {
                    conversation,
                    active,
                })) => {
                    if conn.phase == Phase::Online {
                        let frame = ClientFrame::Typing {
                            id: None,
                            conversation,
                            active,
                        };
                        send_frame(conn, &frame);
                    }
                    None
                }
                Wake::Cmd(Some(cmd)) => {
                    self.queue_command(cmd);
                    if conn.phase == Phase::Online {
                        self.flush(conn);
                    }
                    None
                }
                Wake::Timer => self.on_timer(conn),
            };
            if let Some(end) = flow {
                return end;
            }
        }
    }

    fn next_deadline(&self, conn: &Conn) -> u64 {
        let mut d = u64::MAX;
        if conn.phase != Phase::Online {
            d = d.min(conn.started + ms(self.config.connect_timeout));
        } else {
            d = d.min(conn.last_sent + ms(self.ping_interval()));
            for e in &self.outbox {
                if e.inflight.is_none() && e.not_before > 0 {
                    d = d.min(e.not_before);
                }
            }
            for p in &self.pending {
                if p.not_before > 0 {
                    d = d.min(p.not_before);
                }
            }
        }
        if let Some((_, at)) = &conn.ping {
            d = d.min(at + ms(self.config.pong_timeout));
        }
        for p in &self.pending {
            d = d.min(p.deadline);
        }
        for i in self.inflight.values() {
            if let Inflight::Request(p) = i {
                d = d.min(p.deadline);
            }
        }
        d
    }

    fn ping_interval(&self) -> Duration {
        let mut i = self.config.ping_interval;
        if let Some(l) = self.limits {
            i = i.min(Duration::from_millis(l.idle_timeout_ms / 3).max(Duration::from_millis(100)));
        }
        i
    }

    fn on_timer(&mut self, conn: &mut Conn) -> Option<End> {
        let now = rt::now_ms();
        self.expire_requests(now);
        if conn.phase != Phase::Online && now >= conn.started + ms(self.config.connect_timeout) {
            self.shared.set_error(Error::Timeout);
            return Some(End::Retry {
                online: false,
                hint: None,
            });
        }
        if let Some((_, at)) = &conn.ping
            && now >= at + ms(self.config.pong_timeout)
        {
            self.shared.set_error(Error::Timeout);
            return Some(End::Retry {
                online: false,
                hint: None,
            });
        }
        if conn.phase == Phase::Online {
            if conn.ping.is_none() && now >= conn.last_sent + ms(self.ping_interval()) {
                let id = self.new_id('p');
                send_frame(conn, &ClientFrame::Ping { id: req_id(&id) });
                self.inflight.insert(id.clone(), Inflight::Ping);
                conn.ping = Some((id, now));
            }
            self.flush(conn);
        }
        None
    }

    fn on_close(&mut self, conn: &Conn, code: Option<u16>, reason: String) -> End {
        match code {
            // 4001: the token is unknown, expired or revoked (also after logout / logout-all).
            Some(CLOSE_UNAUTHENTICATED) => {
                self.shared.set_error(Error::SignedOut);
                End::Stop(ConnectionState::SignedOut)
            }
            Some(4008) => End::Retry {
                online: false,
                hint: Some(Duration::from_millis(50)),
            },
            _ => {
                self.shared.set_error(Error::Transport(format!(
                    "connection closed ({}){}",
                    code.map_or("no code".to_owned(), |c| c.to_string()),
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {reason}")
                    }
                )));
                End::Retry {
                    online: false,
                    hint: conn.hint,
                }
            }
        }
    }

    /// The connection is gone: requeue what can be repeated, fail what cannot.
    fn connection_lost(&mut self) {
        let mut requeue = Vec::new();
        for (_, i) in self.inflight.drain() {
            match i {
                Inflight::Request(p) if p.kind.repeatable() => requeue.push(p),
                Inflight::Request(p) => {
                    let _ = p.reply.send(Err(Error::ConnectionLost));
                }
                Inflight::Send | Inflight::CatchUp(_) | Inflight::Ping => {}
            }
        }
        for p in requeue.into_iter().rev() {
            self.pending.push_front(p);
        }
        for e in &mut self.outbox {
            e.inflight = None;
        }
    }

    /// Sends what is due: queued requests, then outbox entries, in order.
    fn flush(&mut self, conn: &mut Conn) {
        let now = rt::now_ms();
        let mut later = VecDeque::new();
        while let Some(p) = self.pending.pop_front() {
            if p.not_before > now {
                later.push_back(p);
                continue;
            }
            let id = self.new_id('r');
            send_frame(conn, &p.kind.frame(req_id(&id)));
            self.inflight.insert(id, Inflight::Request(p));
        }
        self.pending = later;
        let Some(me) = self.me.as_ref().map(|u| u.id) else {
            return;
        };
        for i in 0..self.outbox.len() {
            let due = {
                let e = &self.outbox[i];
                e.inflight.is_none() && e.not_before <= now
            };
            if !due {
                continue;
            }
            let id = self.new_id('s');
            let e = &mut self.outbox[i];
            let frame = ClientFrame::Send {
                id: req_id(&id),
                conversation: e.target.resolve(me),
                body: e.body.clone(),
                idempotency_key: e.key.clone(),
            };
            e.inflight = Some(id.clone());
            e.not_before = 0;
            send_frame(conn, &frame);
            self.inflight.insert(id, Inflight::Send);
        }
    }

    /// Completes the outbox entry with this key, if any. Returns whether one matched.
    fn complete_outbox(&mut self, message: &Message) -> bool {
        let Some(pos) = self
            .outbox
            .iter()
            .position(|e| e.key == message.idempotency_key)
        else {
            return false;
        };
        if let Some(e) = self.outbox.remove(pos) {
            if let Some(id) = e.inflight {
                self.inflight.remove(&id);
            }
            if let Some(r) = e.reply {
                let _ = r.send(Ok(message.clone()));
            }
        }
        true
    }

    /// A message from any source (event, replay, history page, ack): match the outbox, record
    /// the cursor. Returns true when the message is new to this client.
    fn observe(&mut self, message: &Message) -> bool {
        let mine = self.me.as_ref().is_some_and(|u| u.id == message.sender);
        let completed = mine && self.complete_outbox(message);
        let new = lock(&self.shared.cursors).record(&message.conversation, message.seq);
        if completed && new {
            self.shared.emit(Event::Sent(message.clone()));
            return false;
        }
        new
    }

    fn on_frame(&mut self, conn: &mut Conn, frame: ServerFrame) -> Option<End> {
        match frame {
            ServerFrame::AuthOk {
                re, user, limits, ..
            } if re.as_str() == conn.auth_id => {
                *lock(&self.shared.user) = Some(user.clone());
                self.me = Some(user);
                self.limits = Some(limits);
                conn.phase = Phase::Syncing;
                None
            }
            ServerFrame::Synced { re, state } if re.as_str() == conn.auth_id => {
                conn.phase = Phase::Online;
                let first = !self.synced_once;
                self.synced_once = true;
                {
                    // After a "from now" sync (a fresh device) conversations start at their end;
                    // after a replaying sync this is a no-op (all of them are tracked already).
                    let mut cursors = lock(&self.shared.cursors);
                    for summary in &state.conversations {
                        cursors.seed(&summary.conversation, summary.last_seq);
                    }
                }
                for c in &state.truncated {
                    let id = self.new_id('c');
                    let after = lock(&self.shared.cursors).watermark(c);
                    send_frame(conn, &catch_up(&id, c, after));
                    self.inflight.insert(id, Inflight::CatchUp(c.clone()));
                }
                self.shared.emit(Event::Synced {
                    conversations: state.conversations,
                    friends: state.friends,
                    first,
                });
                self.shared.set_state(ConnectionState::Online);
                self.flush(conn);
                None
            }
            ServerFrame::Error(e) => self.on_error(conn, e),
            ServerFrame::Sent { re, message, .. } => {
                self.inflight.remove(re.as_str());
                if let Some(pos) = self
                    .outbox
                    .iter()
                    .position(|e| e.inflight.as_deref() == Some(re.as_str()))
                {
                    // Make sure the key matches even if the server echoed another one.
                    self.outbox[pos].key = message.idempotency_key.clone();
                }
                let completed = self.complete_outbox(&message);
                let new = lock(&self.shared.cursors).record(&message.conversation, message.seq);
                if completed && new {
                    self.shared.emit(Event::Sent(message));
                }
                None
            }
            ServerFrame::Message { message } => {
                if self.observe(&message) {
                    let replayed = conn.phase != Phase::Online;
                    self.shared.emit(Event::Message { message, replayed });
                }
                None
            }
            ServerFrame::History {
                re,
                conversation,
                messages,
                has_more,
            } => {
                match self.inflight.remove(re.as_str()) {
                    Some(Inflight::CatchUp(c)) => {
                        for m in &messages {
                            if self.observe(m) {
                                self.shared.emit(Event::Message {
                                    message: m.clone(),
                                    replayed: true,
                                });
                            }
                        }
                        if has_more && !messages.is_empty() {
                            let id = self.new_id('c');
                            let after = lock(&self.shared.cursors).watermark(&c);
                            send_frame(conn, &catch_up(&id, &c, after));
                            self.inflight.insert(id, Inflight::CatchUp(c));
                        }
                    }
                    Some(Inflight::Request(p)) => {
                        for m in &messages {
                            self.observe(m);
                        }
                        let _ = p.reply.send(Ok(ServerFrame::History {
                            re,
                            conversation,
                            messages,
                            has_more,
                        }));
                    }
                    Some(other) => {
                        self.inflight.insert(re.as_str().to_owned(), other);
                    }
                    None => {}
                }
                None
            }
            ServerFrame::Pong { re } => {
                if conn.ping.as_ref().is_some_and(|(id, _)| id == re.as_str()) {
                    conn.ping = None;
                    self.inflight.remove(re.as_str());
                } else {
                    let f = ServerFrame::Pong { re: re.clone() };
                    self.answer(re, f);
                }
                None
            }
            ServerFrame::FriendOk { re, user, relation } => {
                let f = ServerFrame::FriendOk {
                    re: re.clone(),
                    user,
                    relation,
                };
                self.answer(re, f);
                None
            }
            ServerFrame::Friends { re, friends } => {
                let f = ServerFrame::Friends {
                    re: re.clone(),
                    friends,
                };
                self.answer(re, f);
                None
            }
            ServerFrame::Conversations { re, conversations } => {
                let f = ServerFrame::Conversations {
                    re: re.clone(),
                    conversations,
                };
                self.answer(re, f);
                None
            }
            ServerFrame::ReadOk {
                re,
                conversation,
                seq,
            } => {
                let f = ServerFrame::ReadOk {
                    re: re.clone(),
                    conversation,
                    seq,
                };
                self.answer(re, f);
                None
            }
            ServerFrame::Friend {
                user,
                relation,
                reason,
                at,
            } => {
                self.shared.emit(Event::Friend {
                    user,
                    relation,
                    reason,
                    at,
                });
                None
            }
            ServerFrame::Read {
                conversation,
                user,
                seq,
            } => {
                self.shared.emit(Event::Read {
                    conversation,
                    user,
                    seq,
                });
                None
            }
            ServerFrame::Typing {
                conversation,
                user,
                active,
            } => {
                self.shared.emit(Event::Typing {
                    conversation,
                    user,
                    active,
                });
                None
            }
            ServerFrame::Presence {
                user,
                online,
                last_seen,
            } => {
                self.shared.emit(Event::Presence {
                    user,
                    online,
                    last_seen,
                });
                None
            }
            ServerFrame::GoingAway {
                reconnect_after_ms, ..
            } => {
                conn.hint = Some(Duration::from_millis(reconnect_after_ms));
                None
            }
            // auth_ok/synced for another id, or a frame type from a newer server.
            ServerFrame::AuthOk { .. } | ServerFrame::Synced { .. } | ServerFrame::Unknown => None,
        }
    }

    fn answer(&mut self, re: RequestId, frame: ServerFrame) {
        if let Some(Inflight::Request(p)) = self.inflight.remove(re.as_str()) {
            let _ = p.reply.send(Ok(frame));
        }
    }

    fn on_error(&mut self, conn: &mut Conn, e: ErrorFrame) -> Option<End> {
        let Some(re) = e.re.clone() else {
            // A connection-level error without a request id.
            if e.code == ErrorCode::Unauthenticated {
                self.shared.set_error(Error::SignedOut);
                return Some(End::Stop(ConnectionState::SignedOut));
            }
            return None;
        };
        let retry_in = |retries: u32| {
            e.retry_after_ms
                .unwrap_or_else(|| ms(self.config.backoff.delay(retries + 1, rt::random_unit())))
        };
        if re.as_str() == conn.auth_id {
            let err = Error::from_frame(e.clone());
            self.shared.set_error(err.clone());
            return Some(if e.code == ErrorCode::Unauthenticated {
                End::Stop(ConnectionState::SignedOut)
            } else if e.code.is_retryable() {
                End::Retry {
                    online: false,
                    hint: e.retry_after_ms.map(Duration::from_millis),
                }
            } else {
                End::Stop(ConnectionState::Closed)
            });
        }
        if e.code == ErrorCode::Unauthenticated {
            // The session ended under us (revoked): nothing will succeed any more.
            self.shared.set_error(Error::SignedOut);
            return Some(End::Stop(ConnectionState::SignedOut));
        }
        match self.inflight.remove(re.as_str()) {
            Some(Inflight::Request(mut p)) => {
                if e.code.is_retryable() && p.retries < MAX_RETRIES {
                    p.not_before = rt::now_ms() + retry_in(p.retries);
                    p.retries += 1;
                    self.pending.push_back(p);
                } else {
                    let _ = p.reply.send(Err(Error::from_frame(e)));
                }
            }
            Some(Inflight::Send) => {
                let pos = self
                    .outbox
                    .iter()
                    .position(|x| x.inflight.as_deref() == Some(re.as_str()))?;
                let delay = retry_in(self.outbox[pos].retries);
                let entry = &mut self.outbox[pos];
                entry.inflight = None;
                if e.code.is_retryable() && entry.retries < MAX_RETRIES {
                    entry.retries += 1;
                    entry.not_before = rt::now_ms() + delay.max(1);
                } else if let Some(entry) = self.outbox.remove(pos)
                    && let Some(r) = entry.reply
                {
                    let _ = r.send(Err(Error::from_frame(e)));
                }
            }
            Some(Inflight::CatchUp(_)) | Some(Inflight::Ping) | None => {}
        }
        None
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn req_id(s: &str) -> RequestId {
    // Our ids are short ASCII ("r12"): always 1–64 characters.
    RequestId::new(s).expect("client request ids are short ASCII")
}

fn catch_up(id: &str, c: &ConversationId, after: u64) -> ClientFrame {
    ClientFrame::History {
        id: req_id(id),
        conversation: c.clone(),
        before: None,
        after: Some(after),
        limit: Some(CATCH_UP_PAGE),
    }
}

fn send_frame(conn: &mut Conn, frame: &ClientFrame) {
    conn.last_sent = rt::now_ms();
    // A send error means the socket is closing; its `Closed` report follows.
    let _ = conn.socket.tx.send(frame.encode());
}
