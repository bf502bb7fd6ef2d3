//! The store conformance suite: the same cases run against every backend.
//!
//! A backend's test file writes one factory and calls the macro:
//!
//! ```no_run
//! use std::sync::Arc;
//! use zajel_core::store::conformance::{DynStore, Guard};
//! zajel_core::store_conformance_tests!(async {
//!     (Arc::new(zajel_core::MemoryStore::new()) as DynStore, Box::new(()) as Guard)
//! });
//! # fn main() {}
//! ```
//!
//! The factory returns the store and a guard (temp dir, Redis process, …) that lives until the
//! case ends. Each case is its own `#[tokio::test]` (multi-threaded, so races are real).

// Test code: a failed unwrap is a failed assertion.
#![allow(clippy::unwrap_used)]

use crate::friends::{Edge, FriendGraph, FriendOp, Link, UserPair};
use crate::ids::{ConversationId, Timestamp, UserId};
use crate::limits::Username;
use crate::messaging::{SendError, prepare_send, prepare_system, send_one};
use crate::model::{HistoryQuery, MessageKind, NewMessage, Relation, Session, User};
use crate::store::{Store, StoreError};
use crate::{ErrorCode, HasErrorCode};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Keeps whatever a backend needs alive (temp dir, Redis process) for one case.
pub type Guard = Box<dyn std::any::Any + Send>;

/// The shared store type the cases receive.
pub type DynStore = Arc<dyn Store>;

/// Expands to one `#[tokio::test]` per conformance case, each calling `$factory` for a fresh
/// store. `$factory` is an expression of type `impl Future<Output = (DynStore, Guard)>`.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@cases $factory;
            users_create_and_lookup,
            users_reject_bad_input,
            users_rename,
            racing_renames_one_wins,
            sessions_lifecycle,
            session_with_friends_reads_all_three,
            edges_swap_atomically,
            friend_flow_updates_both_lists,
            many_relations_are_all_listed,
            friend_edge_cases,
            request_to_a_blocker_is_hidden,
            racing_accepts_one_wins,
            racing_crossed_requests_make_friends,
            append_and_read_back,
            append_rejects_non_member,
            idempotent_retry_stores_once,
            batch_append_mixed,
            concurrent_appends_are_gap_free,
            history_paging,
            history_rejects_invalid_cursors,
            conversation_list_and_unread,
            read_marks_move_forward_only,
            friends_only_messaging,
            append_after_block_is_refused,
            system_messages,
            expired_sessions_are_pruned,
            idempotency_window,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, guard) = $factory.await;
                $crate::store::conformance::$case(store).await;
                drop(guard);
            }
        )*
    };
}

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn name(s: &str) -> Username {
    Username::parse(s).expect("valid test username")
}

async fn user(store: &DynStore, n: &str) -> User {
    store
        .create_user(&name(n), Some("$argon2id$fake"), T0)
        .await
        .expect("create user")
}

async fn friends(store: &DynStore, a: &User, b: &User) {
    let g = FriendGraph::new(&**store);
    g.apply(a.id, b.id, FriendOp::Request, T0)
        .await
        .expect("request");
    g.apply(b.id, a.id, FriendOp::Accept, T0)
        .await
        .expect("accept");
}

use crate::testing::message as msg;

async fn append1(store: &DynStore, m: NewMessage) -> Result<crate::Appended, StoreError> {
    store
        .append(vec![m])
        .await
        .pop()
        .expect("one result per message")
}

fn q(before: Option<u64>, after: Option<u64>, limit: u32) -> HistoryQuery {
    HistoryQuery {
        before,
        after,
        limit,
    }
}

fn seqs(page: &crate::HistoryPage) -> Vec<u64> {
    page.messages.iter().map(|m| m.seq).collect()
}

