//! The log store's writer: carries out queued operations on the
//! [`LogStorage`] off the node's thread (or, simulated, after a virtual
//! delay) and reports back, one job at a time — or, for a storage that
//! never blocks, inline on the node's thread.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{Durable, LogStore};
use crate::core::types::NodeId;
use crate::core::write_queue::{execute, WriteOp};
use crate::io::IoMode;
use crate::metrics::Counters;
use crate::storage::{LogStorage, StorageError};

/// A running writer thread, joinable so a restart can wait until the old
/// incarnation's storage is no longer touched.
pub(crate) type WriterThread = Arc<Mutex<Option<JoinHandle<()>>>>;

/// Operations to make durable, and who waits for them.
pub(crate) struct Job {
    pub ops: Vec<WriteOp>,
    pub waiters: Vec<Durable>,
}

impl Job {
    /// How many entries the job appends.
    pub(crate) fn entries(&self) -> usize {
        entries_in(&self.ops)
    }
}

fn entries_in(ops: &[WriteOp]) -> usize {
    ops.iter()
        .map(|op| match op {
            WriteOp::Write(batch) => batch.entries.len(),
            WriteOp::Purge { .. } => 0,
        })
        .sum()
}

/// The writer finished a job.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct JobDone {
    pub result: Result<(), String>,
    pub waiters: Vec<Durable>,
}

/// Where jobs go.
pub(crate) enum Writer {
    Thread(std::sync::mpsc::Sender<Job>),
    Task(tokio::sync::mpsc::UnboundedSender<Job>),
    /// A storage that never blocks, called on the log store's own thread:
    /// no hand-off to another thread and back for each write.
    Inline(Box<dyn LogStorage>, WriterStats),
    /// A host's writer thread, shared with the other groups of its
    /// database (one fsync per round for all of them): hands a job to it,
    /// false if it is gone.
    Shared(Box<dyn Fn(Job) -> bool + Send>),
}

impl Writer {
    /// Starts a writer owning `storage`, reporting to `done`.
    pub(crate) fn start(
        node_id: NodeId,
        mut storage: Box<dyn LogStorage>,
        io: &IoMode,
        done: Addr<LogStore>,
        counters: Arc<Counters>,
    ) -> Result<(Writer, WriterThread), StorageError> {
        let mut stats = WriterStats::new(node_id, counters);
        match io {
            IoMode::Threads if !storage.blocks() => {
                Ok((Writer::Inline(storage, stats), Arc::new(Mutex::new(None))))
            }
            IoMode::Threads => {
                let (tx, rx) = std::sync::mpsc::channel::<Job>();
                let handle = std::thread::Builder::new()
                    .name(format!("regatta-log-{node_id}"))
                    .spawn(move || {
                        while let Ok(job) = rx.recv() {
                            if !run(&mut *storage, job, &done, &mut stats) {
                                break;
                            }
                        }
                    })
                    .map_err(|e| {
                        StorageError::Io(format!("cannot start the log writer thread: {e}"))
                    })?;
                Ok((Writer::Thread(tx), Arc::new(Mutex::new(Some(handle)))))
            }
            IoMode::Simulated { write_latency, .. } => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
                let latency = write_latency.clone();
                // On the node's own task set: a simulated crash drops this
                // task mid-job, losing exactly what was not yet durable.
                tokio::task::spawn_local(async move {
                    while let Some(job) = rx.recv().await {
                        tokio::time::sleep(latency()).await;
                        if !run(&mut *storage, job, &done, &mut stats) {
                            break;
                        }
                    }
                });
                Ok((Writer::Task(tx), Arc::new(Mutex::new(None))))
            }
        }
    }

    /// Hands a job over: `Queued` if another thread or task will report
    /// it with [`JobDone`], `Done` if it ran right here.
    pub(crate) fn hand(&mut self, job: Job) -> Handed {
        let queued = match self {
            Writer::Thread(tx) => tx.send(job).is_ok(),
            Writer::Task(tx) => tx.send(job).is_ok(),
            Writer::Shared(hand) => hand(job),
            Writer::Inline(storage, stats) => {
                return Handed::Done(perform(&mut **storage, job.ops, stats), job.waiters)
            }
        };
        if queued {
            Handed::Queued
        } else {
            Handed::Gone
        }
    }
}

/// What became of a job handed to the writer.
pub(crate) enum Handed {
    /// It will be reported with [`JobDone`].
    Queued,
    /// It ran inline, with this result; the waiters are still to be told.
    Done(Result<(), String>, Vec<Durable>),
    /// The writer is gone (it failed earlier).
    Gone,
}

/// A durable write slower than this is logged: fsync on a healthy SSD
/// takes well under a millisecond, so this means a struggling disk.
const SLOW_WRITE: Duration = Duration::from_millis(500);

