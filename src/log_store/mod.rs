//! The `LogStore` actor: single owner of a node's log.
//!
//! It keeps the log after the last snapshot in memory (a [`RaftLog`]) so the
//! roles and replicators read it without touching the disk, and makes every
//! change durable through a [`LogStorage`] on a dedicated writer thread
//! (inline instead, for a storage that never blocks).
//! Writes that arrive while a batch is being made durable are merged into
//! the next batch: one write and one fsync for everything queued (group
//! commit). A caller that must not act before its write is durable (a vote,
//! an AppendEntries acknowledgement, the leader counting itself) passes a
//! oneshot sender that fires once it is.
//!
//! The follower's consistency check runs here too, so that check and write
//! are atomic with respect to every other append.

mod load;
mod reads;
mod shared;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::core::configs::ConfigLog;
use crate::core::log::{ConflictHint, RaftLog, ReadError};
use crate::core::types::{
    founding_cluster_id, Entry, HardState, LogId, Membership, NodeId, NodeIdentity, Payload,
};
use crate::core::write_queue::WriteQueue;
use crate::error::StartError;
use crate::io::IoMode;
use crate::metrics::Counters;
use crate::storage::snapshot::SnapshotMeta;
use crate::storage::{InitialState, LogStorage, StorageError, WriteBatch};
pub(crate) use reads::{LastLogId, NextIndexAfterConflict, ReadForPeer, ReadRange};
pub(crate) use shared::SharedWriter;
pub(crate) use writer::WriterThread;
use writer::{Handed, Job, JobDone, Writer};

/// Fires once a write is durable.
pub(crate) type Durable = oneshot::Sender<()>;

/// What the node needs from the loaded state.
pub(crate) struct Loaded {
    pub hard_state: HardState,
    pub last_log_id: LogId,
    pub membership: Membership,
    pub commit_index: u64,
    /// The latest snapshot, to restore into the state machine before
    /// applying anything.
    pub snapshot: Option<(SnapshotMeta, bytes::Bytes)>,
    pub identity: NodeIdentity,
    /// The founding members, when the directory is empty and the node
    /// was told to found: it founds once the other founders agree.
    pub pending_founding: Option<Membership>,
    /// The incarnations this node founded the cluster with, if it did.
    pub founders: BTreeMap<NodeId, u64>,
}

/// Told to the node whenever the last log id or the configuration changes.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub(crate) struct LogChanged {
    pub last_log_id: LogId,
    /// The configuration now in force, if it is not the one told last
    /// (most appends change only the last log id).
    pub membership: Option<Membership>,
}

/// The storage failed: the node must stop.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct StorageFailed(pub String);

pub(crate) struct LogStore {
    node_id: NodeId,
    log: RaftLog,
    /// Configuration entries in the log, over the one in force at the
    /// snapshot.
    configs: ConfigLog,
    writer: Option<Writer>,
    writer_busy: bool,
    /// Decided changes not yet handed to the writer, in order.
    queue: WriteQueue,
    /// Waiters for everything queued so far (a durability barrier).
    queued_waiters: Vec<Durable>,
    listener: Option<Recipient<LogChanged>>,
    /// The configuration last told to the listener.
    told_membership: Option<Membership>,
    on_failure: Option<Recipient<StorageFailed>>,
    failed: bool,
}

impl LogStore {
    /// Drops entries up to `upto` from memory and queues the same on disk;
    /// the configuration at `upto` becomes the base.
    fn purge(&mut self, upto: LogId) {
        let membership = self.configs.at(upto.index).clone();
        self.log.purge_upto(upto);
        self.configs.compacted(upto.index, membership.clone());
        self.queue.purge(upto, membership);
    }

    fn notify_changed(&mut self) {
        if let Some(l) = &self.listener {
            let latest = self.configs.latest();
            let membership =
                (self.told_membership.as_ref() != Some(latest)).then(|| latest.clone());
            if membership.is_some() {
                self.told_membership = membership.clone();
            }
            l.do_send(LogChanged {
                last_log_id: self.log.last_log_id(),
                membership,
            });
        }
    }

    fn truncate(&mut self, from: u64) {
        self.log.truncate_from(from);
        self.configs.truncated(from);
        self.queue.truncate(from);
    }

