//! Two nodes on a real Redis Cluster (redis-server in cluster mode, started per test on free
//! loopback ports; one node is the binary started with `--redis-cluster`): events cross nodes
//! through sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`), revocations too, and a primary killed by SIGKILL is replaced by its replica while clients
//! resume with every replicated, acknowledged message intact.

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use zajel_core::RedisStore;
use zajel_core::store::redis::RedisOptions;
use zajel_core::testing::RedisCluster;
use zajel_server::Engine;
use zajel_server::broker::{RedisBroker, RedisBrokerConfig};

/// Node `id`'s channel (see `docs/server.md`, "Running several nodes").
fn channel(id: &str) -> String {
    format!("zajel:node:{{{id}}}:events")
}

/// A conversation's log key: its slot is the conversation's.
fn log_key(conv: &str) -> String {
    format!("zajel:{{c:{conv}}}:log")
}

async fn cluster_store(cluster: &RedisCluster) -> RedisStore {
    RedisStore::connect_cluster(&cluster.urls(), RedisOptions::default())
        .await
        .expect("cluster store")
}

/// An in-process node on the cluster: its own store and broker. The heartbeat TTL is longer
/// than a failover (a few seconds), so no node is declared dead while a primary is replaced.
async fn node(cluster: &RedisCluster, id: &str) -> TestServer {
    let broker = RedisBroker::connect_cluster(
        &cluster.urls(),
        RedisBrokerConfig {
            node_id: id.into(),
            heartbeat_ms: 200,
            node_ttl_ms: 8000,
            sweep_ms: 200,
            ..RedisBrokerConfig::default()
        },
    )
    .await
    .expect("cluster broker");
    let engine = Engine::builder(Arc::new(cluster_store(cluster).await), test_config())
        .redis_broker(broker)
        .build();
    TestServer::serve(engine).await
}

/// A node id whose channel the primary at `index` serves (`want`) or does not (`!want`).
fn id_on(cluster: &RedisCluster, prefix: &str, index: usize, want: bool) -> String {
    (0..1000)
        .map(|i| format!("{prefix}{i}"))
        .find(|id| (cluster.master_of(&channel(id)).expect("master_of") == index) == want)
        .expect("a node id for that shard")
}

/// The sharded channels a node's primary serves subscribers for.
async fn shard_channels(url: &str) -> (Vec<String>, Vec<String>) {
    let client = redis::Client::open(url).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let sharded: Vec<String> = redis::cmd("PUBSUB")
        .arg("SHARDCHANNELS")
        .query_async(&mut con)
        .await
        .expect("PUBSUB SHARDCHANNELS");
    let classic: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query_async(&mut con)
        .await
        .expect("PUBSUB CHANNELS");
    (sharded, classic)
}

/// How many subscribers a primary has for a sharded channel.
async fn shard_subscribers(url: &str, channel: &str) -> i64 {
    let Ok(client) = redis::Client::open(url) else {
        return 0;
    };
    let Ok(mut con) = client.get_multiplexed_async_connection().await else {
        return 0;
    };
    let reply: Result<(String, i64), _> = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(channel)
        .query_async(&mut con)
        .await;
    reply.map_or(0, |(_, n)| n)
}

