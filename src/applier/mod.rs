//! The `Applier` actor: hands committed entries to the user's state machine
//! in log order, in batches, and routes each response to the client waiting
//! for it.

mod sessions;

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::core::session::{SessionLimits, SessionTable};
use crate::core::types::{LogId, NodeId};
use crate::core::waiters::{Matched, Waiters};
use crate::error::RaftError;
use crate::log_store::{LogStore, ReadRange};
use crate::metrics::Counters;
use crate::probe::{digest, Probe, ProbeEvent};
use crate::state_machine::{Apply, Restore, Snapshot, SnapshotData, StateMachine};

/// The commit index advanced.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub(crate) struct Committed(pub u64);

/// Entries up to this index have been applied.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub(crate) struct Applied(pub u64);

/// A part of the node (applier, state machine, snapshotter) stopped on
/// its own: the node cannot go on safely, and stops whole.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct ComponentFailed {
    pub component: &'static str,
    pub cause: String,
}

/// Where a write's outcome goes once applied: the entry's position and
/// the state machine's encoded response (empty for an empty entry).
pub(crate) type WriteReply = oneshot::Sender<Result<(LogId, Bytes), RaftError>>;

/// Waits for the entry at `log_id` to be applied.
pub(crate) struct Waiter {
    pub log_id: LogId,
    pub reply: WriteReply,
    /// The client's write span (disabled unless debug tracing is on).
    pub span: tracing::Span,
}

/// The waiters of one appended batch, in log order: one message per
/// append, not one per write.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RegisterWaiters(pub Vec<Waiter>);

pub(crate) struct Applier<SM: StateMachine> {
    node_id: NodeId,
    sm: Addr<SM>,
    log: Addr<LogStore>,
    applied_to: Recipient<Applied>,
    /// Told if this actor stops on its own, with why.
    failed: Recipient<ComponentFailed>,
    failure: Option<String>,
    /// The last applied entry (or the snapshot restored last).
    last_applied: LogId,
    commit_index: u64,
    busy: bool,
    max_batch: usize,
    waiters: Waiters<(WriteReply, tracing::Span)>,
    /// Snapshot requests, served between two batches.
    snapshot_requests: std::collections::VecDeque<SnapshotReply>,
    /// A snapshot to restore before applying anything more.
    restore: Option<(LogId, Bytes)>,
    probe: Probe,
    /// Client sessions: replicated state, the same on every node.
    sessions: SessionTable,
    session_limits: SessionLimits,
    counters: Arc<Counters>,
    /// The session table's clock, for this node's leaders to continue.
    applied_log_time: Arc<std::sync::atomic::AtomicU64>,
}

/// Where a snapshot of the state machine goes: the last applied entry and
/// the state machine's data at that point.
pub(crate) type SnapshotReply = oneshot::Sender<Result<(LogId, SnapshotData), String>>;