/// Accounts: create, case-insensitive uniqueness and lookup, password hash, last seen.
pub async fn users_create_and_lookup(store: DynStore) {
    let alice = user(&store, "Alice").await;
    assert_eq!(alice.username, "Alice");
    assert_eq!(alice.created_at, T0);
    assert_eq!(store.user(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(
        store.user_by_username(&name("aLiCe")).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.user_by_username(&name("nobody")).await.unwrap(), None);
    assert_eq!(
        store.create_user(&name("ALICE"), None, T0).await,
        Err(StoreError::UsernameTaken)
    );
    assert_eq!(
        store.password_hash(alice.id).await.unwrap().as_deref(),
        Some("$argon2id$fake")
    );
    store
        .set_password_hash(alice.id, "$argon2id$new")
        .await
        .unwrap();
    assert_eq!(
        store.password_hash(alice.id).await.unwrap().as_deref(),
        Some("$argon2id$new")
    );
    let bob = store.create_user(&name("bob"), None, T0).await.unwrap();
    assert_ne!(bob.id, alice.id);
    assert_eq!(store.password_hash(bob.id).await.unwrap(), None);
    assert_eq!(store.last_seen(bob.id).await.unwrap(), None);
    store.set_last_seen(bob.id, Timestamp(5)).await.unwrap();
    assert_eq!(store.last_seen(bob.id).await.unwrap(), Some(Timestamp(5)));
}

/// Unknown ids are typed errors and create nothing.
pub async fn users_reject_bad_input(store: DynStore) {
    let ghost = UserId::new_random();
    assert_eq!(store.user(ghost).await.unwrap(), None);
    assert_eq!(
        store.set_password_hash(ghost, "x").await,
        Err(StoreError::UserNotFound)
    );
    assert_eq!(
        store.set_last_seen(ghost, T0).await,
        Err(StoreError::UserNotFound)
    );
    assert_eq!(
        store.user(ghost).await.unwrap(),
        None,
        "nothing was created for the unknown id"
    );
    assert_eq!(store.last_seen(ghost).await.unwrap(), None);
    assert_eq!(store.relations(ghost).await.unwrap(), vec![]);
    assert_eq!(store.conversations(ghost, 10).await.unwrap(), vec![]);
}

/// A rename frees the old name, claims the new one (case-insensitively unique), and a refused
/// rename changes nothing.
pub async fn users_rename(store: DynStore) {
    let n = |s: &str| Username::parse(s).unwrap();
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let renamed = store.rename_user(alice.id, &n("Alicia")).await.unwrap();
    assert_eq!(renamed.username, "Alicia");
    assert_eq!(
        (renamed.id, renamed.created_at),
        (alice.id, alice.created_at)
    );
    assert_eq!(store.user(alice.id).await.unwrap(), Some(renamed.clone()));
    assert_eq!(
        store.user_by_username(&n("ALICIA")).await.unwrap(),
        Some(renamed.clone())
    );
    assert_eq!(store.user_by_username(&n("alice")).await.unwrap(), None);
    // The old name is free again.
    let newcomer = store.create_user(&n("alice"), None, T0).await.unwrap();
    assert_ne!(newcomer.id, alice.id);
    // Another user's name, in any case, is refused and nothing changes.
    assert_eq!(
        store.rename_user(alice.id, &n("BOB")).await,
        Err(StoreError::UsernameTaken)
    );
    assert_eq!(store.user(alice.id).await.unwrap(), Some(renamed.clone()));
    assert_eq!(
        store.user_by_username(&n("bob")).await.unwrap(),
        Some(bob.clone())
    );
    assert_eq!(
        store.user_by_username(&n("alicia")).await.unwrap(),
        Some(renamed)
    );
    // A change of case only, and renaming to one's own name, are fine.
    let cased = store.rename_user(alice.id, &n("alicia")).await.unwrap();
    assert_eq!(cased.username, "alicia");
    assert_eq!(
        store.user_by_username(&n("Alicia")).await.unwrap(),
        Some(cased.clone())
    );
    assert_eq!(
        store.rename_user(alice.id, &n("alicia")).await.unwrap(),
        cased
    );
    // The password survives a rename.
    store
        .set_password_hash(bob.id, "$argon2id$b")
        .await
        .unwrap();
    store.rename_user(bob.id, &n("robert")).await.unwrap();
    assert_eq!(
        store.password_hash(bob.id).await.unwrap().as_deref(),
        Some("$argon2id$b")
    );
    // An unknown user: refused, and the name is not claimed.
    let ghost = UserId::new_random();
    assert_eq!(
        store.rename_user(ghost, &n("ghostly")).await,
        Err(StoreError::UserNotFound)
    );
    store.create_user(&n("ghostly"), None, T0).await.unwrap();
}

/// Two users racing for one new name: exactly one gets it, the other keeps their old name.
pub async fn racing_renames_one_wins(store: DynStore) {
    let n = |s: &str| Username::parse(s).unwrap();
    let a = user(&store, "anna").await;
    let b = user(&store, "bert").await;
    let (lower, upper) = (n("winner"), n("WINNER"));
    let (ra, rb) = tokio::join!(
        store.rename_user(a.id, &lower),
        store.rename_user(b.id, &upper)
    );
    let wins = [ra.is_ok(), rb.is_ok()];
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{ra:?} {rb:?}");
    let (winner, loser) = if wins[0] { (a.id, b) } else { (b.id, a) };
    assert_eq!(
        store
            .user_by_username(&n("winner"))
            .await
            .unwrap()
            .map(|u| u.id),
        Some(winner)
    );
    assert_eq!(store.user(loser.id).await.unwrap(), Some(loser.clone()));
    assert_eq!(
        store.user_by_username(&n(&loser.username)).await.unwrap(),
        Some(loser)
    );
}

/// Sessions: lookup by (user, hash), expiry, delete one, delete all.
pub async fn sessions_lifecycle(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let s1 = Session {
        user_id: a.id,
        token_hash: "h1".into(),
        created_at: T0,
        expires_at: T0.plus_millis(1000),
    };
    let s2 = Session {
        token_hash: "h2".into(),
        ..s1.clone()
    };
    let sb = Session {
        user_id: b.id,
        token_hash: "hb".into(),
        ..s1.clone()
    };
    for s in [&s1, &s2, &sb] {
        store.create_session(s).await.unwrap();
    }
    assert_eq!(
        store.session(a.id, "h1", T0).await.unwrap(),
        Some(s1.clone())
    );
    assert_eq!(
        store.session(b.id, "h1", T0).await.unwrap(),
        None,
        "hash belongs to another user"
    );
    assert_eq!(
        store
            .session(a.id, "h1", T0.plus_millis(1000))
            .await
            .unwrap(),
        None,
        "expired"
    );
    // The session and its user in one read: the same answers as the two separate reads,
    // with the user's current name.
    assert_eq!(
        store.session_with_user(a.id, "h1", T0).await.unwrap(),
        Some((s1.clone(), a.clone()))
    );
    let renamed = store.rename_user(a.id, &name("Alicia")).await.unwrap();
    assert_eq!(
        store.session_with_user(a.id, "h1", T0).await.unwrap(),
        Some((s1.clone(), renamed))
    );
    assert_eq!(
        store.session_with_user(b.id, "h1", T0).await.unwrap(),
        None,
        "hash belongs to another user"
    );
    assert_eq!(
        store
            .session_with_user(a.id, "h1", T0.plus_millis(1000))
            .await
            .unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        store
            .session_with_user(UserId::new_random(), "h1", T0)
            .await
            .unwrap(),
        None,
        "unknown user"
    );
    assert!(store.delete_session(a.id, "h1").await.unwrap());
    assert!(!store.delete_session(a.id, "h1").await.unwrap());
    assert_eq!(store.session_with_user(a.id, "h1", T0).await.unwrap(), None);
    assert_eq!(store.session(a.id, "h1", T0).await.unwrap(), None);
    assert_eq!(store.session(a.id, "h2", T0).await.unwrap(), Some(s2));
    assert_eq!(store.delete_user_sessions(a.id).await.unwrap(), 1);
    assert_eq!(store.session(a.id, "h2", T0).await.unwrap(), None);
    assert_eq!(
        store.session(b.id, "hb", T0).await.unwrap(),
        Some(sb),
        "other users keep theirs"
    );
    let ghost = Session {
        user_id: UserId::new_random(),
        ..s1
    };
    assert_eq!(
        store.create_session(&ghost).await,
        Err(StoreError::UserNotFound)
    );
}

/// What a connection's authentication reads in one go: the session, the user and the
/// friends' ids, the same answers as the separate reads (friends only: requests and blocks
/// are not told of presence).
pub async fn session_with_friends_reads_all_three(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let d = user(&store, "dave").await;
    let e = user(&store, "erin").await;
    crate::testing::befriend(&*store, a.id, b.id).await;
    crate::testing::befriend(&*store, c.id, a.id).await;
    let g = FriendGraph::new(&*store);
    g.request(a.id, &name("dave"), T0).await.unwrap();
    g.request(e.id, &name("alice"), T0).await.unwrap();
    let mut friends = vec![b.id, c.id];
    friends.sort();
    assert_eq!(store.friend_ids(a.id).await.unwrap(), friends);
    assert_eq!(store.friend_ids(d.id).await.unwrap(), Vec::<UserId>::new());
    assert_eq!(store.friend_ids(b.id).await.unwrap(), vec![a.id]);
    let s = Session {
        user_id: a.id,
        token_hash: "h1".into(),
        created_at: T0,
        expires_at: T0.plus_millis(1000),
    };
    store.create_session(&s).await.unwrap();
    assert_eq!(
        store.session_with_friends(a.id, "h1", T0).await.unwrap(),
        Some((s.clone(), a.clone(), friends.clone()))
    );
    let renamed = store.rename_user(a.id, &name("Alicia")).await.unwrap();
    assert_eq!(
        store.session_with_friends(a.id, "h1", T0).await.unwrap(),
        Some((s.clone(), renamed, friends))
    );
    // A user without relations has an empty list, not an error.
    let sd = Session {
        user_id: e.id,
        token_hash: "he".into(),
        ..s.clone()
    };
    store.create_session(&sd).await.unwrap();
    assert_eq!(
        store.session_with_friends(e.id, "he", T0).await.unwrap(),
        Some((sd, e.clone(), Vec::new()))
    );
    for (user, hash, at, why) in [
        (b.id, "h1", T0, "hash belongs to another user"),
        (a.id, "h1", T0.plus_millis(1000), "expired"),
        (a.id, "nope", T0, "unknown hash"),
        (UserId::new_random(), "h1", T0, "unknown user"),
    ] {
        assert_eq!(
            store.session_with_friends(user, hash, at).await.unwrap(),
            None,
            "{why}"
        );
    }
}

/// `swap_edge` only succeeds from the expected edge and keeps both relation lists in step.
pub async fn edges_swap_atomically(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let pair = UserPair::new(a.id, b.id).unwrap();
    assert_eq!(store.edge(pair).await.unwrap(), Edge::default());
    let req = Edge {
        link: Link::RequestedByLo,
        since: T0,
        ..Edge::default()
    };
    let wrong = Edge {
        link: Link::Friends,
        ..Edge::default()
    };
    assert!(!store.swap_edge(pair, wrong, req).await.unwrap());
    assert_eq!(
        store.edge(pair).await.unwrap(),
        Edge::default(),
        "failed swap changed nothing"
    );
    assert!(store.swap_edge(pair, Edge::default(), req).await.unwrap());
    assert_eq!(store.edge(pair).await.unwrap(), req);
    let lo = store.relations(pair.lo).await.unwrap();
    let hi = store.relations(pair.hi).await.unwrap();
    assert_eq!(
        (lo.len(), lo[0].peer, lo[0].relation),
        (1, pair.hi, Relation::RequestSent)
    );
    assert_eq!(
        (hi.len(), hi[0].peer, hi[0].relation),
        (1, pair.lo, Relation::RequestReceived)
    );
    assert!(
        !store.swap_edge(pair, Edge::default(), req).await.unwrap(),
        "stale expectation"
    );
    let none = Edge {
        since: T0,
        ..Edge::default()
    };
    assert!(store.swap_edge(pair, req, none).await.unwrap());
    assert!(store.relations(a.id).await.unwrap().is_empty());
    assert!(store.relations(b.id).await.unwrap().is_empty());
}

/// A user with many relations gets all of them, each once (the embedded store reads a short
/// list inline and a long one on the blocking pool: both paths, and the boundary).
pub async fn many_relations_are_all_listed(store: DynStore) {
    let hub = user(&store, "hub").await;
    let mut peers = Vec::new();
    for i in 0..40 {
        let peer = user(&store, &format!("peer{i}")).await;
        crate::testing::befriend(&*store, hub.id, peer.id).await;
        peers.push(peer.id);
        if matches!(i, 31..=33) {
            let listed = store.relations(hub.id).await.unwrap();
            assert_eq!(listed.len(), i + 1, "relations with {} friends", i + 1);
        }
    }
    let mut listed: Vec<_> = store
        .relations(hub.id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            assert_eq!(r.relation, Relation::Friends);
            r.peer
        })
        .collect();
    listed.sort();
    peers.sort();
    assert_eq!(listed, peers);
    assert_eq!(store.relations(peers[0]).await.unwrap().len(), 1);
}

/// The whole friend flow through [`FriendGraph`], with both lists checked at each step.
pub async fn friend_flow_updates_both_lists(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let g = FriendGraph::new(&*store);
    let rel = |list: Vec<crate::RelationEntry>, peer: UserId| {
        list.into_iter()
            .find(|e| e.peer == peer)
            .map(|e| e.relation)
    };
    let ch = g.request(a.id, &name("BOB"), T0).await.unwrap();
    assert_eq!(ch.for_actor.relation, Relation::RequestSent);
    assert_eq!(
        ch.for_target.as_ref().map(|u| (u.relation, u.user.id)),
        Some((Relation::RequestReceived, a.id))
    );
    assert_eq!(
        rel(store.relations(b.id).await.unwrap(), a.id),
        Some(Relation::RequestReceived)
    );
    g.apply(b.id, a.id, FriendOp::Accept, T0).await.unwrap();
    assert_eq!(
        rel(store.relations(a.id).await.unwrap(), b.id),
        Some(Relation::Friends)
    );
    assert_eq!(
        rel(store.relations(b.id).await.unwrap(), a.id),
        Some(Relation::Friends)
    );
    assert!(g.are_friends(a.id, b.id).await.unwrap());
    g.request(c.id, &name("alice"), T0).await.unwrap();
    let list: BTreeSet<_> = store
        .relations(a.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.peer, e.relation))
        .collect();
    assert_eq!(
        list,
        BTreeSet::from([(b.id, Relation::Friends), (c.id, Relation::RequestReceived)])
    );
    // Blocking a friend removes the friendship; the blocked side sees "removed", not "blocked".
    let ch = g.apply(b.id, a.id, FriendOp::Block, T0).await.unwrap();
    assert_eq!(ch.for_actor.relation, Relation::Blocked);
    assert_eq!(
        ch.for_target.map(|u| (u.relation, u.reason)),
        Some((Relation::None, crate::FriendReason::Removed))
    );
    assert_eq!(rel(store.relations(a.id).await.unwrap(), b.id), None);
    assert_eq!(
        rel(store.relations(b.id).await.unwrap(), a.id),
        Some(Relation::Blocked)
    );
    assert!(!g.are_friends(a.id, b.id).await.unwrap());
    g.apply(b.id, a.id, FriendOp::Unblock, T0).await.unwrap();
    assert_eq!(rel(store.relations(b.id).await.unwrap(), a.id), None);
    g.apply(a.id, c.id, FriendOp::Decline, T0).await.unwrap();
    assert!(store.relations(c.id).await.unwrap().is_empty());
}

