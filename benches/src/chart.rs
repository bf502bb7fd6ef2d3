//! The chart of `docs/benchmarks.md`: e2e p50 and p99 latency against offered rate, one colour
//! per target (Zajel per store, the relay baselines), drawn from the JSON lines as a plain SVG
//! (no plotting dependency: CI builds this crate, and the chart is a few lines and polylines).
//!
//! Points come from `--find-max` lines: every step, the baseline's too (single runs are left
//! out: one point per rate and target keeps the lines readable). Steps that were not sustained
//! are drawn hollow.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

/// One measured point.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Offered messages per second (all users together).
    pub offered: f64,
    /// e2e latency p50 (ms).
    pub p50: f64,
    /// e2e latency p99 (ms).
    pub p99: f64,
    /// Whether the step held the rate (the find-max criteria).
    pub sustained: bool,
}

/// The points of one target, by offered rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// `spawn:embedded`, `relay:redis`, ...
    pub name: String,
    /// Sorted by `offered`.
    pub points: Vec<Point>,
}

fn collect(line: &Value, out: &mut BTreeMap<String, Vec<Point>>) {
    let Some(name) = line["target"].as_str() else {
        return;
    };
    let lat = |v: &Value| {
        Some((
            v["e2e_latency_ms"]["p50"].as_f64()?,
            v["e2e_latency_ms"]["p99"].as_f64()?,
        ))
    };
    if let Some(steps) = line["steps"].as_array() {
        for s in steps {
            if let (Some(offered), Some((p50, p99))) = (s["offered_msgs_per_s"].as_f64(), lat(s)) {
                out.entry(name.to_owned()).or_default().push(Point {
                    offered,
                    p50,
                    p99,
                    sustained: s["sustained"].as_bool().unwrap_or(false),
                });
            }
        }
    }
    if line["baseline"].is_object() {
        collect(&line["baseline"], out);
    }
}

/// The series in a file of JSON lines (lines that are not JSON, or not find-max lines, are
/// skipped).
pub fn series_from_lines(text: &str) -> Vec<Series> {
    let mut by_name = BTreeMap::new();
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            collect(&v, &mut by_name);
        }
    }
    by_name
        .into_iter()
        .map(|(name, mut points)| {
            points.sort_by(|a, b| a.offered.total_cmp(&b.offered));
            Series { name, points }
        })
        .collect()
}

const W: f64 = 960.0;
const H: f64 = 560.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// A log axis covering `[lo, hi]`, widened to whole decades.
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    fn new(lo: f64, hi: f64) -> Self {
        let lo = 10f64.powf(lo.max(1e-3).log10().floor());
        let hi = 10f64.powf(hi.max(lo * 10.0).log10().ceil());
        Self { lo, hi }
    }
    /// Position in [0, 1].
    fn frac(&self, v: f64) -> f64 {
        (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
    }
    /// 1, 2, 5 × each decade.
    fn ticks(&self) -> Vec<f64> {
        let mut t = Vec::new();
        let mut d = self.lo;
        while d <= self.hi * 1.0001 {
            for m in [1.0, 2.0, 5.0] {
                let v = d * m;
                if v <= self.hi * 1.0001 {
                    t.push(v);
                }
            }
            d *= 10.0;
        }
        t
    }
}

fn label(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", v / 1000.0)
    } else {
        format!("{v}")
    }
}

