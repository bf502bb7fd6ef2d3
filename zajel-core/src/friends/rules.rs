//! The friend-graph state machine: pure functions over one pair's [`Edge`].
//!
//! A pair of users has exactly one edge, keyed by the ordered pair (lower id, higher id). The
//! edge holds the link (nothing, a pending request in one direction, friendship) and one block
//! flag per side. Every operation is a function from the old edge to a new edge or an error;
//! stores apply the result with compare-and-swap, so racing operations cannot both win.
//!
//! Defined answers for the edge cases:
//!
//! | situation | answer |
//! |---|---|
//! | request to self | `cannot_befriend_self` |
//! | request to unknown user | `user_not_found` |
//! | duplicate request (mine pending) | `already_requested`, nothing changes |
//! | crossed request (theirs pending) | accepted: we become friends |
//! | request while friends | `already_friends` |
//! | request to a user I block | `blocked` (my own block: it reveals nothing to them) |
//! | request to a user who blocks me | accepted like any request: I see `request_sent`, they see nothing (no event, their view stays `blocked`) |
//! | accept/decline with no request from them | `no_pending_request` (e.g. it was cancelled) |
//! | accept/decline while I block them | `no_pending_request`: a hidden request is invisible to the blocker |
//! | cancel with no request of mine | `no_pending_request` |
//! | remove a non-friend | `not_friends` |
//! | block | clears friendship and requests; the blocked side sees "removed"/"declined"/"cancelled", never "blocked" |
//! | block twice / unblock without block | `already_blocked` / `not_blocked` |
//! | unblock while their hidden request is pending | the request appears: I see `request_received` (their view is unchanged) |
//!
//! A block is never revealed to the blocked user, through any channel the edge feeds: the
//! answers to their operations, the events they get, and the `since` of their relation entry
//! (each side has its own, moved only when that side's view changes, so the other side's block,
//! unblock or hidden request does not touch it).
use crate::error::{ErrorCode, HasErrorCode};
use crate::ids::{Timestamp, UserId};
use crate::model::Relation;
use serde::{Deserialize, Serialize};

/// The link part of an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// Nothing.
    #[default]
    None,
    /// The lower id asked the higher id.
    RequestedByLo,
    /// The higher id asked the lower id.
    RequestedByHi,
    /// Friends.
    Friends,
}

/// The stored state of one pair. `Edge::default()` is "never met".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Edge {
    /// Request/friendship state.
    pub link: Link,
    /// The lower id blocks the higher id.
    pub lo_blocks: bool,
    /// The higher id blocks the lower id.
    pub hi_blocks: bool,
    /// When the edge last changed.
    pub since: Timestamp,
    /// When the lower id's view last changed (`None` in edges stored before it existed:
    /// then `since`). See [`Edge::since_for`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lo_since: Option<Timestamp>,
    /// When the higher id's view last changed (`None`: `since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hi_since: Option<Timestamp>,
}

/// An ordered pair of distinct users: the key of an [`Edge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserPair {
    /// Lower id.
    pub lo: UserId,
    /// Higher id.
    pub hi: UserId,
}

impl UserPair {
    /// The pair of `a` and `b`, or `None` when they are the same user.
    pub fn new(a: UserId, b: UserId) -> Option<Self> {
        match a.cmp(&b) {
            std::cmp::Ordering::Less => Some(Self { lo: a, hi: b }),
            std::cmp::Ordering::Greater => Some(Self { lo: b, hi: a }),
            std::cmp::Ordering::Equal => None,
        }
    }

    /// The other member.
    pub fn other(&self, me: UserId) -> UserId {
        if me == self.lo { self.hi } else { self.lo }
    }
}

/// A friend-graph operation by an actor on a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FriendOp {
    /// Ask to be friends.
    Request,
    /// Accept their request.
    Accept,
    /// Decline their request.
    Decline,
    /// Withdraw my request.
    Cancel,
    /// End the friendship.
    Remove,
    /// Block them (ends friendship and requests).
    Block,
    /// Lift my block.
    Unblock,
}