/// Sends until the server acknowledges, retrying with the same idempotency key while the
/// store is unavailable (a failover in progress), as the client SDK's outbox does.
async fn send_retrying(c: &mut Client, conv: &str, body: &str, key: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .call(
                json!({"type": "send", "conversation": conv, "body": body, "idempotency_key": key}),
            )
            .await;
        if r["type"] == "sent" {
            return r;
        }
        assert_eq!(
            r["code"], "unavailable",
            "only a failover may fail a send: {r}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "store still unavailable: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client that follows one conversation as the SDK does: on 4008 it reconnects and resumes
/// from the last sequence it saw; every message must arrive exactly once, in order.
struct Follower {
    addr: std::net::SocketAddr,
    token: String,
    conv: String,
    client: Client,
    last: u64,
    closes: u32,
}

impl Follower {
    /// Reads until message `seq` has arrived.
    async fn until(&mut self, seq: u64) {
        while self.last < seq {
            match self.client.next_or_close().await {
                Ok(f) if f["type"] == "message" => {
                    let got = f["message"]["seq"].as_u64().expect("seq");
                    assert_eq!(got, self.last + 1, "exactly once, in order: {f}");
                    assert_eq!(f["message"]["body"], format!("m{got}"));
                    self.last = got;
                }
                // `going_away` (with the delay to come back after) precedes a 4008 close.
                Ok(f) => assert!(
                    ["presence", "synced", "sent", "going_away"]
                        .contains(&f["type"].as_str().unwrap_or("")),
                    "unexpected {f}"
                ),
                Err(code) => {
                    assert_eq!(code, 4008, "only a resync may close the connection");
                    self.closes += 1;
                    assert!(self.closes < 10, "resynced too often");
                    self.client = Client::connect(self.addr, "bob").await;
                    let cursors = json!({ self.conv.clone(): self.last });
                    let ok = self
                        .client
                        .auth(&self.token, Some(json!({ "cursors": cursors })))
                        .await;
                    assert_eq!(ok["type"], "auth_ok", "{ok}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_nodes_through_sharded_pubsub() {
    let cluster = RedisCluster::start(3, 0).expect("redis cluster");
    // The two nodes' channels on different shards: a publish crosses shards.
    let a_id = id_on(&cluster, "node-a", 0, true);
    let b_id = id_on(&cluster, "node-b", 0, false);
    let na = node(&cluster, &a_id).await;
    // Node B is the real binary, configured by its seeds (two of the three primaries).
    let seeds = cluster.urls()[..2].join(",");
    let nb = Binary::start(&[
        "--redis-cluster",
        &seeds,
        "--redis-command-timeout-ms",
        "1500",
        "--node-id",
        &b_id,
    ]);

    let alice = register(na.addr, "alice").await;
    let bob = register(nb.addr, "bob").await;
    let (mut a, mut b) = friends_at(na.addr, &alice, nb.addr, &bob).await;
    let conv = dm(&alice, &bob);

    // Live both ways, exactly once.
    exchange(&mut a, &mut b, &conv).await;
    // Presence is cluster-wide: A sees bob (on B) online.
    let f = a.call(json!({"type": "friends_list"})).await;
    assert_eq!(f["friends"][0]["online"], true, "{f}");

    // Each node is subscribed on its channel's shard, with sharded pub/sub only.
    let mut urls = cluster.urls();
    urls.truncate(3);
    for id in [&a_id, &b_id] {
        let owner = cluster.master_of(&channel(id)).expect("owner");
        let (sharded, classic) = shard_channels(&urls[owner]).await;
        assert!(sharded.contains(&channel(id)), "{id}: {sharded:?}");
        assert!(classic.is_empty(), "classic pub/sub in use: {classic:?}");
    }

    // A revocation on node B closes the session's socket on node A (4001).
    let (mut b_on_a, _) = Client::login(na.addr, &bob).await;
    logout_all(nb.addr, &bob.token).await;
    assert_eq!(b_on_a.expect_close().await.0, 4001);
    assert_eq!(b.expect_close().await.0, 4001);

    a.expect_silence(200).await;
    let h = a.history(&conv, json!({})).await;
    assert_eq!(seqs(&h), vec![1, 2]);
    let broker = na.engine.redis_broker().expect("broker");
    assert!(broker.received_total() > 0 && broker.lost_total() == 0);
    a.close().await;
    na.stop().await;
    assert_eq!(nb.terminate(), Some(0));
}

/// 3 primaries + 3 replicas. The primary holding both the conversation's slot and node B's
/// channel is SIGKILLed after its replica has every acknowledged write; the replica takes
/// over. Sends fail with `unavailable` meanwhile and are retried with their keys; node B
/// notices its subscription is gone, resubscribes on the new primary and closes its
/// connections with 4008; bob resumes and gets every message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_failover_clients_resume_nothing_replicated_is_lost() {
    let mut cluster = RedisCluster::start(3, 1).expect("redis cluster");
    // Accounts first (on a broker-less node), to know the conversation's shard.
    let setup = TestServer::start(Arc::new(cluster_store(&cluster).await), test_config()).await;
    let alice = register(setup.addr, "alice").await;
    let bob = register(setup.addr, "bob").await;
    setup.stop().await;
    let conv = dm(&alice, &bob);
    let doomed = cluster.master_of(&log_key(&conv)).expect("owner");
    let na = node(&cluster, &id_on(&cluster, "node-a", doomed, false)).await;
    let nb_id = id_on(&cluster, "node-b", doomed, true);
    let nb = node(&cluster, &nb_id).await;

    let (mut a, mut b) = friends_at(na.addr, &alice, nb.addr, &bob).await;
    for i in 1..=5 {
        a.send_message(&conv, &format!("m{i}"), &format!("k{i}"))
            .await;
        assert_eq!(b.expect("message").await["message"]["seq"], i);
    }
    // Redis replicates asynchronously: only what the replica has is promised to survive.
    cluster.wait_replicated(doomed).expect("replica caught up");
    let (killed, promoted) = cluster
        .kill_master_of(&log_key(&conv))
        .expect("failover to the replica");
    assert_eq!(killed, doomed);
    assert_ne!(promoted, doomed);

    // alice (on node A, whose channel is on a surviving shard) keeps her connection; her
    // sends go through once the store follows the new primary.
    for i in 6..=8 {
        let ack = send_retrying(&mut a, &conv, &format!("m{i}"), &format!("k{i}")).await;
        assert_eq!(ack["message"]["seq"], i, "{ack}");
    }
    // bob's node lost its subscription with the primary: 4008, then he resumes from seq 5
    // (again if his node is still resubscribing when he is back: a new 4008).
    let mut bob_c = Follower {
        addr: nb.addr,
        token: bob.token.clone(),
        conv: conv.clone(),
        client: b,
        last: 5,
        closes: 0,
    };
    bob_c.until(8).await;
    assert!(bob_c.closes >= 1, "bob's node must have resynced him");

    // Node B subscribes again on the promoted replica...
    let urls = cluster.urls();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while shard_subscribers(&urls[promoted], &channel(&nb_id)).await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node B did not resubscribe"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... and live delivery crosses nodes again, both ways.
    send_retrying(&mut a, &conv, "m9", "k9").await;
    bob_c.until(9).await;
    let ack = send_retrying(&mut bob_c.client, &conv, "m10", "k10").await;
    assert_eq!(ack["message"]["seq"], 10);
    bob_c.last = 10;
    assert_eq!(a.expect("message").await["message"]["seq"], 10);
    // A retried key is answered as a duplicate, not stored twice.
    let again = send_retrying(&mut a, &conv, "m6", "k6").await;
    assert_eq!(again["message"]["seq"], 6, "{again}");
    bob_c.client.expect_silence(300).await;

    let h = a.history(&conv, json!({})).await;
    assert_eq!(seqs(&h), (1..=10).collect::<Vec<u64>>());
    a.close().await;
    bob_c.client.close().await;
    na.stop().await;
    nb.stop().await;
}

/// A presence registration refused by one full primary of a Cluster (the one holding bob's
/// keys). Once it has room, node B repairs bob's registration and, since on a Cluster a
/// refusal by one primary does not prove that no other primary stored a message for bob
/// meanwhile, closes his connection with 4008 so he resumes; then messages reach him live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_a_full_primary_refused_is_repaired_and_resumed() {
    let mut cluster = RedisCluster::start(3, 0).expect("redis cluster");
    let na = node(&cluster, "node-a").await;
    let nb = node(&cluster, "node-b").await;
    let presence = |u: &Account| format!("zajel:{{u:{}}}:presence", u.id);
    let alice = register(na.addr, "alice").await;
    let bob = register(nb.addr, "bob").await;
    let conv = dm(&alice, &bob);
    let (mut a, b) = friends_at(na.addr, &alice, nb.addr, &bob).await;
    b.close().await;
    let full = cluster.master_of(&presence(&bob)).unwrap();
    let mut con = redis::Client::open(cluster.node(full).url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let registry = async |con: &mut redis::aio::MultiplexedConnection| -> Vec<(String, i64)> {
        redis::cmd("HGETALL")
            .arg(presence(&bob))
            .query_async(con)
            .await
            .unwrap()
    };
    let config = async |con: &mut redis::aio::MultiplexedConnection, max: &str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(max)
            .query_async::<()>(con)
            .await
            .unwrap();
    };
    config(&mut con, "1").await;

    let mut b = Client::connect(nb.addr, "bob").await;
    let ok = b.auth(&bob.token, None).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    assert!(
        registry(&mut con).await.is_empty(),
        "the full primary took a write"
    );
    // A send to bob fails too (his conversation list is on the full primary): nothing is
    // acknowledged, alice's client will retry.
    let sent = a
        .call(
            json!({"type": "send", "conversation": conv, "body": "while unregistered",
            "idempotency_key": "k-away"}),
        )
        .await;
    assert_eq!(sent["code"], "unavailable", "{sent}");

    config(&mut con, "0").await;
    let (code, frames) = b.expect_close().await;
    assert_eq!(code, 4008, "{frames:?}");
    assert!(frames.iter().all(|f| f["type"] != "message"), "{frames:?}");
    // bob resumes; alice's retry (same key) and her next message arrive live. (The repaired
    // registration is checked once he is back: the closed connection's is gone as soon as
    // he answers the close.)
    let mut b = Client::connect(nb.addr, "bob").await;
    let ok = b
        .auth(&bob.token, Some(json!({"cursors": {conv.clone(): 0}})))
        .await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    // The old connection's teardown may still be on its way: poll.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = registry(&mut con).await;
        if now == vec![("node-b".to_owned(), 1)] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.expect("synced").await;
    for (body, key) in [("while unregistered", "k-away"), ("live", "k-live")] {
        let sent = send_retrying(&mut a, &conv, body, key).await;
        assert_eq!(sent["message"]["body"], body, "{sent}");
        assert_eq!(b.expect("message").await["message"]["body"], body);
    }
    a.close().await;
    b.close().await;
    na.stop().await;
    nb.stop().await;
}
