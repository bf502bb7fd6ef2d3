//! Connection caps: overall, per client address (checked at the upgrade) and per user
//! (checked at `auth`). Defaults and reasons are in `docs/server.md`, "Connection caps".

use crate::engine::Engine;
use crate::error::EngineError;
use std::net::IpAddr;
use std::time::Duration;
use zajel_core::ErrorCode;

/// Holds one of an address's connection slots until dropped.
pub(crate) struct AddressSlot {
    engine: Engine,
    addr: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self
            .engine
            .inner
            .conns_by_address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.addr);
            }
        }
    }
}

/// Admits one more connection (from `addr`, when known), or says why not: 503 `unavailable`
/// when the node is full, 429 `rate_limited` when the address holds its maximum.
pub(crate) fn admit(
    engine: &Engine,
    addr: Option<IpAddr>,
) -> Result<Option<AddressSlot>, EngineError> {
    let cfg = engine.config();
    if engine.connection_count() >= cfg.max_connections as usize {
        return Err(EngineError::new(
            ErrorCode::Unavailable,
            "this node holds its maximum of connections; try another or later",
        )
        .retry_after(Duration::from_secs(5)));
    }
    let Some(addr) = addr else { return Ok(None) };
    let mut map = engine
        .inner
        .conns_by_address
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let n = map.entry(addr).or_insert(0);
    if *n >= cfg.max_connections_per_address {
        return Err(EngineError::new(
            ErrorCode::RateLimited,
            "too many connections from this address",
        )
        .retry_after(Duration::from_secs(5)));
    }
    *n += 1;
    Ok(Some(AddressSlot {
        engine: engine.clone(),
        addr,
    }))
}
