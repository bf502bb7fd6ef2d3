//! Token buckets: per connection (frames) and per key (login throttling).
//!
//! Login throttling is in memory and per node. With several nodes behind a load balancer each
//! node counts on its own; shared counters come with the Redis broker.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens, refilled at `per_second`.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
    per_second: f64,
    burst: f64,
}

impl TokenBucket {
    pub(crate) fn new(per_second: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        Self {
            tokens: burst,
            last: now,
            per_second: per_second.max(f64::MIN_POSITIVE),
            burst,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_second).min(self.burst);
        self.last = now;
    }

    /// Takes a token, or says how long until one is available.
    pub(crate) fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait(now))
        }
    }

    /// Whether a token is available (without taking it), or how long to wait.
    pub(crate) fn check(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            Ok(())
        } else {
            Err(self.wait(now))
        }
    }

    fn wait(&self, _now: Instant) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.per_second).max(0.001))
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Buckets by key (account name, client address).
pub(crate) struct KeyedLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

const PRUNE_AT: usize = 10_000;

impl KeyedLimiter {
    pub(crate) fn per_minute(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, key: &str, f: impl FnOnce(&mut TokenBucket, Instant) -> R) -> R {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= PRUNE_AT {
            map.retain(|_, b| !b.is_full(now));
        }
        let per_minute = f64::from(self.per_minute);
        let bucket = map
            .entry(key.to_owned())
            .or_insert_with(|| TokenBucket::new(per_minute / 60.0, per_minute, now));
        f(bucket, now)
    }

    /// Takes a token for `key`.
    pub(crate) fn take(&self, key: &str) -> Result<(), Duration> {
        self.with(key, |b, now| b.try_take(now))
    }

    /// Checks `key` has a token left without taking it.
    pub(crate) fn check(&self, key: &str) -> Result<(), Duration> {
        self.with(key, |b, now| b.check(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0, t0);
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_ok());
        let wait = b.try_take(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100));
        assert!(b.try_take(t0 + Duration::from_millis(110)).is_ok());
    }
}