impl<SM: StateMachine> Applier<SM> {
    fn publish_log_time(&self) {
        self.applied_log_time
            .fetch_max(self.sessions.now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        node_id: NodeId,
        sm: Addr<SM>,
        log: Addr<LogStore>,
        applied_to: Recipient<Applied>,
        failed: Recipient<ComponentFailed>,
        snapshot: Option<(LogId, Bytes)>,
        max_batch: usize,
        session_limits: SessionLimits,
        probe: Probe,
        counters: Arc<Counters>,
        applied_log_time: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        let last_applied = snapshot.as_ref().map_or(LogId::default(), |(id, _)| *id);
        Applier {
            node_id,
            sm,
            log,
            applied_to,
            failed,
            failure: None,
            last_applied,
            commit_index: last_applied.index,
            busy: false,
            max_batch,
            waiters: Waiters::default(),
            snapshot_requests: std::collections::VecDeque::new(),
            restore: snapshot,
            probe,
            sessions: SessionTable::default(),
            session_limits,
            counters,
            applied_log_time,
        }
    }

    /// Starts the next piece of work, one at a time and in this order: a
    /// pending restore, pending snapshot requests, the next batch.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        if let Some((id, data)) = self.restore.take() {
            self.restore(id, data, ctx);
            return;
        }
        if let Some(reply) = self.snapshot_requests.pop_front() {
            self.snapshot(reply, ctx);
            return;
        }
        if self.commit_index <= self.last_applied.index {
            return;
        }
        self.busy = true;
        let started = std::time::Instant::now();
        let read = self.log.send(ReadRange {
            from: self.last_applied.index + 1,
            to: self.commit_index,
            max: self.max_batch,
        });
        let fut = async move { read.await.unwrap_or_default() }
            .into_actor(self)
            .then(|entries, act, _ctx| {
                let last = entries.last().map(|e| e.log_id);
                if let Some(probe) = &act.probe {
                    let entries = entries.iter().map(|e| (e.log_id, digest(e))).collect();
                    probe(act.node_id, ProbeEvent::Applied { entries });
                }
                let mut batch = sessions::sort::<SM::Command>(
                    act.node_id,
                    entries,
                    &mut act.sessions,
                    &act.session_limits,
                );
                act.publish_log_time();
                if let Some(probe) = &act.probe {
                    for ((id, _), tag) in batch.commands.iter().zip(&batch.tags) {
                        if let Some((session, seq)) = *tag {
                            let index = id.index;
                            probe(act.node_id, ProbeEvent::SessionApplied { session, seq, index });
                        }
                    }
                }
                for (log_id, err) in std::mem::take(&mut batch.undecodable) {
                    tracing::warn!(node = act.node_id, index = log_id.index, error = %err, "undecodable command skipped");
                    act.respond(log_id, Err(RaftError::Codec(err)));
                }
                let commands = std::mem::take(&mut batch.commands);
                let ids: Vec<LogId> = commands.iter().map(|(id, _)| *id).collect();
                let apply = (!commands.is_empty()).then(|| act.sm.send(Apply { entries: commands }));
                async move {
                    let responses = match apply {
                        Some(f) => f.await.ok(),
                        None => Some(Vec::new()),
                    };
                    (last, ids, responses, batch)
                }
                .into_actor(act)
            })
            .map(move |(last, ids, responses, batch), act, ctx| {
                act.busy = false;
                let Some(last) = last else {
                    // Nothing to read yet (a snapshot being installed has
                    // emptied the log; the restore comes next): look again
                    // shortly rather than spin.
                    ctx.run_later(std::time::Duration::from_millis(5), |act, ctx| act.pump(ctx));
                    return;
                };
                let Some(responses) = responses else {
                    act.stop_because("the state machine stopped".into(), ctx);
                    return;
                };
                if responses.len() != ids.len() {
                    tracing::error!(node = act.node_id, "state machine returned {} responses for {} commands", responses.len(), ids.len());
                }
                let mut applied = HashMap::new();
                for ((id, resp), tag) in ids.into_iter().zip(responses).zip(&batch.tags) {
                    let encoded = rmp_serde::to_vec(&resp)
                        .map(Bytes::from)
                        .map_err(|e| RaftError::Codec(e.to_string()));
                    if let (Some((session, seq)), Ok(bytes)) = (tag, &encoded) {
                        if batch.pending.is_empty() && !act.waiters.waits(id.index) {
                            // Nobody to answer here (a follower): the cache
                            // takes the response itself, no shared copy.
                            if let Ok(bytes) = encoded {
                                act.sessions.record(*session, *seq, bytes);
                            }
                            continue;
                        }
                        act.sessions.record(*session, *seq, bytes.clone());
                        if !batch.pending.is_empty() {
                            applied.insert(id, bytes.clone());
                        }
                    }
                    act.respond(id, encoded);
                }
                act.answer_without_the_state_machine(batch, &applied);
                act.settle_upto(last.index);
                act.last_applied = last;
                act.applied_to.do_send(Applied(last.index));
                act.counters
                    .histograms
                    .apply_latency_us
                    .record_duration(started.elapsed());
                act.pump(ctx);
            });
        ctx.spawn(fut);
    }

    /// Replaces the state machine's state with a snapshot's; entries after
    /// it are applied next.
    fn restore(&mut self, id: LogId, data: Bytes, ctx: &mut Context<Self>) {
        let (table, data) = match sessions::split(data) {
            Ok(parts) => parts,
            Err(why) => {
                let why = format!("the snapshot at index {} is damaged: {why}", id.index);
                self.stop_because(why, ctx);
                return;
            }
        };
        self.busy = true;
        let started = std::time::Instant::now();
        let restore = self.sm.send(Restore {
            data,
            last_included: id,
        });
        ctx.spawn(restore.into_actor(self).map(move |res, act, ctx| {
            act.busy = false;
            if matches!(res, Ok(Ok(()))) {
                act.sessions = table;
                act.publish_log_time();
            }
            match res {
                Ok(Ok(())) => {
                    let elapsed = started.elapsed();
                    act.counters
                        .histograms
                        .snapshot_restore_us
                        .record_duration(elapsed);
                    tracing::info!(
                        node = act.node_id,
                        index = id.index,
                        term = id.term,
                        elapsed_ms = elapsed.as_millis() as u64,
                        "restored snapshot"
                    );
                    act.settle_upto(id.index);
                    act.last_applied = id;
                    act.commit_index = act.commit_index.max(id.index);
                    act.applied_to.do_send(Applied(id.index));
                    act.pump(ctx);
                }
                Ok(Err(e)) => {
                    // Applying on top of a state we could not restore would
                    // diverge from the other replicas: stop instead.
                    let why = format!(
                        "the state machine refused the snapshot at index {}: {e}",
                        id.index
                    );
                    act.stop_because(why, ctx);
                }
                Err(_) => act.stop_because("the state machine stopped".into(), ctx),
            }
        }));
    }

    /// Answers what the batch settled without the state machine: cached
    /// and pending duplicates, refusals, opened sessions, empty entries.
    fn answer_without_the_state_machine(
        &mut self,
        batch: sessions::Batch<SM::Command>,
        applied: &HashMap<LogId, Bytes>,
    ) {
        for (id, response) in batch.answered {
            self.respond(id, Ok(response));
        }
        for (id, response) in sessions::answer_duplicates(batch.pending, applied) {
            // No response: the first copy's did not encode.
            let response =
                response.ok_or_else(|| RaftError::Codec("the response does not encode".into()));
            self.respond(id, response);
        }
        for (id, why) in batch.refused {
            self.respond(id, Err(RaftError::Session(why)));
        }
        for id in batch.opened {
            let session = rmp_serde::to_vec(&id.index)
                .map(Bytes::from)
                .map_err(|e| RaftError::Codec(e.to_string()));
            self.respond(id, session);
        }
        for id in batch.empty {
            self.respond(id, Ok(Bytes::new()));
        }
    }

    /// Asks the state machine for its state between two batches.
    fn snapshot(&mut self, reply: SnapshotReply, ctx: &mut Context<Self>) {
        self.busy = true;
        let at = self.last_applied;
        let snapshot = self.sm.send(Snapshot);
        ctx.spawn(snapshot.into_actor(self).map(move |res, act, ctx| {
            act.busy = false;
            let sessions = act.sessions.clone();
            let _ = reply.send(match res {
                Ok(r) => r.map(|data| (at, sessions::wrap(sessions, data))),
                Err(_) => Err("the state machine stopped".to_string()),
            });
            act.pump(ctx);
        }));
    }

    fn respond(&mut self, log_id: LogId, result: Result<Bytes, RaftError>) {
        let ((reply, span), answer) = match self.waiters.applied(log_id) {
            None => return,
            Some(Matched::Answer(w)) => (w, result.map(|response| (log_id, response))),
            Some(Matched::Overwritten(w)) => (w, Err(RaftError::Indeterminate)),
        };
        tracing::debug!(parent: &span, node = self.node_id, term = log_id.term, index = log_id.index, ok = answer.is_ok(), "applied");
        let _ = reply.send(answer);
    }

    /// Waiters up to `index` whose entry turned out not to be a command.
    fn settle_upto(&mut self, index: u64) {
        for (reply, _) in self.waiters.settle_upto(index) {
            let _ = reply.send(Err(RaftError::Indeterminate));
        }
    }
}

