//! The `Follower` actor, one per term: runs the election timer and answers
//! the leader's AppendEntries once the appended entries are durable.

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::applier::RestoreSnapshot;
use crate::core::election::random_timeout;
use crate::core::types::{Entry, LogId, NodeId};
use crate::log_store::{AppendRefused, FollowerAppend, InstallSnapshotLog};
use crate::message::{Envelope, Message};
use crate::metrics::Counters;
use crate::role::{CommitTo, ElectionTimeout, RoleContext, StopRole};
use crate::snapshotter::{SnapshotInstalled, SnapshotTaken};
use crate::storage::snapshot::{SnapshotMeta, SnapshotSink};

pub(crate) struct Follower {
    cx: RoleContext,
    term: u64,
    timer: Option<SpawnHandle>,
    rng: fastrand::Rng,
    /// A snapshot being received from the leader.
    receiving: Option<(SnapshotMeta, Box<dyn SnapshotSink>)>,
    /// A received snapshot is being verified and installed.
    installing: bool,
}

impl Follower {
    pub(crate) fn new(cx: RoleContext, term: u64) -> Self {
        let rng = fastrand::Rng::with_seed(fastrand::u64(..) ^ cx.id);
        Follower {
            cx,
            term,
            timer: None,
            rng,
            receiving: None,
            installing: false,
        }
    }

    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        let d = random_timeout(
            &mut self.rng,
            self.cx.config.election_timeout_min,
            self.cx.config.election_timeout_max,
        );
        let term = self.term;
        self.timer = Some(ctx.run_later(d, move |act, _| {
            act.cx.tell(ElectionTimeout { term });
        }));
    }
}

impl Actor for Follower {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.arm_timer(ctx);
    }
}

impl Handler<StopRole> for Follower {
    type Result = ();
    fn handle(&mut self, _: StopRole, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The node granted a vote or heard from the leader: postpone the election.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ResetElectionTimer;

impl Handler<ResetElectionTimer> for Follower {
    type Result = ();
    fn handle(&mut self, _: ResetElectionTimer, ctx: &mut Context<Self>) {
        self.arm_timer(ctx);
    }
}

/// An AppendEntries of this follower's term (the node checked the term).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AppendEntriesRequest {
    pub from: NodeId,
    pub prev: LogId,
    pub entries: Vec<Entry>,
    pub leader_commit: u64,
    pub round: u64,
    /// The node's commit index.
    pub commit_index: u64,
}

impl Handler<AppendEntriesRequest> for Follower {
    type Result = ();
    fn handle(&mut self, msg: AppendEntriesRequest, ctx: &mut Context<Self>) {
        self.arm_timer(ctx);
        let (durable, durable_rx) = oneshot::channel();
        let AppendEntriesRequest {
            from,
            prev,
            entries,
            leader_commit,
            round,
            commit_index,
        } = msg;
        Counters::bump(&self.cx.counters.append_entries_received);
        let check = self.cx.log.send(FollowerAppend {
            prev,
            entries,
            commit_index,
            durable,
        });
        // `wait` keeps later AppendEntries queued until this one is planned,
        // so appends reach the log in arrival order.
        ctx.wait(check.into_actor(self).map(move |res, act, ctx| {
            let term = act.term;
            let reply = |result| {
                Envelope::new(
                    act.cx.id,
                    from,
                    Message::AppendEntriesResponse {
                        term,
                        result,
                        prev_index: prev.index,
                        round,
                    },
                )
            };
            match res {
                Ok(Err(AppendRefused::Conflict(hint))) => {
                    Counters::bump(&act.cx.counters.append_entries_rejected);
                    act.cx.transport.send(reply(Err(hint)))
                }
                Ok(Err(AppendRefused::Committed)) => {} // logged by the log store
                Ok(Ok(matched)) => {
                    let envelope = reply(Ok(matched));
                    // Acknowledge only once durable: the leader counts this
                    // reply towards committing.
                    ctx.spawn(async move { durable_rx.await.is_ok() }.into_actor(act).map(
                        move |durable, act, _| {
                            if durable {
                                act.cx.transport.send(envelope);
                                act.cx.tell(CommitTo {
                                    term,
                                    index: leader_commit.min(matched.index),
                                });
                            }
                        },
                    ));
                }
                Err(_) => {} // log store gone: the node is stopping
            }
        }));
    }
}

/// A chunk of an InstallSnapshot of this follower's term.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SnapshotChunk {
    pub from: NodeId,
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub data: bytes::Bytes,
    /// The node's commit index: a snapshot it does not go beyond is stale.
    pub commit_index: u64,
}

