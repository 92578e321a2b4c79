//! Durable snapshots: the [`SnapshotStore`] trait, a directory of files
//! ([`FileSnapshotStore`]) and an in-memory store ([`MemSnapshotStore`]).
//!
//! A snapshot is written through a [`SnapshotSink`], chunk by chunk, both
//! when a node snapshots its own state machine (one chunk) and when it
//! receives one from a leader (InstallSnapshot); one path for both.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::StorageError;
use crate::core::types::{LogId, Membership};

/// What a snapshot covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log entry whose effect the snapshot includes.
    pub last_included: LogId,
    /// The configuration in force at `last_included`.
    pub membership: Membership,
    /// Length of the data, in bytes.
    pub size: u64,
    /// CRC-32 of the data.
    pub checksum: u32,
}

/// A snapshot's data, read in order (see [`SnapshotStore::open_latest`]).
pub type SnapshotReader = Box<dyn Read + Send>;

/// A durable home for the latest snapshot.
///
/// The contract: a snapshot becomes the latest only once its sink's
/// [`SnapshotSink::finish`] has returned `Ok`, and then it survives a
/// crash; older snapshots may be deleted from then on. [`SnapshotStore::latest`]
/// verifies what it returns and reports a missing or damaged snapshot as an
/// error, never as "no snapshot".
pub trait SnapshotStore: Send + Sync + 'static {
    /// Starts writing a snapshot described by `meta`.
    fn sink(&self, meta: SnapshotMeta) -> Result<Box<dyn SnapshotSink>, StorageError>;

    /// The latest complete snapshot and its data, if any.
    fn latest(&self) -> Result<Option<(SnapshotMeta, Bytes)>, StorageError>;

    /// The latest complete snapshot with a reader of its data, for
    /// streaming it (a backup) without holding it in memory. The data is
    /// not verified here: the reader's consumer checks it against the
    /// meta's size and checksum. The default reads it whole.
    fn open_latest(&self) -> Result<Option<(SnapshotMeta, SnapshotReader)>, StorageError> {
        Ok(self.latest()?.map(|(meta, data)| {
            (
                meta,
                Box::new(std::io::Cursor::new(data)) as Box<dyn Read + Send>,
            )
        }))
    }
}

/// A snapshot being written, in order, from offset 0.
pub trait SnapshotSink: Send {
    /// Bytes written so far (where the next chunk must start).
    fn written(&self) -> u64;

    /// Appends `chunk`.
    fn write(&mut self, chunk: &[u8]) -> Result<(), StorageError>;

    /// Checks size and checksum against the meta, makes the snapshot durable
    /// and the latest, and returns its data. A snapshot that finishes after
    /// a newer one (of a higher last included index) must not replace it:
    /// the log may already be compacted up to the newer one.
    fn finish(self: Box<Self>) -> Result<Bytes, StorageError>;

    /// [`SnapshotSink::finish`] for a caller that does not need the data
    /// back (a restore): a store that keeps snapshots on disk should not
    /// read them into memory for it.
    fn commit(self: Box<Self>) -> Result<(), StorageError> {
        self.finish().map(|_| ())
    }
}

/// Writes `data` as one snapshot.
pub fn save(
    store: &dyn SnapshotStore,
    meta: SnapshotMeta,
    data: &[u8],
) -> Result<(), StorageError> {
    let mut sink = store.sink(meta)?;
    sink.write(data)?;
    sink.finish().map(|_| ())
}

/// The meta of a snapshot of `data`.
pub fn describe(last_included: LogId, membership: Membership, data: &[u8]) -> SnapshotMeta {
    SnapshotMeta {
        last_included,
        membership,
        size: data.len() as u64,
        checksum: crc32fast::hash(data),
    }
}

fn check(meta: &SnapshotMeta, data: &[u8]) -> Result<(), String> {
    if data.len() as u64 != meta.size {
        return Err(format!(
            "snapshot holds {} bytes, its meta says {}",
            data.len(),
            meta.size
        ));
    }
    let crc = crc32fast::hash(data);
    if crc != meta.checksum {
        return Err(format!(
            "snapshot checksum {crc:08x} does not match {:08x}",
            meta.checksum
        ));
    }
    Ok(())
}

fn corrupt(meta: &SnapshotMeta, reason: String) -> StorageError {
    StorageError::Corrupt {
        index: meta.last_included.index,
        reason,
    }
}

/// Snapshots as files in one directory: `<term>-<index>.data` holds the
/// state machine's bytes, `<term>-<index>.meta` the [`SnapshotMeta`]
/// (MessagePack) followed by its own CRC-32. Each is written under a
/// temporary name, fsynced and renamed, the meta last: a snapshot exists
/// once its meta does. Older snapshots are deleted after a newer one is
/// complete, meta first.
#[derive(Debug)]
pub struct FileSnapshotStore {
    dir: PathBuf,
}