/// Every edge case answers with its defined error and changes nothing.
pub async fn friend_edge_cases(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let g = FriendGraph::new(&*store);
    let code =
        |r: Result<crate::FriendChange, crate::FriendError>| r.map(|_| ()).map_err(|e| e.code());
    assert_eq!(
        code(g.request(a.id, &name("alice"), T0).await),
        Err(ErrorCode::CannotBefriendSelf)
    );
    assert_eq!(
        code(g.request(a.id, &name("nobody"), T0).await),
        Err(ErrorCode::UserNotFound)
    );
    assert_eq!(
        code(
            g.apply(a.id, UserId::new_random(), FriendOp::Request, T0)
                .await
        ),
        Err(ErrorCode::UserNotFound)
    );
    assert_eq!(
        code(g.apply(a.id, b.id, FriendOp::Remove, T0).await),
        Err(ErrorCode::NotFriends)
    );
    assert_eq!(
        code(g.apply(a.id, b.id, FriendOp::Accept, T0).await),
        Err(ErrorCode::NoPendingRequest)
    );
    g.request(a.id, &name("bob"), T0).await.unwrap();
    let before = store
        .edge(UserPair::new(a.id, b.id).unwrap())
        .await
        .unwrap();
    assert_eq!(
        code(g.request(a.id, &name("bob"), Timestamp(9)).await),
        Err(ErrorCode::AlreadyRequested)
    );
    assert_eq!(
        store
            .edge(UserPair::new(a.id, b.id).unwrap())
            .await
            .unwrap(),
        before,
        "unchanged"
    );
    g.apply(a.id, b.id, FriendOp::Cancel, T0).await.unwrap();
    assert_eq!(
        code(g.apply(b.id, a.id, FriendOp::Accept, T0).await),
        Err(ErrorCode::NoPendingRequest),
        "accept of a cancelled request"
    );
    g.apply(a.id, b.id, FriendOp::Block, T0).await.unwrap();
    assert_eq!(
        code(g.request(a.id, &name("bob"), T0).await),
        Err(ErrorCode::Blocked),
        "request to a user you blocked"
    );
    assert_eq!(
        code(g.apply(a.id, b.id, FriendOp::Block, T0).await),
        Err(ErrorCode::AlreadyBlocked)
    );
    assert_eq!(
        code(g.apply(b.id, a.id, FriendOp::Unblock, T0).await),
        Err(ErrorCode::NotBlocked)
    );
}

