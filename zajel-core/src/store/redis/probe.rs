//! The write probe: while Redis refuses writes, one tiny write every breaker cooldown tells
//! when it takes them again, so health recovers without traffic (a load balancer stops
//! sending traffic to a node whose `/healthz` is 503).
//!
//! On a Cluster a refusal is a property of one primary (each has its own memory, snapshots
//! and role), so the probe writes **one key per primary**: a hash tag chosen for a slot of
//! each primary's range from `CLUSTER SLOTS`, read again every round (a failover or a slot
//! move changes the map). Writes count as taken only when every primary takes its key; until
//! then health names the primary that refuses. One probe key in one slot would report a
//! Cluster healthy while the full primary's conversations cannot take a message, or
//! alternate with the traffic.

use super::conn::RedisConnection as Conn;
use super::{RedisStore, Refusal, memory_too_full, refusal, refusal_reason};
use ::redis::{RedisResult, Value};
use std::sync::Arc;
use std::time::Duration;

/// Slots in a Redis Cluster.
const SLOTS: u16 = 16384;

/// CRC16/XMODEM, the checksum Redis Cluster maps keys to slots with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a hash tag (the text between a key's braces).
fn tag_slot(tag: &str) -> u16 {
    crc16(tag.as_bytes()) % SLOTS
}

/// A hash tag whose slot is in `start..=end` (`probe-<n>` for the smallest such `n`).
fn tag_in(start: u16, end: u16) -> Option<String> {
    (0..u32::from(SLOTS) * 64)
        .map(|n| format!("probe-{n}"))
        .find(|t| (start..=end).contains(&tag_slot(t)))
}

/// One probe key per primary: (key, the primary's `host:port`), from `CLUSTER SLOTS`.
async fn cluster_targets(con: &mut Conn, prefix: &str) -> RedisResult<Vec<(String, String)>> {
    // [[start, end, [host, port, id, …] (the primary), replicas…], …]
    let ranges: Vec<Vec<Value>> = ::redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(con)
        .await?;
    let mut targets: Vec<(String, String)> = Vec::new();
    for range in ranges {
        let mut it = range.into_iter();
        let (Some(start), Some(end), Some(primary)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let (start, end): (u16, u16) = (
            ::redis::from_redis_value(start)?,
            ::redis::from_redis_value(end)?,
        );
        let primary: Vec<Value> = ::redis::from_redis_value(primary)?;
        let mut p = primary.into_iter();
        let (Some(host), Some(port)) = (p.next(), p.next()) else {
            continue;
        };
        let host: String = ::redis::from_redis_value(host)?;
        let port: u16 = ::redis::from_redis_value(port)?;
        let addr = format!("{host}:{port}");
        if targets.iter().any(|(_, a)| *a == addr) {
            continue;
        }
        if let Some(tag) = tag_in(start, end) {
            targets.push((format!("{prefix}:probe:{{{tag}}}"), addr));
        }
    }
    Ok(targets)
}

/// How one probe round went.
enum Round {
    /// Every key was written.
    Taken,
    /// A write was refused; the reason (naming the primary on a Cluster).
    Refused(String),
    /// Redis could not be asked (unreachable, busy, no slot map): the calls' own breaker
    /// handles that; probe again.
    Unknown,
}

impl RedisStore {
    /// While Redis refuses writes, tries one tiny write (a key of its own that expires by
    /// itself; on a Cluster one per primary) every breaker cooldown and ends the refusal when
    /// every one is taken. `SET` is a command Redis refuses under `OOM`, `MISCONF` and
    /// `READONLY` alike. Ends when the store is dropped.
    pub(super) fn probe_writes(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let breaker = Arc::downgrade(&self.breaker);
        let mut con = self.con.clone();
        let prefix = self.keys.prefix.clone();
        let timeout = self.options.command_timeout;
        runtime.spawn(async move {
            loop {
                let Some(cooldown) = breaker.upgrade().map(|b| b.cooldown()) else {
                    return;
                };
                tokio::time::sleep(cooldown).await;
                let Some(breaker) = breaker.upgrade() else {
                    return;
                };
                if !breaker.writes_refused() {
                    return;
                }
                let cluster = matches!(con, Conn::Cluster(_));
                match probe_round(&mut con, &prefix, timeout).await {
                    Round::Taken => {}
                    Round::Refused(reason) => {
                        breaker.refuse_writes(reason);
                        continue;
                    }
                    Round::Unknown => continue,
                }
                // The writes were taken; is there room for more than a tiny one? (On a
                // Cluster INFO answers per node, not as one text: only the writes count.)
                let full = if cluster {
                    None
                } else {
                    let mut info = ::redis::cmd("INFO");
                    info.arg("memory");
                    match tokio::time::timeout(timeout, info.query_async(&mut con)).await {
                        Ok(Ok(Value::BulkString(b))) => {
                            memory_too_full(&String::from_utf8_lossy(&b))
                        }
                        Ok(Ok(Value::VerbatimString { text, .. })) => memory_too_full(&text),
                        _ => None,
                    }
                };
                match full {
                    Some(reason) => {
                        breaker.refuse_writes(reason);
                    }
                    None => {
                        breaker.writes_ok();
                        return;
                    }
                }
            }
        });
    }
}

/// Writes the probe key (one Redis) or one key per primary (a Cluster), stopping at the
/// first refusal.
async fn probe_round(con: &mut Conn, prefix: &str, timeout: Duration) -> Round {
    let targets = match con {
        Conn::Single(_) => vec![(format!("{prefix}:probe"), String::new())],
        Conn::Cluster(_) => {
            match tokio::time::timeout(timeout, cluster_targets(con, prefix)).await {
                Ok(Ok(t)) if !t.is_empty() => t,
                _ => return Round::Unknown,
            }
        }
    };
    let primaries = targets.len();
    for (key, primary) in targets {
        let mut set = ::redis::cmd("SET");
        set.arg(&key).arg("1").arg("PX").arg(60_000);
        match tokio::time::timeout(timeout, set.query_async::<Value>(con)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if refusal(&e) == Some(Refusal::Writes) => {
                let reason = refusal_reason(&e);
                return Round::Refused(if primary.is_empty() {
                    reason
                } else {
                    format!(
                        "{reason} (Cluster primary {primary}, one of {primaries}: its slots' \
                         conversations and users cannot be written)"
                    )
                });
            }
            _ => return Round::Unknown,
        }
    }
    Round::Taken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_those_of_redis_cluster() {
        // The check value of CRC16/XMODEM, and slots Redis itself answers for
        // `CLUSTER KEYSLOT` (the Cluster spec's examples).
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(tag_slot("foo"), 12182);
        assert_eq!(tag_slot("bar"), 5061);
        assert_eq!(tag_slot("hello"), 866);
        assert_eq!(tag_slot("somekey"), 11058);
    }

    #[test]
    fn every_range_gets_a_tag_inside_it() {
        for (start, end) in [(0, 5460), (5461, 10922), (10923, 16383), (7000, 7000)] {
            let tag = tag_in(start, end).expect("a tag");
            assert!((start..=end).contains(&tag_slot(&tag)), "{tag}");
        }
    }
}
