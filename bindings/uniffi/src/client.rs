//! The client object and the account functions: each a direct call of [`zajel_client`].

use crate::error::ZajelError;
use crate::event::{ConnectionState, EventListener, ZajelEvent};
use crate::model::{
    ConversationSummary, FriendEntry, FriendStatus, HistoryPage, HistoryQuery, Message, OutboxItem,
    ResumeCursors, Session, User, conversation_id, user_id,
};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;
use zajel_client::{Backoff, Client, ClientBuilder, EventStream, FileStorage, Target};

type Result<T> = std::result::Result<T, ZajelError>;

/// Creates an account and returns its first session.
#[uniffi::export(async_runtime = "tokio")]
pub async fn register(server_url: String, username: String, password: String) -> Result<Session> {
    Ok(Client::register(&server_url, &username, &password)
        .await?
        .into())
}

/// Signs in.
#[uniffi::export(async_runtime = "tokio")]
pub async fn login(server_url: String, username: String, password: String) -> Result<Session> {
    Ok(Client::login(&server_url, &username, &password)
        .await?
        .into())
}

/// Who a token belongs to; fails with `SignedOut` when the token is not valid.
#[uniffi::export(async_runtime = "tokio")]
pub async fn whoami(server_url: String, token: String) -> Result<User> {
    Ok(Client::whoami(&server_url, &token).await?.into())
}

/// Ends every session of the token's user, on all devices.
#[uniffi::export(async_runtime = "tokio")]
pub async fn logout_everywhere(server_url: String, token: String) -> Result<()> {
    Ok(Client::logout_everywhere(&server_url, &token).await?)
}

/// How a client connects; every field is optional (the Rust client's defaults apply).
#[derive(Clone, Debug, Default, PartialEq, Eq, uniffi::Record)]
pub struct ConnectOptions {
    /// Cursors saved from `cursors()` by an earlier run: resume where it stopped.
    #[uniffi(default = None)]
    pub resume_from: Option<ResumeCursors>,
    /// Stop (state `Closed`) after this many failed attempts in a row (default: never).
    #[uniffi(default = None)]
    pub max_attempts: Option<u32>,
    /// Time allowed for one attempt to connect, authenticate and catch up (default 15 s).
    #[uniffi(default = None)]
    pub connect_timeout_ms: Option<u64>,
    /// Time allowed for a request other than `send`, including waiting for a connection
    /// (default 30 s). Sends never time out.
    #[uniffi(default = None)]
    pub request_timeout_ms: Option<u64>,
    /// First reconnect delay (default 250 ms), doubling per failed attempt.
    #[uniffi(default = None)]
    pub reconnect_initial_ms: Option<u64>,
    /// Longest reconnect delay (default 30 s).
    #[uniffi(default = None)]
    pub reconnect_max_ms: Option<u64>,
    /// A file (in an existing, app-private directory) where the client keeps its resume
    /// cursors and its outbox, so both survive an app restart: loaded before the first
    /// connection, saved after changes, replaced atomically.
    #[uniffi(default = None)]
    pub storage_path: Option<String>,
}

impl ConnectOptions {
    fn apply(self, mut builder: ClientBuilder) -> Result<ClientBuilder> {
        if let Some(path) = self.storage_path {
            builder = builder.storage(FileStorage::new(path));
        }
        if let Some(cursors) = self.resume_from {
            builder = builder.resume_from(cursors.try_into()?);
        }
        if let Some(n) = self.max_attempts {
            builder = builder.max_attempts(n);
        }
        if let Some(ms) = self.connect_timeout_ms {
            builder = builder.connect_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = self.request_timeout_ms {
            builder = builder.request_timeout(Duration::from_millis(ms));
        }
        if self.reconnect_initial_ms.is_some() || self.reconnect_max_ms.is_some() {
            let mut backoff = Backoff::default();
            if let Some(ms) = self.reconnect_initial_ms {
                backoff.initial = Duration::from_millis(ms);
            }
            if let Some(ms) = self.reconnect_max_ms {
                backoff.max = Duration::from_millis(ms);
            }
            builder = builder.backoff(backoff);
        }
        Ok(builder)
    }
}

/// Connects and returns once the client is online (authenticated and caught up); fails with
/// the first attempt's error (`SignedOut` for a refused token). Later drops reconnect
/// automatically. `listener` gets every event from the start, including the messages the
/// first sync replays.
#[uniffi::export(async_runtime = "tokio", default(options = None))]
pub async fn connect(
    server_url: String,
    token: String,
    listener: Box<dyn EventListener>,
    options: Option<ConnectOptions>,
) -> Result<Arc<ZajelClient>> {
    let builder = options
        .unwrap_or_default()
        .apply(Client::builder(server_url, token))?;
    let (client, events) = builder.connect().await?;
    Ok(ZajelClient::new(client, events, listener))
}

/// Starts a client and returns at once, without waiting for a connection (an app started
/// offline): it connects and reconnects in the background; watch the `State` events or call
/// `wait_online`. Calls made meanwhile wait for the connection.
#[uniffi::export(async_runtime = "tokio", default(options = None))]
pub async fn start(
    server_url: String,
    token: String,
    listener: Box<dyn EventListener>,
    options: Option<ConnectOptions>,
) -> Result<Arc<ZajelClient>> {
    let builder = options
        .unwrap_or_default()
        .apply(Client::builder(server_url, token))?;
    let (client, events) = builder.start()?;
    Ok(ZajelClient::new(client, events, listener))
}

/// A connected client: one connection to the server, kept up in the background.
///
/// Every method is a direct call of the Rust client (`zajel_client::Client`); its
/// reconnect, resume, outbox and exactly-once delivery are this object's behaviour. The
/// client stops with `disconnect`, `logout`, a refused token, or when the object is released
/// (garbage-collected, `close()`d in Kotlin, deinitialized in Swift).
#[derive(uniffi::Object)]
pub struct ZajelClient {
    client: Client,
}

impl ZajelClient {
    fn new(client: Client, events: EventStream, listener: Box<dyn EventListener>) -> Arc<Self> {
        pump(events, listener);
        let this = Arc::new(Self { client });
        let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|c| c.strong_count() > 0);
        live.push(Arc::downgrade(&this));
        this
    }
}