/// How often the log's size is read (for the memory store that is a
/// walk over the entries, so not after every write).
const SIZE_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Where the writer records how long writes take and how big the log is,
/// and when to complain.
pub(crate) struct WriterStats {
    node_id: NodeId,
    counters: Arc<Counters>,
    threshold: Duration,
    size_sampled: Option<Instant>,
}

impl WriterStats {
    pub(crate) fn new(node_id: NodeId, counters: Arc<Counters>) -> WriterStats {
        WriterStats {
            node_id,
            counters,
            threshold: SLOW_WRITE,
            size_sampled: None,
        }
    }

    /// Records a durable write of `entries` that took `elapsed`, and
    /// complains if the disk was slow.
    pub(crate) fn record(&mut self, storage: &dyn LogStorage, elapsed: Duration, entries: usize) {
        let histograms = &self.counters.histograms;
        histograms.fsync_latency_us.record_duration(elapsed);
        histograms.write_batch_entries.record(entries as u64);
        if elapsed > self.threshold {
            tracing::warn!(
                node = self.node_id,
                entries,
                elapsed_ms = elapsed.as_millis() as u64,
                "slow durable write: the disk took longer than {} ms",
                self.threshold.as_millis()
            );
        }
        if self
            .size_sampled
            .is_none_or(|at| at.elapsed() >= SIZE_SAMPLE_EVERY)
        {
            self.size_sampled = Some(Instant::now());
            self.counters
                .log_bytes
                .store(storage.size_bytes(), Ordering::Relaxed);
        }
    }
}

/// Runs one job's operations, recording how long they took.
fn perform(
    storage: &mut dyn LogStorage,
    ops: Vec<WriteOp>,
    stats: &mut WriterStats,
) -> Result<(), String> {
    let entries = entries_in(&ops);
    let started = Instant::now();
    let result = execute(storage, ops).map_err(|e| e.to_string());
    stats.record(storage, started.elapsed(), entries);
    result
}

/// Runs one job on another thread or task and reports it; false once
/// storage has failed.
fn run(
    storage: &mut dyn LogStorage,
    job: Job,
    done: &Addr<LogStore>,
    stats: &mut WriterStats,
) -> bool {
    let result = perform(storage, job.ops, stats);
    let ok = result.is_ok();
    done.do_send(JobDone {
        result,
        waiters: job.waiters,
    });
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::{Entry, LogId, Payload};
    use crate::storage::{MemStorage, SnapshotStore, WriteBatch};

    /// Memory storage that claims to block, as a disk does.
    struct Blocking(MemStorage);

    impl LogStorage for Blocking {
        fn load(&mut self) -> Result<crate::storage::InitialState, StorageError> {
            self.0.load()
        }
        fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
            self.0.write(batch)
        }
        fn purge(
            &mut self,
            upto: LogId,
            membership: &crate::core::types::Membership,
        ) -> Result<(), StorageError> {
            self.0.purge(upto, membership)
        }
        fn snapshots(&self) -> Arc<dyn SnapshotStore> {
            self.0.snapshots()
        }
        fn size_bytes(&self) -> u64 {
            self.0.size_bytes()
        }
    }

    fn start(storage: Box<dyn LogStorage>) -> (Writer, WriterThread) {
        let store = Context::<LogStore>::new();
        Writer::start(
            1,
            storage,
            &IoMode::Threads,
            store.address(),
            Arc::new(Counters::default()),
        )
        .expect("writer starts")
    }

    fn one_entry() -> Vec<WriteOp> {
        vec![WriteOp::Write(WriteBatch {
            entries: vec![Entry {
                log_id: LogId::new(1, 1),
                payload: Payload::Blank,
            }],
            ..WriteBatch::default()
        })]
    }

    #[actix_rt::test]
    async fn a_storage_that_never_blocks_is_written_inline_at_once() {
        let memory = MemStorage::new();
        let (mut writer, thread) = start(Box::new(memory.clone()));
        assert!(thread.lock().unwrap().is_none(), "no writer thread");
        let (durable, _) = tokio::sync::oneshot::channel();
        match writer.hand(Job {
            ops: one_entry(),
            waiters: vec![durable],
        }) {
            Handed::Done(Ok(()), waiters) => assert_eq!(waiters.len(), 1),
            _ => panic!("the job did not run inline"),
        }
        assert_eq!(memory.contents().entries.len(), 1);
    }

    #[actix_rt::test]
    async fn a_storage_that_may_block_gets_a_writer_thread() {
        let (mut writer, thread) = start(Box::new(Blocking(MemStorage::new())));
        assert!(matches!(writer, Writer::Thread(_)));
        assert!(matches!(
            writer.hand(Job {
                ops: one_entry(),
                waiters: Vec::new(),
            }),
            Handed::Queued
        ));
        drop(writer);
        let handle = thread.lock().unwrap().take().expect("a writer thread");
        handle
            .join()
            .expect("the writer thread exits once its queue closes");
    }
}