/// Why a relation changed, as the notified user should hear it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FriendReason {
    /// A request was sent (to me, or by me from another device).
    Requested,
    /// A request was accepted (crossed requests count as accepted).
    Accepted,
    /// A request was declined.
    Declined,
    /// A request was withdrawn.
    Cancelled,
    /// A friendship ended.
    Removed,
    /// I blocked them.
    Blocked,
    /// I unblocked them.
    Unblocked,
}

/// Why an operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum FriendError {
    /// See [`ErrorCode::CannotBefriendSelf`].
    #[error("you cannot befriend yourself")]
    CannotBefriendSelf,
    /// See [`ErrorCode::UserNotFound`].
    #[error("no such user")]
    UserNotFound,
    /// See [`ErrorCode::AlreadyFriends`].
    #[error("you are already friends")]
    AlreadyFriends,
    /// See [`ErrorCode::AlreadyRequested`].
    #[error("your friend request is already pending")]
    AlreadyRequested,
    /// See [`ErrorCode::NoPendingRequest`].
    #[error("there is no pending friend request")]
    NoPendingRequest,
    /// See [`ErrorCode::NotFriends`].
    #[error("you are not friends")]
    NotFriends,
    /// See [`ErrorCode::Blocked`].
    #[error("this is not possible with this user")]
    Blocked,
    /// See [`ErrorCode::AlreadyBlocked`].
    #[error("you already block this user")]
    AlreadyBlocked,
    /// See [`ErrorCode::NotBlocked`].
    #[error("you do not block this user")]
    NotBlocked,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl HasErrorCode for FriendError {
    fn code(&self) -> ErrorCode {
        match self {
            FriendError::CannotBefriendSelf => ErrorCode::CannotBefriendSelf,
            FriendError::UserNotFound => ErrorCode::UserNotFound,
            FriendError::AlreadyFriends => ErrorCode::AlreadyFriends,
            FriendError::AlreadyRequested => ErrorCode::AlreadyRequested,
            FriendError::NoPendingRequest => ErrorCode::NoPendingRequest,
            FriendError::NotFriends => ErrorCode::NotFriends,
            FriendError::Blocked => ErrorCode::Blocked,
            FriendError::AlreadyBlocked => ErrorCode::AlreadyBlocked,
            FriendError::NotBlocked => ErrorCode::NotBlocked,
            FriendError::Store(e) => e.code(),
        }
    }
}

impl Edge {
    /// How the user on the `lo` side (`me_is_lo`) or the `hi` side sees this edge.
    pub fn relation(&self, me_is_lo: bool) -> Relation {
        let (i_block, mine, theirs) = if me_is_lo {
            (self.lo_blocks, Link::RequestedByLo, Link::RequestedByHi)
        } else {
            (self.hi_blocks, Link::RequestedByHi, Link::RequestedByLo)
        };
        if i_block {
            return Relation::Blocked;
        }
        match self.link {
            Link::Friends => Relation::Friends,
            l if l == mine => Relation::RequestSent,
            l if l == theirs => Relation::RequestReceived,
            _ => Relation::None,
        }
    }

    /// Since when the user on side `me_is_lo` sees [`Edge::relation`]: the `since` of that
    /// user's relation entry. Per side, so a change the other side cannot see (a block, an
    /// unblock, a request hidden by a block) does not move it.
    pub fn since_for(&self, me_is_lo: bool) -> Timestamp {
        let side = if me_is_lo {
            self.lo_since
        } else {
            self.hi_since
        };
        side.unwrap_or(self.since)
    }

    /// Whether the two may message each other.
    pub fn are_friends(&self) -> bool {
        self.link == Link::Friends && !self.lo_blocks && !self.hi_blocks
    }

    /// Applies `op` by the actor on side `actor_is_lo`, returning the new edge and the reason
    /// each side's view changed. Pure: the caller persists with compare-and-swap.
    pub fn apply(
        &self,
        actor_is_lo: bool,
        op: FriendOp,
        at: Timestamp,
    ) -> Result<(Edge, FriendReason), FriendError> {
        let (mut next, reason) = self.apply_link(actor_is_lo, op, at)?;
        for side in [true, false] {
            let since = if next.relation(side) == self.relation(side) {
                self.since_for(side)
            } else {
                at
            };
            match side {
                true => next.lo_since = Some(since),
                false => next.hi_since = Some(since),
            }
        }
        Ok((next, reason))
    }

