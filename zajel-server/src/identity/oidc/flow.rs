//! Sign-ins in progress: what the callback needs (PKCE verifier, nonce, where to go), keyed by
//! `state`, usable once, expiring, bounded.

use super::super::IdentityError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zajel_core::UserId;

/// One started sign-in.
pub(super) struct Pending {
    pub provider: String,
    pub pkce_verifier: String,
    pub nonce: String,
    pub return_to: String,
    /// `Some` when a signed-in user is linking this provider to their account.
    pub link_user: Option<UserId>,
    pub started: Instant,
}

/// The table of pending sign-ins.
pub(super) struct PendingFlows {
    flows: Mutex<HashMap<String, Pending>>,
    ttl: Duration,
    max: usize,
}

impl PendingFlows {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            flows: Mutex::new(HashMap::new()),
            ttl,
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a flow; `Busy` when the table is full of unexpired flows.
    pub fn insert(&self, state: String, flow: Pending) -> Result<(), IdentityError> {
        let mut flows = self.lock();
        if flows.len() >= self.max {
            let ttl = self.ttl;
            flows.retain(|_, f| f.started.elapsed() < ttl);
            if flows.len() >= self.max {
                return Err(IdentityError::Busy);
            }
        }
        flows.insert(state, flow);
        Ok(())
    }

    /// Takes the flow for `state` (so a second use fails), refusing an expired one.
    pub fn take(&self, state: &str) -> Result<Pending, IdentityError> {
        let flow = self
            .lock()
            .remove(state)
            .ok_or(IdentityError::InvalidState("unknown or already used"))?;
        if flow.started.elapsed() >= self.ttl {
            return Err(IdentityError::InvalidState("expired"));
        }
        Ok(flow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Pending {
        Pending {
            provider: "p".into(),
            pkce_verifier: "v".into(),
            nonce: "n".into(),
            return_to: "/".into(),
            link_user: None,
            started: Instant::now(),
        }
    }

    #[test]
    fn states_are_single_use_expiring_and_bounded() {
        let t = PendingFlows::new(Duration::from_millis(50), 2);
        t.insert("a".into(), flow()).unwrap();
        assert!(t.take("a").is_ok());
        assert_eq!(
            t.take("a").err(),
            Some(IdentityError::InvalidState("unknown or already used"))
        );
        t.insert("b".into(), flow()).unwrap();
        t.insert("c".into(), flow()).unwrap();
        assert_eq!(
            t.insert("d".into(), flow()).err(),
            Some(IdentityError::Busy)
        );
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            t.take("b").err(),
            Some(IdentityError::InvalidState("expired"))
        );
        // Expired flows make room again.
        t.insert("d".into(), flow()).unwrap();
    }
}
