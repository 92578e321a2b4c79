//! An in-memory [`LogStorage`]: fast, and shared so that a test harness can
//! "crash" a node and restart it on the same state.

use std::sync::{Arc, Mutex};

use super::snapshot::{MemSnapshotStore, SnapshotStore};
use super::{InitialState, LogStorage, StorageError, WriteBatch};
use crate::core::types::{LogId, Membership};

/// In-memory storage. Clones share the same data, which survives a crash of
/// the node using it (not of the process). Durable as soon as written.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    inner: Arc<Mutex<InitialState>>,
    snapshots: MemSnapshotStore,
}

impl MemStorage {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the current contents.
    pub fn contents(&self) -> InitialState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InitialState> {
        // A panic while holding the lock cannot leave the state half-written
        // (every mutation is a single Vec operation); keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LogStorage for MemStorage {
    fn load(&mut self) -> Result<InitialState, StorageError> {
        Ok(self.contents())
    }

    fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut s = self.lock();
        if let Some(from) = batch.truncate_from {
            let keep = from.saturating_sub(s.snapshot.index + 1) as usize;
            s.entries.truncate(keep);
        }
        for e in batch.entries {
            let expected = s
                .entries
                .last()
                .map_or(s.snapshot.index, |l| l.log_id.index)
                + 1;
            if e.log_id.index != expected {
                return Err(StorageError::Io(format!(
                    "non-contiguous append: got index {}, expected {expected}",
                    e.log_id.index
                )));
            }
            s.entries.push(e);
        }
        if let Some(hs) = batch.hard_state {
            s.hard_state = hs;
        }
        if let Some(identity) = batch.identity {
            s.identity = Some(identity);
        }
        if let Some(founders) = batch.founders {
            s.founders = founders;
        }
        Ok(())
    }

    fn purge(&mut self, upto: LogId, membership: &Membership) -> Result<(), StorageError> {
        let mut s = self.lock();
        if upto.index <= s.snapshot.index {
            return Ok(());
        }
        s.entries.retain(|e| e.log_id.index > upto.index);
        s.snapshot = upto;
        s.snapshot_membership = Some(membership.clone());
        Ok(())
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        Arc::new(self.snapshots.clone())
    }

    fn size_bytes(&self) -> u64 {
        let s = self.lock();
        s.entries.iter().map(|e| e.size_hint() as u64).sum::<u64>() + 32
    }

    fn blocks(&self) -> bool {
        false
    }
}
