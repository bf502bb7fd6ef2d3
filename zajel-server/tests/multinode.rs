//! Several nodes sharing one real Redis (store + `RedisBroker`): events cross nodes exactly
//! once, presence is cluster-wide, and a node that dies takes its users offline within its
//! heartbeat TTL plus one sweep; they resume on another node with nothing lost.

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zajel_core::RedisStore;
use zajel_core::testing::RedisServer;
use zajel_server::Engine;
use zajel_server::broker::{RedisBroker, RedisBrokerConfig};

/// Short heartbeats so node death is noticed in about a second.
fn broker_config(node: &str) -> RedisBrokerConfig {
    RedisBrokerConfig {
        node_id: node.into(),
        heartbeat_ms: 200,
        node_ttl_ms: 1000,
        sweep_ms: 200,
        ..RedisBrokerConfig::default()
    }
}

/// An in-process node: its own `RedisStore` connection and `RedisBroker` on `url`.
async fn node(url: &str, id: &str) -> TestServer {
    node_with_broker_at(url, url, id).await
}

/// A node whose store and broker connect to `store_url` and `broker_url` (e.g. the broker as
/// an ACL user with fewer rights).
async fn node_with_broker_at(store_url: &str, broker_url: &str, id: &str) -> TestServer {
    let store = RedisStore::connect(store_url).await.expect("redis store");
    let broker = RedisBroker::connect(broker_url, broker_config(id))
        .await
        .expect("redis broker");
    let engine = Engine::builder(Arc::new(store), test_config())
        .redis_broker(broker)
        .build();
    TestServer::serve(engine).await
}

/// Node B as a real `zajel-server` process (`--redis-url`, so the broker is wired
/// automatically) with the same short heartbeats as `broker_config`.
fn binary_node_b(url: &str) -> Binary {
    Binary::start(&[
        "--redis-url",
        url,
        "--node-id",
        "node-b",
        "--node-heartbeat-ms",
        "200",
        "--node-ttl-ms",
        "1000",
        "--node-sweep-ms",
        "200",
    ])
}

/// A plain Redis connection of the test's own, for raw commands (ACLs, the registry).
async fn raw_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection")
}

/// Waits for a `presence` event about `user` with `online`, skipping other presence events.
async fn expect_presence(c: &mut Client, user: &Account, online: bool) -> Value {
    loop {
        let p = c.expect("presence").await;
        if p["user"] == user.id.as_str() && p["online"] == online {
            return p;
        }
    }
}

