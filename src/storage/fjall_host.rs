//! A host's one fjall database holding the logs of all its Raft groups.
//!
//! # Layout
//!
//! One keyspace, `log`, as for a single node, with every group's records
//! under its own prefix and a catalog of the groups:
//!
//! | key                               | value                                  |
//! |-----------------------------------|----------------------------------------|
//! | `m/host-format`                   | host format version, `u32` big-endian  |
//! | `m/host-cluster`                  | the hosts' cluster name, UTF-8         |
//! | `c/` + group (`u64` BE)           | framed founding [`Membership`]          |
//! | `d/` + group (`u64` BE)           | framed [`Tombstone`] of a deleted group |
//! | `g/` + group (`u64` BE) + key     | the group's log: a node's layout (see [`super::fjall`]) |
//!
//! A group is in the catalog from its creation until its removal; a
//! restarted host starts every group listed there. A group deleted from
//! all its members leaves a tombstone: its id is never used again here,
//! and a member that missed the deletion is told when it next speaks. Its snapshots are files
//! under `groups/<group>/snapshots` next to the database.
//!
//! # Durability
//!
//! The groups' logs write without syncing; the host's shared writer calls
//! [`HostDatabase::persist`] once per round, before it reports any write of
//! the round as durable. What a group writes while it starts (outside the
//! writer: a new incarnation, a log reconciled with its snapshot) the host
//! persists once its groups have started. A fjall journal is one sequential file, so a crash
//! keeps a prefix of it: every batch is still all or nothing, and nothing
//! reported durable can be lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::fjall::{frame, io, unframe, FjallStorage, Keys};
use super::snapshot::FileSnapshotStore;
use super::StorageError;
use crate::core::types::{GroupId, Membership};

/// Version of the host layout above; bump on any change.
const HOST_FORMAT_VERSION: u32 = 1;

const KEY_HOST_FORMAT: &[u8] = b"m/host-format";
const KEY_HOST_CLUSTER: &[u8] = b"m/host-cluster";
const CATALOG_PREFIX: &[u8] = b"c/";
const GROUP_PREFIX: &[u8] = b"g/";
const TOMBSTONE_PREFIX: &[u8] = b"d/";

/// How many keys one removal batch deletes (a group's log can be long).
const REMOVE_BATCH: usize = 4096;

fn catalog_key(group: GroupId) -> Vec<u8> {
    [CATALOG_PREFIX, &group.to_be_bytes()[..]].concat()
}

fn tombstone_key(group: GroupId) -> Vec<u8> {
    [TOMBSTONE_PREFIX, &group.to_be_bytes()[..]].concat()
}

/// What a host keeps of a group deleted from all its members.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Tombstone {
    /// The group's cluster id: only its replicas are told to go.
    pub cluster_id: u64,
    /// Its members when it was deleted here.
    pub members: std::collections::BTreeSet<crate::core::types::NodeId>,
}

fn group_prefix(group: GroupId) -> Vec<u8> {
    [GROUP_PREFIX, &group.to_be_bytes()[..]].concat()
}

/// The database of one host: its groups' logs and the catalog.
#[derive(Clone)]
pub(crate) struct HostDatabase {
    root: PathBuf,
    db: Database,
    log: Keyspace,
}

impl HostDatabase {
    /// Opens (creating if needed) the database in `root`; one written for
    /// another cluster name or layout version is refused.
    pub(crate) fn open(root: &Path, cluster: &str) -> Result<HostDatabase, StorageError> {
        let dir = root.join("host");
        let db = Database::builder(&dir)
            .max_journaling_size(64 * 1024 * 1024)
            .open()
            .map_err(io)?;
        let log = db
            .keyspace("log", KeyspaceCreateOptions::default)
            .map_err(io)?;
        let format = log.get(KEY_HOST_FORMAT).map_err(io)?;
        let found_cluster = log.get(KEY_HOST_CLUSTER).map_err(io)?;
        match (format, found_cluster) {
            (None, None) => {
                if log.first_key_value().is_some() {
                    return Err(StorageError::Incompatible(format!(
                        "{} holds data but no host format version",
                        dir.display()
                    )));
                }
                let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
                batch.insert(&log, KEY_HOST_FORMAT, HOST_FORMAT_VERSION.to_be_bytes());
                batch.insert(&log, KEY_HOST_CLUSTER, cluster.as_bytes());
                batch.commit().map_err(io)?;
            }
            (Some(format), Some(found)) => {
                if *format != HOST_FORMAT_VERSION.to_be_bytes() {
                    return Err(StorageError::Incompatible(format!(
                        "{} has host format {:?}; this build reads host format version {HOST_FORMAT_VERSION}",
                        dir.display(),
                        &*format
                    )));
                }
                if &*found != cluster.as_bytes() {
                    return Err(StorageError::Incompatible(format!(
                        "{} belongs to cluster {:?}, not to cluster {cluster:?}",
                        dir.display(),
                        String::from_utf8_lossy(&found)
                    )));
                }
            }
            _ => {
                return Err(StorageError::Incompatible(format!(
                    "{} has half of its host records (format version and cluster name)",
                    dir.display()
                )))
            }
        }
        Ok(HostDatabase {
            root: root.to_path_buf(),
            db,
            log,
        })
    }

