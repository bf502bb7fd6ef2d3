//! The store conformance suite against the Redis store, each case on its own redis-server.
use std::sync::Arc;
use zajel_core::RedisStore;
use zajel_core::store::conformance::{DynStore, Guard};
use zajel_core::testing::RedisServer;

zajel_core::store_conformance_tests!(async {
    let server = RedisServer::start().expect("start redis-server");
    let store = RedisStore::connect(&server.url())
        .await
        .expect("connect to redis");
    (Arc::new(store) as DynStore, Box::new(server) as Guard)
});

/// The identity-link cases ([`zajel_core::IdentityStore`]) on the same backend.
mod identity {
    use super::*;
    zajel_core::identity_conformance_tests!(async {
        let server = RedisServer::start().expect("start redis-server");
        let store = RedisStore::connect(&server.url())
            .await
            .expect("connect to redis");
        (Arc::new(store) as DynStore, Box::new(server) as Guard)
    });
}
