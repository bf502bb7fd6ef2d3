//! Sign-ins in progress: what the callback needs (PKCE verifier, nonce, where to go), keyed by
//! `state`. Kept in the store as one-time tickets (`IdentityStore::put_ticket`), so the
//! provider may send the browser back to any node on the same store (no sticky sessions);
//! usable once, expiring, and bounded per node.

use super::super::IdentityError;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zajel_core::UserId;
use zajel_core::store::{IdentityStore, TicketKey};

/// One started sign-in.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Pending {
    pub provider: String,
    pub pkce_verifier: String,
    pub nonce: String,
    pub return_to: String,
    /// `Some` when a signed-in user is linking this provider to their account.
    pub link_user: Option<UserId>,
}

/// Starts and finishes sign-ins through the store's tickets.
pub(super) struct PendingFlows {
    /// When each sign-in still counted against this node's bound was started (oldest first).
    started: Mutex<VecDeque<Instant>>,
    ttl: Duration,
    max: usize,
}

/// The ticket of `state`: its SHA-256, so the store never holds a usable state, and any
/// string a callback brings maps to a valid key.
fn ticket(state: &str) -> TicketKey {
    let key = format!("oidc:{}", crate::auth::hash_secret(state));
    // 5 + 64 bytes of `[a-z0-9:]`: always a valid key.
    TicketKey::new(&key).unwrap_or_else(|_| unreachable!("hex digest is a valid ticket key"))
}

impl PendingFlows {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            started: Mutex::new(VecDeque::new()),
            ttl,
            max: max.max(1),
        }
    }

    fn started(&self) -> std::sync::MutexGuard<'_, VecDeque<Instant>> {
        self.started.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new sign-in against this node's bound: at most `max` started here within
    /// `ttl`, less those finished here. `Busy` past it (the store's memory is what it guards:
    /// every started sign-in is a ticket until it is used or expires).
    fn admit(&self) -> Result<(), IdentityError> {
        let mut started = self.started();
        while started.front().is_some_and(|t| t.elapsed() >= self.ttl) {
            started.pop_front();
        }
        if started.len() >= self.max {
            return Err(IdentityError::Busy);
        }
        started.push_back(Instant::now());
        Ok(())
    }

    /// Remembers a flow under `state`.
    pub async fn insert(
        &self,
        store: &dyn IdentityStore,
        state: &str,
        flow: &Pending,
    ) -> Result<(), IdentityError> {
        self.admit()?;
        let value = serde_json::to_vec(flow).map_err(|e| IdentityError::internal(e.to_string()))?;
        store
            .put_ticket(&ticket(state), &value, self.ttl)
            .await
            .map_err(IdentityError::store)
    }

    /// Takes the flow for `state`, on whichever node started it: a second use, or one after
    /// `ttl`, finds nothing.
    pub async fn take(
        &self,
        store: &dyn IdentityStore,
        state: &str,
    ) -> Result<Pending, IdentityError> {
        let value = store
            .take_ticket(&ticket(state))
            .await
            .map_err(IdentityError::store)?
            .ok_or(IdentityError::InvalidState(
                "unknown, already used or expired",
            ))?;
        // One flow fewer in progress; if it was started on another node, this frees a slot
        // early here, which only loosens the bound by what that node still counts.
        self.started().pop_front();
        serde_json::from_slice(&value)
            .map_err(|e| IdentityError::internal(format!("stored sign-in unreadable: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zajel_core::MemoryStore;

    fn flow() -> Pending {
        Pending {
            provider: "p".into(),
            pkce_verifier: "v".into(),
            nonce: "n".into(),
            return_to: "/".into(),
            link_user: Some(UserId::new_random()),
        }
    }

    #[tokio::test]
    async fn states_are_single_use_expiring_and_bounded() {
        let store = MemoryStore::new();
        let t = PendingFlows::new(Duration::from_millis(50), 2);
        t.insert(&store, "a", &flow()).await.unwrap();
        let back = t.take(&store, "a").await.unwrap();
        assert_eq!(back.pkce_verifier, "v");
        assert!(back.link_user.is_some());
        let used = Some(IdentityError::InvalidState(
            "unknown, already used or expired",
        ));
        assert_eq!(t.take(&store, "a").await.err(), used);
        // Any string a callback brings is a valid lookup.
        assert_eq!(t.take(&store, "{ weird \n state }").await.err(), used);
        t.insert(&store, "b", &flow()).await.unwrap();
        t.insert(&store, "c", &flow()).await.unwrap();
        assert_eq!(
            t.insert(&store, "d", &flow()).await.err(),
            Some(IdentityError::Busy)
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(t.take(&store, "b").await.err(), used, "expired");
        // Expired flows make room again.
        t.insert(&store, "d", &flow()).await.unwrap();
    }

    #[tokio::test]
    async fn the_store_never_holds_the_state_itself() {
        let store = MemoryStore::new();
        let t = PendingFlows::new(Duration::from_secs(60), 10);
        t.insert(&store, "the-state", &flow()).await.unwrap();
        let raw = TicketKey::new("oidc:the-state").unwrap();
        assert_eq!(store.take_ticket(&raw).await.unwrap(), None);
        assert!(t.take(&store, "the-state").await.is_ok());
    }
}