    /// The rules proper: the new link and block flags (`since` stamped, the per-side times
    /// left to [`Edge::apply`]).
    fn apply_link(
        &self,
        actor_is_lo: bool,
        op: FriendOp,
        at: Timestamp,
    ) -> Result<(Edge, FriendReason), FriendError> {
        let (i_block, they_block) = if actor_is_lo {
            (self.lo_blocks, self.hi_blocks)
        } else {
            (self.hi_blocks, self.lo_blocks)
        };
        let (mine, theirs) = if actor_is_lo {
            (Link::RequestedByLo, Link::RequestedByHi)
        } else {
            (Link::RequestedByHi, Link::RequestedByLo)
        };
        let mut next = *self;
        next.since = at;
        let reason = match op {
            FriendOp::Request => {
                if i_block {
                    return Err(FriendError::Blocked);
                }
                if they_block {
                    // Looks like any request to the requester; the blocker's view stays
                    // `blocked` (so no event) until they unblock. A block clears the link, so
                    // only "nothing" or "mine already pending" can be found here.
                    if self.link == mine {
                        return Err(FriendError::AlreadyRequested);
                    }
                    next.link = mine;
                    return Ok((next, FriendReason::Requested));
                }
                match self.link {
                    Link::Friends => return Err(FriendError::AlreadyFriends),
                    l if l == mine => return Err(FriendError::AlreadyRequested),
                    l if l == theirs => {
                        next.link = Link::Friends;
                        FriendReason::Accepted
                    }
                    _ => {
                        next.link = mine;
                        FriendReason::Requested
                    }
                }
            }
            FriendOp::Accept | FriendOp::Decline => {
                if i_block {
                    // A request that arrived while I block them is not shown to me.
                    return Err(FriendError::NoPendingRequest);
                }
                if self.link == Link::Friends && op == FriendOp::Accept {
                    return Err(FriendError::AlreadyFriends);
                }
                if self.link != theirs {
                    return Err(FriendError::NoPendingRequest);
                }
                if op == FriendOp::Accept {
                    next.link = Link::Friends;
                    FriendReason::Accepted
                } else {
                    next.link = Link::None;
                    FriendReason::Declined
                }
            }
            FriendOp::Cancel => {
                if self.link != mine {
                    return Err(FriendError::NoPendingRequest);
                }
                next.link = Link::None;
                FriendReason::Cancelled
            }
            FriendOp::Remove => {
                if self.link != Link::Friends {
                    return Err(FriendError::NotFriends);
                }
                next.link = Link::None;
                FriendReason::Removed
            }
            FriendOp::Block => {
                if i_block {
                    return Err(FriendError::AlreadyBlocked);
                }
                next.link = Link::None;
                if actor_is_lo {
                    next.lo_blocks = true;
                } else {
                    next.hi_blocks = true;
                }
                FriendReason::Blocked
            }
            FriendOp::Unblock => {
                if !i_block {
                    return Err(FriendError::NotBlocked);
                }
                if actor_is_lo {
                    next.lo_blocks = false;
                } else {
                    next.hi_blocks = false;
                }
                FriendReason::Unblocked
            }
        };
        Ok((next, reason))
    }
}