impl<SM: StateMachine> Applier<SM> {
    fn stop_because(&mut self, why: String, ctx: &mut Context<Self>) {
        tracing::error!(node = self.node_id, error = %why, "applier stops");
        self.failure = Some(why);
        ctx.stop();
    }
}

impl<SM: StateMachine> Actor for Applier<SM> {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.pump(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // Whatever the reason, a node without its applier must not go on
        // (if the node itself is stopping, it ignores this).
        let cause = self
            .failure
            .take()
            .unwrap_or_else(|| "it stopped unexpectedly".into());
        self.failed.do_send(ComponentFailed {
            component: "applier",
            cause,
        });
    }
}

/// This node's leadership ended: the writes waiting for their entries may
/// or may not commit under the next leader.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AbandonWaiters;

impl<SM: StateMachine> Handler<AbandonWaiters> for Applier<SM> {
    type Result = ();
    fn handle(&mut self, _: AbandonWaiters, _ctx: &mut Context<Self>) {
        for (reply, _) in self.waiters.drain() {
            let _ = reply.send(Err(RaftError::Indeterminate));
        }
    }
}

impl<SM: StateMachine> Handler<Committed> for Applier<SM> {
    type Result = ();
    fn handle(&mut self, msg: Committed, ctx: &mut Context<Self>) {
        if msg.0 > self.commit_index {
            self.commit_index = msg.0;
            self.pump(ctx);
        }
    }
}

impl<SM: StateMachine> Handler<RegisterWaiters> for Applier<SM> {
    type Result = ();
    fn handle(&mut self, msg: RegisterWaiters, _ctx: &mut Context<Self>) {
        for w in msg.0 {
            match self
                .waiters
                .register(w.log_id, (w.reply, w.span), self.last_applied.index)
            {
                Ok(None) => {}
                Ok(Some((lost, _))) | Err((lost, _)) => {
                    let _ = lost.send(Err(RaftError::Indeterminate));
                }
            }
        }
    }
}

/// Takes a snapshot of the state machine at the next batch boundary.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct BuildSnapshot(pub SnapshotReply);

impl<SM: StateMachine> Handler<BuildSnapshot> for Applier<SM> {
    type Result = ();
    fn handle(&mut self, msg: BuildSnapshot, ctx: &mut Context<Self>) {
        self.snapshot_requests.push_back(msg.0);
        self.pump(ctx);
    }
}

/// Restores a snapshot received from the leader.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RestoreSnapshot {
    pub last_included: LogId,
    pub data: Bytes,
}

impl<SM: StateMachine> Handler<RestoreSnapshot> for Applier<SM> {
    type Result = ();
    fn handle(&mut self, msg: RestoreSnapshot, ctx: &mut Context<Self>) {
        if msg.last_included.index > self.last_applied.index {
            self.restore = Some((msg.last_included, msg.data));
            self.pump(ctx);
        }
    }
}
