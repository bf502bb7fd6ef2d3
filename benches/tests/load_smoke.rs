//! A correctness check of the load generator itself (not a timed test): a short run against an
//! in-process memory server must deliver every acknowledged message exactly once, in order.

use std::time::Duration;
use zajel_benches::load::{Backend, LoadConfig, Target, run};

async fn check(cfg: LoadConfig) {
    let report = run(cfg).await.expect("load run");
    let line = report.json.to_string();
    assert!(report.sent > 0, "nothing sent: {line}");
    assert!(report.acked > 0, "nothing acked: {line}");
    assert!(report.delivered > 0, "nothing delivered: {line}");
    assert_eq!(report.lost, 0, "lost messages: {line}");
    assert_eq!(report.duplicates, 0, "duplicates: {line}");
    assert_eq!(report.reorders, 0, "reorders: {line}");
    assert_eq!(report.seq_mismatches, 0, "seq mismatches: {line}");
    assert_eq!(report.unanswered, 0, "unanswered sends: {line}");
    assert!(report.errors.is_empty(), "errors: {line}");
    assert_eq!(report.json["same_host"], true);
    assert!(report.json["e2e_latency_ms"]["p99"].is_number(), "{line}");
    assert!(report.json["ack_latency_ms"]["p50"].is_number(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_run_against_memory_server_loses_nothing() {
    check(LoadConfig {
        target: Target::Spawn(Backend::Memory),
        pairs: 3,
        duration: Duration::from_millis(1500),
        warmup: Duration::from_millis(500),
        rate: 20.0,
        grace: Duration::from_secs(10),
        idle: 10,
        ..LoadConfig::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_run_against_memory_server_loses_nothing() {
    check(LoadConfig {
        target: Target::Spawn(Backend::Memory),
        pairs: 2,
        duration: Duration::from_millis(1500),
        warmup: Duration::from_millis(500),
        rate: 0.0,
        window: 4,
        grace: Duration::from_secs(10),
        ..LoadConfig::default()
    })
    .await;
}
