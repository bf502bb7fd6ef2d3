//! The connection hub and the delivery seam.
//!
//! * [`Hub`]: who is connected to *this node*. Keyed by user id over sharded `RwLock`s (no
//!   global lock on the hot path); each connection owns a bounded queue of pre-serialized
//!   [`Event`]s. An event is serialized once and shared (`Arc`) by every recipient.
//! * [`Broker`]: how an event reaches the users it is for. [`LocalBroker`] delivers through
//!   the local hub; the cross-node [`RedisBroker`](crate::broker::RedisBroker) publishes to
//!   the other nodes as well and feeds what it receives into [`Hub::deliver`]. The engine only ever calls
//!   [`Broker::publish`], so adding one is a new implementation, not a rewrite.
//!
//! Slow consumers: when a connection's queue is full the hub does not wait and does not drop
//! silently; it marks the connection to be closed with code 4008 ("lagged"). The client
//! reconnects and resumes from its cursor, and the durable history fills the gap.

use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::Poll;
use tokio::sync::mpsc;
use zajel_core::ConversationId;
use zajel_core::UserId;
use zajel_core::protocol::{Push, ServerFrame};

/// Close code for a connection whose outbound queue overflowed.
pub const CLOSE_LAGGED: u16 = 4008;

/// A connection's id, unique within the process.
pub type ConnId = u64;

/// One serialized server frame, shared by all its recipients.
#[derive(Debug)]
pub struct Event {
    text: Utf8Bytes,
    message: Option<(ConversationId, u64)>,
}

impl Event {
    /// Serializes `frame` once.
    pub fn new(frame: &ServerFrame) -> Arc<Self> {
        let message = match frame {
            ServerFrame::Push(Push::Message { message }) => {
                Some((message.conversation.clone(), message.seq))
            }
            _ => None,
        };
        Arc::new(Self {
            text: Utf8Bytes::from(frame.encode()),
            message,
        })
    }

    /// An event from JSON text that is already serialized (e.g. received from another node),
    /// with its `message` conversation and sequence if it is a `message` event. The text is
    /// not parsed or re-encoded.
    pub fn from_serialized(text: String, message: Option<(ConversationId, u64)>) -> Arc<Self> {
        Arc::new(Self {
            text: Utf8Bytes::from(text),
            message,
        })
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        self.text.as_str()
    }

    /// The bytes to put on the wire (cheap clone: reference counted).
    pub fn wire(&self) -> Utf8Bytes {
        self.text.clone()
    }

    /// For a `message` event: its conversation and sequence (used to de-duplicate on resume).
    pub fn message_seq(&self) -> Option<(&ConversationId, u64)> {
        self.message.as_ref().map(|(c, s)| (c, *s))
    }
}

/// Lets the hub ask a connection task to close itself (e.g. lagged, signed out, shutdown).
///
/// One waiter, the connection's own task: it is woken through an [`AtomicWaker`] rather than a
/// [`tokio::sync::Notify`], so waiting in [`ConnControl::closed`] is a future of one pointer
/// (re-made on every turn of the connection's loop for the cost of a few atomic operations)
/// and the control itself stays small. Every open connection holds one for its whole life.
#[derive(Debug, Default)]
pub struct ConnControl {
    code: AtomicU16,
    /// How many connections were asked to close together with this one (see
    /// [`ConnControl::close_in_wave`]).
    wave: AtomicUsize,
    waker: AtomicWaker,
}

impl ConnControl {
    /// Requests a close with `code`; the first request wins.
    pub fn close(&self, code: u16) {
        self.close_in_wave(code, 1);
    }

    /// Requests a close with `code` as one of `wave` connections closed at once. A close that
    /// expects the client back (4008) tells it when, spread over a window that grows with the
    /// wave (`reconnect_rate`), so a mass close does not come back as a stampede.
    pub fn close_in_wave(&self, code: u16, wave: usize) {
        self.wave.store(wave.max(1), Ordering::Release);
        if self
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.waker.wake();
        }
    }

    /// The size of the wave this connection was closed in (1 when alone).
    pub fn wave(&self) -> usize {
        self.wave.load(Ordering::Acquire).max(1)
    }

    /// Waits until a close was requested and returns its code. Meant for one task at a time
    /// (the connection's): a second concurrent waiter could take the other's wake-up.
    pub fn closed(&self) -> impl Future<Output = u16> + '_ {
        std::future::poll_fn(|cx| {
            if let Some(code) = self.requested() {
                return Poll::Ready(code);
            }
            self.waker.register(cx.waker());
            // A close between the check and the registration found no waker to wake.
            match self.requested() {
                Some(code) => Poll::Ready(code),
                None => Poll::Pending,
            }
        })
    }

    /// The requested close code, if any.
    pub fn requested(&self) -> Option<u16> {
        match self.code.load(Ordering::Acquire) {
            0 => None,
            c => Some(c),
        }
    }
}

