//! The storage seam: where a client keeps its resume cursors, its outbox and a small cache of
//! its contact list ([`CachedView`]) so they survive a page reload or an app restart.
//!
//! The driver loads a [`Snapshot`] once at start (before its first connection) and saves a
//! new one after changes, at most one save at a time (later changes coalesce into the next
//! save). Implementations: [`MemoryStorage`] (tests, or sharing state between two clients in
//! one process), [`FileStorage`] (native: one JSON file, replaced atomically), and IndexedDB in
//! the browser (in the `zajel-wasm` bindings). Anything else implements [`Storage`].
//!
//! A snapshot records whose it is: one that belongs to another user is discarded at the first
//! `auth_ok`, so one device shared by two accounts never sends one account's outbox as the
//! other.

use crate::error::Error;
use crate::event::Target;
use crate::view::CachedView;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use zajel_core::{ConversationId, UserId};

/// What a client persists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Whose state this is (unknown until the first connection authenticated).
    #[serde(default)]
    pub user: Option<UserId>,
    /// Per conversation: every message up to this sequence has been delivered.
    #[serde(default)]
    pub cursors: BTreeMap<ConversationId, u64>,
    /// Messages not yet acknowledged (queued, sending, or failed), oldest first.
    #[serde(default)]
    pub outbox: Vec<StoredSend>,
    /// The friends and conversations last seen from the server (bounded), shown by an app that
    /// starts while the server is unreachable.
    #[serde(default, skip_serializing_if = "CachedView::is_empty")]
    pub view: CachedView,
}

/// One outbox entry as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSend {
    /// The idempotency key (re-sent unchanged, so the server stores it once).
    pub key: String,
    /// The conversation or the friend it goes to.
    pub to: Target,
    /// The text.
    pub body: String,
    /// Refused for good (`not_friends`, …): kept for the UI until retried or deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// A future returned by [`Storage`] (`Send` natively, not in the browser).
#[cfg(not(target_arch = "wasm32"))]
pub type StorageFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Error>> + Send + 'static>>;
/// A future returned by [`Storage`] (`Send` natively, not in the browser).
#[cfg(target_arch = "wasm32")]
pub type StorageFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Error>> + 'static>>;

/// Where a client keeps its [`Snapshot`]. Implementations must make a completed `save`
/// durable enough for their platform and must tolerate `load` finding nothing.
#[cfg(not(target_arch = "wasm32"))]
pub trait Storage: Send + Sync + 'static {
    /// The last saved snapshot, or `None`.
    fn load(&self) -> StorageFuture<Option<Snapshot>>;
    /// Replaces the saved snapshot.
    fn save(&self, snapshot: Snapshot) -> StorageFuture<()>;
}

/// Where a client keeps its [`Snapshot`]. Implementations must make a completed `save`
/// durable enough for their platform and must tolerate `load` finding nothing.
#[cfg(target_arch = "wasm32")]
pub trait Storage: 'static {
    /// The last saved snapshot, or `None`.
    fn load(&self) -> StorageFuture<Option<Snapshot>>;
    /// Replaces the saved snapshot.
    fn save(&self, snapshot: Snapshot) -> StorageFuture<()>;
}

/// Keeps the snapshot in memory; clones share it (a test restarts a client on the same one).
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    inner: Arc<Mutex<Option<Snapshot>>>,
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last saved snapshot.
    pub fn snapshot(&self) -> Option<Snapshot> {
        crate::driver::lock(&self.inner).clone()
    }
}

impl Storage for MemoryStorage {
    fn load(&self) -> StorageFuture<Option<Snapshot>> {
        let s = self.snapshot();
        Box::pin(async move { Ok(s) })
    }
    fn save(&self, snapshot: Snapshot) -> StorageFuture<()> {
        *crate::driver::lock(&self.inner) = Some(snapshot);
        Box::pin(async { Ok(()) })
    }
}

/// Keeps the snapshot in one JSON file, written to a temporary file and renamed over the old
/// one so a crash leaves either the old or the new snapshot, never a torn one.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Clone, Debug)]
pub struct FileStorage {
    path: std::path::PathBuf,
}

#[cfg(not(target_arch = "wasm32"))]
impl FileStorage {
    /// Storage in `path` (created on the first save; its directory must exist).
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Storage for FileStorage {
    fn load(&self) -> StorageFuture<Option<Snapshot>> {
        let path = self.path.clone();
        Box::pin(async move {
            let bytes = match tokio::fs::read(&path).await {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::Storage(format!("read {}: {e}", path.display()))),
            };
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Storage(format!("parse {}: {e}", path.display())))
        })
    }

    fn save(&self, snapshot: Snapshot) -> StorageFuture<()> {
        let path = self.path.clone();
        Box::pin(async move {
            let err = |e: std::io::Error| Error::Storage(format!("write {}: {e}", path.display()));
            let json = serde_json::to_vec(&snapshot)
                .map_err(|e| Error::Storage(format!("encode: {e}")))?;
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            let tmp = std::path::PathBuf::from(tmp);
            tokio::fs::write(&tmp, json).await.map_err(err)?;
            tokio::fs::rename(&tmp, &path).await.map_err(err)
        })
    }
}
