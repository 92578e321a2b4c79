//! Storage conformance: one behavioural suite that every [`LogStorage`]
//! backend must pass, run against each bundled backend, plus tests of what
//! only the fjall backend does (identity checks, corruption handling).

use std::path::Path;

use bytes::Bytes;
use regatta::storage::{
    FjallStorage, InitialState, LogStorage, MemStorage, StorageError, WriteBatch,
};
use regatta::{Entry, HardState, LogId, Membership, Payload};

/// An entry of `term` at `index`, with a payload that varies with the index so
/// every payload kind goes through the backend's encoding.
fn entry(term: u64, index: u64) -> Entry {
    let payload = match index % 3 {
        0 => Payload::Blank,
        1 => Payload::Command(Bytes::from(format!("cmd-{term}-{index}"))),
        _ => Payload::Membership(Box::new(Membership::new([1, 2, index]))),
    };
    Entry {
        log_id: LogId::new(term, index),
        payload,
    }
}

fn entries(term: u64, indexes: impl IntoIterator<Item = u64>) -> Vec<Entry> {
    indexes.into_iter().map(|i| entry(term, i)).collect()
}

fn append(entries: Vec<Entry>) -> WriteBatch {
    WriteBatch {
        entries,
        ..Default::default()
    }
}

/// Simulates a node restart: the old handle is dropped *before* the new one
/// is opened (a durable backend may lock its directory), then the state is
/// read back as at start-up.
fn restart<S: LogStorage>(store: S, reopen: &mut impl FnMut() -> S) -> (S, InitialState) {
    drop(store);
    let mut store = reopen();
    let state = store.load().expect("load after restart");
    (store, state)
}

