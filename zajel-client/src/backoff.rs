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

/// Why a connection ended, for choosing the delay before the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The attempt failed or the connection dropped: the configured backoff.
    Failure,
    /// The server closed many connections at once (4008 lagged, 1012 restart, 1013 try
    /// later): full jitter over a window of at least [`STORM_WINDOW`] so the population does
    /// not return in lockstep.
    Storm,
    /// `going_away` with the server's suggested delay (already clamped). The server spreads a
    /// mass close itself (each connection gets its own delay), so the client adds only a
    /// little jitter: up to a quarter of the delay, at least [`GOING_AWAY_JITTER`].
    GoingAway(Duration),
}

/// The smallest window a mass reconnect is spread over.
pub(crate) const STORM_WINDOW: Duration = Duration::from_secs(2);
/// The least jitter added to a server-suggested delay (decorrelates clients a server gave the
/// same number, e.g. one that does not spread its closes).
pub(crate) const GOING_AWAY_JITTER: Duration = Duration::from_millis(500);
/// Largest server-suggested delay honoured (the value comes from the network).
pub(crate) const MAX_SERVER_DELAY: Duration = Duration::from_secs(300);

/// The delay before reconnect attempt `attempt` (1-based) after `cause`; `unit` is random in
/// `[0, 1)`.
pub(crate) fn reconnect_delay(
    backoff: &Backoff,
    cause: Cause,
    attempt: u32,
    unit: f64,
) -> Duration {
    let unit = unit.clamp(0.0, 1.0);
    match cause {
        Cause::Failure => backoff.delay(attempt, unit),
        Cause::Storm => {
            let window = backoff.delay(attempt, 0.0).max(STORM_WINDOW);
            window.mul_f64(unit)
        }
        Cause::GoingAway(hint) => {
            let hint = hint.min(MAX_SERVER_DELAY);
            hint + (hint / 4).max(GOING_AWAY_JITTER).mul_f64(unit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storms_spread_over_a_window_and_server_hints_are_clamped() {
        let b = Backoff::default();
        let delays: Vec<Duration> = (0..100)
            .map(|i| reconnect_delay(&b, Cause::Storm, 1, f64::from(i) / 100.0))
            .collect();
        let max = delays.iter().max().copied().unwrap_or_default();
        let min = delays.iter().min().copied().unwrap_or_default();
        assert!(min < Duration::from_millis(50), "{min:?}");
        assert!(max > Duration::from_millis(1900), "{max:?}");
        let away = reconnect_delay(
            &b,
            Cause::GoingAway(Duration::from_secs(u64::MAX / 2)),
            1,
            0.99,
        );
        assert!(away <= MAX_SERVER_DELAY + MAX_SERVER_DELAY / 4, "{away:?}");
        // The server's delay is honoured: never earlier, and only a little later.
        let away = reconnect_delay(&b, Cause::GoingAway(Duration::from_millis(100)), 1, 0.5);
        assert_eq!(away, Duration::from_millis(350));
        let away = reconnect_delay(&b, Cause::GoingAway(Duration::from_secs(20)), 1, 0.999);
        assert!(away >= Duration::from_secs(20) && away < Duration::from_secs(25));
    }

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