    /// The groups in the catalog, with their founding members.
    pub(crate) fn groups(&self) -> Result<BTreeMap<GroupId, Membership>, StorageError> {
        let mut groups = BTreeMap::new();
        for guard in self.log.prefix(CATALOG_PREFIX) {
            let (key, value) = guard.into_inner().map_err(io)?;
            let id = key
                .strip_prefix(CATALOG_PREFIX)
                .and_then(|id| <[u8; 8]>::try_from(id).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StorageError::Corrupt {
                    index: 0,
                    reason: format!("malformed group catalog key {key:?}"),
                })?;
            let founders: Membership = unframe(&value).map_err(|reason| StorageError::Corrupt {
                index: 0,
                reason: format!("catalog record of group {id}: {reason}"),
            })?;
            groups.insert(id, founders);
        }
        Ok(groups)
    }

    /// The groups deleted here, with what is kept of them.
    pub(crate) fn tombstones(&self) -> Result<BTreeMap<GroupId, Tombstone>, StorageError> {
        let mut tombstones = BTreeMap::new();
        for guard in self.log.prefix(TOMBSTONE_PREFIX) {
            let (key, value) = guard.into_inner().map_err(io)?;
            let id = key
                .strip_prefix(TOMBSTONE_PREFIX)
                .and_then(|id| <[u8; 8]>::try_from(id).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StorageError::Corrupt {
                    index: 0,
                    reason: format!("malformed tombstone key {key:?}"),
                })?;
            let tombstone = unframe(&value).map_err(|reason| StorageError::Corrupt {
                index: 0,
                reason: format!("tombstone of group {id}: {reason}"),
            })?;
            tombstones.insert(id, tombstone);
        }
        Ok(tombstones)
    }