    fn append(&mut self, entries: &[Entry]) {
        for e in entries {
            self.configs.appended(e);
            self.log.push(e.clone());
        }
        self.queue.append(entries.iter().cloned());
    }

    fn enqueue_waiter(&mut self, waiter: Option<Durable>) {
        if let Some(w) = waiter {
            if self.failed {
                // Storage failed: nothing is durable any more, not even
                // what is already in memory. Dropping the waiter says so.
                drop(w);
            } else if !self.writer_busy && self.queue.is_empty() {
                let _ = w.send(());
            } else {
                self.queued_waiters.push(w);
            }
        }
    }

    fn kick(&mut self) {
        if self.writer_busy || self.failed {
            return;
        }
        if self.queue.is_empty() {
            for w in self.queued_waiters.drain(..) {
                let _ = w.send(());
            }
            return;
        }
        let job = Job {
            ops: self.queue.take(),
            waiters: std::mem::take(&mut self.queued_waiters),
        };
        let handed = match &mut self.writer {
            Some(w) => w.hand(job),
            None => Handed::Gone,
        };
        match handed {
            Handed::Queued => self.writer_busy = true,
            Handed::Done(result, waiters) => self.finished(result, waiters),
            Handed::Gone => {}
        }
    }

    /// A job is done: tell its waiters and start the next, or stop
    /// acknowledging anything if storage failed.
    fn finished(&mut self, result: Result<(), String>, waiters: Vec<Durable>) {
        self.writer_busy = false;
        match result {
            Ok(()) => {
                for w in waiters {
                    let _ = w.send(());
                }
                self.kick();
            }
            Err(e) => {
                // Nothing more is acknowledged: dropping the waiters tells
                // every caller the write did not become durable.
                tracing::error!(node = self.node_id, error = %e, "log storage failed; stopping");
                self.failed = true;
                self.writer = None;
                if let Some(f) = &self.on_failure {
                    f.do_send(StorageFailed(e));
                }
            }
        }
    }
}

impl Actor for LogStore {
    type Context = Context<Self>;
}

impl Handler<JobDone> for LogStore {
    type Result = ();
    fn handle(&mut self, msg: JobDone, _ctx: &mut Context<Self>) {
        self.finished(msg.result, msg.waiters);
    }
}

/// Registers who hears about log changes and failures.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Subscribe {
    pub changes: Recipient<LogChanged>,
    pub failures: Recipient<StorageFailed>,
}

impl Handler<Subscribe> for LogStore {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) {
        self.listener = Some(msg.changes);
        self.told_membership = None;
        self.on_failure = Some(msg.failures);
        self.notify_changed();
    }
}

/// The leader appends entries it created (indices assigned by the leader,
/// which is the only appender in its term).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct LeaderAppend {
    pub entries: Vec<Entry>,
    pub durable: Durable,
}

impl Handler<LeaderAppend> for LogStore {
    type Result = ();
    fn handle(&mut self, msg: LeaderAppend, _ctx: &mut Context<Self>) {
        let expected = self.log.last_log_id().index + 1;
        if msg
            .entries
            .first()
            .is_some_and(|e| e.log_id.index != expected)
        {
            // A leader out of step with the log (a stale leader actor):
            // refuse; dropping `durable` tells it nothing was stored.
            tracing::warn!(
                node = self.node_id,
                expected,
                "leader append out of order, ignored"
            );
            return;
        }
        self.append(&msg.entries);
        self.enqueue_waiter(Some(msg.durable));
        self.notify_changed();
        self.kick();
    }
}

/// Why a follower did not take an AppendEntries.
#[derive(Debug)]
pub(crate) enum AppendRefused {
    /// The log does not hold `prev`: the leader backs up.
    Conflict(ConflictHint),
    /// The leader asked to delete committed entries: only a buggy or
    /// foreign leader does that. Not answered.
    Committed,
}

/// A follower's AppendEntries: check, then truncate/append as needed.
/// Answers the last index now known to match the leader, or why not.
#[derive(Message)]
#[rtype(result = "Result<LogId, AppendRefused>")]
pub(crate) struct FollowerAppend {
    pub prev: LogId,
    pub entries: Vec<Entry>,
    /// The node's commit index: nothing at or below it may be truncated.
    pub commit_index: u64,
    /// Fires once everything up to the matched index is durable.
    pub durable: Durable,
}

