//! What one `zajel-benches load` invocation runs: the target, the bare relay as its baseline in
//! the same invocation (so the ratio is taken under the same machine conditions), and with
//! `--find-max` a rate sweep for each.
//!
//! **find-max.** Open-loop runs at a stepped per-user rate: the rate is multiplied by
//! `--step-factor` while steps are sustained, then `--refine-steps` bisections between the last
//! sustained and the first failed rate. A step is *sustained* when nothing is lost or left
//! unanswered, no error frame arrived, e2e p99 (from the intended send time) is at most
//! `--max-p99-ms`, and at least 95% of the offered messages were delivered inside the measured
//! window. Every step starts a fresh server (and registers fresh users), so one step's backlog
//! cannot spill into the next.

use crate::load::{Baseline, LoadConfig, LoadReport, loadavg, run};
use anyhow::Result;
use serde_json::{Value, json};

/// Share of the offered rate that must be delivered in the window for a step to count.
pub const MIN_DELIVERED_SHARE: f64 = 0.95;

/// Runs what `cfg` asks for and returns the one JSON line.
pub async fn run_command(cfg: LoadConfig) -> Result<Value> {
    let baseline = match &cfg.baseline {
        Baseline::Auto => cfg.target.matching_relay(),
        Baseline::None => None,
        Baseline::Target(t) => Some(t.clone()),
    };
    // The target first, in a fresh process (its memory figures are not skewed by the
    // baseline's freed allocations); the baseline without idle connections.
    let baseline_cfg = baseline.map(|t| LoadConfig {
        target: t,
        idle: 0,
        server_pid: None,
        label: None,
        ..cfg.clone()
    });
    if cfg.find_max {
        let mut line = find_max(&cfg).await?;
        if let Some(b) = baseline_cfg {
            let base = find_max(&b).await?;
            line["ratio_to_baseline"] = ratio(
                &line["max_sustained_msgs_per_s"],
                &base["max_sustained_msgs_per_s"],
            );
            line["baseline"] = base;
        }
        Ok(line)
    } else {
        let mut line = run(cfg).await?.json;
        if let Some(b) = baseline_cfg {
            let base = run(b).await?.json;
            line["ratio_to_baseline"] = ratio(
                &line["throughput_msgs_per_s"],
                &base["throughput_msgs_per_s"],
            );
            line["baseline"] = base;
        }
        Ok(line)
    }
}

fn ratio(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!((a / b * 100.0).round() / 100.0),
        _ => Value::Null,
    }
}

/// Whether a step held its offered rate; `Err` says why not.
pub fn sustained(report: &LoadReport, offered_total: f64, max_p99_ms: f64) -> Result<(), String> {
    if report.lost > 0 {
        return Err(format!("{} lost", report.lost));
    }
    if report.unanswered > 0 {
        return Err(format!("{} unanswered", report.unanswered));
    }
    if !report.errors.is_empty() {
        return Err(format!("errors {:?}", report.errors));
    }
    let p99 = report.json["e2e_latency_ms"]["p99"].as_f64();
    match p99 {
        Some(p) if p <= max_p99_ms => {}
        Some(p) => return Err(format!("e2e p99 {p} ms > {max_p99_ms} ms")),
        None => return Err("nothing delivered in the window".into()),
    }
    let got = report.json["throughput_msgs_per_s"].as_f64().unwrap_or(0.0);
    if got < MIN_DELIVERED_SHARE * offered_total {
        return Err(format!("delivered {got}/s of {offered_total}/s offered"));
    }
    Ok(())
}

fn step_line(report: &LoadReport, offered_total: f64, verdict: &Result<(), String>) -> Value {
    let j = &report.json;
    json!({
        "offered_msgs_per_s": offered_total,
        "throughput_msgs_per_s": j["throughput_msgs_per_s"],
        "e2e_latency_ms": j["e2e_latency_ms"],
        "ack_latency_ms": j["ack_latency_ms"],
        "lost": report.lost,
        "unanswered": report.unanswered,
        "errors": j["errors"],
        "sustained": verdict.is_ok(),
        "why_not": verdict.as_ref().err(),
        "loadavg_after": j["loadavg_after"],
    })
}

/// Steps the rate for `cfg.target` and returns its find-max line.
pub async fn find_max(cfg: &LoadConfig) -> Result<Value> {
    let users = (cfg.pairs * 2) as f64;
    let loadavg_before = loadavg();
    let mut steps: Vec<(f64, Value)> = Vec::new();
    let mut best: Option<(f64, f64)> = None; // (per-user rate, measured throughput)
    let mut failed: Option<f64> = None;
    let mut rate = cfg.rate;
    let mut refined = 0;
    while steps.len() < cfg.max_steps {
        let report = run(LoadConfig {
            rate,
            find_max: false,
            baseline: Baseline::None,
            ..cfg.clone()
        })
        .await?;
        let offered = rate * users;
        let verdict = sustained(&report, offered, cfg.max_p99_ms);
        eprintln!(
            "find-max {}: {offered:.0} msgs/s offered: {}",
            cfg.target.name(),
            match &verdict {
                Ok(()) => "sustained".to_owned(),
                Err(why) => why.clone(),
            }
        );
        steps.push((offered, step_line(&report, offered, &verdict)));
        if verdict.is_ok() {
            let got = report.json["throughput_msgs_per_s"].as_f64().unwrap_or(0.0);
            if best.is_none_or(|(r, _)| rate > r) {
                best = Some((rate, got));
            }
        } else if failed.is_none_or(|f| rate < f) {
            failed = Some(rate);
        }
        rate = match (best, failed) {
            (_, None) => rate * cfg.step_factor,
            (lo, Some(hi)) => {
                if refined >= cfg.refine_steps {
                    break;
                }
                refined += 1;
                // Geometric midpoint: the steps are geometric too.
                let lo = lo.map_or(hi / cfg.step_factor / cfg.step_factor, |(r, _)| r);
                (lo * hi).sqrt()
            }
        };
    }
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(json!({
        "bench": "load",
        "mode": "find-max",
        "target": cfg.target.name(),
        "label": cfg.label,
        "same_host": true,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "config": {
            "pairs": cfg.pairs,
            "users": cfg.pairs * 2,
            "start_rate_per_user": cfg.rate,
            "step_factor": cfg.step_factor,
            "refine_steps": cfg.refine_steps,
            "duration_s": cfg.duration.as_secs_f64(),
            "warmup_s": cfg.warmup.as_secs_f64(),
            "body_bytes": cfg.body_bytes,
        },
        "criteria": {
            "max_e2e_p99_ms": cfg.max_p99_ms,
            "lost": 0,
            "unanswered": 0,
            "errors": 0,
            "min_delivered_share": MIN_DELIVERED_SHARE,
        },
        "max_sustained_msgs_per_s": best.map(|(r, _)| (r * users).round()),
        "throughput_at_max_msgs_per_s": best.map(|(_, got)| got),
        "first_failed_msgs_per_s": failed.map(|r| (r * users).round()),
        "steps": steps.into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg(),
    }))
}
