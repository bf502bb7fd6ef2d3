//! Conformance cases for [`IdentityStore`](crate::store::IdentityStore), run against every
//! backend like the main suite (`conformance`):
//!
//! ```no_run
//! use std::sync::Arc;
//! use zajel_core::store::conformance::{DynStore, Guard};
//! zajel_core::identity_conformance_tests!(async {
//!     (Arc::new(zajel_core::MemoryStore::new()) as DynStore, Box::new(()) as Guard)
//! });
//! # fn main() {}
//! ```

// Test code: a failed unwrap is a failed assertion.
#![allow(clippy::unwrap_used)]

use crate::ids::{Timestamp, UserId};
use crate::limits::Username;
use crate::store::conformance::DynStore;
use crate::store::{ExternalIdentity, StoreError, TicketKey, Unlink};
use std::sync::Arc;
use std::time::Duration;

/// Expands to one `#[tokio::test]` per identity conformance case.
#[macro_export]
macro_rules! identity_conformance_tests {
    ($factory:expr) => {
        $crate::identity_conformance_tests!(@cases $factory;
            external_first_sign_in_creates_once,
            external_username_taken_creates_nothing,
            external_link_list_unlink,
            external_last_sign_in_method_is_kept,
            external_racing_first_sign_ins_make_one_user,
            external_racing_unlinks_keep_one,
            external_unknown_users,
            tickets_are_taken_once_and_replaced_by_a_second_put,
            tickets_expire,
            racing_takes_of_a_ticket_give_it_to_one,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, guard) = $factory.await;
                $crate::store::identity_conformance::$case(store).await;
                drop(guard);
            }
        )*
    };
}

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn name(s: &str) -> Username {
    Username::parse(s).expect("valid test username")
}

fn oidc(sub: &str) -> ExternalIdentity {
    ExternalIdentity::oidc("https://accounts.google.com", sub).unwrap()
}

/// The first sign-in creates a password-less user; the second finds it and creates nothing.
pub async fn external_first_sign_in_creates_once(store: DynStore) {
    let id = oidc("1001");
    let first = store
        .create_external_user(&name("alice"), &id, T0)
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.user.username, "alice");
    assert_eq!(store.password_hash(first.user.id).await.unwrap(), None);
    let again = store
        .create_external_user(&name("alice2"), &id, T0)
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.user, first.user);
    assert!(
        store
            .user_by_username(&name("alice2"))
            .await
            .unwrap()
            .is_none(),
        "a found identity must not create a user"
    );
    assert_eq!(store.external_user(&id).await.unwrap(), Some(first.user.id));
    let list = store.external_identities(first.user.id).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].identity, id);
    assert_eq!(list[0].linked_at, T0);
}

/// A taken username refuses the creation and leaves the identity unlinked.
pub async fn external_username_taken_creates_nothing(store: DynStore) {
    let bob = store
        .create_user(&name("bob"), Some("$argon2id$fake"), T0)
        .await
        .unwrap();
    let id = oidc("2002");
    assert_eq!(
        store.create_external_user(&name("BOB"), &id, T0).await,
        Err(StoreError::UsernameTaken)
    );
    assert_eq!(store.external_user(&id).await.unwrap(), None);
    assert_eq!(store.external_identities(bob.id).await.unwrap(), vec![]);
    // Another name works.
    let u = store
        .create_external_user(&name("bob_1"), &id, T0)
        .await
        .unwrap();
    assert!(u.created);
    assert_ne!(u.user.id, bob.id);
}

