//! Backups and restores. [`crate::Raft::backup`] (and `GET
//! /cluster/backup`) streams a consistent copy of the replicated state —
//! the latest snapshot of the state machine (with the session table) and
//! the committed log entries after it, up to a read barrier, so it holds
//! every write acknowledged before the call. Shipping the snapshot already
//! on disk instead of taking a new one keeps a backup as fast as the disk
//! and its memory bounded whatever the state's size. [`restore`] (and
//! `NodeBuilder::restore_from`) turns one into the data directory of a
//! node of a **new** cluster: a new cluster id, so the restored cluster
//! can never exchange a message with the old one (etcd's snapshot restore
//! does the same); the entries after the snapshot commit again in it.
//!
//! The file: the magic `RGTA-BACKUP` and a version byte, the header's
//! length (u32, big-endian), the header ([`BackupHeader`], MessagePack),
//! the header's CRC-32 (u32), then exactly `data_size` bytes of snapshot
//! data whose CRC-32 is `data_checksum`, then exactly `log_size` bytes of
//! log entries (MessagePack) whose CRC-32 is `log_checksum`. Nothing may
//! follow.

use std::io::{Cursor, Read};

use serde::{Deserialize, Serialize};

use crate::core::types::{Entry, LogId, Membership};

#[cfg(feature = "fjall")]
mod restore;
#[cfg(feature = "fjall")]
pub use restore::{restore, RestoreInfo};

const MAGIC: &[u8; 11] = b"RGTA-BACKUP";
const VERSION: u8 = 2;
/// A header larger than this is not one of ours.
const MAX_HEADER_BYTES: u32 = 16 << 20;
/// The log entries a backup ships after its snapshot, encoded, at most:
/// a backup whose snapshot is further behind takes a new snapshot
/// instead, so a restore never holds more than this in memory.
pub(crate) const MAX_LOG_BYTES: u64 = 32 << 20;
/// Chunks read when verifying or copying data.
pub(crate) const CHUNK_BYTES: usize = 1 << 20;

/// What a backup holds, as its header says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The service it was taken from (`NodeBuilder::cluster_name`; empty
    /// for a node started with `Raft::start`).
    pub cluster_name: String,
    /// The cluster it was taken from.
    pub cluster_id: u64,
    /// The last log entry whose effect the backup holds (at or after the
    /// read barrier the backup passed).
    pub last_included: LogId,
    /// The configuration in force at `last_included`.
    pub membership: Membership,
    /// The last entry the snapshot covers (index 0: no snapshot, the log
    /// starts at index 1).
    pub snapshot: LogId,
    /// Bytes of snapshot data after the header.
    pub data_size: u64,
    /// CRC-32 of the data.
    pub data_checksum: u32,
    /// Bytes of log entries after the data: every entry from
    /// `snapshot.index + 1` to `last_included.index`.
    pub log_size: u64,
    /// CRC-32 of the log entries.
    pub log_checksum: u32,
}

impl BackupHeader {
    /// Encodes `entries` for the file and records their size and checksum.
    pub(crate) fn with_log(mut self, entries: &[Entry]) -> (Self, Vec<u8>) {
        let log = if entries.is_empty() {
            Vec::new()
        } else {
            rmp_serde::to_vec(entries).expect("entries always encode")
        };
        self.log_size = log.len() as u64;
        self.log_checksum = crc32fast::hash(&log);
        (self, log)
    }