fn online_of(friends: &Value, user: &Account) -> bool {
    friends
        .as_array()
        .expect("friends array")
        .iter()
        .find(|f| f["user"]["id"] == user.id.as_str())
        .and_then(|f| f["online"].as_bool())
        .unwrap_or_else(|| panic!("{} not in {friends}", user.username))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_nodes_exactly_once() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let na = node(&url, "node-a").await;
    let nb = node(&url, "node-b").await;

    let alice = register(na.addr, "alice").await;
    let bob = register(nb.addr, "bob").await;
    // Friend request and accept events cross nodes in both directions.
    let (mut a, mut b) = friends_at(na.addr, &alice, nb.addr, &bob).await;
    let conv = dm(&alice, &bob);

    // A -> B and B -> A, live.
    exchange(&mut a, &mut b, &conv).await;

    // alice's second device is on node B: it sees her sends from node A, and node A sees the
    // sends of that device.
    let (mut a2, _) = Client::login(nb.addr, &alice).await;
    a.send_message(&conv, "three", "k3").await;
    assert_eq!(b.expect("message").await["message"]["seq"], 3);
    assert_eq!(a2.expect("message").await["message"]["seq"], 3);
    a2.send_message(&conv, "four", "k4").await;
    assert_eq!(a.expect("message").await["message"]["seq"], 4);
    assert_eq!(b.expect("message").await["message"]["seq"], 4);

    // Typing crosses nodes (to bob only).
    a.send_raw(&json!({"type": "typing", "conversation": conv, "active": true}).to_string())
        .await;
    let t = b.expect("typing").await;
    assert_eq!(t["user"], alice.id.as_str());
    assert_eq!(t["active"], true);

    // Read receipts cross nodes too.
    let r = b
        .call(json!({"type": "mark_read", "conversation": conv, "seq": 4}))
        .await;
    assert_eq!(r["type"], "read_ok", "{r}");
    assert_eq!(a.expect("read").await["seq"], 4);
    assert_eq!(a2.expect("read").await["seq"], 4);

    // Exactly once: nothing else (presence aside) arrives anywhere.
    for c in [&mut a, &mut a2, &mut b] {
        c.expect_silence(300).await;
    }
    let h = b.history(&conv, json!({})).await;
    assert_eq!(seqs(&h), vec![1, 2, 3, 4]);
    let broker = nb.engine.redis_broker().expect("broker");
    assert!(broker.received_total() > 0 && broker.lost_total() == 0);

    for c in [a, a2, b] {
        c.close().await;
    }
    na.stop().await;
    nb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_cluster_wide() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let na = node(&url, "node-a").await;
    let nb = node(&url, "node-b").await;

    let alice = register(na.addr, "alice").await;
    let bob = register(nb.addr, "bob").await;
    let (mut a, b) = friends_at(na.addr, &alice, nb.addr, &bob).await;
    // Node A sees bob (on B) online in the friends list.
    let f = a.call(json!({"type": "friends_list"})).await;
    assert!(online_of(&f["friends"], &bob), "{f}");

    // bob's last connection closes on B: alice on A hears offline, with a last-seen time.
    b.close().await;
    let p = expect_presence(&mut a, &bob, false).await;
    assert!(p["last_seen"].is_number(), "{p}");
    let f = a.call(json!({"type": "friends_list"})).await;
    assert!(!online_of(&f["friends"], &bob), "{f}");

    // bob connects on B: online on A.
    let (b1, _) = Client::login(nb.addr, &bob).await;
    expect_presence(&mut a, &bob, true).await;
    // A second connection on the other node changes nothing; closing one of two neither.
    let (b2, _) = Client::login(na.addr, &bob).await;
    b1.close().await;
    a.expect_silence(300).await;
    let f = a.call(json!({"type": "friends_list"})).await;
    assert!(online_of(&f["friends"], &bob), "{f}");
    // The last one (on A this time): offline.
    b2.close().await;
    expect_presence(&mut a, &bob, false).await;

    a.close().await;
    na.stop().await;
    nb.stop().await;
}

/// Node B is a real `zajel-server` process (`--redis-url`, so the broker is wired
/// automatically) and dies by SIGKILL: no graceful shutdown, no presence cleanup of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_node_users_go_offline_and_resume_elsewhere() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let na = node(&url, "node-a").await;
    let mut nb = binary_node_b(&url);

    let alice = register(na.addr, "alice").await;
    let bob = register(nb.addr, "bob").await;
    let (mut a, mut b) = friends_at(na.addr, &alice, nb.addr, &bob).await;
    let conv = dm(&alice, &bob);
    a.send_message(&conv, "one", "k1").await;
    assert_eq!(b.expect("message").await["message"]["seq"], 1);

    // Node B dies.
    nb.child.kill().expect("SIGKILL node B");
    let _ = nb.child.wait();
    let died = Instant::now();
    drop(b);
    // Sent while bob is between nodes: stored, live delivery goes nowhere.
    a.send_message(&conv, "two", "k2").await;
    a.send_message(&conv, "three", "k3").await;

    // Within TTL (1 s) + sweep (0.2 s) + slack, node A announces bob offline.
    let p = expect_presence(&mut a, &bob, false).await;
    assert!(p["last_seen"].is_number(), "{p}");
    let took = died.elapsed();
    assert!(took < Duration::from_secs(4), "offline after {took:?}");
    let f = a.call(json!({"type": "friends_list"})).await;
    assert!(!online_of(&f["friends"], &bob), "{f}");

    // bob resumes on node A from his cursor: 2 and 3 exactly once, then synced.
    let mut b = Client::connect(na.addr, "bob").await;
    let ok = b
        .auth(&bob.token, Some(json!({"cursors": {conv.clone(): 1}})))
        .await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    for (seq, body) in [(2, "two"), (3, "three")] {
        let m = b.expect("message").await;
        assert_eq!(m["message"]["seq"], seq);
        assert_eq!(m["message"]["body"], body);
    }
    let synced = b.expect("synced").await;
    assert!(online_of(&synced["friends"], &alice), "{synced}");
    expect_presence(&mut a, &bob, true).await;
    a.send_message(&conv, "four", "k4").await;
    assert_eq!(b.expect("message").await["message"]["seq"], 4);
    b.expect_silence(300).await;

    a.close().await;
    b.close().await;
    na.stop().await;
}