/// Draws `series` as an SVG document; `limit_ms` is drawn as a horizontal line (the p99 bound).
pub fn svg(series: &[Series], title: &str, limit_ms: f64) -> String {
    let all: Vec<&Point> = series.iter().flat_map(|s| &s.points).collect();
    let (xmin, xmax) = all.iter().fold((f64::MAX, 0f64), |(a, b), p| {
        (a.min(p.offered), b.max(p.offered))
    });
    let (ymin, ymax) = all.iter().fold((f64::MAX, limit_ms), |(a, b), p| {
        (a.min(p.p50), b.max(p.p99))
    });
    let x = LogAxis::new(if all.is_empty() { 100.0 } else { xmin }, xmax);
    let y = LogAxis::new(if all.is_empty() { 0.1 } else { ymin }, ymax);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |v: f64| LEFT + x.frac(v) * pw;
    let py = |v: f64| TOP + (1.0 - y.frac(v)) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        escape(title)
    );
    for t in x.ticks() {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1}" stroke="#ddd"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3}</text>"##,
            px(t),
            TOP + ph,
            TOP + ph + 16.0,
            label(t)
        );
    }
    for t in y.ticks() {
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            py(t),
            LEFT + pw,
            LEFT - 6.0,
            py(t) + 4.0,
            label(t)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">offered rate (messages/s, all users, log)</text>"#,
        LEFT + pw / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">e2e latency from intended send (ms, log)</text>"#,
        TOP + ph / 2.0
    );
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#000" stroke-dasharray="2,3"/><text x="{2}" y="{3:.1}" text-anchor="end">p99 limit {limit_ms} ms</text>"##,
        py(limit_ms),
        LEFT + pw,
        LEFT + pw - 4.0,
        py(limit_ms) - 4.0
    );
    for (i, ser) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        for (pick, dash) in [(0, ""), (1, r#" stroke-dasharray="6,4""#)] {
            let pts: Vec<String> = ser
                .points
                .iter()
                .map(|p| {
                    let v = if pick == 0 { p.p99 } else { p.p50 };
                    format!("{:.1},{:.1}", px(p.offered), py(v))
                })
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"{dash}/>"#,
                pts.join(" ")
            );
            for p in &ser.points {
                let v = if pick == 0 { p.p99 } else { p.p50 };
                let fill = if p.sustained { c } else { "white" };
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{fill}" stroke="{c}"/>"#,
                    px(p.offered),
                    py(v)
                );
            }
        }
        let ly = TOP + 10.0 + i as f64 * 20.0;
        let lx = LEFT + pw + 15.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            escape(&ser.name)
        );
    }
    let ly = TOP + 20.0 + series.len() as f64 * 20.0;
    let lx = LEFT + pw + 15.0;
    let _ = writeln!(
        s,
        r#"<text x="{lx}" y="{ly}">solid: p99, dashed: p50</text><text x="{lx}" y="{}">hollow: rate not sustained</text>"#,
        ly + 18.0
    );
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"bench":"load","mode":"find-max","target":"spawn:redis","steps":[
        {"offered_msgs_per_s":4000,"e2e_latency_ms":{"p50":1.0,"p99":4.0},"sustained":true},
        {"offered_msgs_per_s":2000,"e2e_latency_ms":{"p50":0.5,"p99":2.0},"sustained":true},
        {"offered_msgs_per_s":8000,"e2e_latency_ms":{"p50":30.0,"p99":900.0},"sustained":false}],
        "baseline":{"target":"relay:redis","steps":[
        {"offered_msgs_per_s":2000,"e2e_latency_ms":{"p50":0.3,"p99":1.0},"sustained":true}]}}"#;

    #[test]
    fn series_come_from_find_max_steps_and_their_baselines() {
        let single = r#"{"bench":"load","target":"spawn:embedded","config":{"rate_per_user":5,"users":1000},"e2e_latency_ms":{"p50":3.0,"p99":9.0},"lost":0,"unanswered":0}"#;
        let closed = r#"{"bench":"load","target":"spawn:memory","config":{"rate_per_user":0,"users":10},"e2e_latency_ms":{"p50":3.0,"p99":9.0}}"#;
        let text = format!("{}\nnot json\n{single}\n{closed}\n", LINE.replace('\n', ""));
        let series = series_from_lines(&text);
        let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["relay:redis", "spawn:redis"],
            "single runs are left out"
        );
        let redis = &series[1];
        let offered: Vec<f64> = redis.points.iter().map(|p| p.offered).collect();
        assert_eq!(offered, [2000.0, 4000.0, 8000.0], "sorted by rate");
        assert!(!redis.points[2].sustained);
        assert_eq!(series[0].points.len(), 1);
    }

    #[test]
    fn svg_has_a_line_per_series_and_percentile() {
        let series = series_from_lines(&LINE.replace('\n', ""));
        let doc = svg(&series, "a <title>", 50.0);
        assert!(doc.starts_with("<svg"));
        assert!(doc.trim_end().ends_with("</svg>"));
        assert_eq!(doc.matches("<polyline").count(), 4);
        assert!(doc.contains("relay:redis") && doc.contains("spawn:redis"));
        assert!(doc.contains("a &lt;title&gt;"));
        assert!(
            doc.contains(r##"fill="white" stroke="#d62728""##),
            "hollow failed step"
        );
        // An empty input still gives a valid (empty) chart rather than NaN coordinates.
        assert!(!svg(&[], "empty", 50.0).contains("NaN"));
    }
}