/// Whether listeners may still be called; see [`shutdown`].
static DELIVERY: RwLock<bool> = RwLock::new(true);

/// The clients alive in this process, for [`shutdown`].
static LIVE: Mutex<Vec<Weak<ZajelClient>>> = Mutex::new(Vec::new());

/// Stops every client of the process (as `disconnect` does) and all event delivery, for
/// good; returns once they stopped (at most about a second).
///
/// For a process that is shutting down its language runtime: the Python package calls it at
/// interpreter exit. A thread that calls into a finalizing interpreter (to deliver an event,
/// to wake a coroutine, or to release a listener) is killed with a forced unwind, which
/// aborts the process; after this call no thread of the library calls into it again
/// (listeners are leaked rather than released).
#[uniffi::export]
pub fn shutdown() {
    *DELIVERY.write().unwrap_or_else(PoisonError::into_inner) = false;
    let live: Vec<Arc<ZajelClient>> =
        std::mem::take(&mut *LIVE.lock().unwrap_or_else(PoisonError::into_inner))
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
    for c in &live {
        c.client.close();
    }
    // The drivers stop on their runtime thread; wait for that while the foreign runtime is
    // still whole, so nothing of theirs runs during its finalization.
    for _ in 0..100 {
        if live.iter().all(|c| c.client.state().is_terminal()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Delivers the events to the listener on a thread of its own, so a slow listener never
/// blocks the runtime's workers (and with them the connection). The thread ends when the
/// stream does: after the client stopped and every event was delivered.
fn pump(mut events: EventStream, listener: Box<dyn EventListener>) {
    let runtime = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new()
        .name("zajel-events".into())
        .spawn(move || {
            runtime.block_on(async {
                while let Some(event) = events.next().await {
                    let Some(event) = ZajelEvent::from_client(event) else {
                        continue;
                    };
                    // Held during the call, so `shutdown` waits for it.
                    let open = DELIVERY.read().unwrap_or_else(PoisonError::into_inner);
                    if !*open {
                        break;
                    }
                    // A listener that throws surfaces here as a panic of the generated glue;
                    // one bad event must not end delivery of the rest.
                    let _ = catch_unwind(AssertUnwindSafe(|| listener.on_event(event)));
                }
            });
            // Releasing a foreign listener calls into its runtime too: after
            // `shutdown` the process is exiting, so leak it instead.
            let open = DELIVERY.read().unwrap_or_else(PoisonError::into_inner);
            if *open {
                drop(listener);
            } else {
                std::mem::forget(listener);
            }
        });
    if let Err(e) = spawned {
        // Without a thread there is no delivery; the calls still work. Cannot happen short
        // of resource exhaustion, so report it loudly rather than fail the connect.
        eprintln!("zajel: cannot start the event thread: {e}");
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl ZajelClient {
    /// The connection state now.
    pub fn state(&self) -> ConnectionState {
        self.client.state().into()
    }

    /// The signed-in user (known once the first connection authenticated).
    pub fn user(&self) -> Option<User> {
        self.client.user().map(User::from)
    }

    /// The resume cursors now: save them and pass them in `ConnectOptions.resume_from` after
    /// an app restart.
    pub fn cursors(&self) -> ResumeCursors {
        self.client.cursors().into()
    }

    /// The direct conversation id with `peer` (a user id), once the user is known.
    pub fn conversation_with(&self, peer: String) -> Result<Option<String>> {
        Ok(self
            .client
            .conversation_with(user_id(&peer)?)
            .map(|c| c.to_string()))
    }

    /// Waits until the client is online; fails with `SignedOut` or `Closed` if it stopped.
    pub async fn wait_online(&self) -> Result<()> {
        Ok(self.client.wait_online().await?)
    }

    /// Sends a friend request by username (if they had asked me, we become friends at once).
    pub async fn request_friend(&self, username: String) -> Result<FriendStatus> {
        Ok(self.client.request_friend(&username).await?.into())
    }

    /// Accepts the request of the user with this id.
    pub async fn accept_friend(&self, user: String) -> Result<FriendStatus> {
        Ok(self.client.accept_friend(user_id(&user)?).await?.into())
    }

    /// Declines their request.
    pub async fn decline_friend(&self, user: String) -> Result<FriendStatus> {
        Ok(self.client.decline_friend(user_id(&user)?).await?.into())
    }

    /// Withdraws my request to them.
    pub async fn cancel_friend_request(&self, user: String) -> Result<FriendStatus> {
        Ok(self
            .client
            .cancel_friend_request(user_id(&user)?)
            .await?
            .into())
    }

    /// Ends a friendship.
    pub async fn remove_friend(&self, user: String) -> Result<FriendStatus> {
        Ok(self.client.remove_friend(user_id(&user)?).await?.into())
    }

    /// Blocks a user.
    pub async fn block(&self, user: String) -> Result<FriendStatus> {
        Ok(self.client.block(user_id(&user)?).await?.into())
    }

    /// Lifts my block.
    pub async fn unblock(&self, user: String) -> Result<FriendStatus> {
        Ok(self.client.unblock(user_id(&user)?).await?.into())
    }

    /// Friends, requests and blocks, with presence for friends.
    pub async fn friends(&self) -> Result<Vec<FriendEntry>> {
        Ok(self
            .client
            .friends()
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Sends `body` to a conversation id (`dm.…`) or a friend's user id and returns the
    /// message once the server stored it. It waits in the outbox across reconnects and is
    /// stored exactly once; cancelling the call does not cancel the message (its `Sent`
    /// event still comes).
    pub async fn send(&self, to: String, body: String) -> Result<Message> {
        let target: Target = to.parse()?;
        Ok(self.client.send(target, body).await?.into())
    }

    /// Queues a message and returns its outbox entry at once (state `Queued`) without waiting
    /// for the ack; follow it through `Outbox` events by its `key`. A body the server's rules
    /// refuse (empty, too long) is refused here and never queued.
    pub fn queue(&self, to: String, body: String) -> Result<OutboxItem> {
        let target: Target = to.parse()?;
        Ok(self.client.queue(target, body)?.into())
    }

    /// The outbox now: messages not yet acknowledged (queued, sending, failed), oldest first.
    pub fn outbox(&self) -> Vec<OutboxItem> {
        self.client.outbox().into_iter().map(Into::into).collect()
    }

    /// Sends a failed outbox entry again (same key, so it is still stored at most once).
    pub async fn retry_send(&self, key: String) -> Result<()> {
        Ok(self.client.retry_send(&key).await?)
    }

    /// Removes an entry from the outbox without sending it.
    pub async fn delete_send(&self, key: String) -> Result<()> {
        Ok(self.client.delete_send(&key).await?)
    }

    /// A page of a conversation's history, oldest first.
    pub async fn history(&self, conversation: String, query: HistoryQuery) -> Result<HistoryPage> {
        let conversation = conversation_id(&conversation)?;
        Ok(self
            .client
            .history(&conversation, query.into())
            .await?
            .into())
    }

    /// My conversations, most recently active first.
    pub async fn conversations(&self, limit: Option<u32>) -> Result<Vec<ConversationSummary>> {
        Ok(self
            .client
            .conversations(limit)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Moves my read mark to `seq` (marks never move back); returns the mark now.
    pub async fn mark_read(&self, conversation: String, seq: u64) -> Result<u64> {
        let conversation = conversation_id(&conversation)?;
        Ok(self.client.mark_read(&conversation, seq).await?)
    }

    /// Tells the peer I started (`true`) or stopped typing. Dropped while offline.
    pub fn typing(&self, conversation: String, active: bool) -> Result<()> {
        let conversation = conversation_id(&conversation)?;
        Ok(self.client.typing(&conversation, active)?)
    }

    /// A round trip to the server.
    pub async fn ping(&self) -> Result<()> {
        Ok(self.client.ping().await?)
    }

    /// Signs out this session and stops the client (`SignedOut`); messages still queued fail
    /// with `SignedOut`.
    pub async fn logout(&self) -> Result<()> {
        Ok(self.client.logout().await?)
    }

    /// Stops the client (`Closed`): closes the connection; pending calls and queued messages
    /// fail with `Closed`. (`Client::close` in Rust; named so it does not clash with the
    /// `close()` Kotlin's `AutoCloseable` gives every object.)
    pub fn disconnect(&self) {
        self.client.close();
    }
}