impl FileSnapshotStore {
    /// Opens (creating) the directory; removes leftovers of interrupted
    /// writes.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        for entry in fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let path = entry.map_err(|e| io(&dir, e))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path).map_err(|e| io(&path, e))?;
            }
        }
        Ok(FileSnapshotStore { dir })
    }

    fn stem(meta: &SnapshotMeta) -> String {
        format!(
            "{:020}-{:020}",
            meta.last_included.term, meta.last_included.index
        )
    }

    /// Stems of every complete snapshot (those with a meta file), ordered by
    /// (index, term) ascending.
    fn complete(&self) -> Result<Vec<(LogId, String)>, StorageError> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))? {
            let path = entry.map_err(|e| io(&self.dir, e))?.path();
            if path.extension().is_none_or(|e| e != "meta") {
                continue;
            }
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let parsed = stem
                .split_once('-')
                .and_then(|(t, i)| Some(LogId::new(t.parse().ok()?, i.parse().ok()?)));
            match parsed {
                Some(id) => found.push((id, stem.to_string())),
                None => {
                    return Err(StorageError::Incompatible(format!(
                        "unexpected file {} in the snapshot directory",
                        path.display()
                    )))
                }
            }
        }
        found.sort_by_key(|(id, _)| (id.index, id.term));
        Ok(found)
    }

    fn read_meta(&self, stem: &str) -> Result<SnapshotMeta, StorageError> {
        let path = self.dir.join(format!("{stem}.meta"));
        let bytes = fs::read(&path).map_err(|e| io(&path, e))?;
        let bad = |reason: String| StorageError::Corrupt {
            index: stem
                .split_once('-')
                .and_then(|(_, i)| i.parse().ok())
                .unwrap_or(0),
            reason: format!("{}: {reason}", path.display()),
        };
        parse_meta(&bytes).map_err(bad)
    }
}

