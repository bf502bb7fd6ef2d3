//! Rate limiters, all GCRA: per key (login and registration throttling; the maintained
//! `governor` crate), per user (frames and signed-in HTTP requests: [`UserLimiter`]) and per
//! connection (frames before `auth`), the last two on [`Gcra`], an 8-byte bucket.
//!
//! Keys are hashed with a per-process random seed to a `u64`, so memory per key is fixed
//! whatever the client sends (a 10 MB "username" costs 8 bytes) and keys cannot be chosen to
//! collide. The keyed state lives in a sharded map (no global lock); buckets that are full
//! again are dropped every [`PRUNE_EVERY`] checks. Limits are in memory and per node.

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DashMapStateStore;
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

/// A GCRA limit's parameters (the same algorithm as `governor`'s): one cell every `t`
/// nanoseconds, bursting to `burst` cells. The state of one bucket is a single theoretical
/// arrival time (TAT, nanoseconds since `epoch`) in an `AtomicU64`, so a bucket costs 8 bytes:
/// `governor`'s direct limiter carries the quota and a clock in every bucket (~80 bytes), and
/// a node holds one per connected user plus one per connection before `auth`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gcra {
    /// Nanoseconds per cell.
    t: u64,
    /// How far the TAT may run ahead of now: `t * (burst - 1)`.
    tau: u64,
    epoch: Instant,
}

