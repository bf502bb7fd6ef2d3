//! A node closing many connections at once tells each when to come back, spread over a window
//! that grows with the wave, and resumes queue behind `max_concurrent_replays` instead of
//! stampeding the store (issue 8, item 4).

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use zajel_server::ServerConfig;

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_spreads_the_return_over_the_wave() {
    let server = TestServer::memory_with(ServerConfig {
        reconnect_after_ms: 500,
        // 60 connections at 100/s: a 600 ms window after the 500 ms base.
        reconnect_rate: 100,
        max_connections_per_address: 1000,
        ..test_config()
    })
    .await;
    let addr = server.addr;
    let mut clients = Vec::new();
    for u in 0..4 {
        let account = register(addr, &format!("user{u}")).await;
        for _ in 0..15 {
            clients.push(Client::login(addr, &account).await.0);
        }
    }
    let stop = tokio::spawn(server.stop());
    let mut asked = Vec::new();
    for c in &mut clients {
        let (code, frames) = c.expect_close().await;
        assert_eq!(code, 1001);
        let away: &Value = frames
            .iter()
            .find(|f| f["type"] == "going_away")
            .expect("going_away before the close");
        asked.push(away["reconnect_after_ms"].as_u64().expect("a number"));
    }
    stop.await.expect("stopped");
    asked.sort_unstable();
    let (min, max) = (asked[0], asked[asked.len() - 1]);
    assert!(min >= 500, "never before the base delay: {asked:?}");
    assert!(max <= 500 + 600, "within the wave's window: {asked:?}");
    // Uniform over 600 ms: 60 draws cover well over half of it (a fixed delay would not).
    assert!(max - min >= 300, "spread over the window: {asked:?}");
    let mut distinct = asked.clone();
    distinct.dedup();
    assert!(distinct.len() >= 30, "{asked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_queue_behind_the_replay_cap() {
    const CAP: u64 = 2;
    const RESUMING: usize = 10;
    const BACKLOG: u64 = 400;
    let server = TestServer::memory_with(ServerConfig {
        max_concurrent_replays: CAP as u32,
        ..bulk_config()
    })
    .await;
    let addr = server.addr;
    let Pair {
        bob,
        mut a,
        b,
        conv,
        ..
    } = alice_and_bob(addr).await;
    b.close().await;
    // 400 x 16 KiB per replay: far more than loopback socket buffers hold, so a replay stays
    // running until its client reads, and the others must queue meanwhile.
    send_backlog(&mut a, &conv, BACKLOG).await;
    // Every device of bob resumes from 0 at once, and only then starts reading.
    let devices = resume_from_zero(addr, &bob.token, &conv, RESUMING).await;
    let readers: Vec<_> = devices
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                // The last of bob's devices waits for the nine replays before it (one user
                // holds at most a share of the slots): seconds on a loaded CI machine, so
                // more than the usual wait for a frame.
                c.wait = Duration::from_secs(120);
                assert_eq!(c.expect("auth_ok").await["type"], "auth_ok");
                for seq in 1..=BACKLOG {
                    assert_eq!(c.expect("message").await["message"]["seq"], seq);
                }
                c.expect("synced").await;
                c.close().await;
            })
        })
        .collect();
    for r in readers {
        r.await.expect("every resume completes, in order");
    }
    let m = http(addr, "GET", "/metrics", None, &[]).await;
    assert_eq!(m.status, 200);
    let peak = metric(&m.body, "zajel_replays_peak");
    let waited = metric(&m.body, "zajel_replays_waited_total");
    assert!(peak <= CAP, "at most {CAP} replays at once, saw {peak}");
    assert!(
        waited >= RESUMING as u64 - CAP,
        "the others queued: {waited}"
    );
    assert_eq!(metric(&m.body, "zajel_replays_active"), 0);
    server.stop_with([a]).await;
}

/// A user who opens many resumes and reads none of them holds at most a quarter of the replay
/// slots: another user's resume runs at once. (Before, the hog's stalled replays held every
/// slot until their writes timed out, and everyone else's resume waited behind them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_hold_every_replay_slot() {
    const CAP: u32 = 4;
    const BACKLOG: u64 = 400;
    let server = TestServer::memory_with(ServerConfig {
        max_concurrent_replays: CAP,
        // The hog's stalled writes must not free the slots while the test runs.
        write_timeout_ms: 120_000,
        ..bulk_config()
    })
    .await;
    let addr = server.addr;
    let Pair {
        alice,
        bob,
        mut a,
        b,
        conv,
    } = alice_and_bob(addr).await;
    b.close().await;
    send_backlog(&mut a, &conv, BACKLOG).await;
    // bob resumes from 0 on CAP devices and reads nothing: each replay stalls on a full socket.
    let hogs = resume_from_zero(addr, &bob.token, &conv, CAP as usize).await;
    // Give every hog replay the time to start and stall.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // alice resumes on a new device: her replay must not wait behind bob's.
    let mut c = Client::connect(addr, "alice-2").await;
    let resumed = tokio::time::timeout(Duration::from_secs(8), async {
        let ok = c
            .auth(
                &alice.token,
                Some(json!({"cursors": {conv.clone(): BACKLOG}})),
            )
            .await;
        assert_eq!(ok["type"], "auth_ok", "{ok}");
        c.expect("synced").await
    })
    .await
    .expect("another user's resume is not starved by one user's stalled replays");
    assert_eq!(resumed["type"], "synced");
    let m = http(addr, "GET", "/metrics", None, &[]).await;
    let active = metric(&m.body, "zajel_replays_active");
    assert!(active >= 1, "the hog's replay still runs: {active}");
    assert!(
        active <= (CAP / 4) as u64,
        "one user holds at most a quarter: {active}"
    );
    drop(hogs);
    c.close().await;
    server.stop_with([a]).await;
}

/// `n` messages of 16 KiB from `a` into `conv` (keys k1..=kn).
async fn send_backlog(a: &mut Client, conv: &str, n: u64) {
    let body = "x".repeat(16 * 1024);
    for i in 1..=n {
        a.send_message(conv, &body, &format!("k{i}")).await;
    }
}

/// `devices` new connections of the account with `token`, each asking to resume `conv` from 0;
/// none reads anything yet.
async fn resume_from_zero(
    addr: std::net::SocketAddr,
    token: &str,
    conv: &str,
    devices: usize,
) -> Vec<Client> {
    let mut out = Vec::new();
    for i in 0..devices {
        let mut c = Client::connect(addr, &format!("device-{i}")).await;
        let id = c.id();
        c.send_raw(
            &json!({"type": "auth", "id": id, "protocol": 1, "token": token,
                    "resume": {"cursors": {conv: 0}}})
            .to_string(),
        )
        .await;
        out.push(c);
    }
    out
}