/// Decodes a snapshot meta file: the encoded meta, then its CRC-32
/// (big-endian). Never panics, whatever the bytes.
pub(crate) fn parse_meta(bytes: &[u8]) -> Result<SnapshotMeta, String> {
    if bytes.len() < 4 {
        return Err("truncated snapshot meta".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != crc {
        return Err("snapshot meta fails its checksum".into());
    }
    rmp_serde::from_slice(body).map_err(|e| format!("undecodable snapshot meta: {e}"))
}

fn io(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Io(format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `path` durably: the temporary file `tmp`, fsync,
/// rename.
fn write_file_durably(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let mut file = File::create(tmp).map_err(|e| io(tmp, e))?;
    file.write_all(bytes).map_err(|e| io(tmp, e))?;
    file.sync_all().map_err(|e| io(tmp, e))?;
    fs::rename(tmp, path).map_err(|e| io(path, e))
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

impl SnapshotStore for FileSnapshotStore {
    fn sink(&self, meta: SnapshotMeta) -> Result<Box<dyn SnapshotSink>, StorageError> {
        let stem = Self::stem(&meta);
        // A name of its own: two sinks of one snapshot (the node's own and
        // a leader's, or a transfer restarted) must not truncate each
        // other's file.
        let nth = SINKS_OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.dir.join(format!("{stem}.{nth}.data.tmp"));
        let file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        Ok(Box::new(FileSink {
            dir: self.dir.clone(),
            stem,
            tmp,
            nth,
            file,
            meta,
            written: 0,
            hasher: crc32fast::Hasher::new(),
            completed: false,
        }))
    }

    fn latest(&self) -> Result<Option<(SnapshotMeta, Bytes)>, StorageError> {
        let Some((_, stem)) = self.complete()?.pop() else {
            return Ok(None);
        };
        let meta = self.read_meta(&stem)?;
        let path = self.dir.join(format!("{stem}.data"));
        let mut data = Vec::with_capacity(meta.size as usize);
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| {
                corrupt(
                    &meta,
                    format!("snapshot data {} unreadable: {e}", path.display()),
                )
            })?;
        check(&meta, &data).map_err(|r| corrupt(&meta, format!("{}: {r}", path.display())))?;
        Ok(Some((meta, data.into())))
    }

    fn open_latest(&self) -> Result<Option<(SnapshotMeta, SnapshotReader)>, StorageError> {
        let Some((_, stem)) = self.complete()?.pop() else {
            return Ok(None);
        };
        let meta = self.read_meta(&stem)?;
        let path = self.dir.join(format!("{stem}.data"));
        // Once open, the file stays readable even if a newer snapshot
        // replaces and deletes it meanwhile.
        let file = File::open(&path).map_err(|e| {
            corrupt(
                &meta,
                format!("snapshot data {} unreadable: {e}", path.display()),
            )
        })?;
        Ok(Some((
            meta,
            Box::new(std::io::BufReader::with_capacity(1 << 20, file)),
        )))
    }
}

/// Sinks opened by this process, numbering their temporary files.
static SINKS_OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct FileSink {
    dir: PathBuf,
    stem: String,
    tmp: PathBuf,
    /// Numbers this sink's temporary files.
    nth: u64,
    file: File,
    meta: SnapshotMeta,
    written: u64,
    hasher: crc32fast::Hasher,
    /// Renamed into place: nothing left to clean up.
    completed: bool,
}

impl SnapshotSink for FileSink {
    fn written(&self) -> u64 {
        self.written
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), StorageError> {
        if self.written + chunk.len() as u64 > self.meta.size {
            return Err(corrupt(
                &self.meta,
                "snapshot data longer than announced".into(),
            ));
        }
        self.file.write_all(chunk).map_err(|e| io(&self.tmp, e))?;
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<(), StorageError> {
        self.complete(false).map(|_| ())
    }

    fn finish(mut self: Box<Self>) -> Result<Bytes, StorageError> {
        self.complete(true).map(Option::unwrap_or_default)
    }
}

impl FileSink {
    /// Checks, makes durable and the latest unless a newer one is; returns
    /// the data if `read_back`.
    fn complete(&mut self, read_back: bool) -> Result<Option<Bytes>, StorageError> {
        let hasher = std::mem::take(&mut self.hasher);
        let (meta, written) = (&self.meta, self.written);
        if written != meta.size || hasher.finalize() != meta.checksum {
            return Err(corrupt(
                meta,
                format!(
                    "received snapshot fails its check ({written} of {} bytes)",
                    meta.size
                ),
            ));
        }
        self.file.sync_all().map_err(|e| io(&self.tmp, e))?;
        let (dir, stem) = (&self.dir, &self.stem);
        let data_path = dir.join(format!("{stem}.data"));
        fs::rename(&self.tmp, &data_path).map_err(|e| io(&data_path, e))?;
        self.completed = true;
        let mut meta_bytes = rmp_serde::to_vec(meta)
            .map_err(|e| StorageError::Io(format!("cannot encode snapshot meta: {e}")))?;
        meta_bytes.extend_from_slice(&crc32fast::hash(&meta_bytes).to_be_bytes());
        let meta_tmp = dir.join(format!("{stem}.{}.meta.tmp", self.nth));
        write_file_durably(&meta_tmp, &dir.join(format!("{stem}.meta")), &meta_bytes)?;
        sync_dir(dir)?;
        // Before the clean-up below, which deletes this very snapshot if a
        // newer one completed meanwhile.
        let data = if read_back {
            Some(fs::read(&data_path).map_err(|e| io(&data_path, e))?.into())
        } else {
            None
        };

        // Only the newest stays, whichever finished last: a snapshot that
        // completes after a newer one (the node's own, built while a
        // leader's was being installed) is superseded at once.
        let store = FileSnapshotStore { dir: dir.clone() };
        let mut complete = store.complete()?;
        complete.pop();
        for (_, old) in complete {
            // Meta first: a crash in between leaves data without meta,
            // which is ignored and overwritten, never a meta without data.
            let _ = fs::remove_file(dir.join(format!("{old}.meta")));
            let _ = fs::remove_file(dir.join(format!("{old}.data")));
        }
        Ok(data)
    }
}

impl Drop for FileSink {
    /// An abandoned transfer (a newer snapshot replaced it, a chunk was
    /// refused, the node stopped following) leaves no file behind.
    fn drop(&mut self) {
        if !self.completed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Snapshots in memory, shared between clones so that a test harness can
/// crash a node and restart it on the same state.
#[derive(Clone, Debug, Default)]
pub struct MemSnapshotStore {
    latest: Arc<Mutex<Option<(SnapshotMeta, Bytes)>>>,
}

impl SnapshotStore for MemSnapshotStore {
    fn sink(&self, meta: SnapshotMeta) -> Result<Box<dyn SnapshotSink>, StorageError> {
        Ok(Box::new(MemSink {
            store: self.clone(),
            meta,
            data: Vec::new(),
        }))
    }

    fn latest(&self) -> Result<Option<(SnapshotMeta, Bytes)>, StorageError> {
        Ok(self
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }
}

struct MemSink {
    store: MemSnapshotStore,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl SnapshotSink for MemSink {
    fn written(&self) -> u64 {
        self.data.len() as u64
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), StorageError> {
        self.data.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Bytes, StorageError> {
        check(&self.meta, &self.data).map_err(|r| corrupt(&self.meta, r))?;
        let data = Bytes::from(self.data);
        let mut latest = self.store.latest.lock().unwrap_or_else(|e| e.into_inner());
        // As the file store does: a snapshot that finishes after a newer
        // one (a leader's, installed meanwhile) does not replace it, since
        // the log may already be compacted up to the newer one.
        let newer_kept = latest
            .as_ref()
            .is_some_and(|(m, _)| m.last_included.index > self.meta.last_included.index);
        if !newer_kept {
            *latest = Some((self.meta, data.clone()));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_of(index: u64, data: &[u8]) -> SnapshotMeta {
        describe(LogId::new(2, index), Membership::new([1, 2, 3]), data)
    }

    #[test]
    fn file_store_keeps_the_latest_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::open(dir.path()).unwrap();
        assert_eq!(store.latest().unwrap(), None);
        save(&store, meta_of(10, b"ten"), b"ten").unwrap();
        save(&store, meta_of(20, b"twenty"), b"twenty").unwrap();
        let store = FileSnapshotStore::open(dir.path()).unwrap();
        let (meta, data) = store.latest().unwrap().unwrap();
        assert_eq!(meta.last_included, LogId::new(2, 20));
        assert_eq!(&data[..], b"twenty");
        // The older snapshot is gone.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    /// A snapshot that finishes after a newer one (the snapshotter's own,
    /// built while a leader's was being installed) must not replace it:
    /// the log may already be compacted up to the newer one.
    fn an_older_snapshot_finished_late_stays_behind_the_newer(store: &dyn SnapshotStore) {
        let mut late = store.sink(meta_of(105, b"older")).unwrap();
        late.write(b"older").unwrap();
        save(store, meta_of(112, b"newer"), b"newer").unwrap();
        late.finish().unwrap();
        let (meta, data) = store.latest().unwrap().unwrap();
        assert_eq!(meta.last_included, LogId::new(2, 112));
        assert_eq!(&data[..], b"newer");
    }

    #[test]
    fn memory_store_keeps_the_newer_snapshot_when_an_older_one_finishes_late() {
        an_older_snapshot_finished_late_stays_behind_the_newer(&MemSnapshotStore::default());
    }

    #[test]
    fn file_store_keeps_the_newer_snapshot_when_an_older_one_finishes_late() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::open(dir.path()).unwrap();
        an_older_snapshot_finished_late_stays_behind_the_newer(&store);
        // And the late one is gone: the directory holds one snapshot.
        assert_eq!(
            files_in(dir.path()),
            [
                "00000000000000000002-00000000000000000112.data",
                "00000000000000000002-00000000000000000112.meta"
            ]
        );
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn two_sinks_of_one_snapshot_do_not_spoil_each_other() {
        // The node's own snapshot and a leader's of the same entry, or a
        // transfer restarted from the start while the first sink is open.
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::open(dir.path()).unwrap();
        let meta = meta_of(30, b"thirty");
        let mut first = store.sink(meta.clone()).unwrap();
        first.write(b"thirty").unwrap();
        let second = store.sink(meta).unwrap();
        assert_eq!(&first.finish().unwrap()[..], b"thirty");
        drop(second);
        let (meta, data) = store.latest().unwrap().unwrap();
        assert_eq!((meta.last_included.index, &data[..]), (30, &b"thirty"[..]));
        assert_eq!(files_in(dir.path()).len(), 2);
    }

    #[test]
    fn a_damaged_snapshot_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::open(dir.path()).unwrap();
        save(&store, meta_of(7, b"seven"), b"seven").unwrap();
        let data = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "data"))
            .unwrap();
        fs::write(&data, b"SEVEN").unwrap();
        match store.latest() {
            Err(StorageError::Corrupt { index: 7, reason }) => {
                assert!(reason.contains("checksum"), "{reason}")
            }
            other => panic!("expected a corruption error, got {other:?}"),
        }
        fs::remove_file(&data).unwrap();
        assert!(matches!(
            store.latest(),
            Err(StorageError::Corrupt { index: 7, .. })
        ));
    }

    #[test]
    fn an_interrupted_or_wrong_transfer_never_becomes_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::open(dir.path()).unwrap();
        save(&store, meta_of(5, b"five"), b"five").unwrap();
        let mut sink = store.sink(meta_of(9, b"ninenine")).unwrap();
        sink.write(b"nine").unwrap();
        drop(sink); // interrupted: its partial file goes with it
        assert_eq!(files_in(dir.path()).len(), 2);
        let mut sink = store.sink(meta_of(9, b"ninenine")).unwrap();
        sink.write(b"nineNINE").unwrap();
        assert!(sink.finish().is_err()); // checksum mismatch
        let store = FileSnapshotStore::open(dir.path()).unwrap();
        assert_eq!(store.latest().unwrap().unwrap().0.last_included.index, 5);
        let mut sink = store.sink(meta_of(9, b"ninenine")).unwrap();
        assert!(sink.write(b"ninenine!").is_err()); // longer than announced
    }
}
