//! A durable [`LogStorage`] on [fjall](https://docs.rs/fjall), an LSM-tree
//! key-value store with an atomic, checksummed write-ahead journal.
//!
//! # Layout
//!
//! One fjall database per node, holding one keyspace named `log`. Record
//! kinds are told apart by a key prefix, so a single atomic fjall batch can
//! touch entries, hard state and metadata at once:
//!
//! | key                        | value                                        |
//! |----------------------------|----------------------------------------------|
//! | `m/format`                 | format version, `u32` big-endian             |
//! | `m/cluster`                | cluster id, UTF-8                            |
//! | `m/snapshot`               | framed `(LogId, Membership)`: snapshot point |
//! | `h/state`                  | framed [`HardState`]                         |
//! | `m/identity`               | framed [`crate::NodeIdentity`]: cluster id, incarnation |
//! | `m/founders`               | framed map: founder id to incarnation (a founder only) |
//! | `e/` + index (`u64` BE)    | framed [`Entry`]                             |
//!
//! Entry keys use the big-endian index so that byte order is log order and a
//! range scan returns the log in sequence.
//!
//! A *framed* value is `crc32 (u32 little-endian) ++ rmp-serde bytes`, the
//! checksum (crc32fast) being taken over the rmp-serde bytes. fjall already
//! checksums its journal and tables; ours additionally covers the path from
//! our encoder to the decoder at start-up and catches data written by a buggy
//! or foreign writer.
//!
//! # Durability
//!
//! Every mutation is one fjall write batch committed with
//! [`PersistMode::SyncAll`]; see [`FjallStorage`] for why.
//!
//! # Corruption: no torn-tail repair
//!
//! This backend never repairs a torn tail, because it cannot have one. Every
//! write is one atomic, checksummed fjall batch: a crash leaves all or none
//! of a batch, and fjall's own journal recovery (when the database is opened)
//! drops an incomplete batch. So an entry that fails *our* checksum or
//! decoding after that recovery, the last entry included, is real
//! corruption of data that may have been acknowledged and counted toward a
//! commit. Deleting it could lose a committed entry, so
//! [`LogStorage::load`] refuses to start with [`StorageError::Corrupt`],
//! naming the index and the remedy: wipe this node's data directory and
//! re-add the node to the cluster; the other members still hold the data.
//!
//! Torn-tail repair belongs only in a backend that writes entries
//! non-atomically (an append-only file, say), where a crash mid-write can
//! leave a partial last record; and even there it may only drop entries that
//! were never acknowledged (whose write never returned `Ok`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::snapshot::{FileSnapshotStore, SnapshotStore};
use super::{InitialState, LogStorage, StorageError, WriteBatch};
use crate::core::types::{Entry, HardState, LogId, Membership};

/// The on-disk format written by this code. Bump it on any change to the key
/// layout or value encoding: an old binary must refuse a newer directory
/// rather than misread it.
/// Whether a node's data directory already holds a log (a restart, or a
/// restored backup).
pub(crate) fn holds_state(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("log")).is_ok_and(|mut entries| entries.next().is_some())
}

const FORMAT_VERSION: u32 = 1;

/// Name of the single keyspace holding everything of one node.
const KEYSPACE: &str = "log";

const KEY_FORMAT: &[u8] = b"m/format";
const KEY_CLUSTER: &[u8] = b"m/cluster";
const KEY_SNAPSHOT: &[u8] = b"m/snapshot";
const KEY_HARD_STATE: &[u8] = b"h/state";
const KEY_IDENTITY: &[u8] = b"m/identity";
const KEY_FOUNDERS: &[u8] = b"m/founders";
const ENTRY_PREFIX: &[u8] = b"e/";
const ENTRY_KEY_LEN: usize = 2 + 8;

/// Length of the checksum that starts every framed value.
const CRC_LEN: usize = 4;

/// Where one log's records live in its keyspace: right at the top for a
/// node's own database, under a group's prefix in a host's shared one.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    prefix: Vec<u8>,
}

impl Keys {
    /// A node's own database: no prefix (the layout of the table above).
    pub(super) fn top() -> Keys {
        Keys { prefix: Vec::new() }
    }

    /// A group's records in a host's database: `prefix` ++ the key above.
    pub(super) fn under(prefix: Vec<u8>) -> Keys {
        Keys { prefix }
    }

    pub(super) fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The key of the record `name` (one of the `m/`, `h/` keys).
    fn record(&self, name: &[u8]) -> Vec<u8> {
        [&self.prefix[..], name].concat()
    }

