//! The `Follower` actor, one per term: runs the election timer and answers
//! the leader's AppendEntries once the appended entries are durable.

mod snapshot;

pub(crate) use snapshot::SnapshotChunk;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::core::election::random_timeout;
use crate::core::types::{Entry, LogId, NodeId};
use crate::log_store::{AppendRefused, FollowerAppend};
use crate::message::{Envelope, Message};
use crate::metrics::Counters;
use crate::role::{CommitTo, ElectionTimeout, Quiesced, RoleContext, StopRole, Unquiesce};
use crate::storage::snapshot::{SnapshotMeta, SnapshotSink};

pub(crate) struct Follower {
    cx: RoleContext,
    term: u64,
    /// When the election timeout fires unless the leader is heard first.
    deadline: tokio::time::Instant,
    /// Whether a timer is pending: it fires at the deadline it was set
    /// for, and then waits on if the deadline moved meanwhile.
    timer_pending: bool,
    rng: fastrand::Rng,
    /// A snapshot being received from the leader.
    receiving: Option<(SnapshotMeta, Box<dyn SnapshotSink>)>,
    /// A received snapshot is being verified and installed.
    installing: bool,
    /// The leader quiesced the group: the election timer lapses without
    /// an election until something wakes the group.
    quiesced: bool,
}

impl Follower {
    pub(crate) fn new(cx: RoleContext, term: u64) -> Self {
        let rng = fastrand::Rng::with_seed(fastrand::u64(..) ^ cx.id);
        Follower {
            cx,
            term,
            deadline: tokio::time::Instant::now(),
            timer_pending: false,
            rng,
            receiving: None,
            installing: false,
            quiesced: false,
        }
    }

    /// Leaves quiescence, if in it, and tells the node.
    fn wake(&mut self) {
        if self.quiesced {
            self.quiesced = false;
            self.cx.tell(Quiesced {
                term: self.term,
                quiet: false,
            });
        }
    }

    /// Restarts the election timeout. Called on every message from the
    /// leader, so it only moves the deadline: one timer is pending at a
    /// time, instead of one cancelled and one spawned per AppendEntries.
    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        let d = random_timeout(
            &mut self.rng,
            self.cx.config.election_timeout_min,
            self.cx.config.election_timeout_max,
        );
        self.deadline = tokio::time::Instant::now() + d;
        if !self.timer_pending {
            self.wait_for_deadline(ctx);
        }
    }

    fn wait_for_deadline(&mut self, ctx: &mut Context<Self>) {
        self.timer_pending = true;
        let wait = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        ctx.run_later(wait, |act, ctx| {
            act.timer_pending = false;
            if act.quiesced {
                // Nothing more until the group wakes (`arm_timer`).
            } else if tokio::time::Instant::now() < act.deadline {
                act.wait_for_deadline(ctx);
            } else {
                act.cx.tell(ElectionTimeout { term: act.term });
            }
        });
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

impl Handler<Unquiesce> for Follower {
    type Result = ();
    fn handle(&mut self, _: Unquiesce, ctx: &mut Context<Self>) {
        self.wake();
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
    /// A `Quiesce`: once it matches the log, stop the election timer.
    pub quiesce: bool,
}

impl Handler<AppendEntriesRequest> for Follower {
    type Result = ();
    fn handle(&mut self, msg: AppendEntriesRequest, ctx: &mut Context<Self>) {
        if !msg.quiesce {
            self.wake();
        }
        self.arm_timer(ctx);
        let (durable, durable_rx) = oneshot::channel();
        let AppendEntriesRequest {
            from,
            prev,
            entries,
            leader_commit,
            round,
            commit_index,
            quiesce,
        } = msg;
        Counters::bump(&self.cx.counters.append_entries_received);
        self.drop_transfer_behind(commit_index);
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
                    if quiesce && act.cx.quiescence.is_some() && !act.quiesced {
                        act.quiesced = true;
                        act.cx.tell(Quiesced { term, quiet: true });
                    }
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
