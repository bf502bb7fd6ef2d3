//! The store conformance suite against a Redis Cluster: three primaries on loopback ports,
//! started per case (`zajel_core::testing::RedisCluster`), reached through a seed list.
use std::sync::Arc;
use zajel_core::RedisStore;
use zajel_core::store::conformance::{DynStore, Guard};
use zajel_core::store::redis::RedisOptions;
use zajel_core::testing::RedisCluster;

zajel_core::store_conformance_tests!(async {
    let cluster = RedisCluster::start(3, 0).expect("start a Redis Cluster");
    let store = RedisStore::connect_cluster(&cluster.urls(), RedisOptions::default())
        .await
        .expect("connect to the cluster");
    (Arc::new(store) as DynStore, Box::new(cluster) as Guard)
});

/// The identity-link and ticket cases ([`zajel_core::IdentityStore`]) on the same Cluster.
mod identity {
    use super::*;
    zajel_core::identity_conformance_tests!(async {
        let cluster = RedisCluster::start(3, 0).expect("start a Redis Cluster");
        let store = RedisStore::connect_cluster(&cluster.urls(), RedisOptions::default())
            .await
            .expect("connect to the cluster");
        (Arc::new(store) as DynStore, Box::new(cluster) as Guard)
    });
}