/// Explicit linking, listing (sorted), unlinking; an identity belongs to one user only.
pub async fn external_link_list_unlink(store: DynStore) {
    let a = store
        .create_user(&name("alice"), Some("$argon2id$fake"), T0)
        .await
        .unwrap();
    let b = store
        .create_user(&name("bob"), Some("$argon2id$fake"), T0)
        .await
        .unwrap();
    let g = oidc("77");
    let app = ExternalIdentity::app("shop", "77").unwrap();
    store.link_external(&g, a.id, T0).await.unwrap();
    store.link_external(&g, a.id, T0).await.unwrap();
    store
        .link_external(&app, a.id, Timestamp(T0.0 + 1))
        .await
        .unwrap();
    assert_eq!(
        store.link_external(&g, b.id, T0).await,
        Err(StoreError::IdentityTaken)
    );
    let list = store.external_identities(a.id).await.unwrap();
    let ids: Vec<_> = list.iter().map(|l| l.identity.clone()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&g) && ids.contains(&app));
    // Same subject, other provider: a different identity.
    assert_eq!(
        store
            .external_user(&ExternalIdentity::oidc("https://other", "77").unwrap())
            .await
            .unwrap(),
        None
    );
    // Bob cannot unlink Alice's identity.
    assert_eq!(
        store.unlink_external(&g, b.id).await.unwrap(),
        Unlink::NotLinked
    );
    assert_eq!(store.external_user(&g).await.unwrap(), Some(a.id));
    assert_eq!(
        store.unlink_external(&g, a.id).await.unwrap(),
        Unlink::Removed
    );
    assert_eq!(store.external_user(&g).await.unwrap(), None);
    assert_eq!(
        store.unlink_external(&g, a.id).await.unwrap(),
        Unlink::NotLinked
    );
    // Alice has a password: her last identity may go too.
    assert_eq!(
        store.unlink_external(&app, a.id).await.unwrap(),
        Unlink::Removed
    );
    assert_eq!(store.external_identities(a.id).await.unwrap(), vec![]);
    // Once free, the identity can be linked to Bob.
    store.link_external(&g, b.id, T0).await.unwrap();
    assert_eq!(store.external_user(&g).await.unwrap(), Some(b.id));
}

/// A password-less user keeps at least one identity.
pub async fn external_last_sign_in_method_is_kept(store: DynStore) {
    let g = oidc("5");
    let u = store
        .create_external_user(&name("carol"), &g, T0)
        .await
        .unwrap()
        .user;
    assert_eq!(
        store.unlink_external(&g, u.id).await.unwrap(),
        Unlink::LastSignInMethod
    );
    assert_eq!(store.external_user(&g).await.unwrap(), Some(u.id));
    let other = ExternalIdentity::oidc("https://idp.example", "5").unwrap();
    store.link_external(&other, u.id, T0).await.unwrap();
    assert_eq!(
        store.unlink_external(&g, u.id).await.unwrap(),
        Unlink::Removed
    );
    assert_eq!(
        store.unlink_external(&other, u.id).await.unwrap(),
        Unlink::LastSignInMethod
    );
    // With a password the last identity can go.
    store
        .set_password_hash(u.id, "$argon2id$fake")
        .await
        .unwrap();
    assert_eq!(
        store.unlink_external(&other, u.id).await.unwrap(),
        Unlink::Removed
    );
}

/// Two racing first sign-ins of the same identity make exactly one user.
pub async fn external_racing_first_sign_ins_make_one_user(store: DynStore) {
    let id = oidc("race");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (store, id) = (Arc::clone(&store), id.clone());
        tasks.push(tokio::spawn(async move {
            store
                .create_external_user(&name(&format!("racer{i}")), &id, T0)
                .await
        }));
    }
    let mut created = 0;
    let mut owners = std::collections::BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        created += usize::from(r.created);
        owners.insert(r.user.id);
    }
    assert_eq!(created, 1);
    assert_eq!(owners.len(), 1);
    let mut existing = 0;
    for i in 0..8 {
        existing += usize::from(
            store
                .user_by_username(&name(&format!("racer{i}")))
                .await
                .unwrap()
                .is_some(),
        );
    }
    assert_eq!(existing, 1, "losers of the race must create no user");
}

