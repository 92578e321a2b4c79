use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::storage::{MemStorage, SnapshotStore};

/// Memory storage whose writes fail once `fail` is set (a disk that
/// died); it never blocks, so the store writes it inline.
struct Failing {
    inner: MemStorage,
    fail: Arc<AtomicBool>,
}

impl LogStorage for Failing {
    fn load(&mut self) -> Result<InitialState, StorageError> {
        self.inner.load()
    }
    fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(StorageError::Io("the disk is gone".into()));
        }
        self.inner.write(batch)
    }
    fn purge(&mut self, upto: LogId, membership: &Membership) -> Result<(), StorageError> {
        self.inner.purge(upto, membership)
    }
    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        self.inner.snapshots()
    }
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
    fn blocks(&self) -> bool {
        false
    }
}

/// Whether the waiter was dropped (not durable) within five seconds,
/// rather than fired or left hanging.
async fn dropped(waiter: oneshot::Receiver<()>) -> bool {
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await,
        Ok(Err(_))
    )
}

/// Review finding 6 (2026-12): after a failed write, a copy of an
/// AppendEntries whose entries are already in memory queued nothing, and
/// its durability waiter fired at once: the follower would have
/// acknowledged entries that never reached the disk.
#[actix_rt::test]
async fn nothing_is_acknowledged_after_a_failed_write() {
    let fail = Arc::new(AtomicBool::new(false));
    let storage = Failing {
        inner: MemStorage::new(),
        fail: fail.clone(),
    };
    let (store, _thread, _) = LogStore::start(
        1,
        Box::new(storage),
        Some(Membership::new([1, 2, 3])),
        &crate::Config::default(),
        &IoMode::Threads,
        None,
        Arc::new(Counters::default()),
        false,
        &tracing::Span::none(),
    )
    .expect("the store starts");
    fail.store(true, Ordering::Relaxed);
    let append = |durable| FollowerAppend {
        prev: LogId::new(1, 1),
        entries: vec![Entry {
            log_id: LogId::new(1, 2),
            payload: Payload::Blank,
        }],
        commit_index: 1,
        durable,
    };
    let (durable, stored) = oneshot::channel();
    let matched = store.send(append(durable)).await.expect("the store runs");
    assert!(matches!(matched, Ok(m) if m == LogId::new(1, 2)));
    assert!(dropped(stored).await, "the failed write is not durable");
    let (durable, stored) = oneshot::channel();
    let _ = store.send(append(durable)).await;
    assert!(
        dropped(stored).await,
        "nor is a copy of it, already in memory (nor is it left hanging)"
    );
}