/// A request to someone who blocks you looks like any other to the requester, and the blocker
/// sees nothing (no event, no change of their entry) until they unblock; then it shows.
pub async fn request_to_a_blocker_is_hidden(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let g = FriendGraph::new(&*store);
    let (t1, t2, t3) = (
        Timestamp(T0.0 + 1),
        Timestamp(T0.0 + 2),
        Timestamp(T0.0 + 3),
    );
    let entry = |list: Vec<crate::RelationEntry>, peer: UserId| {
        list.into_iter()
            .find(|e| e.peer == peer)
            .map(|e| (e.relation, e.since))
    };
    g.apply(a.id, b.id, FriendOp::Block, t1).await.unwrap();
    let ch = g.request(b.id, &name("alice"), t2).await.unwrap();
    assert_eq!(
        (ch.for_actor.relation, ch.for_actor.reason),
        (Relation::RequestSent, crate::FriendReason::Requested),
        "the ordinary answer"
    );
    assert_eq!(ch.for_target, None, "the blocker is told nothing");
    assert_eq!(
        entry(store.relations(b.id).await.unwrap(), a.id),
        Some((Relation::RequestSent, t2))
    );
    assert_eq!(
        entry(store.relations(a.id).await.unwrap(), b.id),
        Some((Relation::Blocked, t1)),
        "the blocker's entry is untouched, its time too"
    );
    assert!(!g.are_friends(a.id, b.id).await.unwrap());
    let pair = UserPair::new(a.id, b.id).unwrap();
    let hidden = store.edge(pair).await.unwrap();
    let code =
        |r: Result<crate::FriendChange, crate::FriendError>| r.map(|_| ()).map_err(|e| e.code());
    for op in [FriendOp::Accept, FriendOp::Decline] {
        assert_eq!(
            code(g.apply(a.id, b.id, op, t3).await),
            Err(ErrorCode::NoPendingRequest),
            "the blocker cannot see the request to {op:?} it"
        );
    }
    assert_eq!(
        code(g.request(b.id, &name("alice"), t3).await),
        Err(ErrorCode::AlreadyRequested),
        "a repeat answers like any repeat"
    );
    assert_eq!(
        store.edge(pair).await.unwrap(),
        hidden,
        "refusals change nothing"
    );
    // Unblocking shows the request to the blocker; the requester hears nothing.
    let ch = g.apply(a.id, b.id, FriendOp::Unblock, t3).await.unwrap();
    assert_eq!(ch.for_actor.relation, Relation::RequestReceived);
    assert_eq!(ch.for_target, None);
    assert_eq!(
        entry(store.relations(a.id).await.unwrap(), b.id),
        Some((Relation::RequestReceived, t3))
    );
    assert_eq!(
        entry(store.relations(b.id).await.unwrap(), a.id),
        Some((Relation::RequestSent, t2))
    );
    g.apply(a.id, b.id, FriendOp::Accept, t3).await.unwrap();
    assert!(g.are_friends(a.id, b.id).await.unwrap());
}

/// Two racing accepts of one request: exactly one wins; the other hears `already_friends`.
pub async fn racing_accepts_one_wins(store: DynStore) {
    for round in 0..10 {
        let a = user(&store, &format!("alice{round}")).await;
        let b = user(&store, &format!("bob{round}")).await;
        FriendGraph::new(&*store)
            .apply(a.id, b.id, FriendOp::Request, T0)
            .await
            .unwrap();
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move {
                    FriendGraph::new(&*s)
                        .apply(b.id, a.id, FriendOp::Accept, T0)
                        .await
                        .map_err(|e| e.code())
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap().map(|c| c.for_actor.relation));
        }
        results.sort_by_key(|r| r.is_err());
        assert_eq!(
            results,
            vec![Ok(Relation::Friends), Err(ErrorCode::AlreadyFriends)]
        );
    }
}

/// A→B and B→A racing: both succeed (the second is an accept) and they end as friends.
pub async fn racing_crossed_requests_make_friends(store: DynStore) {
    for round in 0..10 {
        let a = user(&store, &format!("alice{round}")).await;
        let b = user(&store, &format!("bob{round}")).await;
        let (s1, s2) = (store.clone(), store.clone());
        let t1 = tokio::spawn(async move {
            FriendGraph::new(&*s1)
                .apply(a.id, b.id, FriendOp::Request, T0)
                .await
                .map(|c| c.for_actor.reason)
        });
        let t2 = tokio::spawn(async move {
            FriendGraph::new(&*s2)
                .apply(b.id, a.id, FriendOp::Request, T0)
                .await
                .map(|c| c.for_actor.reason)
        });
        let mut reasons = vec![t1.await.unwrap().unwrap(), t2.await.unwrap().unwrap()];
        reasons.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(
            reasons,
            vec![
                crate::FriendReason::Accepted,
                crate::FriendReason::Requested
            ]
        );
        assert!(
            FriendGraph::new(&*store)
                .are_friends(a.id, b.id)
                .await
                .unwrap()
        );
    }
}

