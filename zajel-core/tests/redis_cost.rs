//! Redis work per append, counted (not timed): how many commands Redis executes (script-internal
//! calls included, from `INFO commandstats`) and how many round trips the store makes. A
//! regression test for the per-message cost (issue 13), printed for `docs/storage-redis.md`.
use std::collections::BTreeMap;
use zajel_core::testing::RedisServer;
use zajel_core::{
    Body, ConversationId, IdempotencyKey, MessageStore, NewMessage, RedisStore, Timestamp, UserId,
};

const T0: Timestamp = Timestamp(1_700_000_000_000);

/// `cmdstat_<name>` → (calls, usec) from `INFO commandstats`.
fn commandstats(port: u16) -> BTreeMap<String, (u64, u64)> {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "commandstats"])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut stats = BTreeMap::new();
    for line in text.lines() {
        let Some((name, rest)) = line.trim().split_once(':') else {
            continue;
        };
        let Some(name) = name.strip_prefix("cmdstat_") else {
            continue;
        };
        let field = |k: &str| -> u64 {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        stats.insert(name.to_owned(), (field("calls"), field("usec")));
    }
    stats
}

fn reset(port: u16) {
    let ok = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "CONFIG", "RESETSTAT"])
        .status()
        .expect("redis-cli");
    assert!(ok.success());
}

/// Runs `rounds` rounds of appends (one message per conversation per round, as `batches` of
/// that size) after a warm-up, and returns Redis commands per message (script-internal calls
/// included), printing the breakdown.
async fn commands_per_message(
    server: &RedisServer,
    store: &RedisStore,
    convs: &[(ConversationId, UserId)],
    rounds: usize,
    batch: usize,
) -> f64 {
    let msg = |(c, s): &(ConversationId, UserId), k: String| NewMessage {
        conversation: c.clone(),
        sender: *s,
        body: Body::parse("hello there").unwrap(),
        idempotency_key: IdempotencyKey::parse(&k).unwrap(),
        sent_at: T0,
    };
    // Warm up (script cache loaded), then measure.
    for r in store.append(vec![msg(&convs[0], "warm".into())]).await {
        r.unwrap();
    }
    reset(server.port());
    for i in 0..rounds {
        let all: Vec<NewMessage> = convs.iter().map(|c| msg(c, format!("k{i}"))).collect();
        for chunk in all.chunks(batch) {
            for r in store.append(chunk.to_vec()).await {
                assert!(!r.unwrap().duplicate);
            }
        }
    }
    let appends = (rounds * convs.len()) as u64;
    let stats = commandstats(server.port());
    let calls: u64 = stats.values().map(|s| s.0).sum();
    let usec: u64 = stats.values().map(|s| s.1).sum();
    println!("appends: {appends} in batches of {batch}");
    for (name, (c, u)) in &stats {
        println!(
            "  {name}: {:.2} calls/append, {:.2} usec/append",
            *c as f64 / appends as f64,
            *u as f64 / appends as f64
        );
    }
    let per_append = calls as f64 / appends as f64;
    println!(
        "total: {per_append:.2} commands/append, {:.2} usec/append (Redis-side, noisy)",
        usec as f64 / appends as f64
    );
    per_append
}

/// Ten friend pairs, each with its conversation and a sender.
async fn pairs(store: &RedisStore) -> Vec<(ConversationId, UserId)> {
    let users: Vec<UserId> = (0..20).map(|_| UserId::new_random()).collect();
    let mut convs = Vec::new();
    for p in users.chunks(2) {
        zajel_core::testing::befriend(store, p[0], p[1]).await;
        convs.push((ConversationId::direct(p[0], p[1]), p[0]));
    }
    convs
}

/// The coalesced shape: one batch of ten conversations per round (one round trip each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_per_append() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let convs = pairs(&store).await;
    let per_append = commands_per_message(&server, &store, &convs, 50, convs.len()).await;
    // The bound this test pins (see docs/storage-redis.md, "Cost per append"), layout 3:
    // `HMGET` meta (friends flag, sequence, sweep state, both windows' idempotency records),
    // `XADD`, one `HSET`, 2 `ZADD` = 5, + 0.1 `EVALSHA`, + an `HSCAN` and an `HSET` per
    // conversation and window (the sweep of old idempotency records; 0.02 each here). Layout 2
    // made 9.12 (separate `HGET`s of the pair's flag and of two idempotency buckets, the
    // record's `HSET` in its bucket); before session 6, 10.1.
    assert!(per_append <= 5.2, "{per_append} commands per append");
}

/// One `send`: one message per append call, as the server's send path makes it (one round
/// trip: the append script, which checks the friendship, and the two list `ZADD`s in one
/// pipeline; before the check moved into the script it was a separate `GET` round trip).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_per_send() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let convs = pairs(&store).await;
    let per_send = commands_per_message(&server, &store, &convs, 20, 1).await;
    // EVALSHA + HMGET + XADD + HSET + 2 ZADD: 6, all in one round trip (+ `HSCAN` and `HSET`
    // per conversation and window, 0.05 each here). Layout 2 made 10.05, before session 6 11.
    assert!(per_send <= 6.1, "{per_send} commands per send");
}
