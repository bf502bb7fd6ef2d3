//! The embedded store on a real full filesystem (a small tmpfs this test mounts): writes fail
//! while the disk is full, health says so, and once space is freed the store writes again
//! without a restart, with every acknowledged message still there and sequences gap-free.
//!
//! Needs root (to mount); otherwise it prints why and passes without checking anything.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use zajel_core::store::embedded::EmbeddedOptions;
use zajel_core::{
    Body, ConversationId, EmbeddedStore, HistoryQuery, IdempotencyKey, MessageStore, NewMessage,
    Store, StoreError, StoreHealth, Timestamp, UserId, UserStore, Username,
};

/// A tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let root = status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
        if !root {
            return Err("not running as root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Writes zeros into `path` until the filesystem refuses (ENOSPC).
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    let mut written = 0u64;
    while f.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    let _ = f.sync_all();
    written
}

fn msg(conv: &ConversationId, sender: UserId, key: String) -> NewMessage {
    NewMessage {
        conversation: conv.clone(),
        sender,
        body: Body::parse("x".repeat(8 * 1024)).unwrap(),
        idempotency_key: IdempotencyKey::parse(&key).unwrap(),
        sent_at: Timestamp::now(),
    }
}

async fn wait_healthy(store: &EmbeddedStore, within: Duration) -> StoreHealth {
    let deadline = Instant::now() + within;
    loop {
        let h = store.health();
        if h.is_ok() || Instant::now() > deadline {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_the_disk_was_full() {
    let fs = match Tmpfs::mount("8m") {
        Ok(fs) => fs,
        Err(why) => {
            println!("SKIPPED recovers_after_the_disk_was_full: {why}");
            return;
        }
    };
    let db: PathBuf = fs.path().join("zajel.redb");
    let store = EmbeddedStore::open_with(&db, EmbeddedOptions::default()).unwrap();
    let t0 = Timestamp::now();
    let a = store
        .create_user(&Username::parse("alice").unwrap(), None, t0)
        .await
        .unwrap();
    let b = store
        .create_user(&Username::parse("bob").unwrap(), None, t0)
        .await
        .unwrap();
    zajel_core::testing::befriend(&store, a.id, b.id).await;
    let conv = ConversationId::direct(a.id, b.id);
    assert!(store.health().is_ok());

    // Take (almost) all the space, then append until the store refuses.
    let ballast = fs.path().join("ballast");
    let written = fill(&ballast);
    // Give back 1 MiB so some appends are acknowledged before the disk is full.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ballast)
        .and_then(|f| f.set_len(written.saturating_sub(1 << 20)))
        .unwrap();
    let mut acked = Vec::new();
    let mut failure = None;
    for i in 0..2_000 {
        match store
            .append(vec![msg(&conv, a.id, format!("k{i}"))])
            .await
            .remove(0)
        {
            Ok(appended) => acked.push(appended.message),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("appends kept succeeding on a full disk");
    println!("{} appends acknowledged, then: {failure}", acked.len());
    assert!(
        matches!(
            failure,
            StoreError::Backend(_) | StoreError::Unavailable { .. }
        ),
        "{failure:?}"
    );
    // The store knows it cannot write, and says so cheaply; and it keeps saying so while the
    // disk stays full, past several recovery attempts (a failed commit frees pages inside the
    // file, so a tiny probe commit succeeds there: health must not flap back to `Ok` on it).
    let health = store.health();
    assert!(
        matches!(health, StoreHealth::Unavailable { .. }),
        "{health:?}"
    );
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let health = store.health();
        assert!(
            matches!(health, StoreHealth::Unavailable { .. }),
            "health flapped back while the disk is full: {health:?}"
        );
    }
    // While the disk stays full, writes keep failing, fast and typed. (A batch of 64, half a
    // MiB in one transaction: more than the pages a failed commit leaves free inside the file,
    // which redb reuses, so "full" does not depend on the file's slack.)
    let started = Instant::now();
    let again = store
        .append(
            (0..64)
                .map(|j| msg(&conv, a.id, format!("while-full-{j}")))
                .collect(),
        )
        .await
        .remove(0);
    assert!(
        matches!(
            again,
            Err(StoreError::Unavailable { .. }) | Err(StoreError::Backend(_))
        ),
        "{again:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let health = store.health();
    assert!(
        matches!(health, StoreHealth::Unavailable { .. }),
        "{health:?}"
    );
    println!("while full: {again:?} / {health:?}");

    // Free the space: the store recovers by itself, no restart.
    std::fs::remove_file(&ballast).unwrap();
    let health = wait_healthy(&store, Duration::from_secs(15)).await;
    println!("health after freeing space: {health:?}");
    assert!(health.is_ok(), "{health:?}");
    let next = store
        .append(vec![msg(&conv, b.id, "after".into())])
        .await
        .remove(0)
        .expect("append after space was freed");

    // Nothing acknowledged was lost, and the sequence has no gap: every acked message is at
    // its seq, the failed ones were not stored, the new one follows directly.
    let mut stored = Vec::new();
    loop {
        let page = store
            .history(
                &conv,
                HistoryQuery {
                    before: None,
                    after: Some(stored.len() as u64),
                    limit: 200,
                },
            )
            .await
            .unwrap();
        stored.extend(page.messages);
        if !page.has_more {
            break;
        }
    }
    let ids: Vec<_> = stored.iter().map(|m| m.id).collect();
    let mut expected: Vec<_> = acked.iter().map(|m| m.id).collect();
    expected.push(next.message.id);
    assert_eq!(ids, expected);
    let last = store.last_seq(&conv).await.unwrap();
    assert_eq!(last, acked.len() as u64 + 1);

    // And the file is sound for the next process.
    drop(store);
    let reopened = EmbeddedStore::open(&db).unwrap();
    assert_eq!(reopened.last_seq(&conv).await.unwrap(), last);
    assert!(reopened.health().is_ok());
}
