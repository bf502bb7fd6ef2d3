//! One WebSocket connection: authentication, resume, then the request/event loop.
//!
//! The task owns the socket. It waits on five things at once (`select!`):
//! * shutdown: send `going_away`, close 1001;
//! * a close request from the hub (4008 lagged, 4001 session revoked);
//! * its event queue: forward pre-serialized events (batched, one flush);
//! * the socket: answer requests in order, one at a time (a connection's requests are
//!   handled sequentially, so its answers come back in request order);
//! * the idle timer: nothing received for `idle_timeout_ms` closes with 4000.
//!
//! Answers to this connection's own requests are written directly, before the queue is read
//! again, so an answer always precedes the events its request caused.

use crate::engine::Engine;
use crate::hub::{CLOSE_LAGGED, ConnId, Event};
use crate::ratelimit::TokenBucket;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use zajel_core::friends::FriendOp;
use zajel_core::limits::page_limit;
use zajel_core::messaging::prepare_send;
use zajel_core::protocol::{
    ClientFrame, ErrorFrame, PROTOCOL_VERSION, RequestId, ResumeState, ServerFrame, SyncState,
    Unlisted,
};
use zajel_core::{
    ConversationId, ErrorCode, FriendChange, FriendGraph, HasErrorCode, HistoryQuery, Relation,
    Timestamp, User, Username,
};

/// Normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Server shutting down (after `going_away`).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Policy violation: persistent rate-limit abuse, or no `auth` within `auth_timeout_ms`.
pub const CLOSE_POLICY: u16 = 1008;
/// A frame over `max_frame_bytes` (after a `frame_too_large` error).
pub const CLOSE_TOO_LARGE: u16 = 1009;
/// Unexpected server error.
pub const CLOSE_INTERNAL: u16 = 1011;
/// Nothing received for `idle_timeout_ms`.
pub const CLOSE_IDLE: u16 = 4000;
/// Unauthenticated: the token given in `auth` is unknown, expired or revoked, or the session
/// of an open connection was revoked (logout / logout-all). Sign in again; do not retry with
/// the same token.
pub const CLOSE_UNAUTHENTICATED: u16 = 4001;
/// Largest history page read at once while replaying.
const REPLAY_PAGE: u32 = 200;

fn close_reason(code: u16) -> &'static str {
    match code {
        CLOSE_LAGGED => "lagged: resume from your cursor",
        CLOSE_UNAUTHENTICATED => "session ended: sign in again",
        CLOSE_GOING_AWAY => "server shutting down",
        _ => "closed",
    }
}

/// What the upgrade request carried for authentication.
pub(crate) struct Upgrade {
    /// The `zajel_session` cookie, if any.
    pub(crate) cookie_token: Option<String>,
    /// Whether the cookie may be used (Origin allowlisted or same-origin).
    pub(crate) cookie_allowed: bool,
}

struct Authed {
    user: User,
    session: Arc<str>,
    re: RequestId,
    resume: Option<ResumeState>,
}

/// A received WebSocket message, classified.
enum Incoming {
    Frame(ClientFrame),
    Answer(ServerFrame),
    Close(Option<ServerFrame>, u16, &'static str),
    Nothing,
    Gone,
}

struct Conn {
    engine: Engine,
    socket: WebSocket,
    bucket: TokenBucket,
    strikes: u32,
    idle: Pin<Box<Sleep>>,
    idle_for: Duration,
    write_timeout: Duration,
    shutdown: watch::Receiver<bool>,
}

/// Runs one upgraded connection to its end.
pub(crate) async fn run(engine: Engine, socket: WebSocket, upgrade: Upgrade) {
    let _active = engine.enter_connection();
    let shutdown = engine.shutdown_signal();
    let cfg = engine.config().clone();
    let idle_for = Duration::from_millis(cfg.idle_timeout_ms.max(1));
    let mut conn = Conn {
        socket,
        bucket: TokenBucket::new(
            f64::from(cfg.rate_per_second),
            f64::from(cfg.rate_burst),
            std::time::Instant::now(),
        ),
        strikes: 0,
        idle: Box::pin(tokio::time::sleep(idle_for)),
        idle_for,
        write_timeout: Duration::from_millis(cfg.write_timeout_ms.max(1)),
        shutdown,
        engine,
    };
    if *conn.shutdown.borrow() {
        conn.going_away().await;
        return;
    }
    let Some(authed) = conn.authenticate(&upgrade).await else {
        return;
    };
    conn.live(authed).await;
}

impl Conn {
    fn touch(&mut self) {
        let at = Instant::now() + self.idle_for;
        self.idle.as_mut().reset(at);
    }

