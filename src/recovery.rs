//! Lost-quorum recovery, offline (hashicorp/raft's `RecoverCluster`,
//! etcd's `--force-new-cluster`): when a majority of the voters is gone
//! for good, no leader can be elected again. [`recover`] rewrites one
//! survivor's data directory so that it is the only voter: it appends a
//! configuration naming only itself, in a term no node has reached, and
//! the node then elects itself and serves. The others are added back
//! afterwards (`regatta add`), each on a new, empty directory.
//!
//! What it can lose: writes acknowledged by the lost majority that this
//! survivor never received. What it can resurrect: entries this survivor
//! holds that were never committed — they commit now. Recover the
//! survivor with the longest log (`recover --dry-run` prints it), and
//! never start a lost node again on its old directory.

use std::path::Path;

use crate::core::types::{Entry, HardState, LogId, Membership, NodeId, Payload};
use crate::storage::{FjallStorage, LogStorage, StorageError, WriteBatch};

/// What [`recover`] found (and, unless a dry run, did).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The last entry the directory held: every write up to it survives.
    pub last_log_id: LogId,
    /// The configuration it held.
    pub old_membership: Membership,
    /// The configuration written (this node alone), and where.
    pub new_membership: Membership,
    /// The entry that carries it (nothing written on a dry run).
    pub written_at: LogId,
}

/// Why recovery refused.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The directory holds no node's state.
    #[error("{0} holds no node's state: point --data-dir at a survivor's directory")]
    NoState(String),
    /// A node (or another process) holds the directory.
    #[error("{0} is in use: stop the node before recovering its directory")]
    InUse(String),
    /// This node is not a member of the configuration it holds.
    #[error("node {id} is not a member of the configuration in {dir}: give the id this directory belongs to")]
    NotAMember {
        /// The id given.
        id: NodeId,
        /// The directory.
        dir: String,
    },
    /// The directory's snapshot is ahead of its log (the node stopped
    /// right after receiving a snapshot).
    #[error(
        "{0}: its snapshot is ahead of its log; start the node once and stop it, then recover"
    )]
    SnapshotAhead(String),
    /// Reading or writing the directory failed.
    #[error("{0}")]
    Storage(String),
}

/// Makes node `id`, whose data directory is `data_dir` (of the service
/// `cluster_name`), the only voter of its cluster; with `dry_run`, only
/// reports what it would do. The node must be stopped.
pub fn recover(
    data_dir: &Path,
    cluster_name: &str,
    id: NodeId,
    dry_run: bool,
) -> Result<Recovery, RecoveryError> {
    let dir = data_dir.display().to_string();
    if !crate::storage::fjall::holds_state(data_dir) {
        return Err(RecoveryError::NoState(dir));
    }
    let storage_error = |e: StorageError| match e {
        StorageError::Locked => RecoveryError::InUse(dir.clone()),
        e => RecoveryError::Storage(format!("{dir}: {e}")),
    };
    let mut storage = FjallStorage::open(data_dir, cluster_name).map_err(storage_error)?;
    let state = storage.load().map_err(storage_error)?;
    let last = state.entries.last().map_or(state.snapshot, |e| e.log_id);
    let snapshot = storage.snapshots().latest().map_err(storage_error)?;
    if snapshot
        .as_ref()
        .is_some_and(|(m, _)| m.last_included.index > last.index)
    {
        return Err(RecoveryError::SnapshotAhead(dir));
    }
    let old = state
        .entries
        .iter()
        .rev()
        .find_map(|e| match &e.payload {
            Payload::Membership(m) => Some((**m).clone()),
            _ => None,
        })
        .or(state.snapshot_membership)
        .unwrap_or_default();
    if !old.voters.contains(&id)
        && !old.learners.contains(&id)
        && !old.old_voters.as_ref().is_some_and(|v| v.contains(&id))
    {
        return Err(RecoveryError::NotAMember { id, dir });
    }
    let mut new = Membership::new([id]);
    new.addresses
        .extend(old.addresses.get(&id).map(|a| (id, a.clone())));
    new.metadata
        .extend(old.metadata.get(&id).map(|m| (id, m.clone())));
    // Pinned to this directory: the node votes, as the configuration's
    // only voter, from this incarnation alone.
    if let Some(identity) = state.identity {
        new.incarnations.insert(id, identity.incarnation);
    }
    // A term no node has reached: no other leader can have written an
    // entry in it, so the new configuration conflicts with nothing.
    let term = state.hard_state.term.max(last.term) + 1;
    let written_at = LogId::new(term, last.index + 1);
    let recovery = Recovery {
        last_log_id: last,
        old_membership: old,
        new_membership: new.clone(),
        written_at,
    };
    if dry_run {
        return Ok(recovery);
    }
    storage
        .write(WriteBatch {
            entries: vec![Entry {
                log_id: written_at,
                payload: Payload::Membership(Box::new(new)),
            }],
            hard_state: Some(HardState {
                term,
                voted_for: None,
            }),
            ..WriteBatch::default()
        })
        .map_err(storage_error)?;
    tracing::warn!(
        node = id,
        term,
        index = written_at.index,
        dir = %data_dir.display(),
        "lost-quorum recovery: this node is now the only voter"
    );
    Ok(recovery)
}