    /// The key of the entry at `index`.
    fn entry(&self, index: u64) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + ENTRY_KEY_LEN);
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(ENTRY_PREFIX);
        key.extend_from_slice(&index.to_be_bytes());
        key
    }

    /// The index encoded in an entry key, or `None` if the key is malformed.
    fn index_of(&self, key: &[u8]) -> Option<u64> {
        let rest = key
            .strip_prefix(&self.prefix[..])?
            .strip_prefix(ENTRY_PREFIX)?;
        Some(u64::from_be_bytes(rest.try_into().ok()?))
    }
}

pub(super) fn frame<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    let body = rmp_serde::to_vec(value).map_err(|e| StorageError::Io(format!("encode: {e}")))?;
    let mut out = Vec::with_capacity(CRC_LEN + body.len());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes `bytes`, as stored and with a correct checksum put in front of
/// them, as every record kind the log keeps: for the fuzzer, which checks
/// that no stored value makes a decoder panic.
#[cfg(feature = "testing")]
pub(crate) fn decode_records_for_fuzzing(bytes: &[u8]) {
    let mut framed = crc32fast::hash(bytes).to_le_bytes().to_vec();
    framed.extend_from_slice(bytes);
    for value in [bytes, &framed[..]] {
        let _ = FjallStorage::decode_entry(1, value);
        let _ = unframe::<HardState>(value);
        let _ = unframe::<SnapshotRecord>(value);
        let _ = unframe::<crate::core::types::NodeIdentity>(value);
    }
}

/// Verifies the checksum of a framed value and decodes it. The error is a
/// human-readable reason, turned into [`StorageError::Corrupt`] by the caller
/// (which knows the index). Never panics, whatever the bytes.
pub(super) fn unframe<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if bytes.len() < CRC_LEN {
        return Err(format!(
            "value is {} bytes, shorter than its checksum",
            bytes.len()
        ));
    }
    let (crc, body) = bytes.split_at(CRC_LEN);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let actual = crc32fast::hash(body);
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    rmp_serde::from_slice(body).map_err(|e| format!("undecodable value: {e}"))
}

/// Maps any fjall failure to [`StorageError::Io`]. fjall poisons itself after
/// a failed fsync, so every later call fails too — which is what Raft needs.
pub(super) fn io(e: ::fjall::Error) -> StorageError {
    match e {
        ::fjall::Error::Locked => StorageError::Locked,
        e => StorageError::Io(e.to_string()),
    }
}

/// The stored snapshot point: the last index a snapshot covers and the
/// membership in effect there.
type SnapshotRecord = (LogId, Membership);

/// A [`LogStorage`] backed by a fjall database in one directory.
///
/// # Durability
///
/// [`LogStorage::write`] and [`LogStorage::purge`] each commit exactly one
/// fjall write batch with [`PersistMode::SyncAll`] (group commit: one fsync
/// per call, however many entries the batch holds). `SyncAll` fsyncs the
/// journal's data *and* metadata (file length included); the weaker modes
/// either leave data in OS buffers (`Buffer`) or skip the metadata
/// (`SyncData`), and Raft acknowledges entries and votes on the strength of
/// `Ok`, so an `Ok` must survive a power loss. fjall batches are atomic, so a
/// crash leaves either none or all of a batch.
///
/// # Start-up
///
/// Call [`LogStorage::load`] once after [`FjallStorage::open`] and before
/// writing: it verifies the log and refuses to start on any corrupt entry,
/// the last one included. There is no torn-tail repair here: since every
/// write is one atomic fjall batch and fjall's journal recovery drops an
/// incomplete batch, a checksum failure after recovery is real corruption,
/// not a torn write (see the module documentation).
pub struct FjallStorage {
    /// The node's data directory, as given to [`FjallStorage::open`] (the
    /// one to wipe when the log is corrupt).
    root: PathBuf,
    /// The fjall database directory inside `root`. Kept for error messages
    /// and `Debug`.
    dir: PathBuf,
    snapshots: Arc<FileSnapshotStore>,
    db: Database,
    log: Keyspace,
    /// Where this log's records are in `log`.
    keys: Keys,
    /// Each write syncs before it returns; off only under a host, whose
    /// shared writer syncs once for the writes of all its groups.
    sync_each_write: bool,
    /// The persisted snapshot point; entries at or below it are gone.
    snapshot: LogId,
    /// Index of the last entry, or `snapshot.index` when there is none. Kept
    /// in memory because fjall has no range delete: truncation must name
    /// every key it removes.
    last_index: u64,
}

