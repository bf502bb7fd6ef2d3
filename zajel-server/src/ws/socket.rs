//! The socket loop of one authenticated connection, and the socket helpers the handshake and
//! replay share.

use super::handshake::{Authed, Upgrade};
use super::limits::AddressSlot;
use super::{
    CLOSE_GOING_AWAY, CLOSE_IDLE, CLOSE_LAGGED, CLOSE_POLICY, CLOSE_TOO_LARGE,
    CLOSE_UNAUTHENTICATED, close_reason,
};
use crate::chat::{Actor, Answer};
use crate::engine::ActiveGuard;
use crate::engine::Engine;
use crate::hub::{Event, Subscription};
use crate::ratelimit::UserBucket;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use zajel_core::protocol::{
    ClientFrame, ErrorFrame, PROTOCOL_VERSION, Push, RequestId, ServerFrame,
};
use zajel_core::{ConversationId, ErrorCode, UserId};

/// A received WebSocket message, classified.
pub(super) enum Incoming {
    Frame(ClientFrame),
    Answer(ServerFrame),
    Close(Option<ServerFrame>, u16, &'static str),
    Nothing,
    Gone,
}

pub(super) struct Conn {
    pub(super) engine: Engine,
    pub(super) socket: WebSocket,
    /// Frames before `auth` (afterwards `user_bucket` counts them): this connection's own
    /// bucket (its GCRA arrival time), with the per-user limit's parameters.
    pub(super) bucket: AtomicU64,
    /// The authenticated user's frame budget, shared by all their connections on this node.
    pub(super) user_bucket: Option<Arc<UserBucket>>,
    pub(super) strikes: u32,
    /// When the connection counts as idle (moved on every received message; the live loop's
    /// one timer checks it lazily, so a message costs no timer reset).
    pub(super) idle_at: Instant,
    pub(super) idle_for: Duration,
    pub(super) write_timeout: Duration,
    pub(super) shutdown: watch::Receiver<bool>,
    /// Counts the connection as open until it ends (metrics, shutdown drain).
    _active: ActiveGuard,
    /// The client address's connection slot, released when the connection ends.
    _address_slot: Option<AddressSlot>,
}

/// What the live loop needs, set up once the connection is registered ([`Conn::go_live`]).
pub(super) struct Live {
    user: UserId,
    /// The session's key (token hash), for the periodic re-check.
    session: Arc<str>,
    sub: Subscription,
    /// Highest sequence the client is known to hold, per conversation (resume de-dup).
    known: HashMap<ConversationId, u64>,
    deadlines: Deadlines,
    /// False when the connection ended while going live (it still has to be torn down).
    alive: bool,
}

/// A request being performed: its answer and when it was received.
type Lane = Pin<Box<dyn Future<Output = (Option<Answer>, std::time::Instant)> + Send>>;

fn lane(chat: &crate::chat::ChatService, actor: Actor, frame: ClientFrame) -> Lane {
    let chat = chat.clone();
    let t0 = std::time::Instant::now();
    Box::pin(async move { (chat.execute_encoded(actor, frame).await, t0) })
}

/// Requests a connection may have waiting per lane; beyond this the socket is not read
/// (backpressure) until one completes.
const MAX_QUEUED: usize = 64;

/// How often a live connection re-checks its session in the store.
const SESSION_RECHECK: Duration = Duration::from_secs(60);

/// Runs one upgraded connection to its end.
///
/// Not an `async fn`: an async fn keeps its arguments in its future for its whole life, beside
/// the `Conn` they are moved into (the socket alone is ~370 bytes, per connection). The
/// connection is put together here, and the future holds only it and the upgrade's data.
pub(crate) fn run(
    engine: Engine,
    socket: WebSocket,
    mut upgrade: Upgrade,
) -> impl Future<Output = ()> + Send + 'static {
    let active = engine.enter_connection();
    let address_slot = upgrade.address_slot.take();
    let shutdown = engine.shutdown_signal();
    // Read what the connection needs, not a clone of the whole configuration: this task's
    // state is held for the connection's lifetime, per connection.
    let cfg = engine.config();
    let idle_for = Duration::from_millis(cfg.idle_timeout_ms.max(1));
    let write_timeout = Duration::from_millis(cfg.write_timeout_ms.max(1));
    let mut conn = Conn {
        socket,
        bucket: AtomicU64::new(0),
        user_bucket: None,
        strikes: 0,
        idle_at: Instant::now() + idle_for,
        idle_for,
        write_timeout,
        shutdown,
        engine,
        _active: active,
        _address_slot: address_slot,
    };
    async move {
        if *conn.shutdown.borrow() {
            conn.going_away().await;
            return;
        }
        // Boxed: the handshake and going live (`auth_ok`, presence, the resume replay) run
        // once, and an inline future would stay part of this task's (per-connection,
        // lifelong) size.
        let live = Box::pin(async {
            let authed = conn.authenticate(&upgrade).await?;
            conn.go_live(authed).await
        })
        .await;
        if let Some(mut live) = live {
            conn.live(&mut live).await;
        }
    }
}

