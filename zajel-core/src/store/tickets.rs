//! One-time tickets kept in process memory: [`IdentityStore::put_ticket`] for the stores
//! whose data lives in one process (memory, embedded), where "every node on this store" is
//! this process.
//!
//! [`IdentityStore::put_ticket`]: super::IdentityStore::put_ticket

use super::TicketKey;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Expired tickets are swept when the table has grown to this many since the last sweep
/// (at least), so a put costs amortised O(1) and abandoned tickets cannot pile up.
const SWEEP_FLOOR: usize = 1024;

#[derive(Default)]
pub(crate) struct Tickets {
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    map: HashMap<String, (Instant, Vec<u8>)>,
    sweep_at: usize,
}

impl Tickets {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Each operation is a single map insert or remove: a panic cannot leave it torn.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn put(&self, key: &TicketKey, value: &[u8], ttl: Duration) {
        let now = Instant::now();
        let expires = now
            .checked_add(ttl)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        let mut t = self.lock();
        if t.map.len() >= t.sweep_at.max(SWEEP_FLOOR) {
            t.map.retain(|_, (exp, _)| *exp > now);
            t.sweep_at = t.map.len() * 2;
        }
        t.map
            .insert(key.as_str().to_owned(), (expires, value.to_vec()));
    }

    pub(crate) fn take(&self, key: &TicketKey) -> Option<Vec<u8>> {
        let (expires, value) = self.lock().map.remove(key.as_str())?;
        (expires > Instant::now()).then_some(value)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> TicketKey {
        TicketKey::new(k).expect("valid key")
    }

    #[test]
    fn abandoned_tickets_are_swept_and_live_ones_kept() {
        let t = Tickets::default();
        for i in 0..SWEEP_FLOOR {
            t.put(&key(&format!("old{i}")), b"x", Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(5));
        t.put(&key("live"), b"y", Duration::from_secs(60));
        for i in 0..SWEEP_FLOOR {
            t.put(&key(&format!("new{i}")), b"z", Duration::from_secs(60));
        }
        // The 1,024 expired ones went in the sweep; the live one and the new ones stay.
        assert_eq!(t.len(), SWEEP_FLOOR + 1);
        assert_eq!(t.take(&key("live")), Some(b"y".to_vec()));
        assert_eq!(t.take(&key("old0")), None);
    }

    #[test]
    fn a_huge_ttl_does_not_overflow() {
        let t = Tickets::default();
        t.put(&key("k"), b"v", Duration::MAX);
        assert_eq!(t.take(&key("k")), Some(b"v".to_vec()));
    }
}