impl fmt::Debug for FjallStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FjallStorage")
            .field("dir", &self.dir)
            .field("snapshot", &self.snapshot)
            .field("last_index", &self.last_index)
            .finish_non_exhaustive()
    }
}

impl FjallStorage {
    /// Opens (creating if needed) the store in `dir`. A store created for
    /// another cluster id or with another format version is refused with
    /// [`StorageError::Incompatible`] naming both values.
    ///
    /// fjall locks the directory: a second handle on the same directory (in
    /// this process or another) fails with [`StorageError::Locked`] until
    /// the first is dropped.
    pub fn open(dir: impl AsRef<Path>, cluster_id: &str) -> Result<Self, StorageError> {
        let root = dir.as_ref();
        let snapshots = Arc::new(FileSnapshotStore::open(root.join("snapshots"))?);
        let dir = root.join("log");
        // Journals are fjall's only space that grows with write volume
        // rather than with live data (a compacted log holds few entries);
        // fjall's smallest cap keeps the directory bounded at ~64 MiB plus
        // the live log, where the default would let it reach 512 MiB.
        let db = Database::builder(&dir)
            .max_journaling_size(64 * 1024 * 1024)
            .open()
            .map_err(io)?;
        let log = db
            .keyspace(KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(io)?;

        Self::attach(
            root.to_path_buf(),
            dir,
            snapshots,
            db,
            log,
            Keys::top(),
            cluster_id,
            true,
        )
    }

    /// Opens the log whose records are under `keys` in `log`, checking (or
    /// writing, the first time) its format version and cluster id.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attach(
        root: PathBuf,
        dir: PathBuf,
        snapshots: Arc<FileSnapshotStore>,
        db: Database,
        log: Keyspace,
        keys: Keys,
        cluster_id: &str,
        sync_each_write: bool,
    ) -> Result<Self, StorageError> {
        let format = log.get(keys.record(KEY_FORMAT)).map_err(io)?;
        let cluster = log.get(keys.record(KEY_CLUSTER)).map_err(io)?;
        match (format, cluster) {
            (None, None) => {
                // A fresh store must really be empty: data without the
                // identity records was not written by us, and adopting it
                // would attach a foreign log to this cluster.
                if log.prefix(keys.prefix()).next().is_some() {
                    return Err(StorageError::Incompatible(format!(
                        "{} holds data but no format version or cluster id",
                        dir.display()
                    )));
                }
                let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
                batch.insert(
                    &log,
                    keys.record(KEY_FORMAT),
                    FORMAT_VERSION.to_be_bytes().to_vec(),
                );
                batch.insert(
                    &log,
                    keys.record(KEY_CLUSTER),
                    cluster_id.as_bytes().to_vec(),
                );
                batch.commit().map_err(io)?;
            }
            (Some(format), cluster) => {
                // The format is checked first: under another format even the
                // cluster id record may mean something else.
                let found = <[u8; 4]>::try_from(&*format)
                    .map(u32::from_be_bytes)
                    .map_err(|_| {
                        StorageError::Incompatible(format!(
                            "{}: unreadable format version record ({} bytes); this build writes format version {FORMAT_VERSION}",
                            dir.display(),
                            format.len()
                        ))
                    })?;
                if found != FORMAT_VERSION {
                    return Err(StorageError::Incompatible(format!(
                        "{} has format version {found}, this build reads format version {FORMAT_VERSION}",
                        dir.display()
                    )));
                }
                let Some(cluster) = cluster else {
                    return Err(StorageError::Incompatible(format!(
                        "{} has no cluster id; expected cluster id {cluster_id:?}",
                        dir.display()
                    )));
                };
                if &*cluster != cluster_id.as_bytes() {
                    return Err(StorageError::Incompatible(format!(
                        "{} belongs to cluster id {:?}, not to cluster id {cluster_id:?}",
                        dir.display(),
                        String::from_utf8_lossy(&cluster)
                    )));
                }
            }
            (None, Some(_)) => {
                return Err(StorageError::Incompatible(format!(
                    "{} has a cluster id but no format version; this build writes format version {FORMAT_VERSION}",
                    dir.display()
                )));
            }
        }

        let mut store = FjallStorage {
            root,
            dir,
            snapshots,
            db,
            log,
            keys,
            sync_each_write,
            snapshot: LogId::default(),
            last_index: 0,
        };
        if let Some((snapshot, _)) = store.read_snapshot()? {
            store.snapshot = snapshot;
        }
        // Cheap bound for truncation until `load` has verified the log: the
        // highest entry key present (verification may lower it).
        store.last_index = match store.entry_range(0).next_back() {
            Some(guard) => {
                let key = guard.key().map_err(io)?;
                store
                    .keys
                    .index_of(&key)
                    .ok_or_else(|| StorageError::Corrupt {
                        index: 0,
                        reason: format!("malformed entry key {key:?}"),
                    })?
            }
            None => 0,
        }
        .max(store.snapshot.index);
        Ok(store)
    }