impl Conn {
    pub(super) fn touch(&mut self) {
        self.idle_at = Instant::now() + self.idle_for;
    }

    pub(super) async fn send_text(&mut self, text: Utf8Bytes) -> bool {
        matches!(
            tokio::time::timeout(self.write_timeout, self.socket.send(Message::Text(text))).await,
            Ok(Ok(()))
        )
    }

    pub(super) async fn feed_text(&mut self, text: Utf8Bytes) -> bool {
        matches!(
            tokio::time::timeout(self.write_timeout, self.socket.feed(Message::Text(text))).await,
            Ok(Ok(()))
        )
    }

    pub(super) async fn flush(&mut self) -> bool {
        matches!(
            tokio::time::timeout(self.write_timeout, SinkExt::flush(&mut self.socket)).await,
            Ok(Ok(()))
        )
    }

    pub(super) fn count_error(&self, frame: &ServerFrame) {
        if let ServerFrame::Error(e) = frame {
            self.engine.inner.metrics.error(e.code);
        }
    }

    pub(super) async fn answer(&mut self, frame: &ServerFrame) -> bool {
        self.count_error(frame);
        self.send_text(Utf8Bytes::from(frame.encode())).await
    }

    /// Sends a close frame, then waits briefly for the peer's close so that unread input does
    /// not turn our close into a TCP reset (which could hide the close code from the client).
    ///
    /// The close paths (this, [`Conn::close_expecting_return`], the replay) run once per
    /// connection at most, yet an inline future of theirs would make every connection's task
    /// larger for its whole life: they are boxed, so their state exists only while they run.
    pub(super) async fn close(&mut self, code: u16, reason: &'static str) {
        Box::pin(self.close_and_linger(code, reason)).await;
    }

