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
            rate: 20.0,
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
        // 8 users × 20/s × 2 s: about 320 sends, every one acked and delivered once.
        assert!(report.sent >= 200, "too few sends: {line}");
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
        assert!(
            report.json["cpu"]["store_process_us_per_msg"].is_number(),
            "{line}"
        );
    }
}
