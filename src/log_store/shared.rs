//! One writer thread for the logs of many groups in one database: what
//! queued from every group while the previous round ran is written in one
//! round and made durable by ONE fsync (group commit across groups, where
//! many groups on one disk win over one group per disk).
//!
//! Each group's storage is handed to the thread once (`Register`); its log
//! store then sends jobs as it would to a writer of its own and gets each
//! answered with [`JobDone`] — only after the round's fsync, so an answer
//! still means "durable". Storages registered here write without syncing
//! (the host opens them so); the round's `sync` makes all of it durable.

// Only a host (features `fjall` and `tcp`) starts one.
#![cfg_attr(not(all(feature = "fjall", feature = "tcp")), allow(dead_code))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::prelude::*;

use super::writer::{Job, JobDone, WriterStats, WriterThread};
use super::LogStore;
use crate::core::write_queue::execute;
use crate::storage::{LogStorage, StorageError};

/// Makes everything written so far durable (the shared database's fsync).
pub(crate) type SyncFn = Box<dyn FnMut() -> Result<(), StorageError> + Send>;

/// The most jobs one round takes, so a flood from many groups still
/// answers the first of them within a bounded time.
const MAX_ROUND_JOBS: usize = 4096;

enum Request {
    Register {
        slot: u64,
        storage: Box<dyn LogStorage>,
        done: Addr<LogStore>,
        stats: WriterStats,
    },
    Run {
        slot: u64,
        job: Job,
    },
    Release {
        slot: u64,
    },
    /// The host's end: every group has stopped.
    Stop,
}

/// Counts of the shared writer, for benchmarks and metrics.
#[derive(Debug, Default)]
pub(crate) struct SharedWriterCounts {
    /// Rounds that synced (one fsync each).
    pub syncs: AtomicU64,
    /// Jobs made durable (one per group per round at most).
    pub jobs: AtomicU64,
}

/// The handle every group's log store holds; cheap to clone.
#[derive(Clone)]
pub(crate) struct SharedWriter {
    tx: Sender<Request>,
    next_slot: Arc<AtomicU64>,
    thread: WriterThread,
    counts: Arc<SharedWriterCounts>,
}

impl SharedWriter {
    /// Starts the thread; `sync` makes a round durable.
    pub(crate) fn start(name: &str, sync: SyncFn) -> std::io::Result<SharedWriter> {
        let (tx, rx) = std::sync::mpsc::channel();
        let counts = Arc::new(SharedWriterCounts::default());
        let thread_counts = counts.clone();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || serve(rx, sync, &thread_counts))?;
        Ok(SharedWriter {
            tx,
            next_slot: Arc::new(AtomicU64::new(1)),
            thread: Arc::new(Mutex::new(Some(handle))),
            counts,
        })
    }

    pub(crate) fn counts(&self) -> &SharedWriterCounts {
        &self.counts
    }

    /// Ends the thread once it has done what was queued, and waits for
    /// it: at a host's end, after every group stopped, so the database is
    /// no longer touched when this returns.
    pub(crate) fn stop_and_join(self) {
        let _ = self.tx.send(Request::Stop);
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// Hands a group's storage to the thread; its jobs go through the
    /// returned slot.
    pub(crate) fn register(
        &self,
        storage: Box<dyn LogStorage>,
        done: Addr<LogStore>,
        stats: WriterStats,
    ) -> Result<SharedSlot, StorageError> {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        self.tx
            .send(Request::Register {
                slot,
                storage,
                done,
                stats,
            })
            .map_err(|_| StorageError::Io("the shared log writer has stopped".into()))?;
        Ok(SharedSlot {
            slot,
            tx: self.tx.clone(),
        })
    }
}

/// One group's place at the shared writer; dropping it releases the
/// group's storage (its log store stopped).
pub(crate) struct SharedSlot {
    slot: u64,
    tx: Sender<Request>,
}

impl SharedSlot {
    /// Queues a job; false if the writer is gone.
    pub(crate) fn hand(&self, job: Job) -> bool {
        self.tx
            .send(Request::Run {
                slot: self.slot,
                job,
            })
            .is_ok()
    }
}

impl Drop for SharedSlot {
    fn drop(&mut self) {
        let _ = self.tx.send(Request::Release { slot: self.slot });
    }
}

struct Group {
    storage: Box<dyn LogStorage>,
    done: Addr<LogStore>,
    stats: WriterStats,
    /// Its storage failed: its jobs are refused from now on.
    failed: bool,
}

