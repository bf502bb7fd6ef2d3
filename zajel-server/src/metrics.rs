//! Prometheus metrics, hand-written exposition (text format 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use zajel_core::ErrorCode;

const BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A fixed-bucket latency histogram.
#[derive(Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, b) in BOUNDS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let trimmed = labels.trim_end_matches(',');
        let _ = writeln!(out, "{name}_sum{{{trimmed}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{trimmed}}} {count}");
    }
}

/// The engine's counters.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) connections: AtomicI64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) messages_total: AtomicU64,
    pub(crate) errors: Mutex<BTreeMap<&'static str, u64>>,
    pub(crate) ws_latency: Histogram,
    pub(crate) http_latency: Histogram,
}

impl Metrics {
    pub(crate) fn error(&self, code: ErrorCode) {
        let mut m = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(code.as_str()).or_default() += 1;
    }

    pub(crate) fn render(&self, lagged: u64, delivered: u64) -> String {
        let mut out = String::with_capacity(4096);
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "zajel_connections",
            "Open WebSocket connections.",
            self.connections.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "zajel_connections_total",
            "WebSocket connections accepted.",
            self.connections_total.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "zajel_messages_total",
            "Messages stored (duplicates by idempotency key not counted).",
            self.messages_total.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "zajel_events_delivered_total",
            "Events queued to connections (one per recipient connection).",
            delivered,
        );
        counter(
            &mut out,
            "zajel_lagged_total",
            "Connections closed because their outbound queue overflowed (4008).",
            lagged,
        );
        let _ = writeln!(
            out,
            "# HELP zajel_errors_total Error answers by code (WebSocket and HTTP).\n# TYPE zajel_errors_total counter"
        );
        for (code, n) in self.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "zajel_errors_total{{code=\"{code}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP zajel_request_duration_seconds Time to answer a request.\n# TYPE zajel_request_duration_seconds histogram"
        );
        self.ws_latency.render(
            &mut out,
            "zajel_request_duration_seconds",
            "transport=\"ws\",",
        );
        self.http_latency.render(
            &mut out,
            "zajel_request_duration_seconds",
            "transport=\"http\",",
        );
        out
    }
}
