//! Rate limiters (the maintained `governor` crate, GCRA): per key (login and registration
//! throttling), per user (frames and signed-in HTTP requests: [`UserLimiter`]) and per
//! connection (frames before `auth`).
//!
//! Keys are hashed with a per-process random seed to a `u64`, so memory per key is fixed
//! whatever the client sends (a 10 MB "username" costs 8 bytes) and keys cannot be chosen to
//! collide. The keyed state lives in a sharded map (no global lock); buckets that are full
//! again are dropped every [`PRUNE_EVERY`] checks. Limits are in memory and per node.

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zajel_core::UserId;

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

/// Frames per user on this node: one bucket per user, which every connection of the user and
/// their signed-in HTTP requests draw from. A connection keeps its user's bucket
/// ([`UserLimiter::bucket`]), so a frame costs one atomic update of it instead of a lookup in
/// a map every connection shares. A bucket nobody holds is dropped once it is full again
/// (checked every [`PRUNE_EVERY`] lookups), so the limit survives a reconnect.
pub(crate) struct UserLimiter {
    quota: Quota,
    /// How long an empty bucket takes to fill up again.
    refill: Duration,
    epoch: Instant,
    shards: Box<[UserShard]>,
    lookups: AtomicU64,
}

const USER_SHARDS: usize = 16;

type UserShard = Mutex<HashMap<UserId, Arc<UserBucket>>>;

impl UserLimiter {
    /// `per_second` per user, bursting to `burst`.
    pub(crate) fn per_second(per_second: u32, burst: u32) -> Self {
        let quota = quota(per_second, Duration::from_secs(1), burst);
        Self {
            refill: quota.burst_size_replenished_in(),
            quota,
            epoch: Instant::now(),
            shards: (0..USER_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            lookups: AtomicU64::new(0),
        }
    }

    fn shard(&self, user: UserId) -> &UserShard {
        // User ids are minted by the stores (random v4), so their low bits spread evenly.
        &self.shards[(user.0.as_u128() as usize) % USER_SHARDS]
    }

    /// `user`'s bucket, shared with their other connections and requests on this node.
    pub(crate) fn bucket(&self, user: UserId) -> Arc<UserBucket> {
        if self.lookups.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune();
        }
        let mut map = self.shard(user).lock().unwrap_or_else(|e| e.into_inner());
        map.entry(user)
            .or_insert_with(|| {
                Arc::new(UserBucket {
                    limiter: RateLimiter::direct(self.quota),
                    epoch: self.epoch,
                    last: AtomicU64::new(NEVER),
                })
            })
            .clone()
    }

    /// Takes a cell from `user`'s bucket, or says how long until one is available.
    pub(crate) fn take(&self, user: UserId) -> Result<(), Duration> {
        self.bucket(user).take()
    }

    /// Drops the buckets no connection holds that are full again (as good as new).
    fn prune(&self) {
        let now = self.epoch.elapsed();
        for shard in self.shards.iter() {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, b| {
                let last = b.last.load(Ordering::Relaxed);
                Arc::strong_count(b) > 1
                    || (last != NEVER
                        && now.saturating_sub(Duration::from_nanos(last)) < self.refill)
            });
        }
    }

    /// Number of buckets held (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// One user's bucket (see [`UserLimiter`]).
pub(crate) struct UserBucket {
    limiter: RateLimiter<NotKeyed, InMemoryState, DefaultClock>,
    epoch: Instant,
    /// When a cell was last taken, in nanoseconds since `epoch` (pruning drops only buckets
    /// that have filled up since), or [`NEVER`].
    last: AtomicU64,
}

/// `UserBucket::last` of a bucket never drawn from (full).
const NEVER: u64 = 0;

impl UserBucket {
    /// Takes a cell, or says how long until one is available.
    pub(crate) fn take(&self) -> Result<(), Duration> {
        let since = u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(NEVER + 1);
        self.last.store(since, Ordering::Relaxed);
        let clock = self.limiter.clock();
        self.limiter
            .check()
            .map_err(|nu| nu.wait_time_from(clock.now()).max(Duration::from_millis(1)))
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
        let l = UserLimiter::per_second(0, 0);
        assert!(l.take(user(1)).is_ok());
        let wait = l.take(user(1)).expect_err("second take within a second");
        assert!(wait <= Duration::from_secs(1));
        let k = KeyedLimiter::per_minute(0);
        assert!(k.take("k").is_ok() && k.take("k").is_err());
        let d = DirectLimiter::per_second(0, 0);
        assert!(d.take().is_ok() && d.take().is_err());
    }

    fn user(n: u64) -> UserId {
        format!("00000000-0000-4000-8000-{n:012x}")
            .parse()
            .expect("valid id")
    }

    /// A user's connections (each holding the bucket) and lookups by id draw from one budget.
    #[test]
    fn one_budget_per_user_across_holders() {
        let l = UserLimiter::per_second(1, 3);
        let (c1, c2) = (l.bucket(user(1)), l.bucket(user(1)));
        assert!(c1.take().is_ok() && c2.take().is_ok() && l.take(user(1)).is_ok());
        assert!(c1.take().is_err() && c2.take().is_err() && l.take(user(1)).is_err());
        // Another user is not affected.
        assert!(l.take(user(2)).is_ok());
    }

    /// Pruning drops only buckets that nobody holds and that are full again: a user who spent
    /// the budget cannot get a fresh one by reconnecting.
    #[test]
    fn pruning_keeps_held_and_spent_buckets() {
        let l = UserLimiter::per_second(1, 2);
        let held = l.bucket(user(1));
        assert!(held.take().is_ok() && held.take().is_ok());
        // Spent, then let go (the connection closed).
        let spent = l.bucket(user(2));
        assert!(spent.take().is_ok() && spent.take().is_ok());
        drop(spent);
        // Full and let go.
        drop(l.bucket(user(3)));
        l.prune();
        assert_eq!(
            l.len(),
            2,
            "the full, unheld bucket is dropped, the others kept"
        );
        assert!(
            l.take(user(2)).is_err(),
            "the spent budget survives a reconnect"
        );
        assert!(held.take().is_err());
        // Refills fast: full again at once, and dropped when nobody holds it.
        let fast = UserLimiter::per_second(1_000_000, 1);
        let b = fast.bucket(user(4));
        assert!(b.take().is_ok());
        drop(b);
        std::thread::sleep(Duration::from_millis(2));
        fast.prune();
        assert_eq!(fast.len(), 0);
    }

    #[test]
    fn keys_are_fixed_size_and_idle_ones_are_dropped() {
        // Refills in a microsecond: every key is idle again by the time the map is pruned.
        let l = KeyedLimiter::new(quota(1_000_000, Duration::from_secs(1), 1));
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
