//! The store conformance suite against the embedded (redb) store, one fresh file per case.
use std::sync::Arc;
use zajel_core::store::conformance::{DynStore, Guard};

zajel_core::store_conformance_tests!(async {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = zajel_core::EmbeddedStore::open(dir.path().join("zajel.redb")).expect("open store");
    (Arc::new(store) as DynStore, Box::new(dir) as Guard)
});

/// The identity-link cases ([`zajel_core::IdentityStore`]) on the same backend.
mod identity {
    use super::*;
    zajel_core::identity_conformance_tests!(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            zajel_core::EmbeddedStore::open(dir.path().join("zajel.redb")).expect("open store");
        (Arc::new(store) as DynStore, Box::new(dir) as Guard)
    });
}