/// Redis drops every pub/sub subscription (`CLIENT KILL TYPE pubsub`): each node resubscribes
/// and closes the connections that may have missed events with 4008; they resume from their
/// cursors and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_gap_closes_with_4008_and_resume_fills_it() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let na = node(&url, "node-a").await;
    let nb = node(&url, "node-b").await;
    let alice = register(na.addr, "alice").await;
    let bob = register(nb.addr, "bob").await;
    let (mut a, mut b) = friends_at(na.addr, &alice, nb.addr, &bob).await;
    let conv = dm(&alice, &bob);
    a.send_message(&conv, "one", "k1").await;
    assert_eq!(b.expect("message").await["message"]["seq"], 1);

    let mut con = raw_connection(&url).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut con)
        .await
        .expect("client kill");
    assert_eq!(killed, 2, "one subscription per node");
    tokio::time::sleep(Duration::from_millis(20)).await;
    // A connection opened after the gap began is not closed; its send may fall in the gap.
    let (mut a2, _) = Client::login(na.addr, &alice).await;
    a2.send_message(&conv, "two", "k2").await;

    let (code, _) = b.expect_close().await;
    assert_eq!(code, 4008);
    let (code, _) = a.expect_close().await;
    assert_eq!(code, 4008);
    let mut b = Client::connect(nb.addr, "bob").await;
    let ok = b
        .auth(&bob.token, Some(json!({"cursors": {conv.clone(): 1}})))
        .await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    assert_eq!(b.expect("message").await["message"]["seq"], 2);
    b.expect("synced").await;
    // Live delivery works again across nodes.
    a2.send_message(&conv, "three", "k3").await;
    assert_eq!(b.expect("message").await["message"]["seq"], 3);
    b.expect_silence(300).await;

    a2.close().await;
    b.close().await;
    na.stop().await;
    nb.stop().await;
}

/// A store that holds every `append` (while `closed`) or every authentication's session
/// read, after the read (while `auth_closed`), at a gate until the test opens it. For
/// `append`: the point where the send path had passed its friendship check (before the check
/// moved into the append) and had not yet written; for the session read: a connection
/// authenticated and not yet registered. Everything else goes straight to the wrapped store.
struct GatedStore {
    inner: RedisStore,
    closed: std::sync::atomic::AtomicBool,
    auth_closed: std::sync::atomic::AtomicBool,
    reached: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
}

impl GatedStore {
    fn new(inner: RedisStore) -> Self {
        Self {
            inner,
            closed: Default::default(),
            auth_closed: Default::default(),
            reached: Default::default(),
            release: tokio::sync::Semaphore::new(0),
        }
    }

    /// Waits at the gate if `gate` is closed.
    async fn pass(&self, gate: &std::sync::atomic::AtomicBool) {
        if gate.load(std::sync::atomic::Ordering::SeqCst) {
            self.reached.notify_one();
            if let Ok(permit) = self.release.acquire().await {
                permit.forget();
            }
        }
    }
}

mod gated {
    use super::GatedStore;
    use async_trait::async_trait;
    use zajel_core::store::{
        ExternalIdentity, ExternalUser, IdentityStore, LinkedIdentity, Pruned, RelationEntry,
        StoreHealth, StoreResult, TicketKey, Unlink,
    };
    use zajel_core::*;

