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

// ---------------------------------------------------------------------------------------------
// The bare relay baseline, --find-max and the comparison line (issue 13): smoke runs of a
// second or two, not benchmarks.

use zajel_benches::compare::run_command;
use zajel_benches::load::Baseline;
use zajel_benches::relay::RelayStore;

fn tiny(target: Target) -> LoadConfig {
    LoadConfig {
        target,
        pairs: 2,
        duration: Duration::from_millis(800),
        warmup: Duration::from_millis(200),
        rate: 20.0,
        grace: Duration::from_secs(10),
        ..LoadConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_drives_the_relay_over_every_store() {
    for store in [RelayStore::Memory, RelayStore::Redis, RelayStore::Redb] {
        check(LoadConfig {
            idle: 5,
            ..tiny(Target::Relay(store))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_states_its_ratio_to_the_matching_relay() {
    let line = run_command(tiny(Target::Spawn(Backend::Embedded)))
        .await
        .expect("run");
    assert_eq!(line["target"], "spawn:embedded", "{line}");
    assert_eq!(line["baseline"]["target"], "relay:redb", "{line}");
    assert_eq!(line["baseline"]["lost"], 0, "{line}");
    let ratio = line["ratio_to_baseline"].as_f64().expect("a ratio");
    // Both were offered the same paced rate, so both deliver about it.
    assert!((0.5..2.0).contains(&ratio), "{line}");
    assert!(line["loadavg_before"].is_array(), "{line}");

    let none = run_command(LoadConfig {
        baseline: Baseline::None,
        ..tiny(Target::Spawn(Backend::Memory))
    })
    .await
    .expect("run");
    assert!(none.get("baseline").is_none(), "{none}");
}

/// The cross-node mode: every pair split over two nodes sharing one Redis, compared with the
/// same run on one node (the baseline); nothing lost either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cross_node_mode_compares_with_one_node() {
    check(tiny(Target::Spawn(Backend::RedisCrossNode))).await;
    let line = run_command(tiny(Target::Spawn(Backend::RedisCrossNode)))
        .await
        .expect("run");
    assert_eq!(line["target"], "spawn:redis-cross-node", "{line}");
    assert_eq!(line["baseline"]["target"], "spawn:redis", "{line}");
    assert_eq!(line["lost"], 0, "{line}");
    assert_eq!(line["baseline"]["lost"], 0, "{line}");
    assert!(line["ratio_to_baseline"].is_number(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_max_steps_up_while_sustained_and_bisects_after_a_failure() {
    let cfg = LoadConfig {
        find_max: true,
        rate: 5.0,
        step_factor: 2.0,
        max_steps: 2,
        baseline: Baseline::None,
        // The stepping logic is under test, not the machine: a bound no loaded CI box misses
        // (50 ms was missed at load average 9).
        max_p99_ms: 5_000.0,
        ..tiny(Target::Relay(RelayStore::Memory))
    };
    // 4 users at 5/s, then 10/s: a trivial load, both steps sustained.
    let line = run_command(cfg.clone()).await.expect("find-max");
    let steps = line["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{line}");
    assert_eq!(steps[0]["offered_msgs_per_s"], 20.0, "{line}");
    assert_eq!(steps[1]["offered_msgs_per_s"], 40.0, "{line}");
    assert!(steps.iter().all(|s| s["sustained"] == true), "{line}");
    assert_eq!(line["max_sustained_msgs_per_s"], 40.0, "{line}");
    assert!(line["first_failed_msgs_per_s"].is_null(), "{line}");

    // An unreachable latency bound: every step fails, so the sweep searches downwards and
    // reports no sustained rate rather than a made-up one.
    let line = run_command(LoadConfig {
        max_p99_ms: 0.0,
        max_steps: 3,
        ..cfg
    })
    .await
    .expect("find-max");
    let steps = line["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3, "{line}");
    assert!(
        steps
            .iter()
            .all(|s| s["sustained"] == false
                && s["why_not"].as_str().is_some_and(|w| w.contains("p99"))),
        "{line}"
    );
    assert!(line["max_sustained_msgs_per_s"].is_null(), "{line}");
    // 5/s per user fails, then the geometric midpoints 2.5/s and 1.25/s (x 4 users).
    assert_eq!(line["first_failed_msgs_per_s"], 5.0, "{line}");
}
