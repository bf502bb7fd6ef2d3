//! Prometheus metrics on the `prometheus` crate. Each engine owns its registry (nothing is
//! registered globally), so several engines in one process, or an application with metrics of
//! its own, never mix their series.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::sync::Mutex;
use zajel_core::ErrorCode;

/// Bucket bounds of the request latency histogram, in seconds.
const BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The engine's series. Counters the engine drives are updated where things happen; the
/// ones other parts keep for themselves (the hub, the replay gate, the broker) are copied in
/// at each scrape ([`Observed`]).
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) connections: IntGauge,
    pub(crate) connections_total: IntCounter,
    pub(crate) messages_total: IntCounter,
    errors: IntCounterVec,
    pub(crate) ws_latency: Histogram,
    pub(crate) http_latency: Histogram,
    /// Held while a scrape copies the observed values in, so two scrapes at once cannot add
    /// the same increase twice.
    mirrors: Mutex<Mirrors>,
}

/// The values a scrape reads from the parts that count for themselves.
pub(crate) struct Observed {
    pub(crate) lagged: u64,
    pub(crate) delivered: u64,
    pub(crate) replays_active: u64,
    pub(crate) replays_peak: u64,
    pub(crate) replays_waited: u64,
    /// `(published, received, lost)` of the Redis broker, when there is one.
    pub(crate) broker: Option<(u64, u64, u64)>,
    /// The store's durable commits, when it groups writes into commits of its own
    /// ([`zajel_core::store::Store::commits_total`]).
    pub(crate) store_commits: Option<u64>,
}

struct Mirrors {
    lagged: IntCounter,
    delivered: IntCounter,
    replays_active: IntGauge,
    replays_peak: IntGauge,
    replays_waited: IntCounter,
    /// Registered at the first scrape that sees a broker (no broker, no broker series).
    broker: Option<[IntCounter; 3]>,
    /// Registered at the first scrape whose store counts commits.
    store_commits: Option<IntCounter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let latency = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "zajel_request_duration_seconds",
                    "Time to answer a request.",
                )
                .buckets(BOUNDS.to_vec()),
                &["transport"],
            ),
        );
        let mirrors = Mirrors {
            lagged: counter(
                r,
                "zajel_lagged_total",
                "Connections closed because their outbound queue overflowed (4008).",
            ),
            delivered: counter(
                r,
                "zajel_events_delivered_total",
                "Events queued to connections (one per recipient connection).",
            ),
            replays_active: gauge(
                r,
                "zajel_replays_active",
                "Resume replays running now (at most max_concurrent_replays).",
            ),
            replays_peak: gauge(
                r,
                "zajel_replays_peak",
                "The most resume replays that ran at once since start.",
            ),
            replays_waited: counter(
                r,
                "zajel_replays_waited_total",
                "Resume replays that waited for a slot (the node was at max_concurrent_replays).",
            ),
            broker: None,
            store_commits: None,
        };
        Self {
            connections: gauge(r, "zajel_connections", "Open WebSocket connections."),
            connections_total: counter(
                r,
                "zajel_connections_total",
                "WebSocket connections accepted.",
            ),
            messages_total: counter(
                r,
                "zajel_messages_total",
                "Messages stored (duplicates by idempotency key not counted).",
            ),
            errors: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "zajel_errors_total",
                        "Error answers by code (WebSocket and HTTP).",
                    ),
                    &["code"],
                ),
            ),
            ws_latency: latency.with_label_values(&["ws"]),
            http_latency: latency.with_label_values(&["http"]),
            mirrors: Mutex::new(mirrors),
            registry,
        }
    }
}

impl Metrics {
    /// Counts one error answer.
    pub(crate) fn error(&self, code: ErrorCode) {
        self.errors.with_label_values(&[code.as_str()]).inc();
    }

