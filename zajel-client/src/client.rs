//! The handle applications hold.

use crate::backoff::Backoff;
use crate::cursor::Cursors;
use crate::driver::{Command, Config, Driver, ReqKind, Shared, check_body, lock};
use crate::error::{Error, Result};
use crate::event::{
    ConnectionState, Event, FriendStatus, HistoryPage, HistoryQuery, OutboxItem, SendState,
    Session, Target,
};
use crate::storage::Storage;
use crate::transport::{Connector, default_connector};
use crate::url::ServerUrl;
use crate::{http, rt};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use zajel_core::protocol::{FriendEntry, ResumeState, ServerFrame};
use zajel_core::{ConversationId, ConversationSummary, Message, User, UserId};

/// A connected client: a cheap-to-clone handle to one background connection driver.
///
/// Every clone talks to the same connection; the driver stops when [`Client::close`] or
/// [`Client::logout`] is called, when the session token is refused, or when the last handle is
/// dropped. See the crate documentation's "Behavior" section for what calls see while the
/// connection is down.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    cmd: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    url: ServerUrl,
    token: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.url.http(""))
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Configures and starts a [`Client`].
pub struct ClientBuilder {
    url: String,
    token: String,
    config: Config,
    resume: ResumeState,
    connector: Option<Connector>,
    storage: Option<Arc<dyn Storage>>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Reconnect backoff (default: 250 ms doubling to 30 s, 50 % jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Stop (state `Closed`) after this many failed attempts in a row (default: never).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.max_attempts = Some(attempts);
        self
    }

    /// Time allowed for one attempt to connect, authenticate and catch up (default 15 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Time allowed for a request other than `send`, from the call to the answer, including
    /// time spent waiting for a connection (default 30 s). Sends never time out.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Send a `ping` after this long without sending anything (default 25 s, and never more
    /// than a third of the server's idle timeout); an unanswered ping drops the connection
    /// after `pong_timeout` (default 10 s).
    pub fn keepalive(mut self, ping_interval: Duration, pong_timeout: Duration) -> Self {
        self.config.ping_interval = ping_interval;
        self.config.pong_timeout = pong_timeout;
        self
    }

    /// Resume from cursors saved earlier with [`Client::cursors`] (for example across an app
    /// restart). Without them the first connection replays each conversation from its start
    /// (bounded by the server, the rest paged in automatically).
    pub fn resume_from(mut self, cursors: ResumeState) -> Self {
        self.resume = cursors;
        self
    }

    /// Keeps resume cursors and the outbox in `storage` so they survive a restart (or a page
    /// reload): loaded before the first connection, saved after changes. See [`Storage`],
    /// [`crate::FileStorage`], [`crate::MemoryStorage`]. Cursors given to
    /// [`ClientBuilder::resume_from`] are merged with the stored ones.
    pub fn storage(mut self, storage: impl Storage) -> Self {
        self.storage = Some(Arc::new(storage));
        self
    }

    /// Like [`ClientBuilder::storage`] for an already shared storage.
    pub fn storage_arc(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    #[cfg(test)]
    pub(crate) fn connector(mut self, connector: Connector) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Starts the connection driver and returns at once; the driver connects (and reconnects)
    /// in the background. Watch [`Client::state`] or the [`Event::State`] events.
    ///
    /// Natively this must run inside a tokio runtime.
    pub fn start(self) -> Result<(Client, EventStream)> {
        let url = ServerUrl::parse(&self.url)?;
        let shared = Arc::new(Shared::new(Cursors::from_resume(&self.resume)));
        let events = EventStream {
            rx: shared.subscribe(),
        };
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let driver = Driver::new(
            shared.clone(),
            cmd_rx,
            self.connector.unwrap_or_else(default_connector),
            url.ws(),
            self.token.clone(),
            self.config,
            self.storage,
        );
        rt::spawn(driver.run());
        let client = Client {
            inner: Arc::new(Inner {
                cmd,
                shared,
                url,
                token: self.token,
            }),
        };
        Ok((client, events))
    }

    /// Starts the driver and waits until the first connection is online (authenticated and
    /// caught up). Fails with the first attempt's error, or [`Error::SignedOut`] for a refused
    /// token; later disconnects are then handled automatically.
    ///
    /// The returned [`EventStream`] sees every event from the start, including messages
    /// replayed by the first sync.
    pub async fn connect(self) -> Result<(Client, EventStream)> {
        let (client, events) = self.start()?;
        let mut state = client.state_changes();
        loop {
            let s = state.borrow_and_update().clone();
            match s {
                ConnectionState::Online => return Ok((client, events)),
                ConnectionState::Connecting => {}
                ConnectionState::Reconnecting { .. }
                | ConnectionState::SignedOut
                | ConnectionState::Closed => {
                    let err = client.last_error().unwrap_or(match s {
                        ConnectionState::SignedOut => Error::SignedOut,
                        _ => Error::Closed,
                    });
                    client.stop(ConnectionState::Closed);
                    return Err(err);
                }
            }
            if state.changed().await.is_err() {
                return Err(Error::Closed);
            }
        }
    }
}

impl Client {
    /// Creates an account (`POST /api/register`) and returns its first session.
    pub async fn register(server_url: &str, username: &str, password: &str) -> Result<Session> {
        let url = ServerUrl::parse(server_url)?;
        http::credentials(&url, "/api/register", username, password).await
    }

