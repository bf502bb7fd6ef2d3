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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_per_append() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let users: Vec<UserId> = (0..20).map(|_| UserId::new_random()).collect();
    let convs: Vec<(ConversationId, UserId)> = users
        .chunks(2)
        .map(|p| (ConversationId::direct(p[0], p[1]), p[0]))
        .collect();
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
    let rounds = 50;
    for i in 0..rounds {
        // One batch per round, one message per conversation: the server's coalesced shape.
        let batch = convs.iter().map(|c| msg(c, format!("k{i}"))).collect();
        for r in store.append(batch).await {
            assert!(!r.unwrap().duplicate);
        }
    }
    let appends = (rounds * convs.len()) as u64;
    let stats = commandstats(server.port());
    let calls: u64 = stats.values().map(|s| s.0).sum();
    let usec: u64 = stats.values().map(|s| s.1).sum();
    println!("appends: {appends}");
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
    // The bound this test pins (see docs/storage-redis.md, "Cost per append").
    assert!(per_append <= 9.5, "{per_append} commands per append");
}
