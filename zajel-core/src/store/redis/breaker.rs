//! The circuit breaker: while Redis is away, calls fail at once with
//! [`StoreError::Unavailable`] instead of each waiting for its own timeout.
//!
//! Closed (normal) → a call times out or the connection fails → open for `cooldown`: every
//! call fails fast with the remaining time as `retry_after_ms` → after the cooldown calls go
//! through again (half-open); the first success closes it, a failure opens it again.

use crate::store::{StoreError, StoreHealth};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shared by every clone of one [`super::RedisStore`].
pub(super) struct Breaker {
    cooldown: Duration,
    state: Mutex<Option<Open>>,
}

struct Open {
    until: Instant,
    reason: String,
}

impl Breaker {
    pub(super) fn new(cooldown: Duration) -> Self {
        Self {
            cooldown,
            state: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(Unavailable)` while open; `Ok` when a call may go to Redis.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        match &*self.lock() {
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
        *self.lock() = Some(Open {
            until: Instant::now() + self.cooldown,
            reason,
        });
        error
    }

    /// A call succeeded: Redis is back.
    pub(super) fn close(&self) {
        let mut state = self.lock();
        if state.is_some() {
            *state = None;
        }
    }

    /// Health as the breaker sees it: unavailable from the first failure until a success.
    pub(super) fn health(&self) -> StoreHealth {
        match &*self.lock() {
            Some(open) => StoreHealth::Unavailable {
                reason: open.reason.clone(),
                retry_after_ms: retry_ms(open.until.saturating_duration_since(Instant::now())),
            },
            None => StoreHealth::Ok,
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
}