    /// The Prometheus text exposition (format 0.0.4) of every series, with `observed` copied in.
    pub(crate) fn render(&self, observed: Observed) -> String {
        {
            let mut m = self.mirrors.lock().unwrap_or_else(|e| e.into_inner());
            catch_up(&m.lagged, observed.lagged);
            catch_up(&m.delivered, observed.delivered);
            catch_up(&m.replays_waited, observed.replays_waited);
            m.replays_active.set(gauge_value(observed.replays_active));
            m.replays_peak.set(gauge_value(observed.replays_peak));
            if let Some((published, received, lost)) = observed.broker {
                let broker = m.broker.get_or_insert_with(|| {
                    [
                        (
                            "zajel_broker_published_total",
                            "Events published to other nodes.",
                        ),
                        (
                            "zajel_broker_received_total",
                            "Events received from other nodes.",
                        ),
                        (
                            "zajel_broker_lost_total",
                            "Events whose cross-node delivery was lost (their recipients are \
                             closed with 4008 to resume).",
                        ),
                    ]
                    .map(|(name, help)| counter(&self.registry, name, help))
                });
                for (c, v) in broker.iter().zip([published, received, lost]) {
                    catch_up(c, v);
                }
            }
            if let Some(commits) = observed.store_commits {
                let c = m.store_commits.get_or_insert_with(|| {
                    counter(
                        &self.registry,
                        "zajel_store_commits_total",
                        "Durable store commits (one fsync each); messages per commit = \
                         zajel_messages_total / this.",
                    )
                });
                catch_up(c, commits);
            }
        }
        let mut out = String::with_capacity(4096);
        // Encoding only fails on a family without samples or with a malformed name; neither is
        // registered here, and what encoded before the failure is still worth serving.
        let _ = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

/// Raises `counter` to `total`, a value another part counts (monotonic), without ever lowering it.
fn catch_up(counter: &IntCounter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Registers a collector built from constant options (a failure is a bug in this file).
fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: prometheus::Result<C>,
) -> C {
    let collector = collector.expect("valid metric options");
    registry
        .register(Box::new(collector.clone()))
        .expect("each series registered once");
    collector
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn observed(lagged: u64) -> Observed {
        Observed {
            lagged,
            delivered: 5,
            replays_active: 1,
            replays_peak: 3,
            replays_waited: 2,
            broker: None,
            store_commits: None,
        }
    }

    #[test]
    fn series_names_types_and_values() {
        let m = Metrics::default();
        m.connections.inc();
        m.connections_total.inc();
        m.messages_total.inc_by(2);
        m.error(ErrorCode::NotFriends);
        m.error(ErrorCode::NotFriends);
        m.ws_latency.observe(Duration::from_millis(2).as_secs_f64());
        let text = m.render(observed(4));
        for line in [
            "# TYPE zajel_connections gauge",
            "zajel_connections 1",
            "# TYPE zajel_connections_total counter",
            "zajel_messages_total 2",
            "zajel_errors_total{code=\"not_friends\"} 2",
            "# TYPE zajel_request_duration_seconds histogram",
            "zajel_request_duration_seconds_bucket{transport=\"ws\",le=\"0.001\"} 0",
            "zajel_request_duration_seconds_bucket{transport=\"ws\",le=\"0.0025\"} 1",
            "zajel_request_duration_seconds_bucket{transport=\"ws\",le=\"+Inf\"} 1",
            "zajel_request_duration_seconds_count{transport=\"ws\"} 1",
            "zajel_request_duration_seconds_count{transport=\"http\"} 0",
            "# TYPE zajel_lagged_total counter",
            "zajel_lagged_total 4",
            "zajel_events_delivered_total 5",
            "# TYPE zajel_replays_active gauge",
            "zajel_replays_active 1",
            "zajel_replays_peak 3",
            "zajel_replays_waited_total 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(
            !text.contains("zajel_broker"),
            "no broker, no broker series"
        );
        assert!(
            !text.contains("zajel_store_commits"),
            "a store without commits of its own, no commit series"
        );
    }

    /// Mirrored counters follow their source across scrapes and never go down; a second
    /// engine's registry is its own.
    #[test]
    fn observed_counters_follow_their_source_per_engine() {
        let m = Metrics::default();
        m.render(observed(4));
        let text = m.render(Observed {
            broker: Some((7, 8, 1)),
            store_commits: Some(3),
            ..observed(9)
        });
        assert!(
            text.contains("# TYPE zajel_store_commits_total counter\n"),
            "{text}"
        );
        assert!(text.contains("zajel_store_commits_total 3\n"), "{text}");
        assert!(text.contains("zajel_lagged_total 9\n"), "{text}");
        assert!(text.contains("zajel_broker_published_total 7\n"), "{text}");
        assert!(text.contains("zajel_broker_lost_total 1\n"), "{text}");
        let text = m.render(observed(9));
        assert!(text.contains("zajel_lagged_total 9\n"), "{text}");
        assert!(text.contains("zajel_broker_received_total 8\n"), "{text}");
        let other = Metrics::default();
        assert!(other.render(observed(0)).contains("zajel_lagged_total 0\n"));
    }
}