/// What the *target* of an operation is told, given its view before and after.
/// A block is never revealed: the target hears the ordinary word for what it lost.
pub fn target_reason(
    reason: FriendReason,
    before: Relation,
    after: Relation,
) -> Option<FriendReason> {
    if before == after {
        return None;
    }
    Some(match reason {
        FriendReason::Blocked => match before {
            Relation::Friends => FriendReason::Removed,
            Relation::RequestSent => FriendReason::Declined,
            Relation::RequestReceived => FriendReason::Cancelled,
            _ => return None,
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    const T: Timestamp = Timestamp(1);

    fn run(edge: Edge, lo: bool, op: FriendOp) -> Result<Edge, ErrorCode> {
        edge.apply(lo, op, T).map(|(e, _)| e).map_err(|e| e.code())
    }

    #[test]
    fn request_then_accept() {
        let e = run(Edge::default(), true, FriendOp::Request).unwrap();
        assert_eq!(e.relation(true), Relation::RequestSent);
        assert_eq!(e.relation(false), Relation::RequestReceived);
        assert_eq!(
            run(e, true, FriendOp::Accept),
            Err(ErrorCode::NoPendingRequest)
        );
        let f = run(e, false, FriendOp::Accept).unwrap();
        assert!(f.are_friends());
        assert_eq!(
            run(f, false, FriendOp::Accept),
            Err(ErrorCode::AlreadyFriends)
        );
        assert_eq!(
            run(f, true, FriendOp::Request),
            Err(ErrorCode::AlreadyFriends)
        );
    }

    #[test]
    fn duplicate_and_crossed_requests() {
        let e = run(Edge::default(), true, FriendOp::Request).unwrap();
        assert_eq!(
            run(e, true, FriendOp::Request),
            Err(ErrorCode::AlreadyRequested)
        );
        let (f, reason) = e.apply(false, FriendOp::Request, T).unwrap();
        assert_eq!(f.link, Link::Friends);
        assert_eq!(reason, FriendReason::Accepted);
    }

    #[test]
    fn cancel_decline_remove() {
        let e = run(Edge::default(), true, FriendOp::Request).unwrap();
        let c = run(e, true, FriendOp::Cancel).unwrap();
        assert_eq!(c.relation(false), Relation::None);
        assert_eq!(
            run(c, false, FriendOp::Accept),
            Err(ErrorCode::NoPendingRequest)
        );
        assert_eq!(
            run(e, false, FriendOp::Cancel),
            Err(ErrorCode::NoPendingRequest)
        );
        let d = run(e, false, FriendOp::Decline).unwrap();
        assert_eq!(d.link, Link::None);
        assert_eq!(run(d, true, FriendOp::Remove), Err(ErrorCode::NotFriends));
        let f = run(e, false, FriendOp::Accept).unwrap();
        assert_eq!(run(f, true, FriendOp::Remove).unwrap().link, Link::None);
    }

    #[test]
    fn blocks_hide_and_forbid() {
        let f = run(
            run(Edge::default(), true, FriendOp::Request).unwrap(),
            false,
            FriendOp::Accept,
        )
        .unwrap();
        let b = run(f, false, FriendOp::Block).unwrap();
        assert_eq!(b.relation(false), Relation::Blocked);
        assert_eq!(b.relation(true), Relation::None);
        assert!(!b.are_friends());
        assert_eq!(run(b, false, FriendOp::Request), Err(ErrorCode::Blocked));
        assert_eq!(
            run(b, false, FriendOp::Block),
            Err(ErrorCode::AlreadyBlocked)
        );
        assert_eq!(run(b, true, FriendOp::Unblock), Err(ErrorCode::NotBlocked));
        // Both may block; one unblock leaves the other's block in force.
        let bb = run(b, true, FriendOp::Block).unwrap();
        let u = run(bb, false, FriendOp::Unblock).unwrap();
        assert_eq!(u.relation(true), Relation::Blocked);
        assert_eq!(u.relation(false), Relation::None);
        assert_eq!(run(u, true, FriendOp::Request), Err(ErrorCode::Blocked));
        let free = run(u, true, FriendOp::Unblock).unwrap();
        assert_eq!(
            (free.link, free.lo_blocks, free.hi_blocks),
            (Link::None, false, false)
        );
    }

    #[test]
    fn a_request_to_a_blocker_looks_ordinary_and_stays_hidden() {
        let t = |ms| Timestamp(ms);
        // hi blocks lo at t=10.
        let (b, _) = Edge::default()
            .apply(false, FriendOp::Block, t(10))
            .unwrap();
        // lo asks at t=20: the ordinary answer, and nothing changes in hi's view.
        let (h, reason) = b.apply(true, FriendOp::Request, t(20)).unwrap();
        assert_eq!(reason, FriendReason::Requested);
        assert_eq!(h.relation(true), Relation::RequestSent);
        assert_eq!((h.since_for(true), h.since_for(false)), (t(20), t(10)));
        assert_eq!(h.relation(false), Relation::Blocked);
        assert_eq!(
            target_reason(reason, b.relation(false), h.relation(false)),
            None
        );
        // The same answers as to an ordinary pending request, on lo's side.
        let plain = run(Edge::default(), true, FriendOp::Request).unwrap();
        for op in [
            FriendOp::Request,
            FriendOp::Remove,
            FriendOp::Accept,
            FriendOp::Unblock,
        ] {
            assert_eq!(
                run(h, true, op).map(|_| ()),
                run(plain, true, op).map(|_| ()),
                "{op:?}"
            );
        }
        // hi cannot see or answer it while blocking.
        assert_eq!(
            run(h, false, FriendOp::Accept),
            Err(ErrorCode::NoPendingRequest)
        );
        assert_eq!(
            run(h, false, FriendOp::Decline),
            Err(ErrorCode::NoPendingRequest)
        );
        assert_eq!(run(h, false, FriendOp::Request), Err(ErrorCode::Blocked));
        // lo may withdraw it; hi hears nothing.
        let (c, reason) = h.apply(true, FriendOp::Cancel, t(30)).unwrap();
        assert_eq!(
            target_reason(reason, h.relation(false), c.relation(false)),
            None
        );
        assert_eq!(c.since_for(false), t(10));
        // Unblocking shows the pending request to hi; lo's view (and its time) stay.
        let (u, reason) = h.apply(false, FriendOp::Unblock, t(40)).unwrap();
        assert_eq!(u.relation(false), Relation::RequestReceived);
        assert_eq!(
            (u.relation(true), u.since_for(true)),
            (Relation::RequestSent, t(20))
        );
        assert_eq!(
            target_reason(reason, h.relation(true), u.relation(true)),
            None
        );
        assert!(run(u, false, FriendOp::Accept).unwrap().are_friends());
    }

    #[test]
    fn the_blocked_side_time_never_moves_with_a_block() {
        let t = |ms| Timestamp(ms);
        let (f, _) = Edge::default()
            .apply(true, FriendOp::Request, t(1))
            .unwrap();
        let (f, _) = f.apply(false, FriendOp::Accept, t(2)).unwrap();
        // lo removes at 3 (hi's view changes: time moves), hi blocks at 4, unblocks at 5:
        // lo's view stays `none` since 3.
        let (r, _) = f.apply(true, FriendOp::Remove, t(3)).unwrap();
        let (b, _) = r.apply(false, FriendOp::Block, t(4)).unwrap();
        let (u, _) = b.apply(false, FriendOp::Unblock, t(5)).unwrap();
        assert_eq!(
            (r.since_for(true), b.since_for(true), u.since_for(true)),
            (t(3), t(3), t(3))
        );
        // A blocker's entry keeps its time when the other side blocks back.
        let (bb, _) = b.apply(true, FriendOp::Block, t(6)).unwrap();
        assert_eq!((bb.since_for(false), bb.since_for(true)), (t(4), t(6)));
        // Edges stored before the per-side times existed read as `since`.
        let old: Edge = serde_json::from_str(
            r#"{"link":"friends","lo_blocks":false,"hi_blocks":false,"since":7}"#,
        )
        .unwrap();
        assert_eq!((old.since_for(true), old.since_for(false)), (t(7), t(7)));
    }

    #[test]
    fn target_never_hears_blocked() {
        assert_eq!(
            target_reason(FriendReason::Blocked, Relation::Friends, Relation::None),
            Some(FriendReason::Removed)
        );
        assert_eq!(
            target_reason(FriendReason::Blocked, Relation::RequestSent, Relation::None),
            Some(FriendReason::Declined)
        );
        assert_eq!(
            target_reason(FriendReason::Blocked, Relation::None, Relation::None),
            None
        );
        assert_eq!(
            target_reason(FriendReason::Unblocked, Relation::None, Relation::None),
            None
        );
    }
}
