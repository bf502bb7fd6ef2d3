//! The eviction check at connect: a Redis that may evict keys is refused (unless the embedder
//! says otherwise with [`super::RedisOptions::allow_eviction`]).
//!
//! With any `maxmemory-policy` but `noeviction`, Redis deletes keys by itself once it reaches
//! `maxmemory`: history, idempotency records, sessions, relations, all acknowledged data
//! (`volatile-*` takes the keys with an expiry: sessions and idempotency records, so retries
//! would be stored twice). That loss is silent, so the store refuses to start on it; with
//! `noeviction` a full Redis refuses writes instead, which the store reports (see
//! `breaker.rs`).

use super::layout::ScanTarget;
use super::{RedisStore, StoreError, StoreResult, Value, fields, string};

/// The one policy under which Redis never deletes data by itself.
const NO_EVICTION: &str = "noeviction";

impl RedisStore {
    /// Checks every node that holds data (the one node, or every Cluster primary); see the
    /// module docs.
    pub(super) async fn check_eviction(self) -> StoreResult<Self> {
        for target in self.scan_targets().await? {
            let policy = self.eviction_policy(&target).await?;
            if policy != NO_EVICTION && !self.options.allow_eviction {
                return Err(StoreError::Misconfigured(format!(
                    "Redis maxmemory-policy is {policy:?}: Redis would delete stored messages, \
                     sessions and idempotency records by itself when memory runs out; set \
                     `maxmemory-policy noeviction` (a full Redis then refuses writes, which \
                     Zajel reports as unavailable), or set RedisOptions::allow_eviction to \
                     accept the loss"
                )));
            }
        }
        Ok(self)
    }

    /// `CONFIG GET maxmemory-policy`, or `INFO memory`'s `maxmemory_policy` where `CONFIG` is
    /// disabled or renamed (common on managed Redis).
    async fn eviction_policy(&self, target: &ScanTarget) -> StoreResult<String> {
        let mut config = ::redis::cmd("CONFIG");
        config.arg("GET").arg("maxmemory-policy");
        match self.query_on(target, config).await {
            Ok(reply) => {
                if let Some(v) = fields(reply)?.remove("maxmemory-policy") {
                    return string(v);
                }
            }
            Err(e @ StoreError::Unavailable { .. }) => return Err(e),
            Err(_) => {}
        }
        let mut info = ::redis::cmd("INFO");
        info.arg("memory");
        let text = match self.query_on(target, info).await? {
            Value::VerbatimString { text, .. } => text,
            other => string(other)?,
        };
        text.lines()
            .find_map(|l| l.strip_prefix("maxmemory_policy:"))
            .map(|p| p.trim().to_owned())
            .ok_or_else(|| {
                StoreError::Misconfigured(
                    "cannot read Redis's maxmemory-policy (neither CONFIG GET nor INFO memory \
                     tells it), so cannot rule out eviction; set RedisOptions::allow_eviction \
                     to start anyway"
                        .into(),
                )
            })
    }
}
