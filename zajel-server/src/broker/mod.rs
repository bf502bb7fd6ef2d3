//! Delivery across nodes.
//!
//! [`Broker`] and [`LocalBroker`] (single node) live in [`crate::hub`] and are re-exported
//! here; [`redis::RedisBroker`] lets many nodes share one Redis or a Redis Cluster: events
//! cross nodes over Redis pub/sub (sharded on a Cluster) and presence becomes cluster-wide
//! (see `docs/server.md`, "Running several nodes"). Its parts: `redis/mod.rs` (the broker and
//! its configuration), `redis/envelope.rs` (the cross-node wire format), `redis/presence.rs`
//! (cluster-wide presence), `redis/sharded.rs` (the subscription, plain or sharded),
//! `redis/tasks.rs` (publisher, subscriber, heartbeat, dead-node sweep).

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

pub use crate::hub::{Broker, LocalBroker};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{BrokerError, RedisBroker, RedisBrokerConfig};