impl Handler<FollowerAppend> for LogStore {
    type Result = Result<LogId, AppendRefused>;
    fn handle(&mut self, msg: FollowerAppend, _ctx: &mut Context<Self>) -> Self::Result {
        let plan = self
            .log
            .plan_append(msg.prev, &msg.entries)
            .map_err(AppendRefused::Conflict)?;
        if let Some(from) = plan.truncate_from.filter(|f| *f <= msg.commit_index) {
            tracing::error!(
                node = self.node_id,
                truncate_from = from,
                commit_index = msg.commit_index,
                "refusing to truncate committed entries (a buggy or foreign leader)"
            );
            return Err(AppendRefused::Committed);
        }
        let changed = plan.truncate_from.is_some() || plan.skip < msg.entries.len();
        if let Some(from) = plan.truncate_from {
            tracing::info!(
                node = self.node_id,
                from,
                "truncating conflicting log suffix"
            );
            self.truncate(from);
        }
        self.append(&msg.entries[plan.skip..]);
        self.enqueue_waiter(Some(msg.durable));
        if changed {
            self.notify_changed();
        }
        self.kick();
        Ok(plan.last_matched)
    }
}

/// Founds the cluster on this empty log: the founding configuration at
/// (term 1, index 1), the same entry on every founder so their logs agree
/// on it without an election, and term 1 (or the later term the node
/// has heard of since it started).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Found {
    pub members: Membership,
    pub identity: NodeIdentity,
    /// The node's term and vote as they stand: a founder may have seen a
    /// later term (and stored it) while it waited to found.
    pub hard_state: HardState,
    /// The founders' incarnations it founds with, kept so that it still
    /// recognizes them after a restart.
    pub founders: BTreeMap<NodeId, u64>,
}

impl Handler<Found> for LogStore {
    type Result = ();
    fn handle(&mut self, msg: Found, _ctx: &mut Context<Self>) {
        if self.log.last_log_id().index != 0 {
            tracing::error!(
                node = self.node_id,
                "asked to found a cluster on a non-empty log; ignored"
            );
            return;
        }
        self.append(&[Entry {
            log_id: LogId::new(1, 1),
            payload: Payload::Membership(Box::new(msg.members)),
        }]);
        // Term 1 at least, never below a term already stored: a founder
        // that heard a leader of term 2 while it waited, and stored that
        // term, went back to term 1 here, acknowledged that leader's
        // entries without storing term 2 again, and after a crash could
        // win term 2 a second time (simulator, seed 100455).
        self.queue.hard_state(HardState {
            term: msg.hard_state.term.max(1),
            voted_for: msg.hard_state.voted_for,
        });
        // Now a founder (see `NodeIdentity::founder`).
        self.queue.identity(msg.identity);
        self.queue.founders(msg.founders);
        self.notify_changed();
        self.kick();
    }
}

/// Persists a new term/vote.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SaveHardState {
    pub hard_state: HardState,
    pub durable: Option<Durable>,
}

impl Handler<SaveHardState> for LogStore {
    type Result = ();
    fn handle(&mut self, msg: SaveHardState, _ctx: &mut Context<Self>) {
        self.queue.hard_state(msg.hard_state);
        self.enqueue_waiter(msg.durable);
        self.kick();
    }
}

/// Persists the cluster id a joining node learned.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SaveIdentity(pub NodeIdentity);

impl Handler<SaveIdentity> for LogStore {
    type Result = ();
    fn handle(&mut self, msg: SaveIdentity, _ctx: &mut Context<Self>) {
        self.queue.identity(msg.0);
        self.kick();
    }
}

/// Persists the incarnations of the founders a founder that received the
/// cluster's log instead of founding it was vouched for with.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SaveFounders(pub BTreeMap<NodeId, u64>);

impl Handler<SaveFounders> for LogStore {
    type Result = ();
    fn handle(&mut self, msg: SaveFounders, _ctx: &mut Context<Self>) {
        self.queue.founders(msg.0);
        self.kick();
    }
}

