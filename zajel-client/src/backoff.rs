//! Jittered, bounded exponential backoff for reconnects.

use std::time::Duration;

/// How the client spaces reconnect attempts: `initial * factor^(attempt-1)`, capped at `max`,
/// then scaled by a random factor in `[1 - jitter, 1]` so many clients dropped at once by a
/// restarting server do not reconnect in lockstep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Growth per attempt (2.0 doubles).
    pub factor: f64,
    /// Fraction of the delay that is randomized, 0.0–1.0.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
            factor: 2.0,
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (1-based), given a random `unit` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self
            .factor
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let base = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let scaled = base * (1.0 - jitter * unit.clamp(0.0, 1.0));
        Duration::from_secs_f64(scaled.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_is_bounded() {
        let b = Backoff::default();
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(250));
        assert_eq!(b.delay(2, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(30, 0.0), Duration::from_secs(30));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_in_range() {
        let b = Backoff::default();
        for i in 0..100 {
            let u = f64::from(i) / 100.0;
            let d = b.delay(4, u);
            assert!(
                d <= Duration::from_secs(2) && d >= Duration::from_secs(1),
                "{d:?}"
            );
        }
        let none = Backoff { jitter: 0.0, ..b };
        assert_eq!(none.delay(4, 0.9), Duration::from_secs(2));
    }
}
