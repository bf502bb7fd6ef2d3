//! The friend system: the pure rules ([`rules`]) and the graph that applies them over a store
//! ([`graph`]).

pub mod graph;
pub mod rules;

pub use graph::{FriendChange, FriendGraph, FriendUpdate};
pub use rules::{Edge, FriendError, FriendOp, FriendReason, Link, UserPair, target_reason};
