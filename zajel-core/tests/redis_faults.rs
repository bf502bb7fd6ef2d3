//! Redis answering but refusing: a full Redis (`maxmemory` under `noeviction`: `OOM`), failed
//! snapshots (`MISCONF`), a replica (`READONLY`), a primary-less replica (`MASTERDOWN`), a
//! long script (`BUSY`), and a Redis that would evict data. Against real redis-servers set up
//! that way: writes fail with a typed `Unavailable`, nothing is half-written, reads are still
//! served, health is not `Ok` until writes are taken again (and does not flap back on a read),
//! then everything works through the same `RedisStore`.
use std::time::{Duration, Instant};
use zajel_core::friends::{Edge, UserPair};
use zajel_core::store::redis::RedisOptions;
use zajel_core::testing::RedisServer;
use zajel_core::{
    ConversationId, FriendStore, HistoryQuery, MessageStore, NewMessage, RedisStore, Store,
    StoreError, StoreHealth, StoreResult, Timestamp, UserId, UserStore, Username,
};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn options() -> RedisOptions {
    RedisOptions {
        command_timeout: Duration::from_millis(1000),
        connect_timeout: Duration::from_millis(500),
        breaker_cooldown: Duration::from_millis(200),
        ..RedisOptions::default()
    }
}

/// A "hi" from `sender` with idempotency key `key`.
fn msg(conv: &ConversationId, sender: UserId, key: &str) -> NewMessage {
    zajel_core::testing::message(conv, sender, "hi", key)
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

use zajel_core::testing::redis_cmd as cmd;

/// Asserts `r` is `Unavailable` and its reason names `code` (Redis's own words).
fn unavailable<T: std::fmt::Debug>(what: &str, r: StoreResult<T>, code: &str) {
    match r {
        Err(StoreError::Unavailable {
            reason,
            retry_after_ms,
        }) => {
            assert!(reason.contains(code), "{what}: {reason}");
            assert!(retry_after_ms > 0, "{what}");
        }
        other => panic!("{what}: expected Unavailable ({code}), got {other:?}"),
    }
}

fn assert_unhealthy(store: &RedisStore, code: &str) {
    match store.health() {
        StoreHealth::Unavailable { reason, .. } => assert!(reason.contains(code), "{reason}"),
        other => panic!("health should name {code}, is {other:?}"),
    }
}

async fn wait_healthy(store: &RedisStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.health().is_ok() {
        assert!(
            Instant::now() < deadline,
            "health never recovered: {:?}",
            store.health()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn users(store: &RedisStore) -> (UserId, UserId, ConversationId) {
    let a = store
        .create_user(&Username::parse("alice").unwrap(), None, T0)
        .await
        .unwrap();
    let b = store
        .create_user(&Username::parse("bob").unwrap(), None, T0)
        .await
        .unwrap();
    zajel_core::testing::befriend(store, a.id, b.id).await;
    (a.id, b.id, ConversationId::direct(a.id, b.id))
}

/// A redis-server with 4 MB of memory that refuses writes past it, and a store on it.
async fn small_redis() -> (RedisServer, RedisStore) {
    let server =
        RedisServer::start_with_args(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"])
            .unwrap();
    let store = RedisStore::connect_with(&server.url(), options())
        .await
        .unwrap();
    (server, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_redis_refuses_writes_typed_and_health_holds_until_writes_work() {
    let (server, store) = small_redis().await;
    let (a, b, conv) = users(&store).await;
    let first = store
        .append(vec![msg(&conv, a, "k1")])
        .await
        .remove(0)
        .unwrap();
    assert_eq!(first.message.seq, 1);
    let pair = UserPair::new(a, b).unwrap();
    let edge = store.edge(pair).await.unwrap();
    let relations = store.relations(a).await.unwrap();
    let mut con = raw(&server).await;
    let _full = zajel_core::testing::fill_until_oom(&server.url()).await;
    assert!(store.health().is_ok(), "nothing refused yet");

    // A send: typed, retryable, nothing written (no message, no idempotency record: the same
    // key is a new message once Redis takes writes again).
    unavailable(
        "send",
        store.append(vec![msg(&conv, a, "k2")]).await.remove(0),
        "OOM",
    );
    assert_unhealthy(&store, "OOM");
    // Every other kind of write too (user, session-less profile field, friend change).
    unavailable(
        "create_user",
        store
            .create_user(&Username::parse("carol").unwrap(), None, T0)
            .await,
        "OOM",
    );
    unavailable(
        "set_last_seen",
        store.set_last_seen(a, Timestamp(T0.0 + 5)).await,
        "OOM",
    );
    let blocked = Edge {
        lo_blocks: true,
        ..edge
    };
    unavailable(
        "swap_edge",
        store.swap_edge(pair, edge, blocked).await,
        "OOM",
    );
    // Reads are served, and unchanged: nothing half-written.
    assert_eq!(store.last_seq(&conv).await.unwrap(), 1);
    let page = store.history(&conv, HistoryQuery::default()).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(store.edge(pair).await.unwrap(), edge);
    assert_eq!(store.relations(a).await.unwrap(), relations);
    assert!(
        store
            .user_by_username(&Username::parse("carol").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.last_seen(a).await.unwrap(), None);
    // Health does not flap back to Ok because reads succeed (several probe periods).
    for _ in 0..10 {
        assert!(store.user(a).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_unhealthy(&store, "OOM");
    }

    // Memory freed: health recovers by itself (the probe), writes work, and the refused send's
    // key was never recorded.
    cmd(&mut con, &["CONFIG", "SET", "maxmemory", "0"])
        .await
        .unwrap();
    wait_healthy(&store).await;
    let again = store
        .append(vec![msg(&conv, a, "k2")])
        .await
        .remove(0)
        .unwrap();
    assert!(!again.duplicate);
    assert_eq!(again.message.seq, 2);
    store.set_last_seen(a, Timestamp(T0.0 + 5)).await.unwrap();
    assert!(store.health().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_snapshots_refuse_writes_until_a_snapshot_works() {
    // `dir` is a protected setting; the test needs to point it somewhere unwritable.
    let server = RedisServer::start_with_args(&["--enable-protected-configs", "yes"]).unwrap();
    let store = RedisStore::connect_with(&server.url(), options())
        .await
        .unwrap();
    let (a, _b, conv) = users(&store).await;
    let mut con = raw(&server).await;
    let dir = match cmd(&mut con, &["CONFIG", "GET", "dir"]).await.unwrap() {
        redis::Value::Array(v) | redis::Value::Set(v) => {
            redis::from_redis_value::<String>(v[1].clone()).unwrap()
        }
        redis::Value::Map(m) => redis::from_redis_value::<String>(m[0].1.clone()).unwrap(),
        other => panic!("{other:?}"),
    };
    // `stop-writes-on-bgsave-error` (default yes) applies when save points are configured.
    cmd(&mut con, &["CONFIG", "SET", "save", "3600 1"])
        .await
        .unwrap();
    cmd(&mut con, &["CONFIG", "SET", "dir", "/proc"])
        .await
        .unwrap();
    bgsave(&mut con, "err").await;

    unavailable(
        "send",
        store.append(vec![msg(&conv, a, "k1")]).await.remove(0),
        "MISCONF",
    );
    assert_unhealthy(&store, "MISCONF");
    assert_eq!(store.last_seq(&conv).await.unwrap(), 0);
    assert!(store.user(a).await.unwrap().is_some());
    assert_unhealthy(&store, "MISCONF");

    cmd(&mut con, &["CONFIG", "SET", "dir", &dir])
        .await
        .unwrap();
    bgsave(&mut con, "ok").await;
    wait_healthy(&store).await;
    let sent = store
        .append(vec![msg(&conv, a, "k1")])
        .await
        .remove(0)
        .unwrap();
    assert_eq!((sent.message.seq, sent.duplicate), (1, false));
}

/// Runs `BGSAVE` and waits for `rdb_last_bgsave_status:<status>`.
async fn bgsave(con: &mut redis::aio::MultiplexedConnection, status: &str) {
    cmd(con, &["BGSAVE"]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String =
            redis::from_redis_value(cmd(con, &["INFO", "persistence"]).await.unwrap()).unwrap();
        if info.contains("rdb_bgsave_in_progress:0")
            && info.contains(&format!("rdb_last_bgsave_status:{status}"))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bgsave never became {status}: {info}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_writes_and_a_primaryless_one_everything() {
    let server = RedisServer::start_with_args(&["--replica-serve-stale-data", "no"]).unwrap();
    let store = RedisStore::connect_with(&server.url(), options())
        .await
        .unwrap();
    let mut con = raw(&server).await;
    let dead = zajel_core::testing::free_port().unwrap().to_string();
    // A replica of a primary that is not there: the link is down, so with
    // `replica-serve-stale-data no` every command answers MASTERDOWN.
    cmd(&mut con, &["REPLICAOF", "127.0.0.1", &dead])
        .await
        .unwrap();
    let id = UserId::new_random();
    unavailable("read", store.user(id).await, "MASTERDOWN");
    assert_unhealthy(&store, "MASTERDOWN");
    // Served stale: reads work, writes answer READONLY.
    cmd(
        &mut con,
        &["CONFIG", "SET", "replica-serve-stale-data", "yes"],
    )
    .await
    .unwrap();
    tokio::time::sleep(options().breaker_cooldown).await;
    unavailable(
        "create_user",
        store
            .create_user(&Username::parse("carol").unwrap(), None, T0)
            .await,
        "READONLY",
    );
    assert!(store.user(id).await.unwrap().is_none());
    assert_unhealthy(&store, "READONLY");
    // Promoted (what a failover does to a replica): writes work again, health recovers.
    cmd(&mut con, &["REPLICAOF", "NO", "ONE"]).await.unwrap();
    wait_healthy(&store).await;
    store
        .create_user(&Username::parse("carol").unwrap(), None, T0)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_script_makes_the_store_unavailable_until_it_ends() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect_with(&server.url(), options())
        .await
        .unwrap();
    let mut con = raw(&server).await;
    cmd(&mut con, &["CONFIG", "SET", "busy-reply-threshold", "50"])
        .await
        .unwrap();
    // A plain blocking connection: no reply timeout while the script runs.
    let mut busy = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let script = std::thread::spawn(move || {
        redis::cmd("EVAL")
            .arg("local t = redis.call('TIME')[1] while redis.call('TIME')[1] - t < 2 do end return 1")
            .arg(0)
            .query::<i64>(&mut busy)
    });
    // Wait until Redis answers BUSY (the script is running, past the threshold): a fixed
    // sleep raced the thread's connect and EVAL on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cmd(&mut con, &["PING"]).await {
            Err(e) if e.to_string().contains("BUSY") => break,
            other => {
                assert!(Instant::now() < deadline, "the script never ran: {other:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let id = UserId::new_random();
    unavailable("read", store.user(id).await, "BUSY");
    assert_unhealthy(&store, "BUSY");
    assert_eq!(script.join().unwrap().unwrap(), 1);
    // The breaker lets calls through after its cooldown; the first success closes it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.user(id).await {
            Ok(None) => break,
            Err(StoreError::Unavailable { .. }) => {
                assert!(Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(store.health().is_ok());
}

#[tokio::test]
async fn a_redis_that_evicts_is_refused_unless_allowed() {
    for policy in ["allkeys-lru", "volatile-ttl", "allkeys-random"] {
        let server = RedisServer::start_with_args(&["--maxmemory-policy", policy]).unwrap();
        match RedisStore::connect_with(&server.url(), options()).await {
            Err(StoreError::Misconfigured(why)) => assert!(why.contains(policy), "{why}"),
            other => panic!("{policy}: {other:?}"),
        }
        let allowed = RedisOptions {
            allow_eviction: true,
            ..options()
        };
        RedisStore::connect_with(&server.url(), allowed)
            .await
            .unwrap();
    }
    // Managed Redis often disables CONFIG: the policy is read from INFO instead.
    for (policy, ok) in [("allkeys-lru", false), ("noeviction", true)] {
        let server = RedisServer::start_with_args(&[
            "--maxmemory-policy",
            policy,
            "--rename-command",
            "CONFIG",
            "",
        ])
        .unwrap();
        let result = RedisStore::connect_with(&server.url(), options()).await;
        assert_eq!(result.is_ok(), ok, "{policy} without CONFIG: {result:?}");
    }
}

/// A Cluster where one of three primaries is full (`OOM`) while the others take writes: the
/// store is unavailable, naming that primary, for as long as it refuses (writes to the other
/// primaries succeeding do not end it), and healthy again by itself once it has room. The
/// full primary is not the one holding the single-Redis probe key (`zajel:probe`): probing
/// that key alone reported the Cluster healthy within one cooldown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_one_full_primary_is_unavailable_until_it_takes_writes() {
    use zajel_core::testing::RedisCluster;
    let mut cluster = RedisCluster::start(3, 0).expect("cluster");
    let store = RedisStore::connect_cluster(&cluster.urls(), options())
        .await
        .unwrap();
    let lone_probe = cluster.master_of("zajel:probe").unwrap();
    let full = (0..3).find(|&i| i != lone_probe).unwrap();
    // Users until one lives on the primary that will be full, and one elsewhere.
    let (mut on_full, mut elsewhere) = (None, None);
    for n in 0..64 {
        let u = store
            .create_user(&Username::parse(&format!("user{n}")).unwrap(), None, T0)
            .await
            .unwrap();
        let slot_of = cluster
            .master_of(&format!("zajel:{{u:{}}}:user", u.id))
            .unwrap();
        if slot_of == full {
            on_full.get_or_insert(u.id);
        } else {
            elsewhere.get_or_insert(u.id);
        }
        if on_full.is_some() && elsewhere.is_some() {
            break;
        }
    }
    let (on_full, elsewhere) = (on_full.unwrap(), elsewhere.unwrap());
    let port = cluster.node(full).port();
    let mut con = raw(cluster.node(full)).await;
    cmd(&mut con, &["CONFIG", "SET", "maxmemory", "1"])
        .await
        .unwrap();

    unavailable(
        "set_last_seen on the full primary",
        store.set_last_seen(on_full, Timestamp(T0.0 + 1)).await,
        "OOM",
    );
    assert_unhealthy(&store, "OOM");
    // The other primaries keep taking writes, and health holds over many probe rounds, the
    // reason naming the full primary once the probe has run.
    for i in 0..10 {
        store
            .set_last_seen(elsewhere, Timestamp(T0.0 + i))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_unhealthy(&store, "OOM");
    }
    assert_unhealthy(&store, &format!("127.0.0.1:{port}"));
    assert_eq!(store.last_seen(on_full).await.unwrap(), None);

    cmd(&mut con, &["CONFIG", "SET", "maxmemory", "0"])
        .await
        .unwrap();
    wait_healthy(&store).await;
    store
        .set_last_seen(on_full, Timestamp(T0.0 + 1))
        .await
        .unwrap();
}

/// `EVALSHA` calls Redis has run so far.
async fn evalsha_calls(con: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info = match cmd(con, &["INFO", "commandstats"]).await.unwrap() {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("INFO answered {other:?}"),
    };
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Issue 13 (session 8): one script call carries messages of several conversations. Under
/// `OOM` Redis refuses a script's first write and lets every later one through (it cannot
/// undo them), so the whole call is refused before anything is written: every message gets
/// a typed `Unavailable`, whatever its place in the call (here a refused stranger and a
/// repeat come first, so the first write is a list update or a new message's `XADD`); nothing
/// moves: sequences, records, lists. Once Redis takes writes, the same batch gets its
/// per-message results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_a_multi_message_call_before_any_write() {
    let (server, store) = small_redis().await;
    let (a, b, ab) = users(&store).await;
    let d = store
        .create_user(&Username::parse("dave").unwrap(), None, T0)
        .await
        .unwrap()
        .id;
    zajel_core::testing::befriend(&store, a, d).await;
    let (ac, ad) = (
        ConversationId::direct(a, UserId::new_random()),
        ConversationId::direct(a, d),
    );
    store
        .append(vec![msg(&ab, a, "k1")])
        .await
        .remove(0)
        .unwrap();
    let lists = (
        store.conversations(a, 10).await.unwrap(),
        store.conversations(b, 10).await.unwrap(),
    );
    let batch = || {
        vec![
            msg(&ac, a, "k1"),
            msg(&ab, a, "k1"),
            msg(&ab, b, "k2"),
            msg(&ad, d, "k3"),
            msg(&ab, a, "k2"),
        ]
    };
    let mut con = raw(&server).await;
    let _full = zajel_core::testing::fill_until_oom(&server.url()).await;
    let before = evalsha_calls(&mut con).await;
    let results = store.append(batch()).await;
    assert!(
        evalsha_calls(&mut con).await > before,
        "the call reached Redis"
    );
    for r in results {
        unavailable("a message of the batch", r, "OOM");
    }
    assert_eq!(store.last_seq(&ab).await.unwrap(), 1);
    assert_eq!(store.last_seq(&ad).await.unwrap(), 0);
    assert_eq!(store.last_seq(&ac).await.unwrap(), 0);
    assert_eq!(
        (
            store.conversations(a, 10).await.unwrap(),
            store.conversations(b, 10).await.unwrap(),
        ),
        lists,
        "no list moved"
    );
    assert!(store.conversations(d, 10).await.unwrap().is_empty());

    cmd(&mut con, &["CONFIG", "SET", "maxmemory", "0"])
        .await
        .unwrap();
    wait_healthy(&store).await;
    let results: Vec<_> = store
        .append(batch())
        .await
        .into_iter()
        .map(|r| r.map(|x| (x.message.seq, x.duplicate)))
        .collect();
    assert_eq!(
        results,
        vec![
            Err(StoreError::NotFriends),
            Ok((1, true)),
            Ok((2, false)),
            Ok((1, false)),
            Ok((3, false)),
        ],
        "the refused keys were never recorded"
    );
}