/// Appended messages get ids, gap-free sequences, and read back exactly.
pub async fn append_and_read_back(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    friends(&store, &a, &b).await;
    let conv = ConversationId::direct(a.id, b.id);
    let first = append1(&store, msg(&conv, a.id, "hello", "k1"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(
        (
            first.message.seq,
            first.message.sender,
            first.message.body.as_str()
        ),
        (1, a.id, "hello")
    );
    assert_eq!(first.message.idempotency_key, "k1");
    assert_eq!(first.message.sent_at, T0);
    let second = append1(&store, msg(&conv, b.id, "hi 👋", "k1"))
        .await
        .unwrap();
    assert_eq!(
        second.message.seq, 2,
        "same key from another sender is another message"
    );
    assert_ne!(second.message.id, first.message.id);
    assert_eq!(store.last_seq(&conv).await.unwrap(), 2);
    let page = store.history(&conv, q(None, None, 50)).await.unwrap();
    assert_eq!(page.messages, vec![first.message, second.message]);
    assert!(!page.has_more);
    let empty = ConversationId::direct(a.id, UserId::new_random());
    assert_eq!(store.last_seq(&empty).await.unwrap(), 0);
    assert!(
        store
            .history(&empty, q(None, None, 10))
            .await
            .unwrap()
            .messages
            .is_empty()
    );
}

/// A sender outside the conversation is refused and nothing is stored.
pub async fn append_rejects_non_member(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    friends(&store, &a, &b).await;
    let conv = ConversationId::direct(a.id, b.id);
    assert_eq!(
        append1(&store, msg(&conv, c.id, "intruder", "k")).await,
        Err(StoreError::NotAMember)
    );
    assert_eq!(store.last_seq(&conv).await.unwrap(), 0);
    assert!(store.conversations(c.id, 10).await.unwrap().is_empty());
    assert!(store.conversations(a.id, 10).await.unwrap().is_empty());
}

/// The same (conversation, sender, key) stores once; every retry returns the original.
pub async fn idempotent_retry_stores_once(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    friends(&store, &a, &b).await;
    let conv = ConversationId::direct(a.id, b.id);
    let first = append1(&store, msg(&conv, a.id, "once", "retry-me"))
        .await
        .unwrap();
    for _ in 0..3 {
        let again = append1(
            &store,
            msg(&conv, a.id, "once (edited body is ignored)", "retry-me"),
        )
        .await
        .unwrap();
        assert!(again.duplicate);
        assert_eq!(again.message, first.message);
    }
    // Concurrent retries of a new key also store once.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (s, conv) = (store.clone(), conv.clone());
            tokio::spawn(async move {
                s.append(vec![msg(&conv, a.id, "racy", "same-key")])
                    .await
                    .pop()
                    .unwrap()
                    .unwrap()
            })
        })
        .collect();
    let mut fresh = 0;
    let mut ids = BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        fresh += usize::from(!r.duplicate);
        ids.insert(r.message.id);
    }
    assert_eq!((fresh, ids.len()), (1, 1));
    assert_eq!(store.last_seq(&conv).await.unwrap(), 2);
}

/// One batch spanning conversations, with a duplicate key inside the batch and a bad item:
/// one result per input, in order; the bad item fails alone.
pub async fn batch_append_mixed(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    friends(&store, &a, &b).await;
    friends(&store, &a, &c).await;
    let ab = ConversationId::direct(a.id, b.id);
    let ac = ConversationId::direct(a.id, c.id);
    let results = store
        .append(vec![
            msg(&ab, a.id, "1", "x"),
            msg(&ac, a.id, "2", "x"),
            msg(&ab, c.id, "not a member", "y"),
            msg(&ab, b.id, "3", "x"),
            msg(&ab, a.id, "dup", "x"),
        ])
        .await;
    assert_eq!(results.len(), 5);
    let r: Vec<_> = results
        .into_iter()
        .map(|r| r.map(|a| (a.message.conversation, a.message.seq, a.duplicate)))
        .collect();
    assert_eq!(r[0], Ok((ab.clone(), 1, false)));
    assert_eq!(r[1], Ok((ac.clone(), 1, false)));
    assert_eq!(r[2], Err(StoreError::NotAMember));
    assert_eq!(r[3], Ok((ab.clone(), 2, false)));
    assert_eq!(r[4], Ok((ab.clone(), 1, true)));
    assert_eq!(store.last_seq(&ab).await.unwrap(), 2);
    assert!(store.append(vec![]).await.is_empty());
}

