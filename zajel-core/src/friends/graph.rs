//! Applies the friend rules over a store with compare-and-swap, and says who must be told what.

use super::rules::{Edge, FriendError, FriendOp, FriendReason, UserPair, target_reason};
use crate::ids::{Timestamp, UserId};
use crate::limits::Username;
use crate::model::{Relation, User};
use crate::store::{FriendStore, UserStore};
use serde::{Deserialize, Serialize};

/// How often a swap is retried when another writer changed the edge in between. Each retry
/// re-reads the edge and re-applies the rules, so the answer reflects the newest state.
const MAX_SWAP_ATTEMPTS: usize = 8;

/// A change of one user's view of another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FriendUpdate {
    /// The user whose relation changed (the peer, from the notified user's view).
    pub user: User,
    /// The relation now.
    pub relation: Relation,
    /// What happened, in the notified user's words.
    pub reason: FriendReason,
    /// When.
    pub at: Timestamp,
}

/// The outcome of a successful operation: what the actor's devices and the target's devices
/// must be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FriendChange {
    /// The actor.
    pub actor: User,
    /// The target.
    pub target: User,
    /// The actor's new view of the target (sent to all the actor's devices).
    pub for_actor: FriendUpdate,
    /// The target's new view of the actor, if it changed (a block is never revealed).
    pub for_target: Option<FriendUpdate>,
}

/// The friend system over a store.
///
/// ```
/// # tokio_test_block_on(async {
/// use zajel_core::{FriendGraph, MemoryStore, Relation, Timestamp, UserStore, Username};
/// let store = MemoryStore::new();
/// let alice = store.create_user(&Username::parse("alice").unwrap(), None, Timestamp(0)).await.unwrap();
/// let bob = store.create_user(&Username::parse("bob").unwrap(), None, Timestamp(0)).await.unwrap();
/// let graph = FriendGraph::new(&store);
/// graph.request(alice.id, &Username::parse("Bob").unwrap(), Timestamp(1)).await.unwrap();
/// let change = graph.apply(bob.id, alice.id, zajel_core::FriendOp::Accept, Timestamp(2)).await.unwrap();
/// assert_eq!(change.for_actor.relation, Relation::Friends);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub struct FriendGraph<'a, S: ?Sized> {
    store: &'a S,
}

impl<'a, S: UserStore + FriendStore + ?Sized> FriendGraph<'a, S> {
    /// The graph over `store`.
    pub fn new(store: &'a S) -> Self {
        Self { store }
    }

    /// Sends a friend request to the user called `username`.
    pub async fn request(
        &self,
        actor: UserId,
        username: &Username,
        at: Timestamp,
    ) -> Result<FriendChange, FriendError> {
        let target = self
            .store
            .user_by_username(username)
            .await?
            .ok_or(FriendError::UserNotFound)?;
        self.apply(actor, target.id, FriendOp::Request, at).await
    }

    /// Applies `op` by `actor` on `target`.
    pub async fn apply(
        &self,
        actor: UserId,
        target: UserId,
        op: FriendOp,
        at: Timestamp,
    ) -> Result<FriendChange, FriendError> {
        let pair = UserPair::new(actor, target).ok_or(match op {
            FriendOp::Request | FriendOp::Accept | FriendOp::Decline | FriendOp::Cancel => {
                FriendError::CannotBefriendSelf
            }
            FriendOp::Remove => FriendError::NotFriends,
            FriendOp::Block => FriendError::CannotBefriendSelf,
            FriendOp::Unblock => FriendError::NotBlocked,
        })?;
        let actor_user = self
            .store
            .user(actor)
            .await?
            .ok_or(FriendError::UserNotFound)?;
        let target_user = self
            .store
            .user(target)
            .await?
            .ok_or(FriendError::UserNotFound)?;
        let actor_is_lo = pair.lo == actor;
        for _ in 0..MAX_SWAP_ATTEMPTS {
            let before = self.store.edge(pair).await?;
            let (after, reason) = before.apply(actor_is_lo, op, at)?;
            if self.store.swap_edge(pair, before, after).await? {
                return Ok(change(
                    actor_user,
                    target_user,
                    actor_is_lo,
                    before,
                    after,
                    reason,
                    at,
                ));
            }
        }
        Err(FriendError::Store(crate::store::StoreError::Backend(
            "friend edge kept changing; try again".into(),
        )))
    }

    /// How `a` sees `b`.
    pub async fn relation(&self, a: UserId, b: UserId) -> Result<Relation, FriendError> {
        let Some(pair) = UserPair::new(a, b) else {
            return Ok(Relation::None);
        };
        Ok(self.store.edge(pair).await?.relation(pair.lo == a))
    }

    /// Whether `a` and `b` are friends (and neither blocks the other): the messaging rule.
    pub async fn are_friends(&self, a: UserId, b: UserId) -> Result<bool, FriendError> {
        let Some(pair) = UserPair::new(a, b) else {
            return Ok(false);
        };
        Ok(self.store.edge(pair).await?.are_friends())
    }
}

fn change(
    actor: User,
    target: User,
    actor_is_lo: bool,
    before: Edge,
    after: Edge,
    reason: FriendReason,
    at: Timestamp,
) -> FriendChange {
    let for_actor = FriendUpdate {
        user: target.clone(),
        relation: after.relation(actor_is_lo),
        reason,
        at,
    };
    let target_before = before.relation(!actor_is_lo);
    let target_after = after.relation(!actor_is_lo);
    let for_target =
        target_reason(reason, target_before, target_after).map(|reason| FriendUpdate {
            user: actor.clone(),
            relation: target_after,
            reason,
            at,
        });
    FriendChange {
        actor,
        target,
        for_actor,
        for_target,
    }
}