    fn encode(&self) -> Vec<u8> {
        let body = rmp_serde::to_vec(self).expect("a header always encodes");
        let mut out = Vec::with_capacity(MAGIC.len() + 9 + body.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        out
    }
}

/// Why a backup file was refused (nothing was written), or could not be
/// restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file does not start like a regatta backup.
    #[error("not a regatta backup (the file does not start with its magic bytes)")]
    NotABackup,
    /// A backup format this version cannot read.
    #[error("backup format version {0} is not supported (this build reads version 2)")]
    UnknownVersion(u8),
    /// The header fails its checksum or does not decode.
    #[error("the backup's header is damaged: {0}")]
    DamagedHeader(String),
    /// The file ends before the data and log the header announces.
    #[error("the backup is truncated: its header announces {expected} bytes of data and log, the file holds {found}")]
    Truncated {
        /// Bytes of data announced.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// Bytes follow the log.
    #[error("the backup has {0} unexpected bytes after its data and log")]
    TrailingBytes(u64),
    /// The data fails its checksum.
    #[error(
        "the backup's data is damaged: its checksum is {found:08x}, the header says {expected:08x}"
    )]
    DamagedData {
        /// From the header.
        expected: u32,
        /// Computed.
        found: u32,
    },
    /// The log entries fail their checksum, do not decode, or do not run
    /// from the snapshot to `last_included`.
    #[error("the backup's log entries are damaged: {0}")]
    DamagedLog(String),
    /// A backup of another service.
    #[error(
        "this is a backup of a `{backup}` cluster, not of `{ours}`: restore it with that service"
    )]
    OtherService {
        /// The backup's service.
        backup: String,
        /// The service restoring it.
        ours: String,
    },
    /// The data directory already holds a node's state.
    #[error("{0} already holds a node's state: restore into new, empty data directories")]
    DirectoryHoldsState(String),
    /// Reading the backup or writing the directory failed.
    #[error("{0}")]
    Io(String),
}

/// A backup being read: the header's bytes, the snapshot's data, then
/// the log entries. Implements [`Read`]; the data is checked against the
/// header's size and checksum as it streams, and a mismatch ends the
/// stream with an error instead of a quietly damaged file.
pub struct BackupReader {
    prefix: Cursor<Vec<u8>>,
    data: Box<dyn Read + Send>,
    remaining: u64,
    hasher: crc32fast::Hasher,
    expected_checksum: u32,
    log: Cursor<Vec<u8>>,
}

impl BackupReader {
    /// `header` must carry `log`'s size and checksum (see
    /// [`BackupHeader::with_log`]).
    pub(crate) fn new(header: &BackupHeader, data: Box<dyn Read + Send>, log: Vec<u8>) -> Self {
        BackupReader {
            prefix: Cursor::new(header.encode()),
            data,
            remaining: header.data_size,
            hasher: crc32fast::Hasher::new(),
            expected_checksum: header.data_checksum,
            log: Cursor::new(log),
        }
    }
}

impl Read for BackupReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.prefix.read(buf)?;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        if self.remaining == 0 {
            return self.log.read(buf);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.data.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the snapshot file ended before its announced size",
            ));
        }
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        if self.remaining == 0 {
            let found = self.hasher.clone().finalize();
            if found != self.expected_checksum {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "the snapshot's data fails its checksum ({found:08x}, expected {:08x})",
                        self.expected_checksum
                    ),
                ));
            }
        }
        Ok(n)
    }
}

/// A consistent backup, ready to stream: see [`crate::Raft::backup`].
pub struct Backup {
    /// What it holds.
    pub header: BackupHeader,
    /// The file's bytes, header first.
    pub reader: BackupReader,
}

impl Backup {
    /// Bytes the whole file takes.
    pub fn file_size(&self) -> u64 {
        self.header.encode().len() as u64 + self.header.data_size + self.header.log_size
    }
}

fn io(e: std::io::Error) -> BackupError {
    BackupError::Io(format!("reading the backup: {e}"))
}

/// Reads and checks a backup's header; the reader is left at the data.
pub fn read_header(mut from: impl Read) -> Result<BackupHeader, BackupError> {
    let mut magic = [0u8; MAGIC.len() + 1];
    read_exact_or(&mut from, &mut magic, BackupError::NotABackup)?;
    if &magic[..MAGIC.len()] != MAGIC {
        return Err(BackupError::NotABackup);
    }
    if magic[MAGIC.len()] != VERSION {
        return Err(BackupError::UnknownVersion(magic[MAGIC.len()]));
    }
    let mut len = [0u8; 4];
    let short = || BackupError::DamagedHeader("the file ends inside the header".into());
    read_exact_or(&mut from, &mut len, short())?;
    let len = u32::from_be_bytes(len);
    if len > MAX_HEADER_BYTES {
        return Err(BackupError::DamagedHeader(format!(
            "a header of {len} bytes is beyond any backup's"
        )));
    }
    let mut body = vec![0u8; len as usize];
    read_exact_or(&mut from, &mut body, short())?;
    let mut crc = [0u8; 4];
    read_exact_or(&mut from, &mut crc, short())?;
    if crc32fast::hash(&body) != u32::from_be_bytes(crc) {
        return Err(BackupError::DamagedHeader("it fails its checksum".into()));
    }
    rmp_serde::from_slice(&body).map_err(|e| BackupError::DamagedHeader(e.to_string()))
}