    /// Signs in (`POST /api/login`).
    pub async fn login(server_url: &str, username: &str, password: &str) -> Result<Session> {
        let url = ServerUrl::parse(server_url)?;
        http::credentials(&url, "/api/login", username, password).await
    }

    /// Who a token belongs to (`GET /api/me`); [`Error::SignedOut`] when it is not valid.
    pub async fn whoami(server_url: &str, token: &str) -> Result<User> {
        let url = ServerUrl::parse(server_url)?;
        http::me(&url, token).await
    }

    /// Ends every session of the token's user, on all devices (`POST /api/logout-all`).
    pub async fn logout_everywhere(server_url: &str, token: &str) -> Result<()> {
        let url = ServerUrl::parse(server_url)?;
        http::logout(&url, "/api/logout-all", token).await
    }

    /// A builder for a connection to `server_url` (`http://host:port`, `https://…`; the
    /// WebSocket endpoint is `/ws` under it) with a session token.
    pub fn builder(server_url: impl Into<String>, token: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: server_url.into(),
            token: token.into(),
            config: Config::default(),
            resume: ResumeState::default(),
            connector: None,
            storage: None,
        }
    }

    /// Connects with default settings: `Client::builder(url, token).connect()`.
    pub async fn connect(
        server_url: impl Into<String>,
        token: impl Into<String>,
    ) -> Result<(Client, EventStream)> {
        Self::builder(server_url, token).connect().await
    }

    /// The connection state now.
    pub fn state(&self) -> ConnectionState {
        self.inner.shared.state.borrow().clone()
    }

    /// A watch on the connection state (`changed().await`, `borrow()`).
    pub fn state_changes(&self) -> watch::Receiver<ConnectionState> {
        self.inner.shared.state.subscribe()
    }

    /// Another stream of events, starting now.
    pub fn subscribe(&self) -> EventStream {
        EventStream {
            rx: self.inner.shared.subscribe(),
        }
    }

    /// The signed-in user (known once the first connection authenticated).
    pub fn user(&self) -> Option<User> {
        lock(&self.inner.shared.user).clone()
    }

    /// Why the last connection attempt failed, if it did.
    pub fn last_error(&self) -> Option<Error> {
        lock(&self.inner.shared.last_error).clone()
    }

    /// The resume cursors now: save them to resume after an app restart
    /// ([`ClientBuilder::resume_from`]).
    pub fn cursors(&self) -> ResumeState {
        lock(&self.inner.shared.cursors).resume_state()
    }

    /// The friends and conversations as last seen from the server: loaded from the storage
    /// seam at start (so an app started offline can show them, see [`crate::Event::Cached`]), then
    /// replaced by the server's lists and kept current by events. Empty without storage
    /// before the first sync.
    pub fn cached_view(&self) -> crate::CachedView {
        lock(&self.inner.shared.view).clone()
    }

    /// The direct conversation with `peer`, once the user is known.
    pub fn conversation_with(&self, peer: UserId) -> Option<ConversationId> {
        self.user().map(|me| ConversationId::direct(me.id, peer))
    }

    fn stop(&self, state: ConnectionState) {
        let _ = self.inner.cmd.send(Command::Stop(state));
    }