    /// All entry keys from `from` on, in index order.
    fn entry_range(&self, from: u64) -> ::fjall::Iter {
        self.log
            .range(self.keys.entry(from)..=self.keys.entry(u64::MAX))
    }

    /// A batch that is durable (fsynced, data and metadata) once committed.
    fn durable_batch(&self) -> ::fjall::OwnedWriteBatch {
        self.db
            .batch()
            .durability(self.sync_each_write.then_some(PersistMode::SyncAll))
    }

    /// Reads a framed metadata record. Corruption there is reported at index
    /// 0, since it belongs to no entry.
    fn read_record<T: DeserializeOwned>(
        &self,
        key: &[u8],
        what: &str,
    ) -> Result<Option<T>, StorageError> {
        match self.log.get(self.keys.record(key)).map_err(io)? {
            None => Ok(None),
            Some(bytes) => unframe(&bytes)
                .map(Some)
                .map_err(|reason| StorageError::Corrupt {
                    index: 0,
                    reason: format!("{what} record: {reason}"),
                }),
        }
    }

    fn read_snapshot(&self) -> Result<Option<SnapshotRecord>, StorageError> {
        self.read_record(KEY_SNAPSHOT, "snapshot")
    }

    /// The error for a damaged log at `index`: it names the data directory
    /// and the remedy, since nothing can be repaired in place (see the module
    /// documentation on why there is no torn-tail repair).
    fn corrupt_entry(&self, index: u64, reason: String) -> StorageError {
        StorageError::Corrupt {
            index,
            reason: format!(
                "{reason}; this node's log in {} is damaged and may have lost \
                 acknowledged entries, so the node will not start: wipe this node's \
                 data directory {} and re-add the node to the cluster (the other \
                 members still hold the data)",
                self.dir.display(),
                self.root.display()
            ),
        }
    }

    /// Checks that `value`, stored under the key of `index`, is a sound entry
    /// for that index.
    fn decode_entry(index: u64, value: &[u8]) -> Result<Entry, String> {
        let entry: Entry = unframe(value)?;
        if entry.log_id.index != index {
            return Err(format!(
                "entry stored under index {index} claims index {}",
                entry.log_id.index
            ));
        }
        Ok(entry)
    }
}

impl LogStorage for FjallStorage {
    /// Reads hard state, snapshot point and every entry after the snapshot,
    /// verifying each entry's checksum, its index and the contiguity of the
    /// log.
    ///
    /// Any entry that fails its checksum or decoding, *the last one
    /// included*, and any gap or malformed key, is refused with
    /// [`StorageError::Corrupt`] at that index; nothing is removed. The
    /// reason names the data directory and the remedy: wipe this node's data
    /// directory and re-add the node to the cluster (the other members still
    /// hold the data).
    ///
    /// There is no torn-tail repair: every write is one atomic, checksummed
    /// fjall batch, so a crash leaves all or none of it, and fjall's journal
    /// recovery (run by [`FjallStorage::open`]) has already dropped an
    /// incomplete batch. A bad entry found after that, even the last, is
    /// corruption of an entry that may have been acknowledged and counted
    /// toward a commit; deleting it could lose a committed entry. (A backend
    /// that writes entries non-atomically, such as an append-only file, is
    /// where a torn tail could be repaired, and only for entries never
    /// acknowledged.)
    ///
    /// Metadata records (hard state, snapshot point) that fail their checksum
    /// are refused too, reported at index 0.
    fn load(&mut self) -> Result<InitialState, StorageError> {
        let hard_state: HardState = self
            .read_record(KEY_HARD_STATE, "hard state")?
            .unwrap_or_default();
        let (snapshot, snapshot_membership) = match self.read_snapshot()? {
            Some((point, membership)) => (point, Some(membership)),
            None => (LogId::default(), None),
        };
        self.snapshot = snapshot;

        let mut entries = Vec::new();
        let first = snapshot.index + 1;
        for (expected, guard) in (first..).zip(self.entry_range(first)) {
            let (key, value) = guard.into_inner().map_err(io)?;
            let Some(index) = self.keys.index_of(&key) else {
                return Err(self.corrupt_entry(expected, format!("malformed entry key {key:?}")));
            };
            if index != expected {
                // A gap loses entries before this one, whatever its position.
                return Err(self.corrupt_entry(
                    expected,
                    format!("entry {expected} is missing (next stored entry is {index})"),
                ));
            }
            // Position does not matter: a bad last entry is no torn write
            // here (fjall batches are atomic and its journal recovery has
            // already run), so it is refused like any other, never removed.
            let entry = Self::decode_entry(index, &value)
                .map_err(|reason| self.corrupt_entry(index, reason))?;
            entries.push(entry);
        }

        self.last_index = entries.last().map_or(snapshot.index, |e| e.log_id.index);
        let identity = self.read_record(KEY_IDENTITY, "identity")?;
        let founders = self
            .read_record(KEY_FOUNDERS, "founders")?
            .unwrap_or_default();
        Ok(InitialState {
            identity,
            founders,
            hard_state,
            snapshot,
            snapshot_membership,
            entries,
        })
    }

