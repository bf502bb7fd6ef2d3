//! The circuit breaker: while Redis is away, calls fail at once with
//! [`StoreError::Unavailable`] instead of each waiting for its own timeout; and the
//! "writes refused" state, for a Redis that answers but takes no writes.
//!
//! Closed (normal) → a call times out, the connection fails, or Redis refuses every command
//! (`LOADING`, `BUSY`, `MASTERDOWN`, `CLUSTERDOWN`) → open for `cooldown`: every call fails
//! fast with the remaining time as `retry_after_ms` → after the cooldown calls go through
//! again (half-open); the first success closes it, a failure opens it again.
//!
//! Writes refused (`OOM`, `READONLY`, `MISCONF`, `NOREPLICAS`): reads still work, so calls
//! keep going to Redis (a refused write costs Redis one error reply), but health stays
//! `Unavailable` until a write succeeds. Only a write may end it: a read succeeding says
//! nothing about writes (the embedded store's full-disk health flapped to `Ok` that way). The
//! store's probe task (`probe.rs`) tries a tiny write every `cooldown` (on a Cluster one per
//! primary) and calls [`Breaker::writes_ok`] when it is taken (every one of them).

use crate::store::{StoreError, StoreHealth};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shared by every clone of one [`super::RedisStore`].
pub(super) struct Breaker {
    cooldown: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open: Option<Open>,
    /// Why Redis refuses writes (the reply's text), while it does.
    writes_refused: Option<String>,
}

struct Open {
    until: Instant,
    reason: String,
}

impl Breaker {
    pub(super) fn new(cooldown: Duration) -> Self {
        Self {
            cooldown,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long the breaker stays open, and how often the write probe runs.
    pub(super) fn cooldown(&self) -> Duration {
        self.cooldown
    }

    /// `Err(Unavailable)` while open; `Ok` when a call may go to Redis.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        match &self.lock().open {
            Some(open) => {
                let left = open.until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    Ok(())
                } else {
                    Err(StoreError::unavailable(&open.reason, retry_ms(left)))
                }
            }
            None => Ok(()),
        }
    }

    /// Opens (or re-opens) the breaker and returns the error for the failed call.
    pub(super) fn trip(&self, reason: String) -> StoreError {
        let error = StoreError::unavailable(&reason, retry_ms(self.cooldown));
        self.lock().open = Some(Open {
            until: Instant::now() + self.cooldown,
            reason,
        });
        error
    }

    /// A call succeeded: Redis is back (writes may still be refused).
    pub(super) fn close(&self) {
        let mut state = self.lock();
        if state.open.is_some() {
            state.open = None;
        }
    }

    /// Redis refused a write for `reason`. Returns the error for the call, and whether this
    /// starts the refusal (then the caller starts the probe that ends it).
    pub(super) fn refuse_writes(&self, reason: String) -> (StoreError, bool) {
        let error = StoreError::unavailable(&reason, retry_ms(self.cooldown));
        let started = self.lock().writes_refused.replace(reason).is_none();
        (error, started)
    }

    /// A write succeeded: Redis takes writes again.
    pub(super) fn writes_ok(&self) {
        self.lock().writes_refused = None;
    }

    /// Whether writes are currently refused (the probe stops once they are not).
    pub(super) fn writes_refused(&self) -> bool {
        self.lock().writes_refused.is_some()
    }

    /// Health: unavailable while open (from the first failure until a success) and while
    /// writes are refused (until a write succeeds).
    pub(super) fn health(&self) -> StoreHealth {
        let state = self.lock();
        match (&state.open, &state.writes_refused) {
            (Some(open), _) => StoreHealth::Unavailable {
                reason: open.reason.clone(),
                retry_after_ms: retry_ms(open.until.saturating_duration_since(Instant::now())),
            },
            (None, Some(reason)) => StoreHealth::Unavailable {
                reason: reason.clone(),
                retry_after_ms: retry_ms(self.cooldown),
            },
            (None, None) => StoreHealth::Ok,
        }
    }
}

fn retry_ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_fails_fast_and_closes_on_success() {
        let b = Breaker::new(Duration::from_millis(50));
        assert!(b.check().is_ok());
        assert!(b.health().is_ok());
        let e = b.trip("down".into());
        assert!(matches!(
            e,
            StoreError::Unavailable {
                retry_after_ms: 50,
                ..
            }
        ));
        match b.check() {
            Err(StoreError::Unavailable { retry_after_ms, .. }) => assert!(retry_after_ms <= 50),
            other => panic!("{other:?}"),
        }
        assert!(!b.health().is_ok());
        std::thread::sleep(Duration::from_millis(60));
        // Half-open: calls may try again; health stays unavailable until one succeeds.
        assert!(b.check().is_ok());
        assert!(!b.health().is_ok());
        b.close();
        assert!(b.health().is_ok());
    }

    #[test]
    fn refused_writes_hold_health_until_a_write_succeeds() {
        let b = Breaker::new(Duration::from_millis(50));
        let (e, started) = b.refuse_writes("OOM".into());
        assert!(started);
        assert!(
            matches!(e, StoreError::Unavailable { retry_after_ms: 50, ref reason } if reason == "OOM")
        );
        assert!(
            !b.refuse_writes("OOM again".into()).1,
            "one probe per refusal"
        );
        // Calls still go to Redis (reads work) ...
        assert!(b.check().is_ok());
        // ... and a read succeeding does not make the store healthy.
        b.close();
        match b.health() {
            StoreHealth::Unavailable { reason, .. } => assert_eq!(reason, "OOM again"),
            other => panic!("{other:?}"),
        }
        b.writes_ok();
        assert!(b.health().is_ok());
        assert!(!b.writes_refused());
    }
}