fn read_exact_or(
    from: &mut impl Read,
    buf: &mut [u8],
    short: BackupError,
) -> Result<(), BackupError> {
    from.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => short,
        _ => io(e),
    })
}

/// Reads a whole backup and checks everything a restore relies on —
/// magic, version, header checksum, data and log sizes and checksums,
/// nothing after — without keeping the data; returns the header.
pub fn verify(from: impl Read) -> Result<BackupHeader, BackupError> {
    check(from).map(|(header, _)| header)
}

/// [`verify`], also decoding the log entries and checking that they run
/// from the snapshot to `last_included`.
pub(crate) fn check(mut from: impl Read) -> Result<(BackupHeader, Vec<Entry>), BackupError> {
    let header = read_header(&mut from)?;
    if header.log_size > MAX_LOG_BYTES {
        return Err(BackupError::DamagedHeader(format!(
            "a log of {} bytes is beyond any backup's",
            header.log_size
        )));
    }
    let mut data_hasher = crc32fast::Hasher::new();
    let mut log = Vec::new();
    let mut found = 0u64;
    let mut chunk = vec![0u8; CHUNK_BYTES];
    let total = header.data_size.saturating_add(header.log_size);
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        let read = &chunk[..n];
        let data = (header.data_size - found.min(header.data_size)).min(n as u64) as usize;
        data_hasher.update(&read[..data]);
        let room = (total - found.min(total)) as usize;
        log.extend_from_slice(&read[data..n.min(room).max(data)]);
        found += n as u64;
    }
    if found < total {
        return Err(BackupError::Truncated {
            expected: total,
            found,
        });
    }
    if found > total {
        return Err(BackupError::TrailingBytes(found - total));
    }
    let checksum = data_hasher.finalize();
    if checksum != header.data_checksum {
        return Err(BackupError::DamagedData {
            expected: header.data_checksum,
            found: checksum,
        });
    }
    let entries = decode_log(&header, &log)?;
    Ok((header, entries))
}