    #[async_trait]
    impl UserStore for GatedStore {
        async fn create_user(
            &self,
            username: &Username,
            password_hash: Option<&str>,
            at: Timestamp,
        ) -> StoreResult<User> {
            self.inner.create_user(username, password_hash, at).await
        }
        async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
            self.inner.user(id).await
        }
        async fn user_by_username(&self, username: &Username) -> StoreResult<Option<User>> {
            self.inner.user_by_username(username).await
        }
        async fn password_hash(&self, id: UserId) -> StoreResult<Option<String>> {
            self.inner.password_hash(id).await
        }
        async fn set_password_hash(&self, id: UserId, hash: &str) -> StoreResult<()> {
            self.inner.set_password_hash(id, hash).await
        }
        async fn rename_user(&self, id: UserId, new: &Username) -> StoreResult<User> {
            self.inner.rename_user(id, new).await
        }
        async fn set_last_seen(&self, id: UserId, at: Timestamp) -> StoreResult<()> {
            self.inner.set_last_seen(id, at).await
        }
        async fn last_seen(&self, id: UserId) -> StoreResult<Option<Timestamp>> {
            self.inner.last_seen(id).await
        }
    }

    #[async_trait]
    impl SessionStore for GatedStore {
        async fn create_session(&self, session: &Session) -> StoreResult<()> {
            self.inner.create_session(session).await
        }
        async fn session(
            &self,
            user: UserId,
            token_hash: &str,
            now: Timestamp,
        ) -> StoreResult<Option<Session>> {
            self.inner.session(user, token_hash, now).await
        }
        async fn session_with_user(
            &self,
            user: UserId,
            token_hash: &str,
            now: Timestamp,
        ) -> StoreResult<Option<(Session, User)>> {
            let read = self.inner.session_with_user(user, token_hash, now).await;
            self.pass(&self.auth_closed).await;
            read
        }
        async fn delete_session(&self, user: UserId, token_hash: &str) -> StoreResult<bool> {
            self.inner.delete_session(user, token_hash).await
        }
        async fn delete_user_sessions(&self, user: UserId) -> StoreResult<u64> {
            self.inner.delete_user_sessions(user).await
        }
    }

    #[async_trait]
    impl FriendStore for GatedStore {
        async fn edge(&self, pair: friends::UserPair) -> StoreResult<friends::Edge> {
            self.inner.edge(pair).await
        }
        async fn swap_edge(
            &self,
            pair: friends::UserPair,
            expected: friends::Edge,
            new: friends::Edge,
        ) -> StoreResult<bool> {
            self.inner.swap_edge(pair, expected, new).await
        }
        async fn relations(&self, user: UserId) -> StoreResult<Vec<RelationEntry>> {
            self.inner.relations(user).await
        }
        async fn friend_ids(&self, user: UserId) -> StoreResult<Vec<UserId>> {
            self.inner.friend_ids(user).await
        }
    }

    #[async_trait]
    impl MessageStore for GatedStore {
        async fn append(&self, batch: Vec<NewMessage>) -> Vec<StoreResult<Appended>> {
            self.pass(&self.closed).await;
            self.inner.append(batch).await
        }
        async fn history(
            &self,
            conversation: &ConversationId,
            query: HistoryQuery,
        ) -> StoreResult<HistoryPage> {
            self.inner.history(conversation, query).await
        }
        async fn last_seq(&self, conversation: &ConversationId) -> StoreResult<u64> {
            self.inner.last_seq(conversation).await
        }
        async fn conversations(
            &self,
            user: UserId,
            limit: u32,
        ) -> StoreResult<Vec<ConversationSummary>> {
            self.inner.conversations(user, limit).await
        }
        async fn mark_read(
            &self,
            conversation: &ConversationId,
            user: UserId,
            seq: u64,
        ) -> StoreResult<ReadMark> {
            self.inner.mark_read(conversation, user, seq).await
        }
    }

    #[async_trait]
    impl IdentityStore for GatedStore {
        async fn create_external_user(
            &self,
            username: &Username,
            identity: &ExternalIdentity,
            at: Timestamp,
        ) -> StoreResult<ExternalUser> {
            self.inner
                .create_external_user(username, identity, at)
                .await
        }
        async fn link_external(
            &self,
            identity: &ExternalIdentity,
            user: UserId,
            at: Timestamp,
        ) -> StoreResult<()> {
            self.inner.link_external(identity, user, at).await
        }
        async fn external_user(&self, identity: &ExternalIdentity) -> StoreResult<Option<UserId>> {
            self.inner.external_user(identity).await
        }
        async fn external_identities(&self, user: UserId) -> StoreResult<Vec<LinkedIdentity>> {
            self.inner.external_identities(user).await
        }
        async fn unlink_external(
            &self,
            identity: &ExternalIdentity,
            user: UserId,
        ) -> StoreResult<Unlink> {
            self.inner.unlink_external(identity, user).await
        }
        async fn put_ticket(
            &self,
            key: &TicketKey,
            value: &[u8],
            ttl: std::time::Duration,
        ) -> StoreResult<()> {
            self.inner.put_ticket(key, value, ttl).await
        }
        async fn take_ticket(&self, key: &TicketKey) -> StoreResult<Option<Vec<u8>>> {
            self.inner.take_ticket(key).await
        }
    }

    #[async_trait]
    impl Store for GatedStore {
        fn health(&self) -> StoreHealth {
            self.inner.health()
        }
        async fn prune(&self, now: Timestamp) -> StoreResult<Pruned> {
            self.inner.prune(now).await
        }
        async fn session_with_friends(
            &self,
            user: UserId,
            token_hash: &str,
            now: Timestamp,
        ) -> StoreResult<Option<(Session, User, Vec<UserId>)>> {
            let read = self.inner.session_with_friends(user, token_hash, now).await;
            self.pass(&self.auth_closed).await;
            read
        }
    }
}