impl Gcra {
    /// `per_second` cells a second, bursting to `burst` (zeros count as 1, never a panic).
    pub(crate) fn per_second(per_second: u32, burst: u32) -> Self {
        let t = (1_000_000_000 / u64::from(per_second.max(1))).max(1);
        Self {
            t,
            tau: t.saturating_mul(u64::from(burst.max(1) - 1)),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes a cell from the bucket whose TAT is `tat`, or says how long until one is
    /// available (at least 1 ms).
    pub(crate) fn take(&self, tat: &AtomicU64) -> Result<(), Duration> {
        self.take_at(tat, self.now())
    }

    fn take_at(&self, tat: &AtomicU64, now: u64) -> Result<(), Duration> {
        let mut current = tat.load(Ordering::Acquire);
        loop {
            // A fresh bucket (TAT 0, or any TAT in the past) is full.
            let earliest = current.saturating_sub(self.tau);
            if now < earliest {
                return Err(Duration::from_nanos(earliest - now).max(Duration::from_millis(1)));
            }
            let next = current.max(now).saturating_add(self.t);
            match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }

    /// Whether the bucket is full again (as good as a fresh one) at `now`.
    fn is_full(&self, tat: &AtomicU64, now: u64) -> bool {
        tat.load(Ordering::Acquire) <= now
    }
}

/// Frames per user on this node: one bucket per user, which every connection of the user and
/// their signed-in HTTP requests draw from. A connection keeps its user's bucket
/// ([`UserLimiter::bucket`]), so a frame costs one atomic update of it instead of a lookup in
/// a map every connection shares. A bucket nobody holds is dropped once it is full again
/// (checked every [`PRUNE_EVERY`] lookups), so the limit survives a reconnect.
pub(crate) struct UserLimiter {
    gcra: Gcra,
    shards: Box<[UserShard]>,
    lookups: AtomicU64,
}

const USER_SHARDS: usize = 16;

type UserShard = Mutex<HashMap<UserId, Arc<UserBucket>>>;

impl UserLimiter {
    /// `per_second` per user, bursting to `burst`.
    pub(crate) fn per_second(per_second: u32, burst: u32) -> Self {
        Self {
            gcra: Gcra::per_second(per_second, burst),
            shards: (0..USER_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            lookups: AtomicU64::new(0),
        }
    }

    /// The limit's parameters (also the per-connection limit before `auth`).
    pub(crate) fn gcra(&self) -> &Gcra {
        &self.gcra
    }

    fn shard(&self, user: UserId) -> &UserShard {
        // User ids are minted by the stores (random v4), so their low bits spread evenly.
        &self.shards[(user.0.as_u128() as usize) % USER_SHARDS]
    }

    /// `user`'s bucket, shared with their other connections and requests on this node; draw
    /// from it with [`UserLimiter::take_from`].
    pub(crate) fn bucket(&self, user: UserId) -> Arc<UserBucket> {
        if self.lookups.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune();
        }
        let mut map = self.shard(user).lock().unwrap_or_else(|e| e.into_inner());
        map.entry(user).or_default().clone()
    }

    /// Takes a cell from a bucket of this limiter, or says how long until one is available.
    pub(crate) fn take_from(&self, bucket: &UserBucket) -> Result<(), Duration> {
        self.gcra.take(&bucket.tat)
    }

    /// Takes a cell from `user`'s bucket, or says how long until one is available.
    pub(crate) fn take(&self, user: UserId) -> Result<(), Duration> {
        self.take_from(&self.bucket(user))
    }

    /// Drops the buckets no connection holds that are full again (as good as new).
    fn prune(&self) {
        let now = self.gcra.now();
        for shard in self.shards.iter() {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, b| Arc::strong_count(b) > 1 || !self.gcra.is_full(&b.tat, now));
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

/// One user's bucket (see [`UserLimiter`]): its TAT only, the parameters are the limiter's.
#[derive(Debug, Default)]
pub(crate) struct UserBucket {
    tat: AtomicU64,
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
        let g = Gcra::per_second(0, 0);
        let tat = AtomicU64::new(0);
        assert!(g.take(&tat).is_ok() && g.take(&tat).is_err());
    }

    /// The 8-byte bucket decides exactly as `governor`'s direct limiter (which it replaced)
    /// over a long irregular sequence of takes, wait times included.
    #[test]
    fn gcra_matches_governor() {
        use governor::clock::FakeRelativeClock;
        for (per_second, burst) in [(1, 1), (5, 3), (20, 40), (1000, 1), (3, 0)] {
            let g = Gcra::per_second(per_second, burst);
            let tat = AtomicU64::new(0);
            let clock = FakeRelativeClock::default();
            let reference = RateLimiter::direct_with_clock(
                quota(per_second, Duration::from_secs(1), burst),
                clock.clone(),
            );
            // Start away from 0 (a bucket is first used some time after the epoch).
            clock.advance(Duration::from_millis(1234));
            let mut now = 1_234_000_000u64;
            let mut step = 7u64;
            for i in 0..2_000 {
                // Bursts of takes at one instant, then pauses of varying length.
                if i % 5 == 0 {
                    step = step
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let pause = (step >> 33) % 600_000_000;
                    clock.advance(Duration::from_nanos(pause));
                    now += pause;
                }
                let expected = reference
                    .check()
                    .map_err(|nu| nu.wait_time_from(clock.now()).max(Duration::from_millis(1)));
                assert_eq!(
                    g.take_at(&tat, now),
                    expected,
                    "{per_second}/s burst {burst}, take {i}"
                );
            }
        }
    }

    /// Full again exactly when the TAT is not ahead of now: pruning keys on it.
    #[test]
    fn bucket_is_full_again_once_refilled() {
        let g = Gcra::per_second(10, 2);
        let tat = AtomicU64::new(0);
        assert!(g.is_full(&tat, 5));
        assert!(g.take_at(&tat, 1_000).is_ok() && g.take_at(&tat, 1_000).is_ok());
        assert_eq!(
            g.take_at(&tat, 1_000),
            Err(Duration::from_millis(100)),
            "the next cell comes 1/10 s later"
        );
        assert!(!g.is_full(&tat, 1_000 + 199_999_999));
        assert!(g.is_full(&tat, 1_000 + 200_000_000));
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
        assert!(l.take_from(&c1).is_ok() && l.take_from(&c2).is_ok() && l.take(user(1)).is_ok());
        assert!(l.take_from(&c1).is_err() && l.take_from(&c2).is_err() && l.take(user(1)).is_err());
        // Another user is not affected.
        assert!(l.take(user(2)).is_ok());
    }

    /// Pruning drops only buckets that nobody holds and that are full again: a user who spent
    /// the budget cannot get a fresh one by reconnecting.
    #[test]
    fn pruning_keeps_held_and_spent_buckets() {
        let l = UserLimiter::per_second(1, 2);
        let held = l.bucket(user(1));
        assert!(l.take_from(&held).is_ok() && l.take_from(&held).is_ok());
        // Spent, then let go (the connection closed).
        let spent = l.bucket(user(2));
        assert!(l.take_from(&spent).is_ok() && l.take_from(&spent).is_ok());
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
        assert!(l.take_from(&held).is_err());
        // Refills fast: full again at once, and dropped when nobody holds it.
        let fast = UserLimiter::per_second(1_000_000, 1);
        let b = fast.bucket(user(4));
        assert!(fast.take_from(&b).is_ok());
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
