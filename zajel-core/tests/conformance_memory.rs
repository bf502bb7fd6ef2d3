//! The store conformance suite against the in-memory store.
use std::sync::Arc;
use zajel_core::store::conformance::{DynStore, Guard};

zajel_core::store_conformance_tests!(async {
    (
        Arc::new(zajel_core::MemoryStore::new()) as DynStore,
        Box::new(()) as Guard,
    )
});

/// The identity-link cases ([`zajel_core::IdentityStore`]) on the same backend.
mod identity {
    use super::*;
    zajel_core::identity_conformance_tests!(async {
        (
            Arc::new(zajel_core::MemoryStore::new()) as DynStore,
            Box::new(()) as Guard,
        )
    });
}
