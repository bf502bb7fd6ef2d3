//! Client-side pacing: a token bucket sized from the server's advertised
//! `limits.requests_per_second`, plus a pause after a `rate_limited` answer.
//!
//! The server closes a connection (1008) after a run of rate-limited frames, so a client that
//! floods a backlog after a reconnect loses its connection and retries out of order. Every
//! frame the driver sends (requests, outbox, catch-up pages, typing) takes a token first.

/// The server's burst is not advertised; assume a small one so a fresh connection never
/// starts with a run of rejections.
const MAX_BURST: f64 = 8.0;
/// Longest pause honoured from a `retry_after_ms` (the value comes from the network).
pub(crate) const MAX_RETRY_AFTER_MS: u64 = 60_000;

#[derive(Debug)]
pub(crate) struct Pacer {
    /// Tokens per millisecond.
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: u64,
    paused_until: u64,
}

impl Pacer {
    /// Before the server's limits are known: a modest 5 frames per second.
    pub(crate) fn new(now: u64) -> Self {
        let mut p = Self {
            rate: 0.0,
            capacity: 0.0,
            tokens: 0.0,
            last: now,
            paused_until: 0,
        };
        p.configure(5, now);
        p
    }

    /// Sizes the bucket from the advertised rate (a new connection: a fresh server bucket).
    /// Runs 10 % under the advertised rate so clock skew never crosses it.
    pub(crate) fn configure(&mut self, requests_per_second: u32, now: u64) {
        let rps = f64::from(requests_per_second.clamp(1, 10_000));
        self.rate = rps * 0.9 / 1000.0;
        self.capacity = (rps / 4.0).clamp(1.0, MAX_BURST);
        // The auth frame already took one of the server's tokens.
        self.tokens = (self.capacity - 1.0).max(0.0);
        self.last = now;
        self.paused_until = 0;
    }

    fn refill(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.last) as f64;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = self.last.max(now);
    }

    /// Takes a token if one is available now.
    pub(crate) fn try_take(&mut self, now: u64) -> bool {
        if now < self.paused_until {
            return false;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token is available (now if one is).
    pub(crate) fn ready_at(&mut self, now: u64) -> u64 {
        if now < self.paused_until {
            return self.paused_until;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            return now;
        }
        let wait = ((1.0 - self.tokens) / self.rate).ceil().max(1.0);
        now.saturating_add(wait as u64)
    }

    /// The server said `rate_limited`: send nothing for `retry_after_ms` (clamped: the number
    /// comes from the network).
    pub(crate) fn pause(&mut self, now: u64, retry_after_ms: Option<u64>) {
        let wait = retry_after_ms.unwrap_or(1000).clamp(1, MAX_RETRY_AFTER_MS);
        self.paused_until = self.paused_until.max(now.saturating_add(wait));
        self.tokens = 0.0;
        self.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_at_the_advertised_rate() {
        let mut p = Pacer::new(0);
        p.configure(20, 0);
        let mut sent = 0;
        for now in 0..10_000u64 {
            while p.try_take(now) {
                sent += 1;
            }
        }
        // 10 s at 18/s plus the initial burst of 4 (5 - the auth frame).
        assert!((180..=190).contains(&sent), "{sent}");
    }

    #[test]
    fn honours_and_clamps_retry_after() {
        let mut p = Pacer::new(0);
        p.configure(100, 0);
        p.pause(10, Some(500));
        assert!(!p.try_take(509));
        assert_eq!(p.ready_at(200), 510);
        let mut q = Pacer::new(0);
        q.pause(10, Some(u64::MAX));
        assert_eq!(q.ready_at(10), 10 + MAX_RETRY_AFTER_MS);
        let mut r = Pacer::new(u64::MAX - 5);
        r.pause(u64::MAX - 5, Some(u64::MAX));
        assert_eq!(r.ready_at(u64::MAX - 5), u64::MAX);
    }
}
