//! A backup into the data directory of a node of a new cluster.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{check, read_header, BackupError, CHUNK_BYTES};
use crate::core::types::{
    founding_cluster_id, Entry, HardState, LogId, Membership, NodeIdentity, Payload,
};
use crate::storage::{FjallStorage, LogStorage, SnapshotMeta, WriteBatch};

/// What [`restore`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreInfo {
    /// The new cluster's id (the same on every node restored from the
    /// same backup with the same founders and token).
    pub cluster_id: u64,
    /// The last entry the restored state holds.
    pub last_included: LogId,
    /// Bytes of state restored.
    pub data_size: u64,
}

/// Restores the backup at `from` into `data_dir` (empty or missing) as a
/// founding member of a new cluster of `founders`, for the service
/// `cluster_name`. The whole file is checked first (see
/// [`super::verify`]); nothing is written unless it passes. Every founder
/// restores the same file with the same founders and `cluster_token`, and
/// they derive the same new cluster id — one that differs from the old
/// cluster's, so the two can never talk. The node then starts as usual on
/// its directory; its state machine starts from the backup.
pub fn restore(
    from: &Path,
    data_dir: &Path,
    cluster_name: &str,
    founders: &Membership,
    cluster_token: &str,
) -> Result<RestoreInfo, BackupError> {
    let open = || {
        File::open(from)
            .map_err(|e| BackupError::Io(format!("cannot open {}: {e}", from.display())))
    };
    let (header, entries) = check(std::io::BufReader::with_capacity(CHUNK_BYTES, open()?))?;
    if !header.cluster_name.is_empty() && header.cluster_name != cluster_name {
        return Err(BackupError::OtherService {
            backup: header.cluster_name,
            ours: cluster_name.to_string(),
        });
    }
    if crate::storage::fjall::holds_state(data_dir) {
        return Err(BackupError::DirectoryHoldsState(
            data_dir.display().to_string(),
        ));
    }
    let write_error = |e: crate::storage::StorageError| {
        BackupError::Io(format!("writing {}: {e}", data_dir.display()))
    };
    std::fs::create_dir_all(data_dir)
        .map_err(|e| BackupError::Io(format!("cannot create {}: {e}", data_dir.display())))?;
    let mut storage = FjallStorage::open(data_dir, cluster_name).map_err(write_error)?;
    // Second pass: the data, in chunks, into the snapshot store.
    if header.snapshot.index > 0 {
        let mut file = std::io::BufReader::with_capacity(CHUNK_BYTES, open()?);
        read_header(&mut file)?;
        let meta = SnapshotMeta {
            last_included: header.snapshot,
            membership: founders.clone(),
            size: header.data_size,
            checksum: header.data_checksum,
        };
        let mut sink = storage.snapshots().sink(meta).map_err(write_error)?;
        let mut chunk = vec![0u8; CHUNK_BYTES];
        let mut left = header.data_size;
        while left > 0 {
            let want = chunk.len().min(left.min(usize::MAX as u64) as usize);
            let n = file
                .read(&mut chunk[..want])
                .map_err(|e| BackupError::Io(format!("reading {}: {e}", from.display())))?;
            if n == 0 {
                return Err(BackupError::Io(format!(
                    "{} changed while it was restored",
                    from.display()
                )));
            }
            sink.write(&chunk[..n]).map_err(write_error)?;
            left -= n as u64;
        }
        sink.commit().map_err(write_error)?;
    }
    // The storage contract: load once before the first write. Then the
    // log starts after the snapshot.
    storage.load().map_err(write_error)?;
    if header.snapshot.index > 0 {
        storage
            .purge(header.snapshot, founders)
            .map_err(write_error)?;
    }
    let last = header.last_included;
    let cluster_id = founding_cluster_id(
        founders,
        &format!(
            "{cluster_token}\u{0}restored from {:x} at {}/{} ({:08x})",
            header.cluster_id, last.term, last.index, header.data_checksum
        ),
    );
    // The term of the last entry restored: every new leader's is later.
    // The entries after the snapshot commit again once the new cluster's
    // first leader commits an entry of its own term.
    storage
        .write(WriteBatch {
            entries: under_founders(entries, founders),
            hard_state: Some(HardState {
                term: last.term,
                voted_for: None,
            }),
            identity: Some(NodeIdentity {
                cluster_id,
                incarnation: fastrand::u64(1..),
                founder: true,
            }),
            ..WriteBatch::default()
        })
        .map_err(write_error)?;
    tracing::info!(
        cluster_id = format_args!("{cluster_id:#x}"),
        term = last.term,
        index = last.index,
        bytes = header.data_size,
        dir = %data_dir.display(),
        "restored a backup into a new cluster"
    );
    Ok(RestoreInfo {
        cluster_id,
        last_included: last,
        data_size: header.data_size,
    })
}

/// The old cluster's configurations do not apply to the new one: every
/// configuration entry becomes the founders', so the founders' is in force
/// at every point of the restored log.
fn under_founders(mut entries: Vec<Entry>, founders: &Membership) -> Vec<Entry> {
    for entry in &mut entries {
        if let Payload::Membership(m) = &mut entry.payload {
            **m = founders.clone();
        }
    }
    entries
}