/// Two racing unlinks of a password-less user's two identities leave one of them.
pub async fn external_racing_unlinks_keep_one(store: DynStore) {
    for round in 0..5 {
        let a = oidc(&format!("a{round}"));
        let b = oidc(&format!("b{round}"));
        let u = store
            .create_external_user(&name(&format!("dave{round}")), &a, T0)
            .await
            .unwrap()
            .user;
        store.link_external(&b, u.id, T0).await.unwrap();
        let (s1, s2) = (Arc::clone(&store), Arc::clone(&store));
        let (a2, b2) = (a.clone(), b.clone());
        let t1 = tokio::spawn(async move { s1.unlink_external(&a2, u.id).await });
        let t2 = tokio::spawn(async move { s2.unlink_external(&b2, u.id).await });
        let r = [t1.await.unwrap().unwrap(), t2.await.unwrap().unwrap()];
        assert_eq!(
            r.iter().filter(|x| **x == Unlink::Removed).count(),
            1,
            "{r:?}"
        );
        assert_eq!(store.external_identities(u.id).await.unwrap().len(), 1);
    }
}

/// Unknown users: typed errors, nothing stored.
pub async fn external_unknown_users(store: DynStore) {
    let ghost: UserId = "00000000-0000-4000-8000-00000000dead".parse().unwrap();
    let id = oidc("ghost");
    assert_eq!(
        store.link_external(&id, ghost, T0).await,
        Err(StoreError::UserNotFound)
    );
    assert_eq!(store.external_user(&id).await.unwrap(), None);
    assert_eq!(store.external_identities(ghost).await.unwrap(), vec![]);
    assert_eq!(
        store.unlink_external(&id, ghost).await.unwrap(),
        Unlink::NotLinked
    );
}

/// A key no other case (or run on a shared backend) uses.
fn ticket(tag: &str) -> TicketKey {
    TicketKey::new(&format!("{tag}:{}", UserId::new_random())).unwrap()
}

/// A ticket is taken once, whole (any bytes); unknown keys have none; a second put replaces.
pub async fn tickets_are_taken_once_and_replaced_by_a_second_put(store: DynStore) {
    let k = ticket("once");
    let value: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    let ttl = Duration::from_secs(60);
    store.put_ticket(&k, &value, ttl).await.unwrap();
    assert_eq!(store.take_ticket(&k).await.unwrap(), Some(value));
    assert_eq!(store.take_ticket(&k).await.unwrap(), None, "taken twice");
    assert_eq!(store.take_ticket(&ticket("unknown")).await.unwrap(), None);
    store.put_ticket(&k, b"first", ttl).await.unwrap();
    store.put_ticket(&k, b"second", ttl).await.unwrap();
    assert_eq!(
        store.take_ticket(&k).await.unwrap(),
        Some(b"second".to_vec())
    );
    assert_eq!(store.take_ticket(&k).await.unwrap(), None);
}

/// Past its ttl a ticket is gone; one with a longer ttl put at the same time is not.
pub async fn tickets_expire(store: DynStore) {
    let (short, long) = (ticket("short"), ticket("long"));
    store
        .put_ticket(&short, b"s", Duration::from_millis(50))
        .await
        .unwrap();
    store
        .put_ticket(&long, b"l", Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.take_ticket(&short).await.unwrap(), None, "expired");
    assert_eq!(store.take_ticket(&long).await.unwrap(), Some(b"l".to_vec()));
}

/// Sixteen racing takes (as from sixteen nodes): exactly one gets the ticket.
pub async fn racing_takes_of_a_ticket_give_it_to_one(store: DynStore) {
    for round in 0..5 {
        let k = ticket(&format!("race{round}"));
        store
            .put_ticket(&k, b"v", Duration::from_secs(60))
            .await
            .unwrap();
        let takes: Vec<_> = (0..16)
            .map(|_| {
                let (s, k) = (Arc::clone(&store), k.clone());
                tokio::spawn(async move { s.take_ticket(&k).await })
            })
            .collect();
        let mut won = 0;
        for t in takes {
            if t.await.unwrap().unwrap().is_some() {
                won += 1;
            }
        }
        assert_eq!(won, 1, "round {round}");
    }
}
