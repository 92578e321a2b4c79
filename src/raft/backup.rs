//! Backups through the handle: the latest snapshot on disk and the
//! committed log entries after it, up to a read barrier.

use super::*;
use crate::backup::{Backup, BackupHeader, BackupReader, MAX_LOG_BYTES};
use crate::core::types::{Entry, Payload};
use crate::log_store::ReadRange;
use crate::storage::{SnapshotMeta, SnapshotReader};

/// Entries asked of the log store at a time.
const READ_BATCH: usize = 1024;
/// How many times a backup looks for the log after the latest snapshot
/// when a newer snapshot compacts it away meanwhile.
const ATTEMPTS: usize = 3;

/// The log entries after a snapshot, as the log store has them now.
enum Tail {
    Entries(Vec<Entry>),
    /// Compacted meanwhile: a newer snapshot covers them.
    Gone,
    /// More than a backup ships.
    TooLarge,
}

impl<SM: StateMachine> Raft<SM> {
    /// A consistent backup of this node's replicated state, to stream
    /// (any member can take one). It first passes a read barrier, so the
    /// backup holds every write acknowledged before the call; it then
    /// ships the latest snapshot on disk and the committed log entries
    /// after it up to that point, so it neither pauses the state machine
    /// nor holds the state in memory: the data streams from disk, in
    /// chunks. Only when the snapshot is so far behind that the entries
    /// after it would exceed 32 MiB does it take a new snapshot first.
    /// Restore it into a new cluster with [`crate::backup::restore`]
    /// (`NodeBuilder::restore_from`).
    pub async fn backup(&self) -> Result<Backup, RaftError> {
        let barrier = self.read_barrier().await?;
        for _ in 0..ATTEMPTS {
            let (meta, data) = self.open_latest_snapshot()?;
            let after = meta.as_ref().map_or(LogId::default(), |m| m.last_included);
            let tail = if after.index >= barrier {
                Tail::Entries(Vec::new())
            } else {
                self.read_tail(after.index + 1, barrier).await?
            };
            match tail {
                Tail::Entries(entries) => return Ok(self.assemble(meta, data, entries)),
                Tail::Gone => continue,
                Tail::TooLarge => break,
            }
        }
        // Far behind (or racing compaction): a snapshot at or after the
        // barrier needs no entries after it. One already under way may
        // predate the barrier: take another until one covers it.
        let mut taken = self.snapshot().await?;
        while taken.index < barrier {
            taken = self.snapshot().await?;
        }
        match self.open_latest_snapshot()? {
            (Some(meta), data) if meta.last_included.index >= barrier => {
                Ok(self.assemble(Some(meta), data, Vec::new()))
            }
            _ => Err(RaftError::Snapshot(
                "the snapshot taken for the backup is gone; retry".into(),
            )),
        }
    }

    fn open_latest_snapshot(&self) -> Result<(Option<SnapshotMeta>, SnapshotReader), RaftError> {
        let opened = self
            .snapshots
            .open_latest()
            .map_err(|e| RaftError::Snapshot(e.to_string()))?;
        Ok(match opened {
            Some((meta, data)) => (Some(meta), data),
            None => (None, Box::new(std::io::empty())),
        })
    }

    /// Entries `from..=to`, all or none.
    async fn read_tail(&self, from: u64, to: u64) -> Result<Tail, RaftError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut bytes = 0u64;
        let mut next = from;
        while next <= to {
            let batch = self
                .log
                .send(ReadRange {
                    from: next,
                    to,
                    max: READ_BATCH,
                })
                .await
                .map_err(|_| RaftError::ShuttingDown)?;
            if batch.is_empty() {
                return Ok(Tail::Gone);
            }
            bytes += batch.iter().map(|e| 16 + e.size_hint() as u64).sum::<u64>();
            if bytes > MAX_LOG_BYTES * 3 / 4 {
                return Ok(Tail::TooLarge);
            }
            next += batch.len() as u64;
            entries.extend(batch);
        }
        Ok(Tail::Entries(entries))
    }

    fn assemble(
        &self,
        meta: Option<SnapshotMeta>,
        data: SnapshotReader,
        entries: Vec<Entry>,
    ) -> Backup {
        let snapshot = meta.as_ref().map_or(LogId::default(), |m| m.last_included);
        let last_membership = entries.iter().rev().find_map(|e| match &e.payload {
            Payload::Membership(m) => Some((**m).clone()),
            _ => None,
        });
        let membership = last_membership
            .or_else(|| meta.as_ref().map(|m| m.membership.clone()))
            .unwrap_or_else(|| self.metrics.borrow().membership.clone());
        let header = BackupHeader {
            cluster_name: self.cluster_name.to_string(),
            cluster_id: self.metrics.borrow().cluster_id,
            last_included: entries.last().map_or(snapshot, |e| e.log_id),
            membership,
            snapshot,
            data_size: meta.as_ref().map_or(0, |m| m.size),
            data_checksum: meta.as_ref().map_or(0, |m| m.checksum),
            log_size: 0,
            log_checksum: 0,
        };
        let (header, log) = header.with_log(&entries);
        Backup {
            reader: BackupReader::new(&header, data, log),
            header,
        }
    }
}
