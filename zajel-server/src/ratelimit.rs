//! Rate limiters (the maintained `governor` crate, GCRA): per key (login and registration
//! throttling, frames per user) and per connection (frames before `auth`).
//!
//! Keys are hashed with a per-process random seed to a `u64`, so memory per key is fixed
//! whatever the client sends (a 10 MB "username" costs 8 bytes) and keys cannot be chosen to
//! collide. The keyed state lives in a sharded map (no global lock); buckets that are full
//! again are dropped every [`PRUNE_EVERY`] checks. Limits are in memory and per node.

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::hash::{BuildHasher, Hash, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Keyed limiters drop their idle buckets once every this many checks.
const PRUNE_EVERY: u64 = 4096;

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// `per_period` cells per `period`, bursting up to `burst` (zeros count as 1, never a panic).
fn quota(per_period: u32, period: Duration, burst: u32) -> Quota {
    let per_period = per_period.max(1);
    let interval = (period / per_period).max(Duration::from_nanos(1));
    Quota::with_period(interval)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(nonzero(burst))
}

/// Limits by key (account, address, user).
pub(crate) struct KeyedLimiter {
    limiter: RateLimiter<u64, DashMapStateStore<u64>, DefaultClock>,
    seed: RandomState,
    checks: AtomicU64,
}

impl KeyedLimiter {
    /// `per_minute` per key, bursting to `per_minute`.
    pub(crate) fn per_minute(per_minute: u32) -> Self {
        Self::new(quota(per_minute, Duration::from_secs(60), per_minute))
    }

    /// `per_second` per key, bursting to `burst`.
    pub(crate) fn per_second(per_second: u32, burst: u32) -> Self {
        Self::new(quota(per_second, Duration::from_secs(1), burst))
    }

    fn new(quota: Quota) -> Self {
        Self {
            limiter: RateLimiter::dashmap(quota),
            seed: RandomState::new(),
            checks: AtomicU64::new(0),
        }
    }

    fn key(&self, key: impl Hash) -> u64 {
        self.seed.hash_one(key)
    }

    fn prune(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
        }
    }

    /// Takes a cell for `key`, or says how long until one is available.
    pub(crate) fn take(&self, key: impl Hash) -> Result<(), Duration> {
        self.prune();
        let clock = self.limiter.clock();
        self.limiter
            .check_key(&self.key(key))
            .map_err(|nu| nu.wait_time_from(clock.now()).max(Duration::from_millis(1)))
    }

    /// Number of keys held (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// One connection's limiter (frames before `auth`).
pub(crate) struct DirectLimiter {
    limiter: RateLimiter<NotKeyed, InMemoryState, DefaultClock>,
}

impl DirectLimiter {
    /// `per_second`, bursting to `burst`.
    pub(crate) fn per_second(per_second: u32, burst: u32) -> Self {
        Self {
            limiter: RateLimiter::direct(quota(per_second, Duration::from_secs(1), burst)),
        }
    }

    /// Takes a cell, or says how long until one is available.
    pub(crate) fn take(&self) -> Result<(), Duration> {
        let clock = self.limiter.clock();
        self.limiter
            .check()
            .map_err(|nu| nu.wait_time_from(clock.now()).max(Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_quotas_count_as_one_and_do_not_panic() {
        let l = KeyedLimiter::per_second(0, 0);
        assert!(l.take("k").is_ok());
        let wait = l.take("k").expect_err("second take within a second");
        assert!(wait <= Duration::from_secs(1));
        let d = DirectLimiter::per_second(0, 0);
        assert!(d.take().is_ok() && d.take().is_err());
    }

    #[test]
    fn keys_are_fixed_size_and_idle_ones_are_dropped() {
        // Refills in a microsecond: every key is idle again by the time the map is pruned.
        let l = KeyedLimiter::per_second(1_000_000, 1);
        let huge = "x".repeat(1 << 10);
        for i in 0..PRUNE_EVERY {
            let _ = l.take((i, &huge));
        }
        assert!(l.len() < 64, "{} keys kept", l.len());
        // Pairs and plain keys live side by side.
        let login = KeyedLimiter::per_minute(1);
        assert!(login.take(("alice", 1u8)).is_ok());
        assert!(login.take(("alice", 2u8)).is_ok());
        assert!(login.take(("alice", 1u8)).is_err());
    }
}