    async fn send_text(&mut self, text: Utf8Bytes) -> bool {
        matches!(
            tokio::time::timeout(self.write_timeout, self.socket.send(Message::Text(text))).await,
            Ok(Ok(()))
        )
    }

    async fn feed_text(&mut self, text: Utf8Bytes) -> bool {
        matches!(
            tokio::time::timeout(self.write_timeout, self.socket.feed(Message::Text(text))).await,
            Ok(Ok(()))
        )
    }

    async fn flush(&mut self) -> bool {
        matches!(
            tokio::time::timeout(self.write_timeout, SinkExt::flush(&mut self.socket)).await,
            Ok(Ok(()))
        )
    }

    fn count_error(&self, frame: &ServerFrame) {
        if let ServerFrame::Error(e) = frame {
            self.engine.inner.metrics.error(e.code);
        }
    }

    async fn answer(&mut self, frame: &ServerFrame) -> bool {
        self.count_error(frame);
        self.send_text(Utf8Bytes::from(frame.encode())).await
    }

    /// Sends a close frame, then waits briefly for the peer's close so that unread input does
    /// not turn our close into a TCP reset (which could hide the close code from the client).
    async fn close(&mut self, code: u16, reason: &'static str) {
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

    async fn going_away(&mut self) {
        let frame = ServerFrame::GoingAway {
            reason: "server shutting down".into(),
            reconnect_after_ms: self.engine.config().reconnect_after_ms,
        };
        if self.answer(&frame).await {
            self.close(CLOSE_GOING_AWAY, close_reason(CLOSE_GOING_AWAY))
                .await;
        }
    }

    fn classify(&mut self, msg: Option<Result<Message, axum::Error>>) -> Incoming {
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

    fn classify_text(&mut self, text: &str) -> Incoming {
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
        if let Err(wait) = self.bucket.try_take(std::time::Instant::now()) {
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
    async fn handle_non_frame(&mut self, incoming: Incoming) -> bool {
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

    async fn authenticate(&mut self, upgrade: &Upgrade) -> Option<Authed> {
        let deadline = Instant::now() + Duration::from_millis(self.engine.config().auth_timeout_ms);
        loop {
            let msg = tokio::select! {
                biased;
                _ = self.shutdown.changed() => {
                    self.going_away().await;
                    return None;
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.close(CLOSE_POLICY, "auth timeout").await;
                    return None;
                }
                msg = self.socket.recv() => msg,
            };
            let frame = match self.classify(msg) {
                Incoming::Frame(f) => f,
                other => {
                    if !self.handle_non_frame(other).await {
                        return None;
                    }
                    continue;
                }
            };
            let answer = match frame {
                ClientFrame::Auth {
                    id,
                    protocol,
                    token,
                    resume,
                } => {
                    if protocol != PROTOCOL_VERSION {
                        error(
                            Some(id),
                            ErrorCode::UnsupportedVersion,
                            format!(
                                "protocol {protocol} is not supported; this server speaks {PROTOCOL_VERSION}"
                            ),
                        )
                    } else {
                        let token = match token {
                            Some(t) => Some(t),
                            None if upgrade.cookie_allowed => upgrade.cookie_token.clone(),
                            None => None,
                        };
                        let result = match token {
                            Some(t) => self.engine.session_user(&t).await,
                            None => Err(crate::error::ApiError::new(
                                ErrorCode::Unauthenticated,
                                "no token given (a session cookie is only accepted from an allowed origin)",
                            )),
                        };
                        match result {
                            Ok((user, hash)) => {
                                return Some(Authed {
                                    user,
                                    session: hash.into(),
                                    re: id,
                                    resume,
                                });
                            }
                            Err(e) if e.code == ErrorCode::Unauthenticated => {
                                // The client must sign in again: say so, then close 4001.
                                let answer = error(Some(id), e.code, e.message);
                                if self.answer(&answer).await {
                                    self.close(
                                        CLOSE_UNAUTHENTICATED,
                                        close_reason(CLOSE_UNAUTHENTICATED),
                                    )
                                    .await;
                                }
                                return None;
                            }
                            // A store failure: the client may retry on this connection.
                            Err(e) => error(Some(id), e.code, e.message),
                        }
                    }
                }
                ClientFrame::Ping { id } => ServerFrame::Pong { re: id },
                other => error(
                    other.id().cloned(),
                    ErrorCode::Unauthenticated,
                    "authenticate first: the first frame must be auth",
                ),
            };
            if !self.answer(&answer).await {
                return None;
            }
        }
    }

    async fn live(&mut self, authed: Authed) {
        let engine = self.engine.clone();
        let hub = engine.inner.hub.clone();
        let user = authed.user.clone();
        // Register first: events published from here on wait in the queue while we replay.
        let mut sub = hub.subscribe(user.id, authed.session.clone());
        tracing::debug!(user = %user.id, conn = sub.id, "connection authenticated");
        let ctx = Ctx {
            engine: engine.clone(),
            me: user.clone(),
            conn: sub.id,
        };
        let ok = ServerFrame::AuthOk {
            re: authed.re.clone(),
            user: user.clone(),
            protocol: PROTOCOL_VERSION,
            limits: engine.config().limits(),
        };
        // Highest sequence the client is known to hold, per conversation (resume de-dup).
        let mut known: HashMap<ConversationId, u64> = HashMap::new();
        // Registered cluster-wide before auth_ok: from then on, events reach this node.
        let came_online = engine.inner.presence.connected(user.id, sub.first).await;
        let mut alive = self.answer(&ok).await;
        if alive && came_online {
            engine.announce_presence(user.id, true, None).await;
        }
        if alive && let Some(resume) = authed.resume {
            alive = self.replay(&ctx, authed.re, resume, &mut known).await;
        }
        while alive {
            alive = tokio::select! {
                biased;
                _ = self.shutdown.changed() => {
                    self.going_away().await;
                    false
                }
                code = sub.control.closed() => {
                    tracing::debug!(user = %user.id, code, "closing connection on hub request");
                    self.close(code, close_reason(code)).await;
                    false
                }
                ev = sub.rx.recv() => match ev {
                    Some(ev) => self.forward(ev, &mut sub.rx, &known).await,
                    None => false,
                },
                msg = self.socket.recv() => match self.classify(msg) {
                    Incoming::Frame(frame) => {
                        let t0 = std::time::Instant::now();
                        let reply = ctx.handle(frame).await;
                        let ok = match reply {
                            Some(r) => self.answer(&r).await,
                            None => true,
                        };
                        engine.inner.metrics.ws_latency.observe(t0.elapsed());
                        ok
                    }
                    other => self.handle_non_frame(other).await,
                },
                () = &mut self.idle => {
                    self.close(CLOSE_IDLE, "idle timeout").await;
                    false
                }
            };
        }
        let last_local = hub.unsubscribe(user.id, sub.id);
        if engine
            .inner
            .presence
            .disconnected(user.id, last_local)
            .await
        {
            let now = Timestamp::now();
            if let Err(e) = engine.inner.store.set_last_seen(user.id, now).await {
                tracing::warn!(user = %user.id, error = %e, "could not record last seen");
            }
            engine.announce_presence(user.id, false, Some(now)).await;
        }
        tracing::debug!(user = %user.id, conn = sub.id, "connection closed");
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

    /// Resume: replays, per conversation, every message after the client's cursor (bounded by
    /// `replay_limit`), then `synced`. Live events queued meanwhile are sent afterwards, minus
    /// messages already replayed.
    async fn replay(
        &mut self,
        ctx: &Ctx,
        re: RequestId,
        resume: ResumeState,
        known: &mut HashMap<ConversationId, u64>,
    ) -> bool {
        let engine = &ctx.engine;
        let store = &engine.inner.store;
        let cfg = engine.config();
        let me = ctx.me.id;
        let conversations = match store
            .conversations(me, cfg.replay_conversations.max(1))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                self.answer(&ServerFrame::error(Some(re), &e)).await;
                self.close(CLOSE_INTERNAL, "resume failed").await;
                return false;
            }
        };
        let mut truncated = Vec::new();
        for summary in &conversations {
            let conv = &summary.conversation;
            let cursor = match (resume.cursors.get(conv), resume.unlisted) {
                (Some(&cursor), _) => cursor,
                (None, Unlisted::Replay) => 0,
                // A fresh device starts from now; `synced` tells it each conversation's end.
                (None, Unlisted::Skip) => summary.last_seq,
            };
            known.insert(conv.clone(), cursor);
            if summary.last_seq <= cursor {
                continue;
            }
            let mut after = cursor;
            let mut sent: u32 = 0;
            loop {
                let limit = REPLAY_PAGE.min(cfg.replay_limit.saturating_sub(sent));
                if limit == 0 {
                    truncated.push(conv.clone());
                    break;
                }
                let page = match store
                    .history(
                        conv,
                        HistoryQuery {
                            before: None,
                            after: Some(after),
                            limit,
                        },
                    )
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        self.answer(&ServerFrame::error(Some(re), &e)).await;
                        self.close(CLOSE_INTERNAL, "resume failed").await;
                        return false;
                    }
                };
                for message in page.messages {
                    after = message.seq;
                    sent += 1;
                    let frame = ServerFrame::Message { message };
                    if !self.feed_text(Utf8Bytes::from(frame.encode())).await {
                        return false;
                    }
                }
                if !page.has_more {
                    break;
                }
            }
            known.insert(conv.clone(), after);
        }
        let friends = match engine.friend_entries(me).await {
            Ok(f) => f,
            Err(e) => {
                self.answer(&ServerFrame::error(Some(re), &e)).await;
                self.close(CLOSE_INTERNAL, "resume failed").await;
                return false;
            }
        };
        let synced = ServerFrame::Synced {
            re,
            state: SyncState {
                conversations,
                friends,
                truncated,
            },
        };
        self.feed_text(Utf8Bytes::from(synced.encode())).await && self.flush().await
    }
}

fn error(re: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> ServerFrame {
    ServerFrame::Error(ErrorFrame::new(re, code, message))
}

/// A refused request: code and message for the `error` frame.
struct Fail {
    code: ErrorCode,
    message: String,
}

impl Fail {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl<E: HasErrorCode> From<E> for Fail {
    fn from(e: E) -> Self {
        let code = e.code();
        if code == ErrorCode::Internal {
            tracing::error!(error = %e, "request failed");
            Fail::new(code, "internal server error; try again")
        } else {
            Fail::new(code, e.to_string())
        }
    }
}

/// The authenticated user's request handlers.
struct Ctx {
    engine: Engine,
    me: User,
    conn: ConnId,
}

fn not_member() -> Fail {
    Fail::new(ErrorCode::ConversationNotFound, "conversation not found")
}

impl Ctx {
    async fn handle(&self, frame: ClientFrame) -> Option<ServerFrame> {
        let re = frame.id().cloned();
        match self.dispatch(frame).await {
            Ok(reply) => reply,
            Err(f) => Some(ServerFrame::Error(ErrorFrame::new(re, f.code, f.message))),
        }
    }

    async fn dispatch(&self, frame: ClientFrame) -> Result<Option<ServerFrame>, Fail> {
        let store = &*self.engine.inner.store;
        let me = self.me.id;
        let now = Timestamp::now();
        let graph = FriendGraph::new(store);

        Ok(Some(match frame {
            ClientFrame::Auth { .. } => {
                return Err(Fail::new(
                    ErrorCode::AlreadyAuthenticated,
                    "this connection is already authenticated",
                ));
            }
            ClientFrame::Ping { id } => ServerFrame::Pong { re: id },
            ClientFrame::FriendRequest { id, username } => {
                let name = Username::parse(&username)
                    .map_err(|_| Fail::new(ErrorCode::UserNotFound, "no such user"))?;
                self.friend_changed(id, graph.request(me, &name, now).await?)
                    .await
            }
            ClientFrame::FriendAccept { id, user_id } => {
                self.friend_changed(id, graph.apply(me, user_id, FriendOp::Accept, now).await?)
                    .await
            }
            ClientFrame::FriendDecline { id, user_id } => {
                self.friend_changed(id, graph.apply(me, user_id, FriendOp::Decline, now).await?)
                    .await
            }
            ClientFrame::FriendCancel { id, user_id } => {
                self.friend_changed(id, graph.apply(me, user_id, FriendOp::Cancel, now).await?)
                    .await
            }
            ClientFrame::FriendRemove { id, user_id } => {
                self.friend_changed(id, graph.apply(me, user_id, FriendOp::Remove, now).await?)
                    .await
            }
            ClientFrame::Block { id, user_id } => {
                self.friend_changed(id, graph.apply(me, user_id, FriendOp::Block, now).await?)
                    .await
            }
            ClientFrame::Unblock { id, user_id } => {
                self.friend_changed(id, graph.apply(me, user_id, FriendOp::Unblock, now).await?)
                    .await
            }
            ClientFrame::FriendsList { id } => ServerFrame::Friends {
                re: id,
                friends: self.engine.friend_entries(me).await?,
            },
            ClientFrame::Send {
                id,
                conversation,
                body,
                idempotency_key,
            } => {
                let new = prepare_send(
                    store,
                    me,
                    &conversation,
                    &body,
                    &idempotency_key,
                    self.engine.config().effective_max_body(),
                    now,
                )
                .await?;
                let peer = conversation.peer_of(me).ok_or_else(not_member)?;
                // Append and publish under the conversation's lock so live events leave in
                // sequence order (a client may then treat its highest seq as its cursor).
                let _order = self.engine.conversation_lock(&conversation).lock().await;
                let appended =
                    store.append(vec![new]).await.pop().ok_or_else(|| {
                        Fail::new(ErrorCode::Internal, "append returned nothing")
                    })??;
                if !appended.duplicate {
                    self.engine
                        .inner
                        .metrics
                        .messages_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let event = ServerFrame::Message {
                        message: appended.message.clone(),
                    };
                    self.engine.publish(&[peer, me], &event, Some(self.conn));
                }
                ServerFrame::Sent {
                    re: id,
                    message: appended.message,
                    duplicate: appended.duplicate,
                }
            }
            ClientFrame::History {
                id,
                conversation,
                before,
                after,
                limit,
            } => {
                if !conversation.has_member(me) {
                    return Err(not_member());
                }
                let limit = page_limit(limit)?;
                let page = store
                    .history(
                        &conversation,
                        HistoryQuery {
                            before,
                            after,
                            limit,
                        },
                    )
                    .await?;
                ServerFrame::History {
                    re: id,
                    conversation,
                    messages: page.messages,
                    has_more: page.has_more,
                }
            }
            ClientFrame::Conversations { id, limit } => ServerFrame::Conversations {
                re: id,
                conversations: store.conversations(me, page_limit(limit)?).await?,
            },
            ClientFrame::MarkRead {
                id,
                conversation,
                seq,
            } => {
                let peer = conversation.peer_of(me).ok_or_else(not_member)?;
                let mark = store.mark_read(&conversation, me, seq).await?;
                if mark.changed {
                    let event = ServerFrame::Read {
                        conversation: conversation.clone(),
                        user: me,
                        seq: mark.seq,
                    };
                    self.engine.publish(&[peer, me], &event, Some(self.conn));
                }
                ServerFrame::ReadOk {
                    re: id,
                    conversation,
                    seq: mark.seq,
                }
            }
            ClientFrame::Typing {
                conversation,
                active,
                ..
            } => {
                let peer = conversation.peer_of(me).ok_or_else(not_member)?;
                if !graph.are_friends(me, peer).await? {
                    return Err(Fail::new(
                        ErrorCode::NotFriends,
                        "you can only message friends",
                    ));
                }
                let event = ServerFrame::Typing {
                    conversation,
                    user: me,
                    active,
                };
                self.engine.publish(&[peer], &event, None);
                return Ok(None);
            }
        }))
    }

    /// Tells everyone concerned about a friend-graph change; returns the requester's answer.
    async fn friend_changed(&self, re: RequestId, change: FriendChange) -> ServerFrame {
        let engine = &self.engine;
        let a = &change.for_actor;
        engine.publish(
            &[change.actor.id],
            &ServerFrame::Friend {
                user: a.user.clone(),
                relation: a.relation,
                reason: a.reason,
                at: a.at,
            },
            Some(self.conn),
        );
        if let Some(t) = &change.for_target {
            engine.publish(
                &[change.target.id],
                &ServerFrame::Friend {
                    user: t.user.clone(),
                    relation: t.relation,
                    reason: t.reason,
                    at: t.at,
                },
                None,
            );
        }
        // New friends learn each other's presence right away.
        if a.relation == Relation::Friends {
            let (actor, target) = (change.actor.id, change.target.id);
            let online = engine.inner.presence.online(&[target]).await;
            if online.first().copied().unwrap_or(false) {
                let p = ServerFrame::Presence {
                    user: target,
                    online: true,
                    last_seen: None,
                };
                engine.publish(&[actor], &p, None);
            }
            let p = ServerFrame::Presence {
                user: actor,
                online: true,
                last_seen: None,
            };
            engine.publish(&[target], &p, None);
        }
        ServerFrame::FriendOk {
            re,
            user: a.user.clone(),
            relation: a.relation,
        }
    }
}