fn decode_log(header: &BackupHeader, log: &[u8]) -> Result<Vec<Entry>, BackupError> {
    let damaged = |why: String| Err(BackupError::DamagedLog(why));
    let checksum = crc32fast::hash(log);
    if checksum != header.log_checksum {
        return damaged(format!(
            "their checksum is {checksum:08x}, the header says {:08x}",
            header.log_checksum
        ));
    }
    let entries: Vec<Entry> = if log.is_empty() {
        Vec::new()
    } else {
        match rmp_serde::from_slice(log) {
            Ok(entries) => entries,
            Err(e) => return damaged(e.to_string()),
        }
    };
    let mut previous = header.snapshot;
    for entry in &entries {
        if entry.log_id.index != previous.index + 1 || entry.log_id.term < previous.term {
            return damaged(format!(
                "entry {} (term {}) does not follow {} (term {})",
                entry.log_id.index, entry.log_id.term, previous.index, previous.term
            ));
        }
        previous = entry.log_id;
    }
    if previous != header.last_included {
        return damaged(format!(
            "they end at {} (term {}), the header says {} (term {})",
            previous.index, previous.term, header.last_included.index, header.last_included.term
        ));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::Payload;

    fn header(data: &[u8], snapshot: LogId) -> BackupHeader {
        BackupHeader {
            cluster_name: "kv".into(),
            cluster_id: 7,
            last_included: snapshot,
            membership: Membership::new([1, 2, 3]),
            snapshot,
            data_size: data.len() as u64,
            data_checksum: crc32fast::hash(data),
            log_size: 0,
            log_checksum: 0,
        }
    }

    fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
        (from..=to)
            .map(|i| Entry {
                log_id: LogId::new(term, i),
                payload: Payload::Command(vec![i as u8; 10].into()),
            })
            .collect()
    }

    fn file_of(header: BackupHeader, data: &[u8], log: &[Entry]) -> Vec<u8> {
        let mut header = header;
        if let Some(last) = log.last() {
            header.last_included = last.log_id;
        }
        let (header, log) = header.with_log(log);
        let mut out = Vec::new();
        BackupReader::new(&header, Box::new(Cursor::new(data.to_vec())), log)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn backup_of(data: &[u8]) -> Vec<u8> {
        file_of(header(data, LogId::new(3, 40)), data, &entries(41, 45, 3))
    }

    #[test]
    fn a_backup_reads_back_and_verifies() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let file = backup_of(&data);
        let (header, log) = check(&file[..]).unwrap();
        assert_eq!(header.snapshot, LogId::new(3, 40));
        assert_eq!(header.last_included, LogId::new(3, 45));
        assert_eq!(header.data_size, data.len() as u64);
        assert_eq!(log, entries(41, 45, 3));
        // No snapshot at all: the log from its first entry.
        let file = file_of(header_without_snapshot(), b"", &entries(1, 9, 2));
        let (header, log) = check(&file[..]).unwrap();
        assert_eq!((header.data_size, log.len()), (0, 9));
    }

    fn header_without_snapshot() -> BackupHeader {
        header(b"", LogId::default())
    }

    #[test]
    fn every_kind_of_damage_is_refused_and_named() {
        let file = backup_of(b"the state");
        let cut = &file[..file.len() - 3];
        assert!(matches!(verify(cut), Err(BackupError::Truncated { .. })));
        let mut longer = file.clone();
        longer.push(0);
        assert!(matches!(
            verify(&longer[..]),
            Err(BackupError::TrailingBytes(1))
        ));
        let mut flipped = file.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            verify(&flipped[..]),
            Err(BackupError::DamagedLog(_))
        ));
        // The last byte of the snapshot data, just before the log.
        let mut data = file.clone();
        let log_bytes = rmp_serde::to_vec(&entries(41, 45, 3)).unwrap().len();
        data[file.len() - log_bytes - 1] ^= 1;
        assert!(matches!(
            verify(&data[..]),
            Err(BackupError::DamagedData { .. })
        ));
        let mut header = file.clone();
        header[20] ^= 1;
        assert!(matches!(
            verify(&header[..]),
            Err(BackupError::DamagedHeader(_))
        ));
        assert!(matches!(
            verify(&b"{\"json\": 1}"[..]),
            Err(BackupError::NotABackup)
        ));
        assert!(matches!(verify(&b""[..]), Err(BackupError::NotABackup)));
        let mut version = file.clone();
        version[MAGIC.len()] = 9;
        assert!(matches!(
            verify(&version[..]),
            Err(BackupError::UnknownVersion(9))
        ));
        let mut huge = file;
        huge[MAGIC.len() + 1..MAGIC.len() + 5].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            verify(&huge[..]),
            Err(BackupError::DamagedHeader(_))
        ));
    }

    #[test]
    fn log_entries_that_do_not_run_from_the_snapshot_to_the_end_are_refused() {
        let snapshot = LogId::new(3, 40);
        let gap = {
            let mut log = entries(41, 45, 3);
            log.remove(2);
            log
        };
        let older_term = {
            let mut log = entries(41, 45, 3);
            log[4].log_id.term = 2;
            log
        };
        for log in [entries(42, 45, 3), gap, older_term] {
            let file = file_of(header(b"s", snapshot), b"s", &log);
            assert!(
                matches!(verify(&file[..]), Err(BackupError::DamagedLog(_))),
                "{log:?}"
            );
        }
        // A header that claims more than the log holds.
        let mut claims_more = header(b"s", snapshot);
        claims_more.last_included = LogId::new(3, 50);
        let (claims_more, log) = claims_more.with_log(&entries(41, 45, 3));
        let mut file = Vec::new();
        BackupReader::new(&claims_more, Box::new(Cursor::new(b"s".to_vec())), log)
            .read_to_end(&mut file)
            .unwrap();
        assert!(matches!(verify(&file[..]), Err(BackupError::DamagedLog(_))));
    }

    #[test]
    fn a_snapshot_that_does_not_match_its_meta_ends_the_stream_with_an_error() {
        let header = header(b"good", LogId::new(1, 1));
        let mut out = Vec::new();
        let bad = BackupReader::new(&header, Box::new(Cursor::new(b"evil".to_vec())), Vec::new());
        assert!(bad.take(1 << 20).read_to_end(&mut out).is_err());
        let short = BackupReader::new(&header, Box::new(Cursor::new(b"go".to_vec())), Vec::new());
        assert!(short.take(1 << 20).read_to_end(&mut Vec::new()).is_err());
    }
}