/// The behaviour every backend must show. `reopen` yields a handle on the
/// same durable state each time it is called; the suite always drops the
/// previous handle first.
fn conformance<S: LogStorage>(mut reopen: impl FnMut() -> S) {
    // An empty store loads empty.
    let mut store = reopen();
    let state = store.load().expect("load empty");
    assert!(state.is_empty(), "fresh store not empty: {state:?}");
    assert_eq!(state, InitialState::default());
    let _ = store.size_bytes();

    // Append, then reload.
    store.write(append(entries(1, 1..=5))).expect("append");
    assert!(store.size_bytes() > 0);
    let (mut store, state) = restart(store, &mut reopen);
    assert_eq!(state.entries, entries(1, 1..=5));
    assert_eq!(state.hard_state, HardState::default());
    assert_eq!(state.snapshot, LogId::default());
    assert_eq!(state.snapshot_membership, None);
    assert!(!state.is_empty());

    // Hard state persists, alone, without disturbing the log.
    let hs = HardState {
        term: 2,
        voted_for: Some(3),
    };
    store
        .write(WriteBatch {
            hard_state: Some(hs),
            ..Default::default()
        })
        .expect("hard state");
    let (mut store, state) = restart(store, &mut reopen);
    assert_eq!(state.hard_state, hs);
    assert_eq!(state.entries, entries(1, 1..=5));

    // An empty batch is harmless.
    store.write(WriteBatch::default()).expect("empty batch");

    // Truncate, then append in a later batch.
    store
        .write(WriteBatch {
            truncate_from: Some(4),
            ..Default::default()
        })
        .expect("truncate");
    let (mut store, state) = restart(store, &mut reopen);
    assert_eq!(state.entries, entries(1, 1..=3));
    store
        .write(append(entries(2, 4..=5)))
        .expect("append after truncate");
    let (mut store, state) = restart(store, &mut reopen);
    let mut expected = entries(1, 1..=3);
    expected.extend(entries(2, 4..=5));
    assert_eq!(state.entries, expected);

    // Truncating past the end changes nothing.
    store
        .write(WriteBatch {
            truncate_from: Some(6),
            ..Default::default()
        })
        .expect("truncate past end");
    let (mut store, state) = restart(store, &mut reopen);
    assert_eq!(state.entries, expected);

    // Truncate + append + hard state in one batch; the appends overwrite some
    // truncated indexes and stop short of others.
    let hs = HardState {
        term: 3,
        voted_for: Some(1),
    };
    let identity = regatta::NodeIdentity {
        cluster_id: 7,
        incarnation: 9,
        founder: false,
    };
    store
        .write(WriteBatch {
            truncate_from: Some(3),
            entries: entries(3, 3..=4),
            hard_state: Some(hs),
            identity: Some(identity),
            founders: Some([(1, 11), (2, 22)].into()),
        })
        .expect("combined batch");
    let (mut store, state) = restart(store, &mut reopen);
    assert_eq!(state.identity, Some(identity), "the identity is durable");
    assert_eq!(
        state.founders,
        [(1, 11), (2, 22)].into(),
        "the founders' incarnations are durable"
    );
    let mut expected = entries(1, 1..=2);
    expected.extend(entries(3, 3..=4));
    assert_eq!(state.entries, expected);
    assert_eq!(state.hard_state, hs);
    // ... and the log goes on from the new end.
    store.write(append(entries(3, 5..=6))).expect("append");
    expected.extend(entries(3, 5..=6));

    // A non-contiguous append is an error: a gap, or an overlap without
    // truncation, or a log that starts anywhere but 1.
    assert!(store.write(append(vec![entry(3, 8)])).is_err(), "gap");
    assert!(store.write(append(vec![entry(3, 6)])).is_err(), "overlap");
    let (mut store, state) = restart(store, &mut reopen);
    assert_eq!(state.entries, expected, "failed appends changed the log");
    assert_eq!(state.hard_state, hs);

    // Purge keeps later entries and records the snapshot point and membership.
    let membership = Membership::new([1, 2, 3]);
    let point = LogId::new(3, 4);
    store.purge(point, &membership).expect("purge");
    let (mut store, state) = restart(store, &mut reopen);
    assert_eq!(state.snapshot, point);
    assert_eq!(state.snapshot_membership.as_ref(), Some(&membership));
    assert_eq!(state.entries, entries(3, 5..=6));
    assert_eq!(state.hard_state, hs);

    // A purge to an older point is a no-op.
    store
        .purge(LogId::new(1, 2), &Membership::new([9]))
        .expect("stale purge");
    // Appends continue after a purge, and survive a reload.
    store
        .write(append(vec![entry(3, 7)]))
        .expect("append after purge");
    let (mut store, state) = restart(store, &mut reopen);
    assert_eq!(state.snapshot, point);
    assert_eq!(state.snapshot_membership.as_ref(), Some(&membership));
    assert_eq!(state.entries, entries(3, 5..=7));

    // A snapshot beyond the end of the log empties it; the log resumes right
    // after the snapshot.
    let membership = Membership::new([1, 2, 3, 4]);
    let point = LogId::new(4, 10);
    store.purge(point, &membership).expect("purge past end");
    assert!(store.write(append(vec![entry(4, 8)])).is_err());
    store
        .write(append(vec![entry(4, 11)]))
        .expect("append after snapshot");
    let (store, state) = restart(store, &mut reopen);
    assert_eq!(state.snapshot, point);
    assert_eq!(state.snapshot_membership, Some(membership));
    assert_eq!(state.entries, vec![entry(4, 11)]);
    assert_eq!(state.hard_state, hs);
    drop(store);
}

#[test]
fn mem_storage_conformance() {
    let mem = MemStorage::new();
    conformance(|| mem.clone());
}

const CLUSTER: &str = "test-cluster";

fn open(dir: &Path) -> FjallStorage {
    FjallStorage::open(dir, CLUSTER).expect("open fjall store")
}

#[test]
fn fjall_storage_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance(|| open(dir.path()));
}

