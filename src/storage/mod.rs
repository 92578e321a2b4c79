//! The durable log: the [`LogStorage`] trait and its bundled backends.

use std::collections::BTreeMap;

use crate::core::types::{Entry, HardState, LogId, Membership, NodeId, NodeIdentity};

#[cfg(feature = "fjall")]
pub mod fjall;
#[cfg(feature = "fjall")]
pub(crate) mod fjall_host;
pub mod memory;
pub mod snapshot;

#[cfg(feature = "fjall")]
pub use self::fjall::FjallStorage;
pub use memory::MemStorage;
pub use snapshot::{
    FileSnapshotStore, MemSnapshotStore, SnapshotMeta, SnapshotReader, SnapshotStore,
};

/// A storage failure. After an error the node stops: Raft cannot continue
/// safely on a log whose state is unknown.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O or backend error.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// Stored data failed its checksum or could not be decoded.
    #[error("corrupt log entry at index {index}: {reason}")]
    Corrupt {
        /// The index of the bad entry.
        index: u64,
        /// What was wrong.
        reason: String,
    },
    /// The data directory belongs to another cluster or format version.
    #[error("incompatible data directory: {0}")]
    Incompatible(String),
    /// Another handle (another process, or another node in this one)
    /// holds the data directory.
    #[error("the data directory is in use by another process or node; stop it, or give this node its own directory")]
    Locked,
}

/// Everything a node needs from storage at start-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    /// Persisted term and vote.
    pub hard_state: HardState,
    /// The last entry covered by a snapshot (default when none).
    pub snapshot: LogId,
    /// The membership in effect at `snapshot` (used when no configuration
    /// entry follows it in the log).
    pub snapshot_membership: Option<Membership>,
    /// All entries after `snapshot`, in order.
    pub entries: Vec<Entry>,
    /// The node's identity, once written.
    pub identity: Option<NodeIdentity>,
    /// The incarnations of the founders this node founded the cluster
    /// with (empty unless it founded): it recognizes a founder that asks
    /// again from the same directory after this node restarted.
    pub founders: BTreeMap<NodeId, u64>,
}

impl InitialState {
    /// Whether the storage has never been written.
    pub fn is_empty(&self) -> bool {
        self.hard_state == HardState::default()
            && self.entries.is_empty()
            && self.snapshot == LogId::default()
    }
}

/// One group commit: applied in this order, then made durable as a whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Delete this index and everything after it.
    pub truncate_from: Option<u64>,
    /// Append these (contiguous, following the log after truncation).
    pub entries: Vec<Entry>,
    /// Replace the hard state.
    pub hard_state: Option<HardState>,
    /// Replace the node's identity.
    pub identity: Option<NodeIdentity>,
    /// Replace the founders' incarnations (written once, when founding).
    pub founders: Option<BTreeMap<NodeId, u64>>,
}

impl WriteBatch {
    /// Whether the batch does nothing.
    pub fn is_empty(&self) -> bool {
        self.truncate_from.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.identity.is_none()
            && self.founders.is_none()
    }
}

/// A durable home for the Raft log and hard state.
///
/// The contract:
/// - Methods are called one at a time, in order: from a dedicated thread
///   (they may block, e.g. on fsync), or on the node's own thread when
///   [`LogStorage::blocks`] says they never block.
/// - [`LogStorage::write`] returns `Ok` only once the whole batch is durable:
///   after a crash at any moment, a restart sees either none of a batch that
///   did not return or all of it, and everything of every batch that did.
///   Raft acknowledges entries and votes on the strength of that `Ok`.
/// - [`LogStorage::load`] returns what was durably written, in order.
/// - An `Err` is fatal for the node: it stops rather than guess.
pub trait LogStorage: Send + 'static {
    /// Reads the durable state at start-up.
    fn load(&mut self) -> Result<InitialState, StorageError>;

    /// Applies a batch and makes it durable before returning.
    fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError>;

    /// Drops entries up to and including `upto` (a snapshot covers them) and
    /// records `upto` with its membership as the new snapshot point.
    fn purge(&mut self, upto: LogId, membership: &Membership) -> Result<(), StorageError>;

    /// Where this storage keeps its snapshots (shared with the node's
    /// snapshotter, which writes them on its own thread).
    fn snapshots(&self) -> std::sync::Arc<dyn SnapshotStore>;

    /// Bytes the log and hard state take on disk (or in memory), for
    /// metrics and bounded-size tests.
    fn size_bytes(&self) -> u64;

    /// Whether `write` and `purge` may block the calling thread (disk I/O,
    /// fsync). A storage that never blocks — memory — returns `false` and
    /// is then called inline on the node's thread, which saves two thread
    /// hand-offs per write on every node. The default, `true`, is always
    /// safe: the storage gets a writer thread of its own.
    fn blocks(&self) -> bool {
        true
    }
}
