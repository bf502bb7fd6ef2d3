//! Reconnect advice: when a server-initiated close expects the client back (shutdown 1001,
//! lagged 4008), the server says when in a `going_away` frame sent just before the close.
//!
//! A node closing many sockets at once (shutdown, or a broker resync closing every local
//! connection with 4008) would otherwise see its whole population return within the clients'
//! own jitter window, each one resuming a backlog. So the delay is drawn per connection,
//! uniformly over a window proportional to the size of the wave: `wave / reconnect_rate`
//! seconds, so the returning connections arrive at about `reconnect_rate` per second.

/// Longest window a wave is spread over. Clients clamp any advice to 5 minutes, so base plus
/// window stays honoured for any sensible base.
pub(crate) const MAX_SPREAD_MS: u64 = 4 * 60 * 1000;

/// The delay (ms) to suggest to one connection of a wave of `wave` connections closed
/// together: `base_ms` plus a uniform draw over `wave * 1000 / rate_per_second` ms (at most
/// [`MAX_SPREAD_MS`]). `unit` is random in `[0, 1)`.
pub(crate) fn advice_ms(base_ms: u64, wave: usize, rate_per_second: u32, unit: f64) -> u64 {
    let window = (wave as u64)
        .saturating_mul(1000)
        .checked_div(u64::from(rate_per_second.max(1)))
        .unwrap_or(0)
        .min(MAX_SPREAD_MS);
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    base_ms.saturating_add((window as f64 * unit) as u64)
}

/// A uniform random number in `[0, 1)` from the OS (0 if it cannot say).
pub(crate) fn random_unit() -> f64 {
    getrandom::u64().map_or(0.0, |r| (r >> 11) as f64 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_grows_with_the_wave_and_is_bounded() {
        // One lagging connection comes back almost at once.
        assert_eq!(advice_ms(0, 1, 500, 0.999), 1);
        // 10 000 sockets at 500/s: spread over 20 s after the base.
        assert_eq!(advice_ms(1000, 10_000, 500, 0.0), 1000);
        assert_eq!(advice_ms(1000, 10_000, 500, 0.5), 11_000);
        // A huge wave or a zero rate stays within the bound; no overflow anywhere.
        assert_eq!(advice_ms(0, usize::MAX, 0, 1.0), MAX_SPREAD_MS);
        assert_eq!(advice_ms(u64::MAX, 10, 1, 1.0), u64::MAX);
        assert_eq!(advice_ms(5, 100, 10, f64::NAN), 5);
    }

    #[test]
    fn random_units_are_in_range() {
        for _ in 0..1000 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u), "{u}");
        }
    }
}