/// Issue 7 item 7 across nodes. Node 1's send is held between the friendship check and the
/// append (its store's gate); bob blocks alice on node 2 and is answered; then node 1's append
/// goes on. It must be refused (`not_friends`, like any send to a non-friend), stored nowhere
/// and delivered to nobody. When the check was a separate read before the append, this
/// message was stored and delivered to bob after his block was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_acknowledged_on_another_node_stops_a_send_in_flight() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let gated = Arc::new(GatedStore::new(
        RedisStore::connect(&url).await.expect("redis store"),
    ));
    let broker = RedisBroker::connect(&url, broker_config("n1"))
        .await
        .expect("redis broker");
    let n1 = TestServer::serve(
        Engine::builder(gated.clone(), test_config())
            .redis_broker(broker)
            .build(),
    )
    .await;
    let n2 = node(&url, "n2").await;
    let alice = register(n1.addr, "alice").await;
    let bob = register(n2.addr, "bob").await;
    let (mut a, mut b) = friends_at(n1.addr, &alice, n2.addr, &bob).await;
    let conv = dm(&alice, &bob);
    exchange(&mut a, &mut b, &conv).await;

    gated
        .closed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let id = a.id();
    let send = json!({"type": "send", "id": id, "conversation": conv, "body": "late", "idempotency_key": "k3"});
    a.send_raw(&send.to_string()).await;
    tokio::time::timeout(Duration::from_secs(5), gated.reached.notified())
        .await
        .expect("the send reached its append");
    let blocked = b.call(json!({"type": "block", "user_id": alice.id})).await;
    assert_eq!(blocked["relation"], "blocked", "{blocked}");
    gated
        .closed
        .store(false, std::sync::atomic::Ordering::SeqCst);
    gated.release.add_permits(1);

    let answer = a.answer(&id).await;
    assert_eq!(
        (answer["type"].as_str(), answer["code"].as_str()),
        (Some("error"), Some("not_friends")),
        "{answer}"
    );
    let seen = b.frames_within(300).await;
    assert!(
        seen.iter().all(|f| f["type"] != "message"),
        "delivered after the block: {seen:?}"
    );
    assert_eq!(seqs(&b.history(&conv, json!({})).await), vec![1, 2]);
    // Read marks obey the same rule.
    let read = a
        .call(json!({"type": "mark_read", "conversation": conv, "seq": 2}))
        .await;
    assert_eq!(read["code"], "not_friends", "{read}");

    a.close().await;
    b.close().await;
    n1.stop().await;
    n2.stop().await;
}

/// "Came online" cannot miss a friendship accepted while the user's connection was between
/// its session read and its registration. Bob asked alice for friendship; bob's connection
/// reads its session (and, where presence is node-local, its friend list: none yet) and is
/// held there; alice accepts, and her presence check finds bob offline; then bob registers.
/// Alice must still hear that bob is online: bob's connection reads its friends again (the
/// node counted the friendship change), or, with cluster-wide presence, reads them only after
/// its registration. An announcement from the list read with the session would tell nobody.
async fn friendship_accepted_during_authentication(with_broker: bool) {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let gated = Arc::new(GatedStore::new(
        RedisStore::connect(&url).await.expect("redis store"),
    ));
    let mut builder = Engine::builder(gated.clone(), test_config());
    if with_broker {
        let broker = RedisBroker::connect(&url, broker_config("n1"))
            .await
            .expect("redis broker");
        builder = builder.redis_broker(broker);
    }
    let n1 = TestServer::serve(builder.build()).await;
    let alice = register(n1.addr, "alice").await;
    let bob = register(n1.addr, "bob").await;
    let (mut a, _) = Client::login(n1.addr, &alice).await;
    let (mut b, _) = Client::login(n1.addr, &bob).await;
    let r = b
        .call(json!({"type": "friend_request", "username": alice.username}))
        .await;
    assert_eq!(r["type"], "friend_ok", "{r}");
    a.expect("friend").await;
    b.close().await;
    expect_silence_but_presence(&mut a).await;

    gated
        .auth_closed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut b = Client::connect(n1.addr, "bob").await;
    let id = b.id();
    b.send_raw(&json!({"type": "auth", "id": id, "protocol": 1, "token": bob.token}).to_string())
        .await;
    tokio::time::timeout(Duration::from_secs(5), gated.reached.notified())
        .await
        .expect("bob's authentication read its session");
    let r = a
        .call(json!({"type": "friend_accept", "user_id": bob.id}))
        .await;
    assert_eq!(r["relation"], "friends", "{r}");
    gated
        .auth_closed
        .store(false, std::sync::atomic::Ordering::SeqCst);
    gated.release.add_permits(1);
    let ok = b.answer(&id).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    let p = tokio::time::timeout(Duration::from_secs(5), expect_presence(&mut a, &bob, true))
        .await
        .expect("alice hears that bob came online");
    assert_eq!(p["online"], true);

    a.close().await;
    b.close().await;
    n1.stop().await;
}

