//! The relay's durable log: appends to one redb file with group commit.
//!
//! One writer thread takes every append queued since its last commit, writes them in one
//! write transaction and commits once (`Durability::Immediate`: one fsync), then answers each
//! caller. Concurrent senders therefore share fsyncs instead of queueing behind them: the
//! behaviour the issue asks of the embedded store, in its barest form.

use redb::{Database, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// `(conversation, seq)` → the message as stored JSON.
const LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("log");

/// Upper bound on appends per commit, so one commit's latency stays bounded.
pub const MAX_BATCH: usize = 1024;

struct Job {
    conversation: String,
    payload: Vec<u8>,
    done: oneshot::Sender<Result<u64, String>>,
}

/// Handle to the writer thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct RedbLog {
    jobs: mpsc::Sender<Job>,
}

impl RedbLog {
    /// Creates (or opens) the file and starts the writer thread.
    pub fn open(path: &Path) -> Result<Self, redb::Error> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.commit()?;
        let (jobs, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("relay-redb-writer".into())
            .spawn(move || writer(db, rx))
            .map_err(redb::Error::Io)?;
        Ok(Self { jobs })
    }

    /// Appends `payload` to `conversation`; resolves with its seq once committed to disk.
    pub async fn append(&self, conversation: &str, payload: Vec<u8>) -> Result<u64, String> {
        let (done, rx) = oneshot::channel();
        self.jobs
            .send(Job {
                conversation: conversation.to_owned(),
                payload,
                done,
            })
            .map_err(|_| "writer thread gone".to_owned())?;
        rx.await.map_err(|_| "writer thread gone".to_owned())?
    }
}

fn writer(db: Database, rx: mpsc::Receiver<Job>) {
    let mut seqs: HashMap<String, u64> = HashMap::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut assigned = Vec::with_capacity(batch.len());
        let result = (|| -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(LOG)?;
                for job in &batch {
                    let seq = seqs.get(&job.conversation).copied().unwrap_or(0) + 1;
                    table.insert((job.conversation.as_str(), seq), job.payload.as_slice())?;
                    assigned.push(seq);
                    seqs.insert(job.conversation.clone(), seq);
                }
            }
            txn.commit()?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                for (job, seq) in batch.into_iter().zip(assigned) {
                    let _ = job.done.send(Ok(seq));
                }
            }
            Err(e) => {
                // Nothing of the batch is on disk: forget the seqs handed out in it.
                for job in &batch {
                    if let Some(s) = seqs.get_mut(&job.conversation) {
                        *s = s.saturating_sub(1);
                    }
                }
                for job in batch {
                    let _ = job.done.send(Err(e.to_string()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, ReadableTableMetadata};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_get_consecutive_seqs_and_persist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.redb");
        {
            let log = RedbLog::open(&path).expect("open");
            let mut tasks = Vec::new();
            for i in 0..50u32 {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    log.append("c", format!("m{i}").into_bytes()).await
                }));
            }
            let mut seqs = Vec::new();
            for t in tasks {
                seqs.push(t.await.expect("join").expect("append"));
            }
            seqs.sort_unstable();
            assert_eq!(seqs, (1..=50).collect::<Vec<u64>>());
        }
        // The writer thread closes the file once the handles are gone.
        let mut reopened = Database::open(&path);
        for _ in 0..500 {
            if reopened.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            reopened = Database::open(&path);
        }
        let db = reopened.expect("the writer thread closes the file");
        let txn = db.begin_read().expect("read");
        let table = txn.open_table(LOG).expect("table");
        assert_eq!(table.len().expect("len"), 50);
    }
}
