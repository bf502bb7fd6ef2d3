//! CPU time of the server under test, from `/proc`, for a load run's measured window.
//!
//! With `load --url … --server-pid PID` the server runs in a process of its own, so its CPU
//! time per message can be read without the load generator's: `utime + stime` of the process
//! (all its threads) and of its child processes that are still running (the `redis-server` a
//! `serve --store redis` starts), sampled when the measured window opens and when it closes.
//! Unlike wall-clock throughput this barely depends on what else runs on the machine, so it is
//! the number to compare between runs (the issue's own analysis is in these units: µs of server
//! CPU and of Redis CPU per message).

use serde_json::{Value, json};

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux architecture
/// this runs on; the kernel converts to it whatever its internal HZ).
pub const TICKS_PER_S: f64 = 100.0;

/// CPU ticks (user + system) of one process, all threads, from `/proc/<pid>/stat`.
pub fn process_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: fields after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The running child processes of `pid` (from every thread's `children` list).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// One reading: the server's ticks, its children's, and this process's (the load generator).
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    server: u64,
    children: u64,
    load_generator: u64,
}

impl Sample {
    /// Reads the server `pid`, its running children and `/proc/self`.
    pub fn take(pid: u32) -> Option<Self> {
        Some(Self {
            server: process_ticks(pid)?,
            children: children(pid).into_iter().filter_map(process_ticks).sum(),
            load_generator: process_ticks(std::process::id())?,
        })
    }
}

impl Sample {
    /// Like [`Sample::take`], but without a server (`None`: it runs in this process, or is
    /// not known) only the load generator is read and the server's parts stay zero.
    pub fn take_optional(pid: Option<u32>) -> Option<(Self, bool)> {
        match pid {
            Some(pid) => Some((Self::take(pid)?, true)),
            None => Some((
                Self {
                    server: 0,
                    children: 0,
                    load_generator: process_ticks(std::process::id())?,
                },
                false,
            )),
        }
    }
}

/// CPU seconds between two [`Sample::take_optional`] readings, per process (`null` for the
/// server's parts when it was not read, and for all when a reading failed).
pub fn seconds(before: Option<(Sample, bool)>, after: Option<(Sample, bool)>) -> Value {
    let (Some((b, with_server)), Some((a, _))) = (before, after) else {
        return Value::Null;
    };
    let s = |d: u64| json!(d as f64 / TICKS_PER_S);
    let server = |d: u64| if with_server { s(d) } else { Value::Null };
    json!({
        "load_generator": s(a.load_generator.saturating_sub(b.load_generator)),
        "server": server(a.server.saturating_sub(b.server)),
        "store_process": server(a.children.saturating_sub(b.children)),
    })
}

/// The JSON report of a window: CPU µs per message for the server, its children (the store
/// process when there is one) and the load generator, and the share of one core each used.
pub fn report(before: Sample, after: Sample, window_s: f64, messages: u64) -> Value {
    let us = |d: u64| d as f64 / TICKS_PER_S * 1e6;
    let per_msg = |d: u64| {
        if messages == 0 {
            Value::Null
        } else {
            json!((us(d) / messages as f64 * 10.0).round() / 10.0)
        }
    };
    let cores = |d: u64| json!((us(d) / 1e6 / window_s * 100.0).round() / 100.0);
    let server = after.server.saturating_sub(before.server);
    let children = after.children.saturating_sub(before.children);
    let load = after.load_generator.saturating_sub(before.load_generator);
    json!({
        "source": "/proc/<server-pid>/stat and its running children (utime+stime, 10 ms ticks)",
        "window_s": (window_s * 100.0).round() / 100.0,
        "messages": messages,
        "server_us_per_msg": per_msg(server),
        "store_process_us_per_msg": per_msg(children),
        "load_generator_us_per_msg": per_msg(load),
        "server_cores": cores(server),
        "store_process_cores": cores(children),
        "load_generator_cores": cores(load),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_a_child() {
        let me = std::process::id();
        // Burn CPU until the kernel has counted a tick (on a busy machine 60 ms of wall time
        // can be less than one 10 ms tick of CPU), within a bound.
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while process_ticks(me) == Some(0) && t0.elapsed() < std::time::Duration::from_secs(20) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        assert!(process_ticks(me).is_some_and(|t| t > 0));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        assert!(children(me).contains(&child.id()));
        child.kill().ok();
        child.wait().ok();
        assert!(process_ticks(u32::MAX).is_none());
    }

    #[test]
    fn report_divides_by_messages_and_window() {
        let a = Sample {
            server: 100,
            children: 10,
            load_generator: 0,
        };
        let b = Sample {
            server: 150,
            children: 30,
            load_generator: 40,
        };
        let r = report(a, b, 5.0, 10_000);
        // 50 ticks = 0.5 s over 10,000 messages = 50 µs; 0.5 s over 5 s = 0.1 core.
        assert_eq!(r["server_us_per_msg"], json!(50.0));
        assert_eq!(r["store_process_us_per_msg"], json!(20.0));
        assert_eq!(r["load_generator_us_per_msg"], json!(40.0));
        assert_eq!(r["server_cores"], json!(0.1));
        assert_eq!(report(a, b, 5.0, 0)["server_us_per_msg"], Value::Null);
        // The connect phase's seconds, with and without a server process.
        let s = seconds(Some((a, true)), Some((b, true)));
        assert_eq!(s["server"], json!(0.5));
        assert_eq!(s["store_process"], json!(0.2));
        assert_eq!(s["load_generator"], json!(0.4));
        let s = seconds(Some((a, false)), Some((b, false)));
        assert_eq!(
            (&s["server"], &s["load_generator"]),
            (&Value::Null, &json!(0.4))
        );
        assert_eq!(seconds(None, Some((b, true))), Value::Null);
    }
}