/// Drains what alice hears while bob goes offline (his presence), so the test's later
/// `presence` is the one it waits for.
async fn expect_silence_but_presence(a: &mut Client) {
    for f in a.frames_within(300).await {
        assert_eq!(f["type"], "presence", "{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn came_online_reaches_a_friend_accepted_during_authentication() {
    friendship_accepted_during_authentication(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn came_online_reaches_a_friend_accepted_during_authentication_with_cluster_presence() {
    friendship_accepted_during_authentication(true).await;
}

use zajel_core::testing::redis_cmd;

/// Node ids → connection counts in `user`'s presence hash.
async fn registry(
    con: &mut redis::aio::MultiplexedConnection,
    user: &Account,
) -> std::collections::HashMap<String, i64> {
    let key = format!("zajel:{{u:{}}}:presence", user.id);
    redis::cmd("HGETALL")
        .arg(key)
        .query_async(con)
        .await
        .expect("HGETALL")
}

/// Polls `registry` until it equals `want` (5 s at most).
async fn wait_registry(
    con: &mut redis::aio::MultiplexedConnection,
    user: &Account,
    want: &[(&str, i64)],
) {
    let want: std::collections::HashMap<String, i64> =
        want.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = registry(con, user).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "presence of {} never became {want:?}: {got:?}",
            user.username
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes Redis refuse writes with `MISCONF` (a snapshot fails while
/// `stop-writes-on-bgsave-error` is on: `dir` = `/proc`), or takes them again (`dir` = the
/// real data dir).
async fn misconf(con: &mut redis::aio::MultiplexedConnection, dir: &str) {
    redis_cmd(con, &["CONFIG", "SET", "dir", dir])
        .await
        .expect("CONFIG SET dir");
    let status = if dir == "/proc" { "err" } else { "ok" };
    redis_cmd(con, &["BGSAVE"]).await.expect("BGSAVE");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String =
            redis::from_redis_value(redis_cmd(con, &["INFO", "persistence"]).await.unwrap())
                .unwrap();
        if info.contains("rdb_bgsave_in_progress:0")
            && info.contains(&format!("rdb_last_bgsave_status:{status}"))
        {
            return;
        }
        assert!(Instant::now() < deadline, "bgsave never {status}: {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Presence updates Redis refuses (session 8's defect: they were only logged). (a) bob
/// connects to node B while Redis is full (`OOM`): once Redis takes writes again, node B
/// registers him by itself and a message from alice on node A reaches him live, on the same
/// connection. (b) bob's last connection closes while Redis refuses writes (`MISCONF`): once
/// it takes them, node B's entry is gone, alice sees him offline and his last seen is
/// recorded. (c) Under `OOM` his last connection's close is taken at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_presence_updates_are_repaired() {
    let redis =
        RedisServer::start_with_args(&["--save", "3600 1", "--enable-protected-configs", "yes"])
            .expect("redis-server");
    let url = redis.url();
    let na = node(&url, "node-a").await;
    let nb = node(&url, "node-b").await;
    let mut con = raw_connection(&url).await;
    let alice = register(na.addr, "alice").await;
    let bob = register(nb.addr, "bob").await;
    let (mut a, b) = friends_at(na.addr, &alice, nb.addr, &bob).await;
    let conv = dm(&alice, &bob);
    b.close().await;
    let before = expect_presence(&mut a, &bob, false).await["last_seen"]
        .as_i64()
        .expect("last_seen");
    wait_registry(&mut con, &bob, &[]).await;

    // (a) Redis is full: bob's registration on node B is refused.
    redis_cmd(&mut con, &["CONFIG", "SET", "maxmemory", "1"])
        .await
        .unwrap();
    let refused = redis_cmd(&mut con, &["SET", "probe", "x"]).await;
    assert_eq!(refused.unwrap_err().code(), Some("OOM"));
    let mut b = Client::connect(nb.addr, "bob").await;
    let ok = b.auth(&bob.token, None).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    expect_presence(&mut a, &bob, true).await;
    assert_eq!(
        registry(&mut con, &bob).await.len(),
        0,
        "Redis took a write"
    );
    // Memory freed: the registry catches up without bob reconnecting ...
    redis_cmd(&mut con, &["CONFIG", "SET", "maxmemory", "0"])
        .await
        .unwrap();
    wait_registry(&mut con, &bob, &[("node-b", 1)]).await;
    // ... so node A publishes to node B again: live, on the connection opened while full.
    let sent = a.send_message(&conv, "live again", "k-live").await;
    assert_eq!(sent["type"], "sent", "{sent}");
    let m = b.expect("message").await;
    assert_eq!(m["message"]["body"], "live again", "{m}");
    // Online was announced once, when bob connected; the repair does not repeat it.
    a.expect_silence(300).await;

    // (b) Redis refuses writes (a failing snapshot) while bob's last connection closes.
    let dir: Vec<String> = redis::from_redis_value(
        redis_cmd(&mut con, &["CONFIG", "GET", "dir"])
            .await
            .unwrap(),
    )
    .unwrap();
    misconf(&mut con, "/proc").await;
    let refused = redis_cmd(&mut con, &["SET", "probe", "x"]).await;
    assert_eq!(refused.unwrap_err().code(), Some("MISCONF"));
    b.close().await;
    // Node B tells alice from its own view at once ...
    expect_presence(&mut a, &bob, false).await;
    assert_eq!(
        registry(&mut con, &bob).await.len(),
        1,
        "Redis took a write"
    );
    // ... and once snapshots work again its entry leaves the registry, without any
    // connection of bob's coming or going.
    misconf(&mut con, &dir[1]).await;
    wait_registry(&mut con, &bob, &[]).await;
    let users: Vec<String> = redis::cmd("SMEMBERS")
        .arg("zajel:node:{node-b}:users")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(users.is_empty(), "{users:?}");
    let f = a.call(json!({"type": "friends_list"})).await;
    assert!(!online_of(&f["friends"], &bob), "{f}");
    // The last seen refused with the update lands once Redis takes writes (retried).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let f = a.call(json!({"type": "friends_list"})).await;
        let seen = f["friends"][0]["last_seen"].as_i64().unwrap_or(0);
        if seen > before {
            break;
        }
        assert!(Instant::now() < deadline, "last seen never recorded: {f}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Under `OOM` a count going to 0 is an `HDEL`, which a full Redis takes: no repair needed.
    let (b, _) = Client::login(nb.addr, &bob).await;
    expect_presence(&mut a, &bob, true).await;
    wait_registry(&mut con, &bob, &[("node-b", 1)]).await;
    redis_cmd(&mut con, &["CONFIG", "SET", "maxmemory", "1"])
        .await
        .unwrap();
    b.close().await;
    expect_presence(&mut a, &bob, false).await;
    wait_registry(&mut con, &bob, &[]).await;
    redis_cmd(&mut con, &["CONFIG", "SET", "maxmemory", "0"])
        .await
        .unwrap();
    a.close().await;
    na.stop().await;
    nb.stop().await;
}

/// On one Redis a connection's count and the node's user set are written by one script call
/// (one round trip, set first), so Redis never holds a count the reaper cannot find: before,
/// the count was taken and a refused `SADD` after it left the user online for good if the node
/// then died. Here node B's broker may not write its user set (an ACL): its registration of
/// bob must leave no count behind, and once the set is writable the repair writes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_is_never_taken_without_the_node_user_set() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let mut con = raw_connection(&url).await;
    // Node B's broker: every key but its own user set, which it may only read.
    redis_cmd(
        &mut con,
        &[
            "ACL",
            "SETUSER",
            "nodeb",
            "on",
            ">pw",
            "+@all",
            "&*",
            "resetkeys",
            "~zajel:{*",
            "~zajel:nodes",
            "~zajel:node:{node-a}*",
            "~zajel:node:{node-b}",
            "~zajel:node:{node-b}:[^u]*",
            "%R~zajel:node:{node-b}:users",
        ],
    )
    .await
    .unwrap();
    let na = node(&url, "node-a").await;
    let restricted = url.replacen("redis://", "redis://nodeb:pw@", 1);
    let nb = node_with_broker_at(&url, &restricted, "node-b").await;
    let users_of_b = async |con: &mut redis::aio::MultiplexedConnection| -> Vec<String> {
        redis::cmd("SMEMBERS")
            .arg("zajel:node:{node-b}:users")
            .query_async(con)
            .await
            .unwrap()
    };
    let bob = register(nb.addr, "bob").await;

    let mut b = Client::connect(nb.addr, "bob").await;
    let ok = b.auth(&bob.token, None).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    // The registration was refused as a whole (and is retried): no count without the set.
    for _ in 0..5 {
        let counts = registry(&mut con, &bob).await;
        assert!(
            counts.is_empty() && users_of_b(&mut con).await.is_empty(),
            "a count without the node's user set: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The set becomes writable: the repair writes both.
    redis_cmd(&mut con, &["ACL", "SETUSER", "nodeb", "allkeys"])
        .await
        .unwrap();
    wait_registry(&mut con, &bob, &[("node-b", 1)]).await;
    assert_eq!(users_of_b(&mut con).await, vec![bob.id.clone()]);
    drop(b);
    na.stop().await;
    nb.stop().await;
}

/// A dead node's reap that fails halfway is retried: the surviving node claimed the dead one
/// (removed it from `P:nodes`, so no other node will claim it again) but Redis refused the
/// presence cleanup (node A's broker may not `EVAL`, an ACL). Bob, who was on the dead node,
/// must stay claimed and go offline once Redis takes the reap, not stay online forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reap_redis_refused_is_retried_until_the_dead_nodes_users_go_offline() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let mut con = raw_connection(&url).await;
    // Node A's broker: everything but `EVAL` (the reap's cleanup script; its own presence
    // script goes through `EVALSHA`).
    redis_cmd(
        &mut con,
        &[
            "ACL", "SETUSER", "nodea", "on", ">pw", "+@all", "-eval", "~*", "&*",
        ],
    )
    .await
    .unwrap();
    let restricted = url.replacen("redis://", "redis://nodea:pw@", 1);
    let na = node_with_broker_at(&url, &restricted, "node-a").await;
    let mut nb = binary_node_b(&url);
    let alice = register(na.addr, "alice").await;
    let bob = register(nb.addr, "bob").await;
    let (mut a, b) = friends_at(na.addr, &alice, nb.addr, &bob).await;
    wait_registry(&mut con, &bob, &[("node-b", 1)]).await;

    // Node B dies; node A claims it after its TTL and its reap is refused.
    nb.child.kill().expect("SIGKILL node B");
    let _ = nb.child.wait();
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log: Vec<redis::Value> = redis::cmd("ACL")
            .arg("LOG")
            .query_async(&mut con)
            .await
            .unwrap();
        if format!("{log:?}").contains("eval") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node A never tried to reap node B"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg("zajel:nodes")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(nodes, vec!["node-a".to_owned()], "node B not claimed");
    // Refused: bob is still registered on the dead node (what node A's reads make of a
    // claimed node's counts meanwhile is timing, not asserted here).
    assert_eq!(
        registry(&mut con, &bob).await,
        [("node-b".to_owned(), 1)].into_iter().collect()
    );

    // Redis takes the reap: a later sweep finishes it.
    redis_cmd(&mut con, &["ACL", "SETUSER", "nodea", "+eval"])
        .await
        .unwrap();
    let p = expect_presence(&mut a, &bob, false).await;
    assert!(p["last_seen"].is_number(), "{p}");
    wait_registry(&mut con, &bob, &[]).await;
    let f = a.call(json!({"type": "friends_list"})).await;
    assert!(!online_of(&f["friends"], &bob), "{f}");
    a.close().await;
    na.stop().await;
}