/// Many concurrent senders into one conversation: sequences 1..=N, unique, no gaps.
pub async fn concurrent_appends_are_gap_free(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    friends(&store, &a, &b).await;
    let conv = ConversationId::direct(a.id, b.id);
    let (tasks, per_task) = (8u64, 25u64);
    let per_task_msgs = per_task + per_task / 5;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (s, conv) = (store.clone(), conv.clone());
            let sender = if t % 2 == 0 { a.id } else { b.id };
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..per_task {
                    // Mix single appends and small batches.
                    let batch: Vec<_> = (0..if i % 5 == 0 { 2 } else { 1 })
                        .map(|j| msg(&conv, sender, "m", &format!("t{t}-{i}-{j}")))
                        .collect();
                    for r in s.append(batch).await {
                        seqs.push(r.unwrap().message.seq);
                    }
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort_unstable();
    let expected: Vec<u64> = (1..=tasks * per_task_msgs).collect();
    assert_eq!(all, expected);
    let page = store.history(&conv, q(None, Some(0), 200)).await.unwrap();
    assert_eq!(seqs(&page), expected[..200].to_vec());
    assert!(page.has_more);
}

/// Backward and forward paging over a gap-free log.
pub async fn history_paging(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    friends(&store, &a, &b).await;
    let conv = ConversationId::direct(a.id, b.id);
    let batch: Vec<_> = (1..=12)
        .map(|i| msg(&conv, a.id, &format!("m{i}"), &format!("k{i}")))
        .collect();
    for r in store.append(batch).await {
        r.unwrap();
    }
    let p = store.history(&conv, q(None, None, 5)).await.unwrap();
    assert_eq!((seqs(&p), p.has_more), (vec![8, 9, 10, 11, 12], true));
    assert_eq!(p.messages[0].body, "m8");
    let p = store.history(&conv, q(Some(8), None, 5)).await.unwrap();
    assert_eq!((seqs(&p), p.has_more), (vec![3, 4, 5, 6, 7], true));
    let p = store.history(&conv, q(Some(3), None, 5)).await.unwrap();
    assert_eq!((seqs(&p), p.has_more), (vec![1, 2], false));
    let p = store.history(&conv, q(None, Some(9), 5)).await.unwrap();
    assert_eq!((seqs(&p), p.has_more), (vec![10, 11, 12], false));
    let p = store.history(&conv, q(None, Some(12), 5)).await.unwrap();
    assert_eq!((seqs(&p), p.has_more), (vec![], false));
    let p = store.history(&conv, q(Some(7), Some(2), 10)).await.unwrap();
    assert_eq!((seqs(&p), p.has_more), (vec![3, 4, 5, 6], false));
    // Both bounds and a limit smaller than the range: the oldest end (the page continues from
    // `after`), and `has_more` tells of more before `before`.
    let p = store.history(&conv, q(Some(10), Some(2), 3)).await.unwrap();
    assert_eq!((seqs(&p), p.has_more), (vec![3, 4, 5], true));
    let p = store.history(&conv, q(Some(6), Some(2), 3)).await.unwrap();
    assert_eq!((seqs(&p), p.has_more), (vec![3, 4, 5], false));
}

/// Cursors outside the log are typed errors.
pub async fn history_rejects_invalid_cursors(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    friends(&store, &a, &b).await;
    let conv = ConversationId::direct(a.id, b.id);
    append1(&store, msg(&conv, a.id, "one", "k")).await.unwrap();
    for bad in [
        q(Some(0), None, 5),
        q(Some(3), None, 5),
        q(None, Some(2), 5),
        q(Some(1), Some(1), 5),
    ] {
        let err = store.history(&conv, bad).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidCursor(_)),
            "{bad:?} gave {err:?}"
        );
        assert_eq!(err.code(), ErrorCode::InvalidCursor);
    }
}

/// The conversation list: newest activity first, last message, unread counts, read marks.
pub async fn conversation_list_and_unread(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    friends(&store, &a, &b).await;
    friends(&store, &a, &c).await;
    let ab = ConversationId::direct(a.id, b.id);
    let ac = ConversationId::direct(a.id, c.id);
    append1(&store, msg(&ab, b.id, "b1", "1")).await.unwrap();
    append1(&store, msg(&ab, b.id, "b2", "2")).await.unwrap();
    append1(&store, msg(&ac, c.id, "c1", "1")).await.unwrap();
    let list = store.conversations(a.id, 10).await.unwrap();
    assert_eq!(
        list.iter()
            .map(|s| s.conversation.clone())
            .collect::<Vec<_>>(),
        vec![ac.clone(), ab.clone()]
    );
    assert_eq!(
        (
            list[1].peer,
            list[1].last_seq,
            list[1].unread,
            list[1].read_seq
        ),
        (Some(b.id), 2, 2, 0)
    );
    assert_eq!(
        list[1].last_message.as_ref().map(|m| m.body.as_str()),
        Some("b2")
    );
    assert_eq!(
        list[1].peer_read_seq, 2,
        "sending advances the sender's own mark"
    );
    // Replying moves ab to the top and clears alice's unread there.
    append1(&store, msg(&ab, a.id, "a1", "1")).await.unwrap();
    let list = store.conversations(a.id, 10).await.unwrap();
    assert_eq!(list[0].conversation, ab);
    assert_eq!(
        (list[0].unread, list[0].read_seq, list[0].last_seq),
        (0, 3, 3)
    );
    assert_eq!(list[1].unread, 1);
    let bob_view = store.conversations(b.id, 10).await.unwrap();
    assert_eq!(
        (bob_view.len(), bob_view[0].unread, bob_view[0].peer),
        (1, 1, Some(a.id))
    );
    assert_eq!(store.conversations(a.id, 1).await.unwrap().len(), 1);
}

/// Read marks only move forward and stay inside the log.
pub async fn read_marks_move_forward_only(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    friends(&store, &a, &b).await;
    let ab = ConversationId::direct(a.id, b.id);
    for i in 1..=3 {
        append1(&store, msg(&ab, b.id, "m", &format!("{i}")))
            .await
            .unwrap();
    }
    let m = store.mark_read(&ab, a.id, 2).await.unwrap();
    assert_eq!((m.seq, m.changed, m.user), (2, true, a.id));
    let m = store.mark_read(&ab, a.id, 1).await.unwrap();
    assert_eq!((m.seq, m.changed), (2, false));
    assert!(matches!(
        store.mark_read(&ab, a.id, 4).await,
        Err(StoreError::InvalidCursor(_))
    ));
    assert_eq!(
        store.mark_read(&ab, c.id, 1).await,
        Err(StoreError::NotAMember)
    );
    let list = store.conversations(a.id, 10).await.unwrap();
    assert_eq!((list[0].read_seq, list[0].unread), (2, 1));
    let list = store.conversations(b.id, 10).await.unwrap();
    assert_eq!(list[0].peer_read_seq, 2);
}

/// The friends-only rule and input validation in front of `append`.
pub async fn friends_only_messaging(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let ab = ConversationId::direct(a.id, b.id);
    let code =
        |r: Result<crate::Appended, SendError>| r.map(|x| x.message.seq).map_err(|e| e.code());
    assert_eq!(
        code(send_one(&*store, a.id, &ab, "hi", "k", T0).await),
        Err(ErrorCode::NotFriends)
    );
    friends(&store, &a, &b).await;
    assert_eq!(
        code(send_one(&*store, a.id, &ab, "hi", "k", T0).await),
        Ok(1)
    );
    assert_eq!(
        code(send_one(&*store, c.id, &ab, "hi", "k", T0).await),
        Err(ErrorCode::ConversationNotFound)
    );
    assert_eq!(
        code(send_one(&*store, a.id, &ab, "   ", "k2", T0).await),
        Err(ErrorCode::EmptyBody)
    );
    let long = "x".repeat(crate::limits::BODY_MAX_BYTES + 1);
    assert_eq!(
        code(send_one(&*store, a.id, &ab, &long, "k3", T0).await),
        Err(ErrorCode::BodyTooLong)
    );
    assert_eq!(
        code(send_one(&*store, a.id, &ab, "hi", "", T0).await),
        Err(ErrorCode::InvalidIdempotencyKey)
    );
    let err = prepare_send(a.id, &ab, "short", "k4", 3, T0).unwrap_err();
    assert_eq!(
        err.code(),
        ErrorCode::BodyTooLong,
        "configured lower limit applies"
    );
    assert_eq!(
        store.last_seq(&ab).await.unwrap(),
        1,
        "no rejected send stored anything"
    );
    FriendGraph::new(&*store)
        .apply(b.id, a.id, FriendOp::Block, T0)
        .await
        .unwrap();
    assert_eq!(
        code(send_one(&*store, a.id, &ab, "hi", "k5", T0).await),
        Err(ErrorCode::NotFriends)
    );
}