    async fn request(&self, kind: ReqKind) -> Result<ServerFrame> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .cmd
            .send(Command::Request { kind, reply })
            .map_err(|_| self.stopped_error())?;
        rx.await.map_err(|_| self.stopped_error())?
    }

    fn stopped_error(&self) -> Error {
        match self.state() {
            ConnectionState::SignedOut => Error::SignedOut,
            _ => Error::Closed,
        }
    }

    async fn friend_op(&self, kind: ReqKind) -> Result<FriendStatus> {
        match self.request(kind).await? {
            ServerFrame::FriendOk { user, relation, .. } => Ok(FriendStatus { user, relation }),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends a friend request by username (if they had asked me, we become friends at once).
    pub async fn request_friend(&self, username: &str) -> Result<FriendStatus> {
        self.friend_op(ReqKind::FriendRequest(username.to_owned()))
            .await
    }

    /// Accepts their request.
    pub async fn accept_friend(&self, user: UserId) -> Result<FriendStatus> {
        self.friend_op(ReqKind::FriendAccept(user)).await
    }

    /// Declines their request.
    pub async fn decline_friend(&self, user: UserId) -> Result<FriendStatus> {
        self.friend_op(ReqKind::FriendDecline(user)).await
    }

    /// Withdraws my request to them.
    pub async fn cancel_friend_request(&self, user: UserId) -> Result<FriendStatus> {
        self.friend_op(ReqKind::FriendCancel(user)).await
    }

    /// Ends a friendship.
    pub async fn remove_friend(&self, user: UserId) -> Result<FriendStatus> {
        self.friend_op(ReqKind::FriendRemove(user)).await
    }

    /// Blocks a user.
    pub async fn block(&self, user: UserId) -> Result<FriendStatus> {
        self.friend_op(ReqKind::Block(user)).await
    }

    /// Lifts my block.
    pub async fn unblock(&self, user: UserId) -> Result<FriendStatus> {
        self.friend_op(ReqKind::Unblock(user)).await
    }

    /// Friends, requests and blocks, with presence for friends.
    pub async fn friends(&self) -> Result<Vec<FriendEntry>> {
        match self.request(ReqKind::FriendsList).await? {
            ServerFrame::Friends { friends, .. } => Ok(friends),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends a message to a conversation or a friend and returns it once the server stored it
    /// (with its id, sequence and time).
    ///
    /// The message goes into the outbox with a fresh idempotency key and stays there until
    /// acknowledged, across reconnects, retried with the same key, so it is stored exactly
    /// once. Dropping the returned future does not cancel the send (watch for
    /// [`Event::Sent`]). Fails only for a non-retryable refusal (such as `not_friends`), or
    /// when the client stops (`SignedOut`, `Closed`).
    pub async fn send(&self, to: impl Into<Target>, body: impl Into<String>) -> Result<Message> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .cmd
            .send(Command::Send {
                target: to.into(),
                body: body.into(),
                key: rt::random_key(),
                reply: Some(reply),
            })
            .map_err(|_| self.stopped_error())?;
        rx.await.map_err(|_| self.stopped_error())?
    }

    /// Queues a message and returns its outbox entry at once (state `Queued`), without
    /// waiting for the ack: follow it with [`Event::Outbox`] (and [`Event::Sent`]) by its
    /// `key`. A body the server's rules refuse (empty, too long) is refused here with
    /// [`Error::Rejected`] and never queued.
    pub fn queue(&self, to: impl Into<Target>, body: impl Into<String>) -> Result<OutboxItem> {
        let to = to.into();
        let body = body.into();
        check_body(*lock(&self.inner.shared.limits), &body)?;
        let key = rt::random_key();
        let item = OutboxItem {
            key: key.clone(),
            conversation: self.user().map(|me| to.resolve(me.id)),
            to: to.clone(),
            body: body.clone(),
            state: SendState::Queued,
        };
        self.inner
            .cmd
            .send(Command::Send {
                target: to,
                body,
                key,
                reply: None,
            })
            .map_err(|_| self.stopped_error())?;
        Ok(item)
    }

    /// The messages not yet acknowledged, oldest first: queued, sending, or failed (a failed
    /// entry stays until [`Client::retry_send`] or [`Client::delete_send`]).
    pub fn outbox(&self) -> Vec<OutboxItem> {
        lock(&self.inner.shared.outbox).clone()
    }

    /// Queues a failed outbox entry again (same idempotency key, so it is stored at most
    /// once). [`Error::InvalidArgument`] if no failed entry has `key`.
    pub async fn retry_send(&self, key: &str) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .cmd
            .send(Command::Retry {
                key: key.to_owned(),
                reply,
            })
            .map_err(|_| self.stopped_error())?;
        rx.await.map_err(|_| self.stopped_error())?
    }

    /// Removes a queued or failed outbox entry; it is never sent (its `send` call fails with
    /// [`Error::Closed`]). A message already on the wire cannot be taken back:
    /// [`Error::InvalidArgument`] then (and for an unknown `key`).
    pub async fn delete_send(&self, key: &str) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .cmd
            .send(Command::Delete {
                key: key.to_owned(),
                reply,
            })
            .map_err(|_| self.stopped_error())?;
        rx.await.map_err(|_| self.stopped_error())?
    }

    /// A page of a conversation's history, oldest first.
    pub async fn history(
        &self,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage> {
        match self
            .request(ReqKind::History(conversation.clone(), query))
            .await?
        {
            ServerFrame::History {
                conversation,
                messages,
                has_more,
                ..
            } => Ok(HistoryPage {
                conversation,
                messages,
                has_more,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// My conversations, most recently active first, with the last message and unread count.
    pub async fn conversations(&self, limit: Option<u32>) -> Result<Vec<ConversationSummary>> {
        match self.request(ReqKind::Conversations(limit)).await? {
            ServerFrame::Conversations { conversations, .. } => Ok(conversations),
            other => Err(unexpected(&other)),
        }
    }

    /// Moves my read mark to `seq` (marks never move back); returns the mark now. The other
    /// participant gets a `read` event ([`crate::Push::Read`]).
    pub async fn mark_read(&self, conversation: &ConversationId, seq: u64) -> Result<u64> {
        match self
            .request(ReqKind::MarkRead(conversation.clone(), seq))
            .await?
        {
            ServerFrame::ReadOk { seq, .. } => Ok(seq),
            other => Err(unexpected(&other)),
        }
    }

    /// Tells the peer I started (`true`) or stopped typing. Ephemeral: dropped while offline.
    pub fn typing(&self, conversation: &ConversationId, active: bool) -> Result<()> {
        self.inner
            .cmd
            .send(Command::Typing {
                conversation: conversation.clone(),
                active,
            })
            .map_err(|_| self.stopped_error())
    }

    /// A round trip to the server.
    pub async fn ping(&self) -> Result<()> {
        self.request(ReqKind::Ping).await.map(|_| ())
    }

    /// Signs out this session (`POST /api/logout`) and stops the client (`SignedOut`).
    /// Messages still in the outbox fail with [`Error::SignedOut`].
    pub async fn logout(&self) -> Result<()> {
        let result = http::logout(&self.inner.url, "/api/logout", &self.inner.token).await;
        self.stop(ConnectionState::SignedOut);
        match result {
            Err(Error::SignedOut) => Ok(()),
            r => r,
        }
    }

    /// Stops the client (`Closed`): closes the connection; pending calls and unsent messages
    /// fail with [`Error::Closed`].
    pub fn close(&self) {
        self.stop(ConnectionState::Closed);
    }

    /// Waits until the client is [`ConnectionState::Online`] (or stopped: then `Err`).
    pub async fn wait_online(&self) -> Result<()> {
        let mut state = self.state_changes();
        loop {
            let s = state.borrow_and_update().clone();
            match s {
                ConnectionState::Online => return Ok(()),
                ConnectionState::SignedOut => return Err(Error::SignedOut),
                ConnectionState::Closed => return Err(Error::Closed),
                _ => {}
            }
            if state.changed().await.is_err() {
                return Err(Error::Closed);
            }
        }
    }
}

fn unexpected(frame: &ServerFrame) -> Error {
    Error::Protocol(format!("unexpected answer: {}", frame.encode()))
}

/// The events of one [`Client`], in order. Also a [`futures_core::Stream`].
///
/// Each stream gets every event from its creation on; keep it drained (events are queued
/// without bound).
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl EventStream {
    /// The next event; `None` once the client has stopped and every event was read.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is ready.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

impl futures_core::Stream for EventStream {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}