#[test]
fn fjall_refuses_another_cluster_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = FjallStorage::open(dir.path(), "alpha").expect("create");
    store.write(append(entries(1, 1..=2))).expect("append");
    drop(store);

    match FjallStorage::open(dir.path(), "beta") {
        Err(StorageError::Incompatible(msg)) => {
            assert!(msg.contains("alpha") && msg.contains("beta"), "{msg}");
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
    // The refusal left the store as it was.
    let mut store = FjallStorage::open(dir.path(), "alpha").expect("reopen");
    assert_eq!(store.load().expect("load").entries, entries(1, 1..=2));
}

// What follows pokes at the backend's on-disk layout (keyspace `log`, entry
// keys `e/` + big-endian index, format version under `m/format`) through
// fjall itself, with the store closed, to simulate damage.

fn entry_key(index: u64) -> Vec<u8> {
    let mut key = b"e/".to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// Applies `f` to the store's keyspace with a raw fjall handle, durably.
fn tamper(dir: &Path, f: impl FnOnce(&fjall::Keyspace, &mut fjall::OwnedWriteBatch)) {
    // The fjall database lives in the data directory's `log` folder.
    let db = fjall::Database::builder(dir.join("log"))
        .open()
        .expect("raw open");
    let ks = db
        .keyspace("log", fjall::KeyspaceCreateOptions::default)
        .expect("raw keyspace");
    let mut batch = db.batch().durability(Some(fjall::PersistMode::SyncAll));
    f(&ks, &mut batch);
    batch.commit().expect("raw commit");
}

/// A store holding entries 1..=5 of term 1, closed.
fn five_entries(dir: &Path) {
    let mut store = open(dir);
    store.load().expect("load");
    store.write(append(entries(1, 1..=5))).expect("append");
}

#[test]
fn fjall_refuses_another_format_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    five_entries(dir.path());
    tamper(dir.path(), |ks, b| {
        b.insert(ks, "m/format", 99u32.to_be_bytes().to_vec())
    });
    match FjallStorage::open(dir.path(), CLUSTER) {
        Err(StorageError::Incompatible(msg)) => {
            assert!(
                msg.contains("99") && msg.contains("format version 1"),
                "{msg}"
            );
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
}

/// Asserts that `load` refuses the store in `dir` as corrupt at `index`,
/// with an error naming the index, the data directory and the remedy.
fn assert_refused_as_corrupt(dir: &Path, index: u64) {
    let mut store = open(dir);
    match store.load() {
        Err(err @ StorageError::Corrupt { index: i, .. }) if i == index => {
            let msg = err.to_string();
            assert!(msg.contains(&format!("index {index}")), "{msg}");
            assert!(msg.contains("wipe"), "no remedy in: {msg}");
            assert!(msg.contains("re-add"), "no remedy in: {msg}");
            assert!(
                msg.contains(&dir.display().to_string()),
                "data directory not named in: {msg}"
            );
        }
        other => panic!("expected Corrupt at index {index}, got {other:?}"),
    }
}

/// fjall batches are atomic and its journal recovery drops an incomplete
/// one, so a bad *last* entry is not a torn write but corruption of an entry
/// that may have been acknowledged: it is refused, never deleted.
#[test]
fn fjall_refuses_a_corrupt_last_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    five_entries(dir.path());
    tamper(dir.path(), |ks, b| {
        b.insert(ks, entry_key(5), b"\xde\xad\xbe\xefgarbage".to_vec())
    });

    assert_refused_as_corrupt(dir.path(), 5);
    // Refusing did not delete (or "repair") the entry: a second start is
    // refused the same way, rather than loading entries 1..=4.
    assert_refused_as_corrupt(dir.path(), 5);
}

#[test]
fn fjall_refuses_a_last_entry_too_short_for_its_checksum() {
    let dir = tempfile::tempdir().expect("tempdir");
    five_entries(dir.path());
    tamper(dir.path(), |ks, b| b.insert(ks, entry_key(5), vec![0x01u8]));
    assert_refused_as_corrupt(dir.path(), 5);
    assert_refused_as_corrupt(dir.path(), 5);
}

#[test]
fn fjall_refuses_a_corrupt_middle_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    five_entries(dir.path());
    tamper(dir.path(), |ks, b| {
        b.insert(ks, entry_key(3), b"\xde\xad\xbe\xefgarbage".to_vec())
    });

    assert_refused_as_corrupt(dir.path(), 3);
    // Refusing did not "repair" anything.
    let mut store = open(dir.path());
    assert!(matches!(
        store.load(),
        Err(StorageError::Corrupt { index: 3, .. })
    ));
}

#[test]
fn fjall_refuses_a_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    five_entries(dir.path());
    tamper(dir.path(), |ks, b| b.remove(ks, entry_key(3)));
    let mut store = open(dir.path());
    match store.load() {
        Err(StorageError::Corrupt { index: 3, reason }) => {
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("expected Corrupt at index 3, got {other:?}"),
    }
}

#[test]
fn fjall_refuses_a_second_handle_on_one_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = open(dir.path());
    assert!(FjallStorage::open(dir.path(), CLUSTER).is_err());
}