    async fn close_and_linger(&mut self, code: u16, reason: &'static str) {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }));
        if !matches!(
            tokio::time::timeout(self.write_timeout, self.socket.send(frame)).await,
            Ok(Ok(()))
        ) {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(msg)) = self.socket.recv().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    /// Shutdown: `going_away`, then close 1001. Every open connection is part of the wave.
    pub(super) async fn going_away(&mut self) {
        let wave = self.engine.connection_count();
        let base = self.engine.config().reconnect_after_ms;
        self.close_expecting_return(CLOSE_GOING_AWAY, base, wave)
            .await;
    }

    /// A close after which the client should come back (1001, 4008): a `going_away` frame
    /// with this connection's share of the wave's spread (see `reconnect.rs`), then the close.
    pub(super) async fn close_expecting_return(&mut self, code: u16, base_ms: u64, wave: usize) {
        Box::pin(self.going_away_then_close(code, base_ms, wave)).await;
    }

    async fn going_away_then_close(&mut self, code: u16, base_ms: u64, wave: usize) {
        let reconnect_after_ms = super::reconnect::advice_ms(
            base_ms,
            wave,
            self.engine.config().reconnect_rate,
            super::reconnect::random_unit(),
        );
        let frame = ServerFrame::Push(Push::GoingAway {
            reason: close_reason(code).into(),
            reconnect_after_ms,
        });
        if self.answer(&frame).await {
            self.close(code, close_reason(code)).await;
        }
    }

    pub(super) fn classify(&mut self, msg: Option<Result<Message, axum::Error>>) -> Incoming {
        let Some(Ok(msg)) = msg else {
            return Incoming::Gone;
        };
        self.touch();
        match msg {
            Message::Text(text) => self.classify_text(text.as_str()),
            Message::Binary(_) => Incoming::Answer(error(
                None,
                ErrorCode::BadFrame,
                "binary frames are not supported; send JSON text frames",
            )),
            Message::Ping(_) | Message::Pong(_) => Incoming::Nothing,
            Message::Close(_) => Incoming::Gone,
        }
    }

    pub(super) fn classify_text(&mut self, text: &str) -> Incoming {
        let cfg = self.engine.config();
        if text.len() > cfg.max_frame_bytes as usize {
            let e = error(
                None,
                ErrorCode::FrameTooLarge,
                format!(
                    "frame is {} bytes; the maximum is {}",
                    text.len(),
                    cfg.max_frame_bytes
                ),
            );
            return Incoming::Close(Some(e), CLOSE_TOO_LARGE, "frame too large");
        }
        let decoded = ClientFrame::decode(text);
        let limit = &self.engine.inner.frames_by_user;
        let taken = match &self.user_bucket {
            Some(bucket) => limit.take_from(bucket),
            None => limit.gcra().take(&self.bucket),
        };
        if let Err(wait) = taken {
            self.strikes += 1;
            let re = match &decoded {
                Ok(f) => f.id().cloned(),
                Err(e) => e.re.clone(),
            };
            let e = ServerFrame::Error(ErrorFrame {
                re,
                code: ErrorCode::RateLimited,
                message: format!(
                    "more than {} frames per second; slow down",
                    cfg.rate_per_second
                ),
                retry_after_ms: Some(wait.as_millis().max(1) as u64),
            });
            if self.strikes > cfg.rate_burst.max(1) {
                return Incoming::Close(Some(e), CLOSE_POLICY, "rate limit exceeded");
            }
            return Incoming::Answer(e);
        }
        self.strikes = 0;
        match decoded {
            Ok(f) => Incoming::Frame(f),
            Err(e) => Incoming::Answer(ServerFrame::error(e.re.clone(), &e)),
        }
    }

    /// Handles an `Incoming` that is not a frame; returns false when the connection ends.
    pub(super) async fn handle_non_frame(&mut self, incoming: Incoming) -> bool {
        match incoming {
            Incoming::Answer(f) => self.answer(&f).await,
            Incoming::Close(f, code, reason) => {
                if let Some(f) = f {
                    self.answer(&f).await;
                }
                self.close(code, reason).await;
                false
            }
            Incoming::Nothing | Incoming::Frame(_) => true,
            Incoming::Gone => false,
        }
    }

    /// Registers an authenticated connection and brings it live: the per-user connection
    /// limit, the hub, `auth_ok`, presence, the resume replay. `None` when it ended before it
    /// counted as connected (nothing to tear down).
    pub(super) async fn go_live(&mut self, authed: Authed) -> Option<Live> {
        let engine = self.engine.clone();
        let hub = engine.inner.hub.clone();
        let user = authed.user.clone();
        let max_per_user = engine.config().max_connections_per_user as usize;
        if hub.connections_of(user.id) >= max_per_user {
            let e = error(
                Some(authed.re),
                ErrorCode::RateLimited,
                format!("at most {max_per_user} connections per user"),
            );
            if self.answer(&e).await {
                self.close(CLOSE_POLICY, "too many connections").await;
            }
            return None;
        }
        // Register first: events published from here on wait in the queue while we replay,
        // and a revocation from here on closes this connection.
        let sub = hub.subscribe(user.id, authed.session.clone());
        // Shutdown reaches live connections as a close request from the hub
        // (`Hub::close_all`, after the shutdown flag is set); a connection registered after
        // that ran sees the flag here, since its registration and the hub's sweep take the
        // same shard lock.
        if engine.is_shutting_down() {
            sub.control.close(CLOSE_GOING_AWAY);
        }
        // A logout that raced the handshake (after `auth` resolved the token, before the
        // registration) is caught here. Only a revocation on this node (local, or relayed by
        // the broker) since the token was resolved can have slipped in between, so the store
        // is asked again only then: most connections skip that round trip.
        if hub.revocations() != authed.revocations
            && !matches!(
                engine.sessions().is_valid(user.id, &authed.session).await,
                Ok(true)
            )
        {
            let e = error(
                Some(authed.re),
                ErrorCode::Unauthenticated,
                "the session ended during authentication",
            );
            if self.answer(&e).await {
                self.close(CLOSE_UNAUTHENTICATED, close_reason(CLOSE_UNAUTHENTICATED))
                    .await;
            }
            hub.unsubscribe(user.id, sub.id);
            return None;
        }
        self.user_bucket = Some(engine.inner.frames_by_user.bucket(user.id));
        // The session's end, and a periodic re-check (a revocation from another node can be
        // lost while Redis is away; the store is the record).
        let expires_in = Duration::from_millis(
            u64::try_from(authed.expires_at.0 - zajel_core::Timestamp::now().0).unwrap_or(0),
        );
        // One timer for the idle timeout, the session's end and the periodic re-check
        // (three timers cost memory per connection and a re-arm per received frame): it
        // fires at the earliest deadline, and whatever is not due yet re-arms it.
        let deadlines = Deadlines {
            expires_at: Instant::now() + expires_in,
            recheck_at: Instant::now() + SESSION_RECHECK,
        };
        tracing::debug!(user = %user.id, conn = sub.id, "connection authenticated");
        let chat = engine.chat();
        let ok = ServerFrame::AuthOk {
            re: authed.re.clone(),
            user: user.clone(),
            protocol: PROTOCOL_VERSION,
            limits: engine.config().limits(),
        };
        // Highest sequence the client is known to hold, per conversation (resume de-dup).
        let mut known: HashMap<ConversationId, u64> = HashMap::new();
        // Registered cluster-wide before auth_ok: from then on, events reach this node.
        let came_online = chat.connected(user.id, sub.first).await;
        let mut alive = self.answer(&ok).await;
        if alive && came_online {
            // The friend list read with the session, unless a friendship changed on this node
            // since that read: then it may miss a new friend who checked our presence before
            // the registration, so read it again (now after the registration).
            match authed.friends {
                Some((friends, changes)) if hub.relation_changes() == changes => {
                    chat.announce_to(&friends, user.id, true, None);
                }
                _ => Box::pin(chat.announce(user.id, true, None)).await,
            }
        }
        if alive && let Some(resume) = authed.resume {
            // At most `max_concurrent_replays` per node; the rest queue here (live events
            // wait in this connection's queue meanwhile, as during the replay itself).
            let gate = &engine.inner.replays;
            let slot = tokio::select! {
                biased;
                _ = self.shutdown.changed() => None,
                slot = gate.enter(user.id) => slot,
            };
            match slot {
                Some(_slot) => {
                    alive = Box::pin(self.replay(user.id, resume, &mut known)).await;
                }
                None => {
                    self.going_away().await;
                    alive = false;
                }
            }
        }
        Some(Live {
            user: user.id,
            session: authed.session,
            sub,
            known,
            deadlines,
            alive,
        })
    }

    /// The live loop, then the teardown (hub, presence, last seen).
    pub(super) async fn live(&mut self, live: &mut Live) {
        let engine = self.engine.clone();
        let chat = engine.chat();
        let actor = Actor::connection(live.user, live.sub.id);
        let timer = tokio::time::sleep_until(live.deadlines.next(self.idle_at));
        tokio::pin!(timer);
        // Requests that touch the store run one at a time, in order, in the slow lane while the
        // loop keeps reading: a `ping` is answered at once and a `typing` runs beside them,
        // so neither waits behind a slow store round trip (e.g. Redis timing out).
        let mut slow: VecDeque<ClientFrame> = VecDeque::new();
        let mut inflight: Option<Lane> = None;
        // Created on the first `typing` (an empty `FuturesUnordered` allocates): most idle
        // connections never need it.
        let mut side: Option<FuturesUnordered<Lane>> = None;
        let mut alive = live.alive;
        while alive {
            if inflight.is_none()
                && let Some(frame) = slow.pop_front()
            {
                inflight = Some(lane(&chat, actor, frame));
            }
            alive = tokio::select! {
                biased;
                // How the connection is told to end (shutdown included): a future of one
                // pointer, re-made per turn for a few atomic operations. Anything held across
                // the loop would be held for the connection's life (see `task_size.rs`).
                code = live.sub.control.closed() => {
                    tracing::debug!(user = %live.user, code, "closing connection on hub request");
                    if code == CLOSE_GOING_AWAY {
                        self.going_away().await;
                    } else if code == CLOSE_LAGGED {
                        // Nothing is lost (the client resumes), but it must come back: when.
                        self.close_expecting_return(code, 0, live.sub.control.wave()).await;
                    } else {
                        self.close(code, close_reason(code)).await;
                    }
                    false
                },
                ev = live.sub.rx.recv() => match ev {
                    Some(ev) => self.forward(ev, &mut live.sub.rx, &live.known).await,
                    None => false,
                },
                (reply, t0) = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                    inflight = None;
                    self.reply(reply, t0).await
                }
                Some((reply, t0)) = async { side.as_mut().expect("guarded").next().await },
                    if side.as_ref().is_some_and(|s| !s.is_empty()) => self.reply(reply, t0).await,
                msg = self.socket.recv(),
                    if slow.len() < MAX_QUEUED && side.as_ref().map_or(0, |s| s.len()) < MAX_QUEUED => {
                    match self.classify(msg) {
                        Incoming::Frame(ClientFrame::Ping { id }) => {
                            let t0 = std::time::Instant::now();
                            self.reply(Some(Answer::frame(&ServerFrame::Pong { re: id })), t0).await
                        }
                        Incoming::Frame(frame @ ClientFrame::Typing { .. }) => {
                            side.get_or_insert_with(FuturesUnordered::new)
                                .push(lane(&chat, actor, frame));
                            true
                        }
                        Incoming::Frame(frame) => {
                            slow.push_back(frame);
                            true
                        }
                        Incoming::Nothing => true,
                        Incoming::Gone => false,
                        // Boxed: errors and closes are rare, and their state inline would
                        // widen every connection's task for its whole life.
                        other => Box::pin(self.handle_non_frame(other)).await,
                    }
                },
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= self.idle_at {
                        self.close(CLOSE_IDLE, "idle timeout").await;
                        false
                    } else if now >= live.deadlines.expires_at {
                        self.close(CLOSE_UNAUTHENTICATED, close_reason(CLOSE_UNAUTHENTICATED)).await;
                        false
                    } else {
                        let valid = if now >= live.deadlines.recheck_at {
                            live.deadlines.recheck_at = now + SESSION_RECHECK;
                            // Valid, or the store cannot say right now: keep the connection.
                            !matches!(
                                engine.sessions().is_valid(live.user, &live.session).await,
                                Ok(false)
                            )
                        } else {
                            // Only the idle deadline moved (a message arrived since): re-arm.
                            true
                        };
                        if valid {
                            timer.as_mut().reset(live.deadlines.next(self.idle_at));
                        } else {
                            self.close(CLOSE_UNAUTHENTICATED, close_reason(CLOSE_UNAUTHENTICATED)).await;
                        }
                        valid
                    }
                }
            };
        }
        let last_local = engine.inner.hub.unsubscribe(live.user, live.sub.id);
        Box::pin(chat.disconnected(live.user, last_local)).await;
        tracing::debug!(user = %live.user, conn = live.sub.id, "connection closed");
    }

    /// Writes a request's answer (if any) and records its latency.
    async fn reply(&mut self, reply: Option<Answer>, t0: std::time::Instant) -> bool {
        let ok = match reply {
            Some(Answer { text, error }) => {
                if let Some(code) = error {
                    self.engine.inner.metrics.error(code);
                }
                self.send_text(Utf8Bytes::from(text)).await
            }
            None => true,
        };
        self.engine
            .inner
            .metrics
            .ws_latency
            .observe(t0.elapsed().as_secs_f64());
        ok
    }

    /// Writes `first` and whatever else is already queued, then flushes once.
    async fn forward(
        &mut self,
        first: Arc<Event>,
        rx: &mut tokio::sync::mpsc::Receiver<Arc<Event>>,
        known: &HashMap<ConversationId, u64>,
    ) -> bool {
        let wanted = |ev: &Event| match ev.message_seq() {
            Some((c, seq)) => known.get(c).is_none_or(|&k| seq > k),
            None => true,
        };
        let mut wrote = false;
        if wanted(&first) {
            if !self.feed_text(first.wire()).await {
                return false;
            }
            wrote = true;
        }
        // Bounded so a busy queue cannot starve reads.
        for _ in 0..64 {
            let Ok(ev) = rx.try_recv() else { break };
            if wanted(&ev) {
                if !self.feed_text(ev.wire()).await {
                    return false;
                }
                wrote = true;
            }
        }
        !wrote || self.flush().await
    }
}

/// The live loop's deadlines besides the idle one (which lives in [`Conn`]).
struct Deadlines {
    /// The session's end: close with 4001.
    expires_at: Instant,
    /// The next re-check of the session in the store.
    recheck_at: Instant,
}

impl Deadlines {
    /// When the live loop's timer must fire next, given the idle deadline.
    fn next(&self, idle_at: Instant) -> Instant {
        idle_at.min(self.expires_at).min(self.recheck_at)
    }
}

pub(super) fn error(
    re: Option<RequestId>,
    code: ErrorCode,
    message: impl Into<String>,
) -> ServerFrame {
    ServerFrame::Error(ErrorFrame::new(re, code, message))
}
