//! The comparison servers end to end (not a timed test): `benches/compare/install.sh`
//! installs their packages (npm ci, a pip venv; skipped when present), then a short paced run
//! against Socket.IO and against Django Channels, each in processes of their own with their
//! own redis-server, must deliver every acknowledged message exactly once, in order, and hold
//! idle connections open through the stack's connect. One test, so the installs never race.

use std::time::Duration;
use zajel_benches::load::{LoadConfig, Target, run};
use zajel_benches::others::System;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_and_channels_deliver_every_acked_message() {
    let install = concat!(env!("CARGO_MANIFEST_DIR"), "/compare/install.sh");
    let status = std::process::Command::new("bash")
        .arg(install)
        .status()
        .expect("run install.sh");
    assert!(status.success(), "install.sh failed: {status}");

    for system in [System::SocketIo, System::Channels] {
        let report = run(LoadConfig {
            target: Target::Other(system),
            pairs: 4,
            duration: Duration::from_millis(1500),
            warmup: Duration::from_millis(500),
            rate: 10.0,
            grace: Duration::from_secs(10),
            idle: 20,
            ..LoadConfig::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{system:?}: {e:#}"));
        let line = report.json.to_string();
        assert_eq!(
            report.json["target"],
            format!("{}:redis", system.name()),
            "{line}"
        );
        // 8 users × 10/s × 2 s: about 160 sends, every one acked and delivered once.
        assert!(report.sent >= 100, "too few sends: {line}");
        assert_eq!(report.acked, report.sent, "unacked sends: {line}");
        assert_eq!(report.delivered, report.acked, "undelivered: {line}");
        assert_eq!(report.lost, 0, "lost: {line}");
        assert_eq!(report.duplicates, 0, "duplicates: {line}");
        assert_eq!(report.reorders, 0, "reorders: {line}");
        assert_eq!(report.seq_mismatches, 0, "seq mismatches: {line}");
        assert_eq!(report.unanswered, 0, "unanswered: {line}");
        assert!(report.errors.is_empty(), "errors: {line}");
        // The idle connections completed the stack's connect; memory is the server's
        // processes' sum, read from /proc.
        let idle = &report.json["idle"];
        assert_eq!(idle["connections"], 20, "{line}");
        assert!(
            idle["rss_after_kib"].as_u64().is_some_and(|k| k > 10_000),
            "{line}"
        );
        // CPU per message of the workers and of the server's own redis-server.
        assert!(
            report.json["cpu"]["store_process_us_per_msg"].is_number(),
            "{line}"
        );
        assert!(report.json["cpu"]["redis_us_per_msg"].is_number(), "{line}");
        refuses(system).await;
    }
}

/// What an attacker would try on the comparison servers: an unknown user is refused at
/// connect, a send to a stranger and a frame that is not a send get errors, and nothing is
/// stored for them (so the runs above measure servers that do check).
async fn refuses(system: System) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use zajel_benches::others::{self, engineio};

    let server = others::start(system).await.expect("start");
    assert!(
        others::connect(system, &server.host, "not-a-uuid")
            .await
            .is_err(),
        "{system:?} took a connection without a user id"
    );
    let pairs = others::make_pairs(&server.redis.url(), 2)
        .await
        .expect("pairs");
    let ((a, _), (c, _)) = (pairs[0].clone(), pairs[1].clone());
    let (lo, hi) = if a < c { (&a, &c) } else { (&c, &a) };
    let conversation = format!("dm.{lo}.{hi}");
    let mut ws = others::connect(system, &server.host, &c)
        .await
        .expect("connect");
    let body = serde_json::json!({"conversation": conversation, "body": "hi"});
    let (stranger, garbage) = match system {
        System::SocketIo => (
            engineio::event_with_ack(1, "send", &body.to_string()),
            engineio::event_with_ack(2, "send", "\"not an object\""),
        ),
        System::Channels => (
            serde_json::json!({"type": "send", "id": "m1", "conversation": conversation, "body": "hi"})
                .to_string(),
            "{not json".to_owned(),
        ),
    };
    for frame in [stranger, garbage] {
        ws.send(Message::Text(frame.into())).await.expect("send");
    }
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(20), ws.next())
            .await
            .expect("an answer in time")
            .expect("connection open")
            .expect("frame");
        if let Message::Text(t) = msg {
            answers.push(t.as_str().to_owned());
        }
    }
    // Socket.IO answers the two concurrently: in either order.
    let has = |code: &str| answers.iter().any(|a| a.contains(code));
    assert!(has("not_friends"), "{system:?}: {answers:?}");
    assert!(has("bad_request"), "{system:?}: {answers:?}");
    let client = redis::Client::open(server.redis.url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let stored: u64 = redis::cmd("LLEN")
        .arg(format!("conv:{conversation}"))
        .query_async(&mut conn)
        .await
        .expect("LLEN");
    assert_eq!(stored, 0, "{system:?} stored a message to a stranger");
}
