//! The connection driver: one task per client that owns the socket and talks to the
//! [`crate::Client`] handles through a command channel. Nothing here is platform specific:
//! sockets come from a [`Connector`], time from [`crate::rt`], persistence from a
//! [`Storage`].
//!
//! The parts, each in its own module and testable alone:
//! * [`outbox`]: the per-conversation ordered send queue and its visible states;
//! * [`requests`]: requests other than `send` and which of them survive a reconnect;
//! * [`catchup`]: paging in what resume and the live stream did not deliver;
//! * [`pacer`]: the client-side rate limit that keeps a backlog under the server's;
//! * [`events`]: push frames and the events they become.
//!
//! This file is the connection loop: connect, authenticate with bounded resume cursors,
//! serve frames and commands, and decide how (and whether) to reconnect.

mod catchup;
mod events;
mod outbox;
mod pacer;
mod requests;

pub(crate) use requests::ReqKind;

use crate::backoff::{Backoff, Cause, reconnect_delay};
use crate::cursor::Cursors;
use crate::error::Error;
use crate::event::{ConnectionState, Event, OutboxItem, SendState, Target};
use crate::rt::{self, BoxFuture};
use crate::storage::{Snapshot, Storage};
use crate::transport::{Connector, Incoming, Socket};
use crate::view::CachedView;
use catchup::CatchUp;
use outbox::{Outbox, SendReply};
use pacer::{MAX_RETRY_AFTER_MS, Pacer};
use requests::{PendingRequest, Reply, Requests};
use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use zajel_core::protocol::{ClientFrame, ErrorFrame, Limits, RequestId, ServerFrame};
use zajel_core::{ConversationId, ErrorCode, Message, User};

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
        reply: Option<SendReply>,
    },
    Retry {
        key: String,
        reply: Reply<()>,
    },
    Delete {
        key: String,
        reply: Reply<()>,
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
    /// The outbox as the UI sees it (mirrors the driver's).
    pub outbox: Mutex<Vec<OutboxItem>>,
    pub limits: Mutex<Option<Limits>>,
    /// The contact list cache (mirrors the driver's changes as they happen).
    pub view: Mutex<CachedView>,
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
            outbox: Mutex::new(Vec::new()),
            limits: Mutex::new(None),
            view: Mutex::new(CachedView::default()),
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

/// What a request id on the wire stands for.
enum Inflight {
    Request(PendingRequest),
    /// An outbox entry (by idempotency key).
    Send(String),
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
    /// Reconnect; `online` says whether this connection got online (resets the attempt count).
    Retry { online: bool, cause: Cause },
}

/// Close code: the session token is unknown, expired or revoked.
const CLOSE_UNAUTHENTICATED: u16 = 4001;
/// Close code: the server dropped a lagging connection (its queue overflowed).
const CLOSE_LAGGED: u16 = 4008;
/// Closes that retrying cannot fix: protocol error, unsupported data, invalid payload, frame
/// too large, missing extension.
const CLOSE_FATAL: &[u16] = &[1002, 1003, 1007, 1009, 1010];
/// Closes a whole population gets at once: going away, service restart, try again later.
const CLOSE_STORM: &[u16] = &[1001, 1012, 1013, CLOSE_LAGGED];
/// Retryable failures are retried this many times before the call fails.
const MAX_RETRIES: u32 = 8;
/// Resume cursors sent before the server's `max_frame_bytes` is known (the protocol's frames
/// are far smaller than any sensible server limit).
const FIRST_RESUME_BUDGET: usize = 16 * 1024;
/// Least time between two saves that only move cursors.
const CURSOR_SAVE_INTERVAL_MS: u64 = 500;

pub(crate) struct Driver {
    shared: Arc<Shared>,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    connector: Connector,
    ws_url: String,
    token: String,
    config: Config,
    next_id: u64,
    outbox: Outbox,
    requests: Requests,
    catchup: CatchUp,
    pacer: Pacer,
    inflight: HashMap<String, Inflight>,
    me: Option<User>,
    limits: Option<Limits>,
    synced_once: bool,
    storage: Option<Arc<dyn Storage>>,
    /// The user the loaded snapshot belonged to.
    stored_user: Option<zajel_core::UserId>,
    saving: Option<BoxFuture<'static, Result<(), Error>>>,
    /// The outbox changed since the last save started.
    outbox_dirty: bool,
    /// The contact list cache changed since the last save started.
    view_dirty: bool,
    /// The last connection's resume left cursors out: catch up from `synced`.
    partial_resume: bool,
    /// The resume carried no cursor at all (a fresh device: start from now).
    fresh_resume: bool,
    /// When the last save started (ms).
    last_save: u64,
}

/// One live connection.
struct Conn {
    socket: Socket,
    phase: Phase,
    auth_id: String,
    started: u64,
    last_sent: u64,
    ping: Option<(String, u64)>,
    /// A server-suggested reconnect delay (`going_away`).
    hint: Option<Duration>,
    /// A connection-level error frame (no `re`) seen before the close.
    fatal: Option<Error>,
}

enum Wake {
    Sock(Option<Incoming>),
    Cmd(Option<Command>),
    Timer,
    /// A storage save finished.
    Saved,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        cmd_rx: mpsc::UnboundedReceiver<Command>,
        connector: Connector,
        ws_url: String,
        token: String,
        config: Config,
        storage: Option<Arc<dyn Storage>>,
    ) -> Self {
        Self {
            shared,
            cmd_rx,
            connector,
            ws_url,
            token,
            config,
            next_id: 0,
            outbox: Outbox::default(),
            requests: Requests::default(),
            catchup: CatchUp::default(),
            pacer: Pacer::new(rt::now_ms()),
            inflight: HashMap::new(),
            me: None,
            limits: None,
            synced_once: false,
            storage,
            stored_user: None,
            saving: None,
            outbox_dirty: false,
            view_dirty: false,
            partial_resume: false,
            fresh_resume: false,
            last_save: 0,
        }
    }

    pub(crate) async fn run(mut self) {
        self.load().await;
        let mut attempt: u32 = 0;
        let mut delay: Option<Duration> = None;
        loop {
            if let Some(d) = delay {
                self.shared.set_state(ConnectionState::Reconnecting {
                    attempt,
                    retry_in: d,
                });
                if let Some(stop) = self.wait_offline(d).await {
                    return self.finish(stop).await;
                }
            }
            match self.connection().await {
                End::Stop(state) => return self.finish(state).await,
                End::Retry { online, cause } => {
                    if online {
                        attempt = 0;
                    }
                    attempt = attempt.saturating_add(1);
                    if self.config.max_attempts.is_some_and(|m| attempt > m) {
                        return self.finish(ConnectionState::Closed).await;
                    }
                    delay = Some(reconnect_delay(
                        &self.config.backoff,
                        cause,
                        attempt,
                        rt::random_unit(),
                    ));
                }
            }
        }
    }

    /// Loads the stored snapshot (before the first connection).
    async fn load(&mut self) {
        let Some(storage) = self.storage.clone() else {
            return;
        };
        match storage.load().await {
            Ok(Some(snapshot)) => {
                self.stored_user = snapshot.user;
                lock(&self.shared.cursors).merge(&snapshot.cursors);
                self.outbox.restore(snapshot.outbox);
                self.publish_outbox_all();
                if !snapshot.view.is_empty() {
                    *lock(&self.shared.view) = snapshot.view.clone();
                    self.shared.emit(Event::Cached(snapshot.view));
                }
            }
            Ok(None) => {}
            Err(e) => self.shared.set_error(e),
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            user: self.me.as_ref().map(|u| u.id).or(self.stored_user),
            cursors: lock(&self.shared.cursors).resume_state().cursors,
            outbox: self.outbox.stored(),
            view: lock(&self.shared.view).clone(),
        }
    }

    /// Starts a save if something changed and none is running. Outbox changes are saved at
    /// once (a message typed offline must survive a reload); cursor-only changes at most every
    /// [`CURSOR_SAVE_INTERVAL_MS`] (a burst of messages is one save, and a lost cursor save only
    /// means a replay the cursors then de-duplicate).
    fn maybe_save(&mut self) {
        let Some(storage) = &self.storage else {
            return;
        };
        if self.saving.is_some() {
            return;
        }
        let now = rt::now_ms();
        let due =
            self.outbox_dirty || now >= self.last_save.saturating_add(CURSOR_SAVE_INTERVAL_MS);
        // Both flags are taken: the snapshot below carries both.
        let cursors_due = due && lock(&self.shared.cursors).take_dirty();
        let view_due = due && std::mem::take(&mut self.view_dirty);
        if !(cursors_due | view_due | std::mem::take(&mut self.outbox_dirty)) {
            return;
        }
        self.last_save = now;
        self.saving = Some(storage.save(self.snapshot()));
    }

    /// When a postponed cursor save is due (for the timer).
    fn save_due(&self) -> Option<u64> {
        (self.storage.is_some()
            && self.saving.is_none()
            && (self.view_dirty || lock(&self.shared.cursors).is_dirty()))
        .then(|| self.last_save.saturating_add(CURSOR_SAVE_INTERVAL_MS))
    }

    /// Drives a running save (called from every poll of the driver). True when one finished
    /// (the loop then looks for postponed changes).
    fn poll_save(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(f) = self.saving.as_mut()
            && let Poll::Ready(r) = f.as_mut().poll(cx)
        {
            self.saving = None;
            if let Err(e) = r {
                self.shared.set_error(e);
            }
            return true;
        }
        false
    }

    async fn flush_storage(&mut self) {
        if let Some(f) = self.saving.take() {
            let _ = f.await;
        }
        self.outbox_dirty = true;
        self.maybe_save();
        if let Some(f) = self.saving.take()
            && let Err(e) = f.await
        {
            self.shared.set_error(e);
        }
    }

    async fn finish(mut self, state: ConnectionState) {
        let err = match state {
            ConnectionState::SignedOut => Error::SignedOut,
            _ => Error::Closed,
        };
        self.connection_lost();
        self.outbox.fail_all_replies(&err);
        self.requests.fail_all(&err);
        self.cmd_rx.close();
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            match cmd {
                Command::Request { reply, .. } => {
                    let _ = reply.send(Err(err.clone()));
                }
                Command::Send { reply: Some(r), .. } => {
                    let _ = r.send(Err(err.clone()));
                }
                Command::Retry { reply, .. } | Command::Delete { reply, .. } => {
                    let _ = reply.send(Err(err.clone()));
                }
                _ => {}
            }
        }
        // Unsent messages stay in storage for the next start (not after a sign-out).
        if state != ConnectionState::SignedOut {
            self.flush_storage().await;
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
            self.maybe_save();
            let wake = poll_fn(|cx| {
                if self.poll_save(cx) {
                    return Poll::Ready(Wake::Saved);
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
            match wake {
                Wake::Saved => {}
                Wake::Cmd(None) => return Some(ConnectionState::Closed),
                Wake::Cmd(Some(Command::Stop(s))) => return Some(s),
                Wake::Cmd(Some(cmd)) => self.queue_command(cmd),
                Wake::Timer => {
                    self.requests.expire(rt::now_ms());
                    return None;
                }
                Wake::Sock(_) => {}
            }
        }
    }

    /// Accepts a command (online or not); sending happens in [`Driver::flush`].
    fn queue_command(&mut self, cmd: Command) {
        let now = rt::now_ms();
        match cmd {
            Command::Request { kind, reply } => self.requests.push_back(PendingRequest {
                kind,
                reply,
                deadline: now.saturating_add(ms(self.config.request_timeout)),
                not_before: 0,
                retries: 0,
            }),
            Command::Send {
                target,
                body,
                key,
                reply,
            } => {
                if let Err(e) = check_body(self.limits, &body) {
                    if let Some(r) = reply {
                        let _ = r.send(Err(e));
                    }
                    return;
                }
                self.outbox.push(key.clone(), target, body, reply);
                self.outbox_changed(&key);
            }
            Command::Retry { key, reply } => {
                let r = if self.outbox.retry(&key) {
                    self.outbox_changed(&key);
                    Ok(())
                } else {
                    Err(Error::InvalidArgument(format!(
                        "no failed outbox entry with key {key:?}"
                    )))
                };
                let _ = reply.send(r);
            }
            Command::Delete { key, reply } => {
                let r = self.outbox.delete(&key, Error::Closed).map(|e| {
                    let mut item = e.item(self.me.as_ref().map(|u| u.id));
                    item.state = SendState::Deleted;
                    self.outbox_dirty = true;
                    lock(&self.shared.outbox).retain(|i| i.key != key);
                    self.shared.emit(Event::Outbox(item));
                });
                let _ = reply.send(r);
            }
            // Typing is ephemeral: nothing to do offline.
            Command::Typing { .. } | Command::Stop(_) => {}
        }
    }

    /// The outbox entry `key` changed: update the UI's copy, emit, remember to save.
    fn outbox_changed(&mut self, key: &str) {
        self.outbox_dirty = true;
        let me = self.me.as_ref().map(|u| u.id);
        let Some(item) = self.outbox.get(key).map(|e| e.item(me)) else {
            return;
        };
        {
            let mut mirror = lock(&self.shared.outbox);
            match mirror.iter_mut().find(|i| i.key == key) {
                Some(slot) => *slot = item.clone(),
                None => mirror.push(item.clone()),
            }
        }
        self.shared.emit(Event::Outbox(item));
    }

    fn publish_outbox_all(&mut self) {
        let me = self.me.as_ref().map(|u| u.id);
        let items = self.outbox.items(me);
        *lock(&self.shared.outbox) = items.clone();
        for item in items {
            self.shared.emit(Event::Outbox(item));
        }
    }

    /// One connection: connect, authenticate, sync, serve. Returns how it ended.
    async fn connection(&mut self) -> End {
        let connect = (self.connector)(self.ws_url.clone());
        let socket = {
            let mut connect = connect;
            let mut timer = rt::sleep(self.config.connect_timeout);
            self.maybe_save();
            poll_fn(|cx| {
                let _ = self.poll_save(cx);
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
        let failure = End::Retry {
            online: false,
            cause: Cause::Failure,
        };
        let socket = match socket {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                self.shared.set_error(e);
                return failure;
            }
            None => {
                self.shared.set_error(Error::Timeout);
                return failure;
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
            fatal: None,
        };
        // Resume cursors must fit the server's frame limit whatever the account's size: the
        // most recently active ones within half the limit; the rest are caught up from
        // `synced` (see catchup.rs).
        let budget = self.limits.map_or(FIRST_RESUME_BUDGET, |l| {
            (l.max_frame_bytes as usize / 2).max(1024)
        });
        let (resume, partial) = {
            let cursors = lock(&self.shared.cursors);
            self.fresh_resume = cursors.is_empty();
            cursors.resume_within(budget)
        };
        self.partial_resume = partial;
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
            End::Retry { cause, .. } => End::Retry {
                online,
                cause: match (cause, conn.hint) {
                    (Cause::Failure, Some(h)) => Cause::GoingAway(h),
                    (c, _) => c,
                },
            },
            stop => stop,
        }
    }

    async fn serve(&mut self, conn: &mut Conn) -> End {
        loop {
            self.maybe_save();
            let now = rt::now_ms();
            let deadline = self.next_deadline(conn, now);
            let mut timer = rt::sleep(Duration::from_millis(deadline.saturating_sub(now).max(1)));
            let wake = poll_fn(|cx| {
                if self.poll_save(cx) {
                    return Poll::Ready(Wake::Saved);
                }
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
                    cause: Cause::Failure,
                }),
                Wake::Cmd(None) => Some(End::Stop(ConnectionState::Closed)),
                Wake::Cmd(Some(Command::Stop(s))) => Some(End::Stop(s)),
                Wake::Cmd(Some(Command::Typing {
                    conversation,
                    active,
                })) => {
                    // Ephemeral: dropped rather than queued when the pacer says wait.
                    if conn.phase == Phase::Online && self.pacer.try_take(rt::now_ms()) {
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
                    None
                }
                Wake::Timer => self.on_timer(conn),
                Wake::Saved => None,
            };
            if let Some(end) = flow {
                return end;
            }
            if conn.phase == Phase::Online {
                self.flush(conn);
            }
        }
    }

    fn next_deadline(&mut self, conn: &Conn, now: u64) -> u64 {
        let mut d = u64::MAX;
        if conn.phase != Phase::Online {
            d = d.min(conn.started.saturating_add(ms(self.config.connect_timeout)));
        } else {
            d = d.min(conn.last_sent.saturating_add(ms(self.ping_interval())));
            // Work waiting for its time or for a pacer token.
            let mut work: Option<u64> = None;
            let mut consider = |t: Option<u64>| {
                if let Some(t) = t {
                    work = Some(work.map_or(t, |w| w.min(t)));
                }
            };
            consider(self.requests.next_wake().0);
            if let Some(me) = self.me.as_ref().map(|u| u.id) {
                consider(self.outbox.next_wake(me));
            }
            consider(self.catchup.next_wake());
            if let Some(w) = work {
                d = d.min(w.max(self.pacer.ready_at(now)));
            }
        }
        if let Some((_, at)) = &conn.ping {
            d = d.min(at.saturating_add(ms(self.config.pong_timeout)));
        }
        if let Some(dl) = self.requests.next_wake().1 {
            d = d.min(dl);
        }
        if let Some(at) = self.save_due() {
            d = d.min(at);
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

    fn expire_requests(&mut self, now: u64) {
        self.requests.expire(now);
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

    fn on_timer(&mut self, conn: &mut Conn) -> Option<End> {
        let now = rt::now_ms();
        self.expire_requests(now);
        let timed_out = End::Retry {
            online: false,
            cause: Cause::Failure,
        };
        if conn.phase != Phase::Online
            && now >= conn.started.saturating_add(ms(self.config.connect_timeout))
        {
            self.shared.set_error(Error::Timeout);
            return Some(timed_out);
        }
        if let Some((_, at)) = &conn.ping
            && now >= at.saturating_add(ms(self.config.pong_timeout))
        {
            self.shared.set_error(Error::Timeout);
            return Some(timed_out);
        }
        if conn.phase == Phase::Online
            && conn.ping.is_none()
            && now >= conn.last_sent.saturating_add(ms(self.ping_interval()))
            && self.pacer.try_take(now)
        {
            let id = self.new_id('p');
            send_frame(conn, &ClientFrame::Ping { id: req_id(&id) });
            self.inflight.insert(id.clone(), Inflight::Ping);
            conn.ping = Some((id, now));
        }
        None
    }

    fn on_close(&mut self, conn: &mut Conn, code: Option<u16>, reason: String) -> End {
        let described = || {
            format!(
                "connection closed ({}){}",
                code.map_or("no code".to_owned(), |c| c.to_string()),
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                }
            )
        };
        match code {
            // 4001: the token is unknown, expired or revoked (also after logout / logout-all).
            Some(CLOSE_UNAUTHENTICATED) => {
                self.shared.set_error(Error::SignedOut);
                End::Stop(ConnectionState::SignedOut)
            }
            Some(c) if CLOSE_FATAL.contains(&c) => {
                let e = conn
                    .fatal
                    .take()
                    .unwrap_or_else(|| Error::Protocol(described()));
                self.shared.set_error(e);
                End::Stop(ConnectionState::Closed)
            }
            Some(c) if CLOSE_STORM.contains(&c) => {
                self.shared.set_error(Error::Transport(described()));
                End::Retry {
                    online: false,
                    cause: match conn.hint {
                        Some(h) => Cause::GoingAway(h),
                        None => Cause::Storm,
                    },
                }
            }
            _ => {
                self.shared.set_error(Error::Transport(described()));
                End::Retry {
                    online: false,
                    cause: Cause::Failure,
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
                Inflight::Send(_) | Inflight::CatchUp(_) | Inflight::Ping => {}
            }
        }
        for p in requeue.into_iter().rev() {
            self.requests.push_front(p);
        }
        for key in self.outbox.connection_lost() {
            self.outbox_changed(&key);
        }
        self.catchup.connection_lost();
    }

    /// Sends what is due, one pacer token per frame: requests first (a user waits), then the
    /// heads of the outbox's conversation queues, then catch-up pages.
    fn flush(&mut self, conn: &mut Conn) {
        let Some(me) = self.me.as_ref().map(|u| u.id) else {
            return;
        };
        loop {
            let now = rt::now_ms();
            if self.pacer.ready_at(now) > now {
                return;
            }
            if let Some(p) = self.requests.pop_due(now) {
                self.pacer.try_take(now);
                let id = self.new_id('r');
                send_frame(conn, &p.kind.frame(req_id(&id)));
                self.inflight.insert(id, Inflight::Request(p));
                continue;
            }
            if let Some(i) = self.outbox.next_due(me, now) {
                self.pacer.try_take(now);
                let id = self.new_id('s');
                let e = self.outbox.mark_sending(i, id.clone());
                let frame = ClientFrame::Send {
                    id: req_id(&id),
                    conversation: e.to.resolve(me),
                    body: e.body.clone(),
                    idempotency_key: e.key.clone(),
                };
                let key = e.key.clone();
                send_frame(conn, &frame);
                self.inflight.insert(id, Inflight::Send(key.clone()));
                self.outbox_changed(&key);
                continue;
            }
            let next = {
                let cursors = lock(&self.shared.cursors);
                self.catchup
                    .next_due(now, |c, target| cursors.watermark(c) >= target)
            };
            if let Some(c) = next {
                self.pacer.try_take(now);
                let id = self.new_id('c');
                let after = lock(&self.shared.cursors).watermark(&c);
                send_frame(conn, &catch_up(&id, &c, after));
                self.inflight.insert(id, Inflight::CatchUp(c));
                continue;
            }
            return;
        }
    }

    /// A message from any source (event, replay, history page, ack): match the outbox, record
    /// the cursor. Returns true when the message is new to this client.
    fn observe(&mut self, message: &Message) -> bool {
        let mine = self.me.as_ref().is_some_and(|u| u.id == message.sender);
        let completed = mine && self.complete_outbox(message);
        let new = lock(&self.shared.cursors).record(&message.conversation, message.seq);
        if new {
            self.update_view(|view, me| view.on_message(me, message));
        }
        if completed && new {
            self.shared.emit(Event::Sent(message.clone()));
            return false;
        }
        new
    }

    /// Changes the contact list cache (saved like the cursors, see [`Self::maybe_save`]).
    fn update_view(&mut self, f: impl FnOnce(&mut CachedView, Option<zajel_core::UserId>)) {
        let me = self.me.as_ref().map(|u| u.id);
        f(&mut lock(&self.shared.view), me);
        self.view_dirty = true;
    }

    /// Completes the outbox entry with this message's key, if any.
    fn complete_outbox(&mut self, message: &Message) -> bool {
        let me = self.me.as_ref().map(|u| u.id);
        let Some(mut item) = self
            .outbox
            .get(&message.idempotency_key)
            .map(|e| e.item(me))
        else {
            return false;
        };
        if !self.outbox.complete(message) {
            return false;
        }
        self.inflight
            .retain(|_, i| !matches!(i, Inflight::Send(k) if *k == message.idempotency_key));
        self.outbox_dirty = true;
        lock(&self.shared.outbox).retain(|i| i.key != message.idempotency_key);
        item.state = SendState::Sent {
            message: message.clone(),
        };
        self.shared.emit(Event::Outbox(item));
        true
    }

    /// A live message: a gap before it (seq 7 then 9) is fetched after a short grace.
    fn check_gap(&mut self, conversation: &ConversationId) {
        let gap = lock(&self.shared.cursors).gap_end(conversation);
        if let Some(end) = gap {
            let at = rt::now_ms().saturating_add(catchup::GAP_GRACE_MS);
            self.catchup.want(conversation, end, at);
        }
    }

    fn on_frame(&mut self, conn: &mut Conn, frame: ServerFrame) -> Option<End> {
        let frame = match frame {
            ServerFrame::Push(push) => {
                self.on_push(conn, push);
                return None;
            }
            answer => answer,
        };
        match frame {
            ServerFrame::AuthOk {
                re, user, limits, ..
            } if re.as_str() == conn.auth_id => {
                if self.stored_user.is_some_and(|u| u != user.id) {
                    // The stored state was another account's: never send its outbox as this
                    // one, never trust its cursors.
                    lock(&self.shared.cursors).clear();
                    *lock(&self.shared.view) = CachedView::default();
                    self.outbox.clear_unowned();
                    self.publish_outbox_all();
                    self.outbox_dirty = true;
                }
                self.stored_user = Some(user.id);
                *lock(&self.shared.user) = Some(user.clone());
                *lock(&self.shared.limits) = Some(limits);
                let first_user = self.me.is_none();
                self.me = Some(user);
                self.limits = Some(limits);
                self.pacer
                    .configure(limits.requests_per_second, rt::now_ms());
                if first_user {
                    // Peer targets resolve to conversations now.
                    self.publish_outbox_all();
                }
                conn.phase = Phase::Syncing;
                None
            }
            ServerFrame::Error(e) => self.on_error(conn, e),
            ServerFrame::Sent {
                re, mut message, ..
            } => {
                if let Some(Inflight::Send(key)) = self.inflight.remove(re.as_str()) {
                    // The entry is known by its request id even if the server echoed another
                    // key.
                    message.idempotency_key = key;
                }
                let completed = self.complete_outbox(&message);
                let new = lock(&self.shared.cursors).record(&message.conversation, message.seq);
                if new {
                    self.update_view(|view, me| view.on_message(me, &message));
                }
                if completed && new {
                    self.shared.emit(Event::Sent(message));
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
                        let before = lock(&self.shared.cursors).watermark(&c);
                        for m in &messages {
                            // Only this conversation's messages count (the server is untrusted).
                            if m.conversation == c && self.observe(m) {
                                self.shared.emit(Event::Message {
                                    message: m.clone(),
                                    replayed: true,
                                });
                            }
                        }
                        let after = lock(&self.shared.cursors).watermark(&c);
                        // Stop when a page moves nothing (a buggy server looping `has_more`).
                        self.catchup.page_done(&c, has_more && after > before);
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
            f @ (ServerFrame::FriendOk { .. }
            | ServerFrame::Friends { .. }
            | ServerFrame::Conversations { .. }
            | ServerFrame::ReadOk { .. }) => {
                // The server's lists are the truth for the cache too.
                match &f {
                    ServerFrame::Friends { friends, .. } => {
                        let friends = friends.clone();
                        self.update_view(|view, _| view.replace_friends(friends));
                    }
                    ServerFrame::Conversations { conversations, .. } => {
                        let page = conversations.clone();
                        self.update_view(|view, _| view.merge_conversations(page));
                    }
                    _ => {}
                }
                if let Some(re) = answer_id(&f) {
                    self.answer(re, f);
                }
                None
            }
            // auth_ok for another id, or a frame type from a newer server.
            _ => None,
        }
    }

    fn answer(&mut self, re: RequestId, frame: ServerFrame) {
        if let Some(Inflight::Request(p)) = self.inflight.remove(re.as_str()) {
            let _ = p.reply.send(Ok(frame));
        }
    }

    fn on_error(&mut self, conn: &mut Conn, e: ErrorFrame) -> Option<End> {
        let now = rt::now_ms();
        if e.code == ErrorCode::RateLimited {
            self.pacer.pause(now, e.retry_after_ms);
        }
        let Some(re) = e.re.clone() else {
            // A connection-level error without a request id.
            if e.code == ErrorCode::Unauthenticated {
                self.shared.set_error(Error::SignedOut);
                return Some(End::Stop(ConnectionState::SignedOut));
            }
            // Kept for the close that usually follows (`frame_too_large` then 1009).
            conn.fatal = Some(Error::from_frame(e));
            return None;
        };
        // Numbers from the network are clamped before any arithmetic.
        let retry_at = |retries: u32| {
            let wait = e
                .retry_after_ms
                .map(|w| w.clamp(1, MAX_RETRY_AFTER_MS))
                .unwrap_or_else(|| ms(self.config.backoff.delay(retries + 1, rt::random_unit())));
            now.saturating_add(wait.max(1))
        };
        if re.as_str() == conn.auth_id {
            let err = Error::from_frame(e.clone());
            self.shared.set_error(err.clone());
            return Some(if e.code == ErrorCode::Unauthenticated {
                End::Stop(ConnectionState::SignedOut)
            } else if e.code.is_retryable() {
                End::Retry {
                    online: false,
                    cause: match e.code {
                        ErrorCode::ShuttingDown | ErrorCode::RateLimited => Cause::Storm,
                        _ => Cause::Failure,
                    },
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
                    p.not_before = retry_at(p.retries);
                    p.retries += 1;
                    self.requests.push_back(p);
                } else {
                    let _ = p.reply.send(Err(Error::from_frame(e)));
                }
            }
            Some(Inflight::Send(key)) => {
                let retries = self.outbox.get(&key).map_or(0, |x| x.retries);
                let at =
                    (e.code.is_retryable() && retries < MAX_RETRIES).then(|| retry_at(retries));
                let err = Error::from_frame(e);
                let reply = self.outbox.refused(&key, err.clone(), at);
                self.outbox_changed(&key);
                if let Some(r) = reply {
                    let _ = r.send(Err(err));
                }
            }
            Some(Inflight::CatchUp(c)) => {
                // Asked again later (rate limited) or dropped (the server refuses it).
                self.catchup.page_done(&c, e.code.is_retryable());
                if e.code.is_retryable() {
                    self.catchup.want(&c, u64::MAX, retry_at(0));
                }
            }
            Some(Inflight::Ping) | None => {}
        }
        None
    }
}

/// The request id of an answer frame.
fn answer_id(f: &ServerFrame) -> Option<RequestId> {
    match f {
        ServerFrame::FriendOk { re, .. }
        | ServerFrame::Friends { re, .. }
        | ServerFrame::Conversations { re, .. }
        | ServerFrame::ReadOk { re, .. } => Some(re.clone()),
        _ => None,
    }
}

/// The client's own check of the server's body rules (limits as announced, else the
/// protocol's ceiling), so an invalid message is refused at the call, never queued.
pub(crate) fn check_body(limits: Option<Limits>, body: &str) -> Result<(), Error> {
    if body.trim().is_empty() {
        return Err(Error::rejected(
            ErrorCode::EmptyBody,
            "message body is empty",
        ));
    }
    let max = limits.map_or(zajel_core::limits::BODY_MAX_BYTES, |l| {
        (l.max_body_bytes as usize).min(zajel_core::limits::BODY_MAX_BYTES)
    });
    if body.len() > max {
        return Err(Error::rejected(
            ErrorCode::BodyTooLong,
            format!("message body is {} bytes; the maximum is {max}", body.len()),
        ));
    }
    Ok(())
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
        limit: Some(catchup::PAGE),
    }
}

fn send_frame(conn: &mut Conn, frame: &ClientFrame) {
    conn.last_sent = rt::now_ms();
    // A send error means the socket is closing; its `Closed` report follows.
    let _ = conn.socket.tx.send(frame.encode());
}