impl Follower {
    fn snapshot_reply(&self, to: NodeId, meta: &SnapshotMeta, received: u64, done: bool) {
        self.cx.transport.send(Envelope::new(
            self.cx.id,
            to,
            Message::InstallSnapshotResponse {
                term: self.term,
                last_included: meta.last_included,
                received,
                done,
            },
        ));
    }

    /// Verifies the complete snapshot, makes it durable, then restores it
    /// and makes the log agree with it; acknowledges only after all that.
    fn install(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        sink: Box<dyn SnapshotSink>,
        ctx: &mut Context<Self>,
    ) {
        self.installing = true;
        let verify = self.cx.io.blocking(move || sink.finish());
        ctx.spawn(verify.into_actor(self).then(move |res, act, _| {
            let (durable, durable_rx) = oneshot::channel();
            let data = match res {
                Ok(Ok(data)) => Some(data),
                Ok(Err(e)) => {
                    tracing::warn!(node = act.cx.id, term = act.term, index = meta.last_included.index, error = %e, "received snapshot rejected; the leader will resend");
                    None
                }
                Err(e) => {
                    tracing::error!(node = act.cx.id, error = %e, "snapshot verification thread failed");
                    None
                }
            };
            if let Some(data) = data {
                tracing::info!(node = act.cx.id, term = act.term, index = meta.last_included.index, "installing snapshot from the leader");
                act.cx.snapshots.restore.do_send(RestoreSnapshot {
                    last_included: meta.last_included,
                    data,
                });
                act.cx.log.do_send(InstallSnapshotLog {
                    meta: meta.clone(),
                    durable,
                });
            }
            async move { durable_rx.await.is_ok().then_some(meta) }.into_actor(act)
        }).map(move |installed, act, _| {
            act.installing = false;
            if let Some(meta) = installed {
                let at = meta.last_included;
                act.cx.snapshots.installed.do_send(SnapshotInstalled(at));
                Counters::bump(&act.cx.counters.snapshots_installed);
                act.cx.tell(SnapshotTaken(at));
                act.cx.tell(CommitTo { term: act.term, index: at.index });
                act.snapshot_reply(from, &meta, meta.size, true);
            }
        }));
    }
}

impl Handler<SnapshotChunk> for Follower {
    type Result = ();
    fn handle(&mut self, msg: SnapshotChunk, ctx: &mut Context<Self>) {
        self.arm_timer(ctx);
        let SnapshotChunk {
            from,
            meta,
            offset,
            data,
            commit_index,
        } = msg;
        if self.installing {
            return; // the reply follows the installation
        }
        if meta.last_included.index <= commit_index {
            // Stale or duplicate: this node already holds everything the
            // snapshot covers, committed.
            self.snapshot_reply(from, &meta, meta.size, true);
            return;
        }
        let same = self.receiving.as_ref().is_some_and(|(m, _)| *m == meta);
        if !same {
            if offset != 0 {
                // A transfer we know nothing of (we restarted, or a newer
                // snapshot replaced it): ask for the start.
                self.snapshot_reply(from, &meta, 0, false);
                return;
            }
            match self.cx.snapshots.store.sink(meta.clone()) {
                Ok(sink) => self.receiving = Some((meta.clone(), sink)),
                Err(e) => {
                    tracing::error!(node = self.cx.id, error = %e, "cannot store a snapshot");
                    return;
                }
            }
        }
        let (_, sink) = self.receiving.as_mut().expect("set above");
        if offset == sink.written() && !data.is_empty() {
            if let Err(e) = sink.write(&data) {
                tracing::warn!(node = self.cx.id, error = %e, "snapshot chunk refused; restarting the transfer");
                self.receiving = None;
                self.snapshot_reply(from, &meta, 0, false);
                return;
            }
        }
        let written = sink.written();
        if written == meta.size {
            let (meta, sink) = self.receiving.take().expect("set above");
            self.install(from, meta, sink, ctx);
        } else {
            // Also answers duplicates and gaps: the leader resumes here.
            self.snapshot_reply(from, &meta, written, false);
        }
    }
}