    /// Applies truncation, appends and the hard state as one atomic fjall
    /// batch, durable ([`PersistMode::SyncAll`]) when this returns `Ok`.
    ///
    /// A non-contiguous append is refused with [`StorageError::Io`] before
    /// anything is written.
    fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        // Where the log ends once the truncation is applied; entries at or
        // below the snapshot point are already gone and cannot be truncated.
        let kept_last = match batch.truncate_from {
            Some(from) => self
                .last_index
                .min(from.saturating_sub(1))
                .max(self.snapshot.index),
            None => self.last_index,
        };

        // Validate everything before building the batch, so a bad request
        // leaves the store untouched.
        let mut next = kept_last + 1;
        let mut encoded = Vec::with_capacity(batch.entries.len());
        for entry in &batch.entries {
            if entry.log_id.index != next {
                return Err(StorageError::Io(format!(
                    "non-contiguous append: got index {}, expected {next}",
                    entry.log_id.index
                )));
            }
            encoded.push((self.keys.entry(next), frame(entry)?));
            next += 1;
        }
        let new_last = next - 1;

        let mut fb = self.durable_batch();
        // Remove only the truncated keys the appends do not overwrite (those
        // past `new_last`): a remove and an insert of one key in one batch
        // would share a sequence number, leaving which one wins up to the
        // engine.
        for index in new_last + 1..=self.last_index {
            fb.remove(&self.log, self.keys.entry(index));
        }
        for (key, value) in encoded {
            fb.insert(&self.log, key, value);
        }
        if let Some(hard_state) = &batch.hard_state {
            fb.insert(
                &self.log,
                self.keys.record(KEY_HARD_STATE),
                frame(hard_state)?,
            );
        }
        if let Some(identity) = &batch.identity {
            fb.insert(&self.log, self.keys.record(KEY_IDENTITY), frame(identity)?);
        }
        if let Some(founders) = &batch.founders {
            fb.insert(&self.log, self.keys.record(KEY_FOUNDERS), frame(founders)?);
        }
        fb.commit().map_err(io)?;

        self.last_index = new_last;
        Ok(())
    }

    /// Removes entries up to `upto.index` and records the snapshot point
    /// with its membership, in one atomic durable batch. A point at or before
    /// the current snapshot is ignored.
    fn purge(&mut self, upto: LogId, membership: &Membership) -> Result<(), StorageError> {
        if upto.index <= self.snapshot.index {
            return Ok(());
        }
        let mut fb = self.durable_batch();
        for index in self.snapshot.index + 1..=upto.index.min(self.last_index) {
            fb.remove(&self.log, self.keys.entry(index));
        }
        let record: SnapshotRecord = (upto, membership.clone());
        fb.insert(&self.log, self.keys.record(KEY_SNAPSHOT), frame(&record)?);
        fb.commit().map_err(io)?;

        self.snapshot = upto;
        // A snapshot beyond the log (installed from a leader) empties it; the
        // next entry then follows the snapshot.
        self.last_index = self.last_index.max(upto.index);
        Ok(())
    }

    /// fjall's disk usage for the whole database: journal plus tables. Space
    /// of removed entries is reclaimed only as fjall compacts, so this lags
    /// behind truncation and purges.
    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        self.snapshots.clone()
    }

    fn size_bytes(&self) -> u64 {
        // A metrics call must not fail the node; the keyspace's table size
        // is a lower bound when the journal size cannot be read.
        self.db
            .disk_space()
            .unwrap_or_else(|_| self.log.disk_space())
    }
}