#[derive(Clone)]
struct Entry {
    id: ConnId,
    tx: mpsc::Sender<Arc<Event>>,
    control: Arc<ConnControl>,
    session: Arc<str>,
}

/// A connection's registration: its id, its queue and its control handle.
pub struct Subscription {
    /// The connection id (used to skip the originating connection when publishing).
    pub id: ConnId,
    /// Events for this connection, in publish order.
    pub rx: mpsc::Receiver<Arc<Event>>,
    /// Close requests from the hub.
    pub control: Arc<ConnControl>,
    /// Whether this is the user's first connection on this node (presence goes online).
    pub first: bool,
}

const SHARDS: usize = 64;

/// One shard of the hub: users (hashed to this shard) and their connections.
type Shard = RwLock<HashMap<UserId, Vec<Entry>>>;

/// Local connections by user.
pub struct Hub {
    shards: Box<[Shard]>,
    capacity: usize,
    next_id: AtomicU64,
    lagged: AtomicU64,
    delivered: AtomicU64,
    /// `close_user` calls so far (see [`Hub::revocations`]).
    revocations: AtomicU64,
    /// Friend-graph changes made on this node so far (see [`Hub::relation_changes`]).
    relation_changes: AtomicU64,
}

impl Hub {
    /// A hub whose per-connection queues hold `queue_capacity` events.
    pub fn new(queue_capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            capacity: queue_capacity.max(1),
            next_id: AtomicU64::new(1),
            lagged: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            revocations: AtomicU64::new(0),
            relation_changes: AtomicU64::new(0),
        }
    }

    fn shard(&self, user: UserId) -> &Shard {
        // User ids are random (minted by the stores): their low bits spread users evenly
        // without hashing them on every delivery.
        &self.shards[(user.0.as_u128() as usize) % self.shards.len()]
    }

    /// Registers a connection of `user` authenticated by the session whose token hash is
    /// `session`. Events published from now on are queued for it.
    pub fn subscribe(&self, user: UserId, session: Arc<str>) -> Subscription {
        let (tx, rx) = mpsc::channel(self.capacity);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let control = Arc::new(ConnControl::default());
        let mut map = self.shard(user).write().unwrap_or_else(|e| e.into_inner());
        let conns = map.entry(user).or_default();
        let first = conns.is_empty();
        conns.push(Entry {
            id,
            tx,
            control: control.clone(),
            session,
        });
        Subscription {
            id,
            rx,
            control,
            first,
        }
    }

    /// Removes a connection; returns true when it was the user's last one on this node.
    pub fn unsubscribe(&self, user: UserId, id: ConnId) -> bool {
        let mut map = self.shard(user).write().unwrap_or_else(|e| e.into_inner());
        let Some(conns) = map.get_mut(&user) else {
            return false;
        };
        let before = conns.len();
        conns.retain(|e| e.id != id);
        let removed = conns.len() < before;
        if conns.is_empty() {
            map.remove(&user);
            removed
        } else {
            false
        }
    }

    /// Queues `event` for every local connection of each user in `users` except `skip`.
    /// Never waits: a full queue marks that connection lagged (close 4008). Returns the number
    /// of connections the event was queued for.
    pub fn deliver(&self, users: &[UserId], event: &Arc<Event>, skip: Option<ConnId>) -> usize {
        let mut n = 0;
        for &user in users {
            let map = self.shard(user).read().unwrap_or_else(|e| e.into_inner());
            let Some(conns) = map.get(&user) else {
                continue;
            };
            for entry in conns.iter().filter(|e| Some(e.id) != skip) {
                match entry.tx.try_send(event.clone()) {
                    Ok(()) => n += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        if entry.control.requested().is_none() {
                            self.lagged.fetch_add(1, Ordering::Relaxed);
                        }
                        entry.control.close(CLOSE_LAGGED);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
        self.delivered.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// How many connections `user` has on this node.
    pub fn connections_of(&self, user: UserId) -> usize {
        self.shard(user)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&user)
            .map_or(0, Vec::len)
    }

    /// Whether `user` has a connection on this node.
    pub fn is_online(&self, user: UserId) -> bool {
        self.shard(user)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&user)
            .is_some_and(|c| !c.is_empty())
    }

    /// Asks `user`'s connections to close with `code`: all of them, or only those of the
    /// session `session` (its token hash).
    pub fn close_user(&self, user: UserId, session: Option<&str>, code: u16) {
        // Counted before the connections are looked up: see `revocations`.
        self.revocations.fetch_add(1, Ordering::SeqCst);
        let map = self.shard(user).read().unwrap_or_else(|e| e.into_inner());
        if let Some(conns) = map.get(&user) {
            for e in conns
                .iter()
                .filter(|e| session.is_none_or(|s| &*e.session == s))
            {
                e.control.close(code);
            }
        }
    }

    /// How many times [`Hub::close_user`] ran (session revocations, local or from another
    /// node). A connection reads this before it checks its session in the store and again
    /// once it is subscribed: if the two are equal, no revocation can have run in between
    /// (one that ran before the first read had already deleted the session from the store;
    /// one after the second finds the subscription), so it needs no second store check.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::SeqCst)
    }

    /// Counts a friend-graph change, after it is written and before anyone is told of it
    /// (the presence check that follows a new friendship).
    pub(crate) fn relation_changed(&self) {
        self.relation_changes.fetch_add(1, Ordering::SeqCst);
    }

    /// How many friend-graph changes this node made ([`Hub::relation_changed`]). A
    /// connection reads it before it reads its friend list (with its session, before it is
    /// registered) and again once it is registered: if the two are equal, no change can have
    /// slipped in between (one counted before the first read was in the store for that read;
    /// one counted after the second checks presence after the registration, so it sees the
    /// user online), and the list read early may be used to announce "came online". Only
    /// with node-local presence ([`Presence::node_local`](crate::presence::Presence::node_local)):
    /// another node's changes are not counted here.
    pub(crate) fn relation_changes(&self) -> u64 {
        self.relation_changes.load(Ordering::SeqCst)
    }

    /// The id the next connection will get: connections with a smaller id exist already.
    pub fn next_conn_id(&self) -> ConnId {
        self.next_id.load(Ordering::Relaxed)
    }

    /// Asks every local connection whose id is below `before` (see [`Hub::next_conn_id`]) to
    /// close with `code` (e.g. 4008 after a gap in cross-node delivery, so that clients resume
    /// from their cursors). Returns how many were asked.
    pub fn close_older(&self, before: ConnId, code: u16) -> usize {
        // Counted first: every connection of the wave learns its size (reconnect spread).
        let wave: usize = self
            .shards
            .iter()
            .map(|shard| {
                let map = shard.read().unwrap_or_else(|e| e.into_inner());
                map.values().flatten().filter(|e| e.id < before).count()
            })
            .sum();
        let mut n = 0;
        for shard in self.shards.iter() {
            let map = shard.read().unwrap_or_else(|e| e.into_inner());
            for e in map.values().flatten().filter(|e| e.id < before) {
                e.control.close_in_wave(code, wave);
                n += 1;
            }
        }
        n
    }

    /// Asks every local connection to close with `code` (shutdown: 1001). Returns how many
    /// were asked. A connection that registers afterwards must check for itself (see
    /// [`Engine::shutdown`](crate::Engine::shutdown)).
    pub fn close_all(&self, code: u16) -> usize {
        self.close_older(ConnId::MAX, code)
    }

    /// Asks `user`'s connections whose id is below `before` to close with `code`, as part of
    /// a wave of about `wave` connections closed together (see [`ConnControl::close_in_wave`]).
    pub fn close_user_older(&self, user: UserId, before: ConnId, code: u16, wave: usize) {
        let map = self.shard(user).read().unwrap_or_else(|e| e.into_inner());
        if let Some(conns) = map.get(&user) {
            for e in conns.iter().filter(|e| e.id < before) {
                e.control.close_in_wave(code, wave);
            }
        }
    }

    /// Connections closed for lagging so far.
    pub fn lagged_total(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }

    /// Events queued so far (one per recipient connection).
    pub fn delivered_total(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

/// Delivery of events to users, wherever they are connected.
///
/// Implementations must not block: `publish` is called on the request path. A cross-node
/// implementation enqueues to a background publisher and also calls [`Hub::deliver`] for
/// local recipients.
pub trait Broker: Send + Sync + 'static {
    /// Delivers `event` to every connection of each user in `users`, except connection `skip`
    /// (the one the request came from, which gets a direct answer instead). At most once per
    /// connection; a connection that cannot keep up is closed (4008) and recovers by resuming.
    fn publish(&self, users: &[UserId], event: Arc<Event>, skip: Option<ConnId>);

    /// Asks every connection of `user` on every node (all of them, or only those of the
    /// session whose token hash is `session`) to close with `code`, e.g. 4001 after logout.
    /// Must not block; a cross-node implementation delivers it in the background.
    fn close_user(&self, user: UserId, session: Option<&str>, code: u16);
}

/// Single-node delivery through the local [`Hub`].
pub struct LocalBroker {
    hub: Arc<Hub>,
}

impl LocalBroker {
    /// Delivers through `hub`.
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

impl Broker for LocalBroker {
    fn publish(&self, users: &[UserId], event: Arc<Event>, skip: Option<ConnId>) {
        self.hub.deliver(users, &event, skip);
    }

    fn close_user(&self, user: UserId, session: Option<&str>, code: u16) {
        self.hub.close_user(user, session, code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use zajel_core::protocol::RequestId;

    fn user(n: u8) -> UserId {
        format!("00000000-0000-4000-8000-0000000000{n:02x}")
            .parse()
            .expect("valid uuid")
    }

    fn pong(n: u32) -> Arc<Event> {
        Event::new(&ServerFrame::Pong {
            re: RequestId::new(n.to_string()).expect("valid id"),
        })
    }

    #[test]
    fn fan_out_shares_one_serialization_and_skips_origin() {
        let hub = Hub::new(8);
        let (a, b) = (user(1), user(2));
        let mut a1 = hub.subscribe(a, "s1".into());
        let mut a2 = hub.subscribe(a, "s2".into());
        let mut b1 = hub.subscribe(b, "s3".into());
        assert!(a1.first && !a2.first && b1.first);
        let ev = pong(1);
        assert_eq!(hub.deliver(&[a, b], &ev, Some(a1.id)), 2);
        assert!(a1.rx.try_recv().is_err());
        let got = a2.rx.try_recv().expect("queued");
        assert!(Arc::ptr_eq(&got, &ev), "the same bytes are shared");
        assert!(b1.rx.try_recv().is_ok());
        assert!(!hub.unsubscribe(a, a1.id));
        assert!(hub.unsubscribe(a, a2.id));
        assert!(!hub.is_online(a) && hub.is_online(b));
    }

    #[tokio::test]
    async fn slow_consumer_is_closed_with_4008_and_others_are_unaffected() {
        let hub = Hub::new(2);
        let (a, b) = (user(1), user(2));
        let slow = hub.subscribe(a, "s1".into());
        let mut fast = hub.subscribe(b, "s2".into());
        for i in 0..5 {
            hub.deliver(&[a, b], &pong(i), None);
            // The fast consumer keeps up.
            assert!(fast.rx.try_recv().is_ok());
        }
        assert_eq!(slow.control.closed().await, CLOSE_LAGGED);
        assert_eq!(fast.control.requested(), None);
        assert_eq!(hub.lagged_total(), 1);
    }

    /// Shutdown reaches connections through their controls: every registered one is asked,
    /// and a task already waiting in `closed()` is woken (not only a later poll sees it).
    #[tokio::test]
    async fn close_all_asks_every_connection_and_wakes_its_waiter() {
        let hub = Hub::new(4);
        let a = hub.subscribe(user(1), "s1".into());
        let a2 = hub.subscribe(user(1), "s2".into());
        let b = hub.subscribe(user(2), "s3".into());
        let mut waiting = std::pin::pin!(a.control.closed());
        // Polled once: pending, its waker registered.
        assert!(
            tokio::time::timeout(Duration::ZERO, waiting.as_mut())
                .await
                .is_err()
        );
        assert_eq!(hub.close_all(1001), 3);
        let woken = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(woken, Ok(1001), "the waiting task is woken with the code");
        assert_eq!(a2.control.requested(), Some(1001));
        assert_eq!(b.control.closed().await, 1001);
        assert_eq!(b.control.wave(), 3, "one wave of all the connections");
        // The first request wins.
        b.control.close(CLOSE_LAGGED);
        assert_eq!(b.control.requested(), Some(1001));
        // A connection registered afterwards is not asked (it checks the shutdown flag).
        let late = hub.subscribe(user(3), "s4".into());
        assert_eq!(late.control.requested(), None);
    }

    #[test]
    fn close_user_targets_one_session_or_all() {
        let hub = Hub::new(4);
        let a = user(1);
        let s1 = hub.subscribe(a, "s1".into());
        let s2 = hub.subscribe(a, "s2".into());
        hub.close_user(a, Some("s1"), 4003);
        assert_eq!(s1.control.requested(), Some(4003));
        assert_eq!(s2.control.requested(), None);
        hub.close_user(a, None, 4003);
        assert_eq!(s2.control.requested(), Some(4003));
    }

    /// A connection skips its second session check only when no revocation ran in between:
    /// every `close_user`, for any user and whether or not it found a connection, counts.
    #[test]
    fn every_close_user_counts_as_a_revocation() {
        let hub = Hub::new(4);
        let before = hub.revocations();
        hub.close_user(user(9), None, 4001);
        assert_eq!(
            hub.revocations(),
            before + 1,
            "no connection of the user: still counted"
        );
        let _s = hub.subscribe(user(1), "s".into());
        hub.close_user(user(1), Some("other"), 4001);
        assert_eq!(hub.revocations(), before + 2);
    }
}