fn serve(rx: Receiver<Request>, mut sync: SyncFn, counts: &SharedWriterCounts) {
    let mut groups: HashMap<u64, Group> = HashMap::new();
    // Ends when every handle and slot is gone.
    while let Ok(first) = rx.recv() {
        let mut round = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Register {
                    slot,
                    storage,
                    done,
                    stats,
                } => {
                    groups.insert(
                        slot,
                        Group {
                            storage,
                            done,
                            stats,
                            failed: false,
                        },
                    );
                }
                Request::Release { slot } => {
                    groups.remove(&slot);
                }
                Request::Run { slot, job } => round.push((slot, job)),
                Request::Stop => {
                    if !round.is_empty() {
                        run_round(&mut groups, round, &mut sync, counts);
                    }
                    return;
                }
            }
            if round.len() < MAX_ROUND_JOBS {
                next = rx.try_recv().ok();
            }
        }
        if !round.is_empty() {
            run_round(&mut groups, round, &mut sync, counts);
        }
    }
}

/// Writes every job of the round, syncs once, then answers each.
fn run_round(
    groups: &mut HashMap<u64, Group>,
    round: Vec<(u64, Job)>,
    sync: &mut SyncFn,
    counts: &SharedWriterCounts,
) {
    let started = Instant::now();
    let mut results = Vec::with_capacity(round.len());
    for (slot, job) in round {
        let Some(group) = groups.get_mut(&slot) else {
            continue; // released: nobody waits for it
        };
        let entries = job.entries();
        let result = if group.failed {
            Err("log storage failed earlier".to_string())
        } else {
            execute(&mut *group.storage, job.ops).map_err(|e| e.to_string())
        };
        group.failed |= result.is_err();
        results.push((slot, result, job.waiters, entries));
    }
    // One fsync for the whole round; if it fails nothing of the round is
    // known durable, in any group.
    let synced = sync().map_err(|e| e.to_string());
    counts.syncs.fetch_add(1, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for (slot, result, waiters, entries) in results {
        let Some(group) = groups.get_mut(&slot) else {
            continue;
        };
        let result = result.and_then(|()| synced.clone());
        group.failed |= result.is_err();
        counts.jobs.fetch_add(1, Ordering::Relaxed);
        group.stats.record(&*group.storage, elapsed, entries);
        group.done.do_send(JobDone { result, waiters });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::{Entry, LogId, Payload};
    use crate::core::write_queue::WriteOp;
    use crate::metrics::Counters;
    use crate::storage::{MemStorage, WriteBatch};

    fn append(index: u64) -> Job {
        Job {
            ops: vec![WriteOp::Write(WriteBatch {
                entries: vec![Entry {
                    log_id: LogId::new(1, index),
                    payload: Payload::Blank,
                }],
                ..WriteBatch::default()
            })],
            waiters: Vec::new(),
        }
    }

    /// What queued from several groups while a round synced goes into
    /// the next round: one fsync for all of them.
    #[actix_rt::test]
    async fn writes_of_many_groups_queued_during_a_sync_share_the_next_one() {
        let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let writer = SharedWriter::start(
            "test-shared-writer",
            Box::new(move || {
                let _ = entered_tx.send(());
                let _ = release_rx.lock().unwrap().recv();
                Ok(())
            }),
        )
        .unwrap();
        let store = Context::<LogStore>::new().address();
        let stats = || WriterStats::new(1, Arc::new(Counters::default()));
        let storages: Vec<MemStorage> = (0..3).map(|_| MemStorage::new()).collect();
        let slots: Vec<SharedSlot> = storages
            .iter()
            .map(|s| {
                writer
                    .register(Box::new(s.clone()), store.clone(), stats())
                    .unwrap()
            })
            .collect();
        assert!(slots[0].hand(append(1)));
        // The first round is in its sync; three groups queue meanwhile.
        entered_rx.recv().unwrap();
        for slot in &slots {
            assert!(slot.hand(append(if std::ptr::eq(slot, &slots[0]) { 2 } else { 1 })));
        }
        release_tx.send(()).unwrap();
        entered_rx.recv().unwrap();
        release_tx.send(()).unwrap();
        drop(slots);
        writer.clone().stop_and_join();
        assert_eq!(writer.counts().syncs.load(Ordering::Relaxed), 2);
        assert_eq!(writer.counts().jobs.load(Ordering::Relaxed), 4);
        let lengths: Vec<usize> = storages
            .iter()
            .map(|s| s.contents().entries.len())
            .collect();
        assert_eq!(lengths, [2, 1, 1]);
    }
}