/// The friends-only rule is the store's, checked in the same atomic step as the write. A send
/// validated while the two were friends (the old path checked the edge here, then appended)
/// and appended after a block was acknowledged is refused with `NotFriends`, and nothing is
/// written: no sequence, no idempotency record (the key stays fresh), no list entry, no read
/// mark. The same after an unblock (the block ended the friendship) and between strangers;
/// `mark_read` obeys the same rule; a batch refuses only the items of that pair.
pub async fn append_after_block_is_refused(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    friends(&store, &a, &b).await;
    friends(&store, &a, &c).await;
    let (ab, ac, bc) = (
        ConversationId::direct(a.id, b.id),
        ConversationId::direct(a.id, c.id),
        ConversationId::direct(b.id, c.id),
    );
    let first = append1(&store, msg(&ab, b.id, "before", "k0"))
        .await
        .unwrap();
    // Validated while they were friends...
    let pending = prepare_send(
        a.id,
        &ab,
        "after the block",
        "k1",
        crate::limits::BODY_MAX_BYTES,
        T0,
    )
    .unwrap();
    // ...then the block is acknowledged...
    let graph = FriendGraph::new(&*store);
    graph.apply(b.id, a.id, FriendOp::Block, T0).await.unwrap();
    // ...so the append is refused, with the same error as never-friends (a block is not
    // revealed), and nothing is written.
    assert_eq!(append1(&store, pending).await, Err(StoreError::NotFriends));
    let results = store
        .append(vec![
            msg(&ab, b.id, "from the blocker", "k2"),
            msg(&ac, a.id, "to another friend", "k1"),
            msg(&ab, b.id, "retry of a stored key", "k0"),
        ])
        .await;
    assert_eq!(results[0], Err(StoreError::NotFriends));
    assert_eq!(results[1].as_ref().map(|x| x.message.seq), Ok(1));
    assert_eq!(results[2], Err(StoreError::NotFriends));
    assert_eq!(
        StoreError::NotFriends.code(),
        ErrorCode::NotFriends,
        "the same code as a send to a non-friend"
    );
    assert_eq!(store.last_seq(&ab).await.unwrap(), 1);
    let page = store.history(&ab, q(None, None, 10)).await.unwrap();
    assert_eq!(page.messages, vec![first.message.clone()]);
    // Read marks: refused for both sides, the marks stay where they were.
    assert_eq!(
        store.mark_read(&ab, a.id, 1).await,
        Err(StoreError::NotFriends)
    );
    assert_eq!(
        store.mark_read(&ab, b.id, 1).await,
        Err(StoreError::NotFriends)
    );
    let list = store.conversations(a.id, 10).await.unwrap();
    let row = list.iter().find(|s| s.conversation == ab).unwrap();
    assert_eq!((row.last_seq, row.read_seq, row.unread), (1, 0, 1));
    assert_eq!(
        list[0].conversation, ac,
        "the refused sends did not move ab up"
    );
    // An unblock does not restore the friendship: still refused.
    graph
        .apply(b.id, a.id, FriendOp::Unblock, T0)
        .await
        .unwrap();
    assert_eq!(
        append1(&store, msg(&ab, a.id, "after the unblock", "k1")).await,
        Err(StoreError::NotFriends)
    );
    // Strangers: refused, and no conversation appears.
    assert_eq!(
        append1(&store, msg(&bc, c.id, "hello stranger", "k1")).await,
        Err(StoreError::NotFriends)
    );
    assert_eq!(store.last_seq(&bc).await.unwrap(), 0);
    assert!(
        store
            .conversations(c.id, 10)
            .await
            .unwrap()
            .iter()
            .all(|s| s.conversation != bc)
    );
    // Friends again: the refused key was never recorded, so it is a new message.
    graph
        .apply(a.id, b.id, FriendOp::Request, T0)
        .await
        .unwrap();
    graph.apply(b.id, a.id, FriendOp::Accept, T0).await.unwrap();
    let again = append1(&store, msg(&ab, a.id, "friends again", "k1"))
        .await
        .unwrap();
    assert_eq!((again.message.seq, again.duplicate), (2, false));
    assert_eq!(store.mark_read(&ab, b.id, 2).await.unwrap().seq, 2);
}