/// Stops the writer after everything queued is durable.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Close;

impl Handler<Close> for LogStore {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: Close, _ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.enqueue_waiter(Some(tx));
        self.kick();
        Box::pin(
            async move {
                let _ = rx.await;
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                act.writer = None;
                ctx.stop();
            }),
        )
    }
}

/// A snapshot now covers the log up to `snapshot`: drop entries before
/// `snapshot.index - keep` (the trailing `keep` entries stay so a follower
/// slightly behind still gets entries rather than the whole snapshot).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Compact {
    pub snapshot: LogId,
    pub keep: u64,
    /// Fires once the compaction is durable.
    pub durable: Durable,
}

impl Handler<Compact> for LogStore {
    type Result = ();
    fn handle(&mut self, msg: Compact, _ctx: &mut Context<Self>) {
        let upto = msg.snapshot.index.saturating_sub(msg.keep);
        if upto > self.log.snapshot_id().index {
            if let Some(term) = self.log.term_at(upto) {
                tracing::debug!(node = self.node_id, upto, "compacting the log");
                self.purge(LogId::new(term, upto));
            }
        }
        self.enqueue_waiter(Some(msg.durable));
        self.kick();
    }
}

/// The configuration in force at an index.
#[derive(Message)]
#[rtype(result = "Membership")]
pub(crate) struct MembershipAt(pub u64);

impl Handler<MembershipAt> for LogStore {
    type Result = MessageResult<MembershipAt>;
    fn handle(&mut self, msg: MembershipAt, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.configs.at(msg.0).clone())
    }
}

/// A snapshot from the leader was installed: keep the log after it if the
/// log holds the snapshot's last entry (same index and term), else replace
/// the whole log by the snapshot.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct InstallSnapshotLog {
    pub meta: SnapshotMeta,
    pub durable: Durable,
}

impl Handler<InstallSnapshotLog> for LogStore {
    type Result = ();
    fn handle(&mut self, msg: InstallSnapshotLog, _ctx: &mut Context<Self>) {
        let last = msg.meta.last_included;
        if self.log.term_at(last.index) != Some(last.term) {
            let first = self.log.snapshot_id().index + 1;
            if self.log.last_log_id().index >= first {
                self.truncate(first);
            }
            self.configs.replaced(msg.meta.membership.clone());
        }
        if last.index > self.log.snapshot_id().index {
            let membership = msg.meta.membership.clone();
            self.log.purge_upto(last);
            self.configs.compacted(last.index, membership.clone());
            self.queue.purge(last, membership);
        }
        self.enqueue_waiter(Some(msg.durable));
        self.notify_changed();
        self.kick();
    }
}

/// Loads the latest snapshot and makes the loaded log agree with it. The
/// log's compaction point must be covered by a snapshot, or entries are
/// missing: that is refused. A log that does not hold the snapshot's last
/// entry (a crash while a leader's snapshot was being installed) is
/// superseded by the snapshot and dropped.
fn reconcile_with_snapshot(
    storage: &mut dyn LogStorage,
    state: &mut InitialState,
) -> Result<Option<(SnapshotMeta, bytes::Bytes)>, StorageError> {
    let snapshot = storage.snapshots().latest()?;
    let covered = snapshot.as_ref().map_or(0, |(m, _)| m.last_included.index);
    if state.snapshot.index > covered {
        return Err(StorageError::Corrupt {
            index: state.snapshot.index,
            reason: format!(
                "the log was compacted up to index {} but the latest snapshot covers only {covered}: the snapshot file is missing",
                state.snapshot.index
            ),
        });
    }
    let Some((meta, _)) = &snapshot else {
        return Ok(None);
    };
    let last = meta.last_included;
    let holds = last.index == state.snapshot.index && last.term == state.snapshot.term
        || state.entries.iter().any(|e| e.log_id == last);
    if !holds {
        storage.write(WriteBatch {
            truncate_from: Some(state.snapshot.index + 1),
            ..WriteBatch::default()
        })?;
        storage.purge(last, &meta.membership)?;
        state.entries.clear();
        state.snapshot = last;
        state.snapshot_membership = Some(meta.membership.clone());
    }
    Ok(snapshot)
}