    /// Deletes `group` for good: its tombstone replaces its catalog record
    /// in one durable batch, then its log and snapshots go.
    pub(crate) fn delete_group(
        &self,
        group: GroupId,
        tombstone: &Tombstone,
    ) -> Result<(), StorageError> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.remove(&self.log, catalog_key(group));
        batch.insert(&self.log, tombstone_key(group), frame(tombstone)?);
        batch.commit().map_err(io)?;
        self.clear_group(group)
    }

    /// Adds `group` to the catalog, durably. Records a crash left behind
    /// from an earlier group of the same id are deleted first: the new
    /// group must not adopt its predecessor's log.
    pub(crate) fn add_group(
        &self,
        group: GroupId,
        founders: &Membership,
    ) -> Result<(), StorageError> {
        self.clear_group(group)?;
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(&self.log, catalog_key(group), frame(founders)?);
        batch.commit().map_err(io)
    }

    /// The log of `group`, writing without syncing (the shared writer
    /// syncs); refused if it was written for another cluster id.
    pub(crate) fn open_group(
        &self,
        group: GroupId,
        cluster_id: &str,
    ) -> Result<FjallStorage, StorageError> {
        let snapshots = Arc::new(FileSnapshotStore::open(self.snapshot_dir(group))?);
        FjallStorage::attach(
            self.root.clone(),
            self.root.join("host"),
            snapshots,
            self.db.clone(),
            self.log.clone(),
            Keys::under(group_prefix(group)),
            cluster_id,
            false,
        )
    }

    fn snapshot_dir(&self, group: GroupId) -> PathBuf {
        self.root
            .join("groups")
            .join(group.to_string())
            .join("snapshots")
    }

    /// Deletes `group`: its catalog record first (a crash midway leaves
    /// stray records that no group reads, never a half group that starts),
    /// then its log and its snapshots.
    pub(crate) fn remove_group(&self, group: GroupId) -> Result<(), StorageError> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.remove(&self.log, catalog_key(group));
        batch.commit().map_err(io)?;
        self.clear_group(group)
    }

    /// Deletes the log and snapshots of a group that is not in the catalog.
    fn clear_group(&self, group: GroupId) -> Result<(), StorageError> {
        loop {
            let keys: Vec<_> = self
                .log
                .prefix(group_prefix(group))
                .take(REMOVE_BATCH)
                .map(|guard| guard.key().map_err(io))
                .collect::<Result<_, _>>()?;
            if keys.is_empty() {
                break;
            }
            let mut batch = self.db.batch();
            for key in keys {
                batch.remove(&self.log, key);
            }
            batch.commit().map_err(io)?;
        }
        self.persist()?;
        match std::fs::remove_dir_all(self.root.join("groups").join(group.to_string())) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::Io(format!(
                "cannot delete the snapshots of group {group}: {e}"
            ))),
        }
    }

    /// Makes everything written so far durable: one fsync.
    pub(crate) fn persist(&self) -> Result<(), StorageError> {
        self.db.persist(PersistMode::SyncAll).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::{Entry, HardState, LogId, Payload};
    use crate::storage::{LogStorage, WriteBatch};

    fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        indexes
            .map(|i| Entry {
                log_id: LogId::new(term, i),
                payload: Payload::Command(format!("{term}/{i}").into_bytes().into()),
            })
            .collect()
    }

    fn write(log: &mut FjallStorage, truncate_from: Option<u64>, entries: Vec<Entry>) {
        log.write(WriteBatch {
            truncate_from,
            entries,
            hard_state: Some(HardState {
                term: 2,
                voted_for: Some(1),
            }),
            identity: None,
            founders: None,
        })
        .unwrap();
    }

    /// Groups share the keyspace but never each other's records: a
    /// truncation or purge in one leaves the other whole, across a
    /// reopen, and a removal takes exactly one group.
    #[test]
    fn groups_in_one_database_are_separate_logs() {
        let dir = tempfile::tempdir().unwrap();
        let founders = Membership::new([1, 2, 3]);
        {
            let db = HostDatabase::open(dir.path(), "c").unwrap();
            db.add_group(1, &founders).unwrap();
            db.add_group(2, &founders).unwrap();
            let mut one = db.open_group(1, "c").unwrap();
            let mut two = db.open_group(2, "c").unwrap();
            one.load().unwrap();
            two.load().unwrap();
            write(&mut one, None, entries(1, 1..=5));
            write(&mut two, None, entries(1, 1..=5));
            write(&mut one, Some(3), entries(2, 3..=3));
            two.purge(LogId::new(1, 2), &founders).unwrap();
            db.persist().unwrap();
        }
        let db = HostDatabase::open(dir.path(), "c").unwrap();
        assert_eq!(
            db.groups().unwrap().keys().copied().collect::<Vec<_>>(),
            [1, 2]
        );
        let one = db.open_group(1, "c").unwrap().load().unwrap();
        let ids: Vec<LogId> = one.entries.iter().map(|e| e.log_id).collect();
        assert_eq!(ids, [LogId::new(1, 1), LogId::new(1, 2), LogId::new(2, 3)]);
        let two = db.open_group(2, "c").unwrap().load().unwrap();
        assert_eq!(two.snapshot, LogId::new(1, 2));
        assert_eq!(two.entries.len(), 3);
        assert_eq!(two.hard_state.term, 2);
        // A group written under another cluster id is refused.
        assert!(matches!(
            db.open_group(1, "other"),
            Err(StorageError::Incompatible(_))
        ));

        db.remove_group(1).unwrap();
        assert_eq!(
            db.groups().unwrap().keys().copied().collect::<Vec<_>>(),
            [2]
        );
        assert!(db.open_group(2, "c").unwrap().load().unwrap().entries.len() == 3);
        // The same id again is a new, empty group.
        db.add_group(1, &founders).unwrap();
        assert!(db.open_group(1, "c").unwrap().load().unwrap().is_empty());
    }

    /// Records a crash left behind (a removal cut short after its catalog
    /// record went) never become part of a new group of the same id.
    #[test]
    fn a_new_group_does_not_adopt_the_records_of_a_removed_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = HostDatabase::open(dir.path(), "c").unwrap();
        let founders = Membership::new([1]);
        db.add_group(4, &founders).unwrap();
        let mut four = db.open_group(4, "c").unwrap();
        four.load().unwrap();
        write(&mut four, None, entries(1, 1..=3));
        drop(four);
        // As if the removal stopped right after the catalog record went.
        let mut batch = db.db.batch();
        batch.remove(&db.log, catalog_key(4));
        batch.commit().unwrap();
        assert!(db.groups().unwrap().is_empty());
        db.add_group(4, &founders).unwrap();
        assert!(db.open_group(4, "c").unwrap().load().unwrap().is_empty());
    }

    #[test]
    fn a_deleted_group_leaves_a_tombstone_and_no_records() {
        let dir = tempfile::tempdir().unwrap();
        let db = HostDatabase::open(dir.path(), "c").unwrap();
        db.add_group(4, &Membership::new([1, 2, 3])).unwrap();
        let mut log = db.open_group(4, "c").unwrap();
        write(&mut log, None, entries(1, 1..=5));
        db.persist().unwrap();
        drop(log);
        let tombstone = Tombstone {
            cluster_id: 77,
            members: [1, 2, 3].into(),
        };
        db.delete_group(4, &tombstone).unwrap();
        drop(db);
        let db = HostDatabase::open(dir.path(), "c").unwrap();
        assert!(db.groups().unwrap().is_empty());
        assert_eq!(db.tombstones().unwrap(), [(4, tombstone)].into());
        assert_eq!(db.log.prefix(group_prefix(4)).count(), 0);
    }

    #[test]
    fn a_host_database_of_another_cluster_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(HostDatabase::open(dir.path(), "c").unwrap());
        assert!(matches!(
            HostDatabase::open(dir.path(), "d"),
            Err(StorageError::Incompatible(_))
        ));
    }
}