/// System messages (sender [`UserId::SYSTEM`]): stored in a conversation between two users
/// whatever their relation, read back as system messages (history, list, repeats), unread for
/// both members, moving nobody's read mark; their idempotency keys are apart from the
/// members'. The system is no account: it cannot be befriended, send as a person or read.
pub async fn system_messages(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let c = user(&store, "carol").await;
    let ab = ConversationId::direct(a.id, b.id);
    let system = |body: &str, key: &str| {
        prepare_system(&ab, body, key, crate::limits::BODY_MAX_BYTES, T0).expect("valid notice")
    };
    // No friendship needed: the app posting it decides.
    let first = append1(&store, system("alice and bob matched", "match"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(
        (
            first.message.seq,
            first.message.sender,
            first.message.kind()
        ),
        (1, UserId::SYSTEM, MessageKind::System)
    );
    assert_eq!(first.message.body, "alice and bob matched");
    // A repeat of the key stores nothing; a member's message with the same key is another
    // message, and a later notice with a member's key too (the scopes are apart).
    let again = append1(&store, system("edited", "match")).await.unwrap();
    assert_eq!((again.duplicate, &again.message), (true, &first.message));
    // Members' own messages need the friendship (the store checks it).
    friends(&store, &a, &b).await;
    let mine = append1(&store, msg(&ab, a.id, "hi", "match"))
        .await
        .unwrap();
    assert_eq!((mine.duplicate, mine.message.seq), (false, 2));
    assert_eq!(mine.message.kind(), MessageKind::User);
    // In one batch with a person's message, and a repeat of it in the same batch.
    let batch = store
        .append(vec![
            system("order shipped", "ship"),
            msg(&ab, b.id, "yay", "b1"),
            system("order shipped", "ship"),
        ])
        .await;
    let batch: Vec<_> = batch.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        batch
            .iter()
            .map(|x| (x.message.seq, x.duplicate, x.message.is_system()))
            .collect::<Vec<_>>(),
        vec![(3, false, true), (4, false, false), (3, true, true)]
    );
    // Read back as system messages, with the marker on the wire form.
    let page = store.history(&ab, q(None, None, 50)).await.unwrap();
    assert_eq!(
        page.messages
            .iter()
            .map(|m| (m.seq, m.kind()))
            .collect::<Vec<_>>(),
        vec![
            (1, MessageKind::System),
            (2, MessageKind::User),
            (3, MessageKind::System),
            (4, MessageKind::User)
        ]
    );
    assert_eq!(page.messages[0], first.message);
    let json = serde_json::to_value(&page.messages[0]).unwrap();
    assert_eq!(
        (&json["kind"], &json["sender"]),
        (
            &serde_json::json!("system"),
            &serde_json::json!(UserId::SYSTEM)
        )
    );
    assert!(
        serde_json::to_value(&page.messages[1])
            .unwrap()
            .get("kind")
            .is_none()
    );
    // Read marks: alice's send moved hers to 2, bob's to 4; the notices moved none.
    let alice = store.conversations(a.id, 10).await.unwrap();
    assert_eq!(
        (
            alice[0].last_seq,
            alice[0].read_seq,
            alice[0].unread,
            alice[0].peer_read_seq
        ),
        (4, 2, 2, 4)
    );
    append1(&store, system("last notice", "last"))
        .await
        .unwrap();
    let bob = store.conversations(b.id, 10).await.unwrap();
    assert_eq!(
        (
            bob[0].last_seq,
            bob[0].read_seq,
            bob[0].unread,
            bob[0].peer_read_seq
        ),
        (5, 4, 1, 2)
    );
    assert!(bob[0].last_message.as_ref().is_some_and(|m| m.is_system()));
    assert!(store.conversations(c.id, 10).await.unwrap().is_empty());
    // The system has no read mark to move and is no account.
    assert_eq!(
        store.mark_read(&ab, UserId::SYSTEM, 1).await,
        Err(StoreError::NotAMember)
    );
    assert_eq!(store.user(UserId::SYSTEM).await.unwrap(), None);
    assert!(matches!(
        FriendGraph::new(&*store)
            .apply(a.id, UserId::SYSTEM, FriendOp::Request, T0)
            .await,
        Err(crate::FriendError::UserNotFound)
    ));
    assert_eq!(
        store
            .edge(UserPair::new(a.id, UserId::SYSTEM).unwrap())
            .await
            .unwrap(),
        Edge::default()
    );
    let as_system = prepare_send(UserId::SYSTEM, &ab, "forged", "f", 100, T0);
    assert_eq!(
        as_system.unwrap_err().code(),
        ErrorCode::ConversationNotFound
    );
    // A conversation with the system as a member takes no notice; bad input is refused.
    let with_system = ConversationId::direct(UserId::SYSTEM, a.id);
    assert!(prepare_system(&with_system, "x", "k", 100, T0).is_err());
    assert_eq!(
        prepare_system(&ab, " ", "k", 100, T0).unwrap_err().code(),
        ErrorCode::EmptyBody
    );
    assert_eq!(
        prepare_system(&ab, "x", "", 100, T0).unwrap_err().code(),
        ErrorCode::InvalidIdempotencyKey
    );
    assert_eq!(store.last_seq(&ab).await.unwrap(), 5);
}

/// Expired sessions are deleted, not just hidden: after a later sign-in and a prune, a session
/// that expired is gone even for a `now` at which it would still be valid; live ones stay.
/// (Memory and embedded delete in `prune`; Redis deletes a user's expired sessions when the
/// user signs in again and lets the whole hash expire after its longest session.)
pub async fn expired_sessions_are_pruned(store: DynStore) {
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let session = |user: &User, hash: &str, at: Timestamp, life: i64| Session {
        user_id: user.id,
        token_hash: hash.into(),
        created_at: at,
        expires_at: at.plus_millis(life),
    };
    let old = session(&a, "old", T0, 1_000);
    let later = T0.plus_millis(5_000);
    let new = session(&a, "new", later, 3_600_000);
    let other = session(&b, "other", T0, 3_600_000);
    for s in [&old, &other, &new] {
        store.create_session(s).await.unwrap();
    }
    let pruned = store.prune(later).await.unwrap();
    assert!(pruned.sessions <= 1, "{pruned:?}");
    assert_eq!(
        store.session(a.id, "old", T0).await.unwrap(),
        None,
        "deleted"
    );
    assert_eq!(store.session(a.id, "new", later).await.unwrap(), Some(new));
    assert_eq!(
        store.session(b.id, "other", later).await.unwrap(),
        Some(other)
    );
    // Pruning again finds nothing more; deleting what was pruned is a no-op.
    assert_eq!(store.prune(later).await.unwrap().sessions, 0);
    assert!(!store.delete_session(a.id, "old").await.unwrap());
    assert_eq!(store.delete_user_sessions(a.id).await.unwrap(), 1);
}

/// Idempotency records deduplicate for the dedupe window (24 h by default): a repeat inside it
/// is a `duplicate`; once the window has passed (and a prune ran) the same key is a new message,
/// while keys recorded inside the window still deduplicate. Times come from `sent_at` and the
/// `now` given to `prune`, so the case does not wait a day.
pub async fn idempotency_window(store: DynStore) {
    const DAY: i64 = 24 * 60 * 60 * 1000;
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    friends(&store, &a, &b).await;
    let conv = ConversationId::direct(a.id, b.id);
    let at = |t: Timestamp, key: &str| NewMessage {
        sent_at: t,
        ..msg(&conv, a.id, "m", key)
    };
    let first = append1(&store, at(T0, "k1")).await.unwrap();
    let repeat = append1(&store, at(T0.plus_millis(DAY - 1), "k1"))
        .await
        .unwrap();
    assert!(
        repeat.duplicate,
        "a repeat inside the window is a duplicate"
    );
    assert_eq!(repeat.message, first.message);
    let recent = append1(&store, at(T0.plus_millis(2 * DAY), "k2"))
        .await
        .unwrap();
    let now = T0.plus_millis(2 * DAY + 1);
    let pruned = store.prune(now).await.unwrap();
    assert!(pruned.idempotency_records <= 1, "{pruned:?}");
    let after = append1(&store, at(now, "k1")).await.unwrap();
    assert!(!after.duplicate, "the window has passed: a new message");
    assert_eq!(after.message.seq, 3);
    let still = append1(&store, at(now, "k2")).await.unwrap();
    assert!(
        still.duplicate,
        "recorded inside the window: still deduplicated"
    );
    assert_eq!(still.message, recent.message);
    // The history is intact: pruning forgets keys, never messages.
    let page = store.history(&conv, q(None, Some(0), 10)).await.unwrap();
    assert_eq!(seqs(&page), vec![1, 2, 3]);
}
