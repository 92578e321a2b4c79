//! The `Leader` actor, one per term: batches client proposals into log
//! appends, runs a `Replicator` per peer, advances the commit index over a
//! possibly joint configuration, serves ReadIndex and checks it still hears
//! from a quorum.

mod latency;
mod membership;
mod proposals;
mod quiescence;
mod reads;
mod transfer;

use std::collections::BTreeMap;
use tokio::time::Instant;

use actix::prelude::*;
use tokio::sync::oneshot;

pub(crate) use self::membership::{
    AddLearner, ChangeMembership, PeerHealth, RemoveLearner, Replace, SetMetadata,
};
use self::proposals::Proposal;
pub(crate) use self::proposals::Propose;
pub(crate) use self::reads::ReadIndex;
pub(crate) use self::transfer::TransferLeadership;
use crate::applier::{RegisterWaiters, Waiter, WriteReply};
use crate::core::confchange::{leave_joint, ChangeDriver, ChangeStep, Leaving};
use crate::core::lease::Lease;
use crate::core::quiescence::Quiescence;
use crate::core::quorum::leader_commit;
use crate::core::read_index::{ReadAction, ReadIndexQueue};
use crate::core::session::LogClock;
use crate::core::tracker::{Answer, Tracker};
use crate::core::transfer::Transfer;
use crate::core::types::{ClientCommand, Entry, LogId, Membership, NodeId, Payload};
use crate::error::{MembershipError, RaftError};
use crate::log_store::LeaderAppend;
use crate::metrics::{Counters, PeerProgress};
use crate::replicator::{AppendReply, PeerReply, Replicator, Wake};
use crate::role::{CommitTo, ReplicationProgress, RoleContext, StepDown, StopRole};
use latency::CommitClock;

/// Idle looks (one per four heartbeat intervals) before a group on a
/// host goes quiet: a pause of under half a second in a busy group does
/// not stop and restart its timers.
const QUIESCE_AFTER_LOOKS: u32 = 2;

/// Where a read index goes.
pub(crate) type ReadReply = oneshot::Sender<Result<u64, RaftError>>;

pub(crate) struct Leader {
    cx: RoleContext,
    term: u64,
    membership: Membership,
    waiters: Recipient<RegisterWaiters>,
    replicators: BTreeMap<NodeId, Addr<Replicator>>,
    /// Each peer's match, last answer and inflight count.
    tracker: Tracker,
    /// Zero of the milliseconds the tracker is given.
    epoch: Instant,
    /// What this leader stamps on session entries.
    log_clock: LogClock,
    /// The stamp of the proposals waiting for the next flush: one clock
    /// read per batch, not per write.
    batch_log_time: Option<u64>,
    /// Last index of this node's own log known durable.
    self_durable: u64,
    last_index: u64,
    first_index_of_term: u64,
    commit_index: u64,
    proposals: Vec<Proposal>,
    flush_scheduled: bool,
    /// Reads waiting for this term's first commit or for their
    /// heartbeat round (ReadIndex).
    reads: ReadIndexQueue<ReadReply>,
    /// When the recent heartbeat rounds began, for lease reads.
    lease: Lease,
    /// The membership change under way, if any.
    change: Option<PendingChange>,
    /// A leadership transfer under way, and who waits for its outcome.
    transfer: Option<(Transfer, TransferReply)>,
    /// Removed nodes still being sent the configuration that removes them.
    leaving: Leaving,
    /// A change waiting for its new voters to catch up.
    promotion: Option<(std::collections::BTreeSet<NodeId>, ChangeReply)>,
    /// A replacement under way: the voter being re-admitted once the
    /// change that makes it a learner has committed.
    replacing: Option<(NodeId, ChangeReply)>,
    commit_clock: CommitClock,
    /// Whether the group is quiet (on a host), and the timers to stop.
    quiescence: Quiescence,
    ticks: Vec<SpawnHandle>,
}

/// Where the outcome of a leadership transfer goes.
pub(crate) type TransferReply = oneshot::Sender<Result<(), RaftError>>;

/// Where the outcome of a membership change goes.
pub(crate) type ChangeReply = oneshot::Sender<Result<Membership, RaftError>>;

/// A membership change in progress (dissertation §4.3) and who waits for
/// its outcome (nobody, for a change a new leader finishes).
struct PendingChange {
    driver: ChangeDriver,
    reply: Option<ChangeReply>,
}

impl Leader {
    pub(crate) fn new(
        cx: RoleContext,
        term: u64,
        membership: Membership,
        last_log_id: LogId,
        commit_index: u64,
        waiters: Recipient<RegisterWaiters>,
    ) -> Self {
        Leader {
            cx,
            term,
            membership,
            waiters,
            replicators: BTreeMap::new(),
            tracker: Tracker::default(),
            epoch: Instant::now(),
            log_clock: LogClock::default(),
            batch_log_time: None,
            self_durable: 0,
            last_index: last_log_id.index,
            first_index_of_term: last_log_id.index + 1,
            commit_index,
            proposals: Vec::new(),
            flush_scheduled: false,
            reads: ReadIndexQueue::default(),
            lease: Lease::default(),
            change: None,
            transfer: None,
            leaving: Leaving::default(),
            promotion: None,
            replacing: None,
            commit_clock: CommitClock::default(),
            quiescence: Quiescence::new(QUIESCE_AFTER_LOOKS),
            ticks: Vec::new(),
        }
    }

    /// Starts replicators for members that have none. Replicators of nodes
    /// that left are stopped only once the configuration without them has
    /// committed, so they learn they were removed.
    /// `sent_upto`: the last index the new replicators may assume was
    /// already sent (they start probing right after it).
    fn add_replicators(&mut self, sent_upto: u64, ctx: &mut Context<Self>) {
        let now_ms = self.now_ms();
        for peer in self.membership.members() {
            if peer == self.cx.id || self.replicators.contains_key(&peer) {
                continue;
            }
            let pinned = self.membership.incarnations.get(&peer).copied();
            let r = Replicator::new(
                self.cx.clone(),
                ctx.address().recipient(),
                self.term,
                (peer, pinned),
                sent_upto,
                self.commit_index,
            );
            let r = crate::spawn::start_in(r, &self.cx.span);
            self.replicators.insert(peer, r);
            self.tracker.start(peer, now_ms);
        }
    }

    /// Stops the replicators of nodes the committed configuration at
    /// `index` left out, once each holds that configuration (so it knows it
    /// was removed); the others are stopped as their replies show it.
    fn remove_replicators(&mut self, index: u64) {
        let members = self.membership.members();
        let gone: Vec<NodeId> = self
            .replicators
            .keys()
            .copied()
            .filter(|id| !members.contains(id))
            .collect();
        for id in gone {
            self.leaving.leave(id, index);
            self.retire_if_informed(id);
        }
    }

    fn retire_if_informed(&mut self, id: NodeId) {
        if !self.leaving.informed(id, self.tracker.matched(id)) {
            return;
        }
        if let Some(r) = self.replicators.remove(&id) {
            r.do_send(StopRole);
        }
        self.tracker.remove(id);
        self.reads.forget(id);
    }

    /// A configuration entry was appended: it is in force at once (a node
    /// acts on the latest configuration in its log, committed or not).
    fn on_config_appended(&mut self, membership: Membership, index: u64, ctx: &mut Context<Self>) {
        tracing::info!(
            node = self.cx.id,
            term = self.term,
            index,
            voters = ?membership.voters,
            old_voters = ?membership.old_voters,
            learners = ?membership.learners,
            "configuration appended"
        );
        self.membership = membership;
        let members = self.membership.members();
        // A node being retired that is added back starts over: what it
        // acknowledged before may be gone (its directory may be new).
        for id in self.leaving.returning(&members) {
            if let Some(r) = self.replicators.remove(&id) {
                r.do_send(StopRole);
            }
            self.tracker.forget_match(id);
            self.reads.forget(id);
        }
        if let Some(change) = &mut self.change {
            change.driver.appended(index);
        }
        // New members start from the configuration entry that adds them.
        self.add_replicators(index - 1, ctx);
    }

    /// Moves the change on when the entry it waits for has committed.
    fn advance_change(&mut self, ctx: &mut Context<Self>) {
        let Some(change) = &mut self.change else {
            return;
        };
        let index = match change.driver.committed(self.commit_index) {
            ChangeStep::Wait => return,
            ChangeStep::Propose(next) => {
                self.propose(Payload::Membership(Box::new(next)), None, ctx);
                return;
            }
            ChangeStep::Done { index } => index,
        };
        if let Some(reply) = self.change.take().and_then(|c| c.reply) {
            let _ = reply.send(Ok(self.membership.clone()));
        }
        if let Some((id, reply)) = self.replacing.take() {
            // The old incarnation no longer votes; admit the new one.
            let mut voters = self.membership.voters.clone();
            voters.insert(id);
            self.await_promotion(voters, reply, ctx);
        }
        self.remove_replicators(index);
        if !self.membership.is_voter(self.cx.id) {
            tracing::info!(
                node = self.cx.id,
                term = self.term,
                "removed from the configuration; stepping down"
            );
            self.cx.tell(StepDown { term: self.term });
        }
    }

    /// Milliseconds since this leader started, for the tracker (virtual
    /// time under the simulator).
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn report_progress(&self) {
        let now_ms = self.now_ms();
        let peers = self
            .membership
            .members()
            .into_iter()
            .filter(|id| *id != self.cx.id)
            .map(|id| {
                let peer = self.tracker.peer(id).unwrap_or_default();
                let progress = PeerProgress {
                    matched: peer.matched,
                    lag: self.last_index.saturating_sub(peer.matched),
                    last_contact_ms: peer.last_heard_ms.map(|t| now_ms.saturating_sub(t)),
                    inflight: peer.inflight,
                };
                (id, progress)
            })
            .collect();
        self.cx.tell(ReplicationProgress {
            term: self.term,
            peers,
        });
    }

    /// Refuses a change while another is under way.
    fn check_idle(&self) -> Result<(), RaftError> {
        if self.change.is_some()
            || self.promotion.is_some()
            || self.replacing.is_some()
            || self.membership.is_joint()
        {
            return Err(RaftError::Membership(MembershipError::ChangeInProgress));
        }
        Ok(())
    }

    fn wake_all(&self) {
        let wake = Wake {
            last_index: self.last_index,
            commit_index: self.commit_index,
            round: self.reads.round(),
        };
        for r in self.replicators.values() {
            r.do_send(wake);
        }
    }

    fn update_commit(&mut self, ctx: &mut Context<Self>) {
        let candidate =
            self.tracker
                .commit_candidate(&self.membership, self.cx.id, self.self_durable);
        let new = leader_commit(self.commit_index, candidate, self.first_index_of_term);
        if new > self.commit_index {
            self.commit_index = new;
            self.commit_clock.committed(
                new,
                Instant::now(),
                &self.cx.counters.histograms.commit_latency_us,
            );
            self.cx.tell(CommitTo {
                term: self.term,
                index: new,
            });
            self.wake_all();
            if new >= self.first_index_of_term {
                let action = self.reads.term_committed(new);
                self.start_round(action);
            }
            self.advance_change(ctx);
        }
    }
}

impl Leader {
    /// The leader's periodic work: progress reports (and the look for
    /// quiescence), lease rounds, dead-voter cleanup, check-quorum. All
    /// of it stops while the group is quiet.
    fn start_ticks(&mut self, ctx: &mut Context<Self>) {
        // Progress goes to the metrics a few times per second, not on every
        // acknowledgement: the write path stays free of it.
        // A cancelled timer may still fire once, in the poll that cancels
        // it: each checks the group is awake.
        let progress = ctx.run_interval(self.cx.config.heartbeat_interval * 4, |act, ctx| {
            if act.quiescence.is_quiet() {
                return;
            }
            act.report_progress();
            act.look_for_quiescence(ctx);
        });
        self.ticks.push(progress);
        if self.cx.config.lease_reads {
            // Every heartbeat interval a round of its own renews the lease,
            // idle or not (a busy leader's AppendEntries carry it).
            let lease = ctx.run_interval(self.cx.config.heartbeat_interval, |act, _ctx| {
                if act.quiescence.is_quiet() {
                    return;
                }
                let round = act.reads.new_round();
                act.start_round(ReadAction::SendRound(round));
            });
            self.ticks.push(lease);
        }
        if let Some(after) = self.cx.config.dead_voter_cleanup {
            let cleanup = ctx.run_interval(self.cx.config.election_timeout_max, move |act, ctx| {
                if !act.quiescence.is_quiet() {
                    act.remove_a_dead_voter(after, ctx)
                }
            });
            self.ticks.push(cleanup);
        }
        if self.cx.config.check_quorum {
            let check = ctx.run_interval(self.cx.config.election_timeout_max, |act, _ctx| {
                if act.quiescence.is_quiet() {
                    return;
                }
                let window = act.cx.config.election_timeout_max.as_millis() as u64;
                let since = act.now_ms().saturating_sub(window);
                let id = act.cx.id;
                if !act.tracker.quorum_heard_since(&act.membership, id, since) {
                    tracing::warn!(
                        node = id,
                        term = act.term,
                        "no quorum heard within an election timeout; stepping down"
                    );
                    act.cx.tell(StepDown { term: act.term });
                }
            });
            self.ticks.push(check);
        }
    }
}

impl Actor for Leader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(node = self.cx.id, term = self.term, "became leader");
        Counters::bump(&self.cx.counters.elections_won);
        self.add_replicators(self.last_index, ctx);
        if self.membership.is_joint() {
            // A change interrupted by the previous leader: finish it once
            // our blank entry (after C_old,new in the log) has committed.
            self.change = Some(PendingChange {
                driver: ChangeDriver::resume(
                    self.first_index_of_term,
                    leave_joint(&self.membership),
                ),
                reply: None,
            });
        }
        // The blank entry commits everything of earlier terms (§5.4.2) and
        // lets ReadIndex know this term's commit index is current.
        self.propose(Payload::Blank, None, ctx);
        self.start_ticks(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some((transfer, reply)) = self.transfer.take() {
            let _ = reply.send(transfer.outcome_at_step_down().map_err(RaftError::Transfer));
        }
        for r in self.replicators.values() {
            r.do_send(StopRole);
        }
        if let Some(reply) = self.change.take().and_then(|c| c.reply) {
            // The change may still complete under the next leader.
            let _ = reply.send(Err(RaftError::Indeterminate));
        }
        if let Some((_, reply)) = self.replacing.take() {
            // The voter may have been made a learner already.
            let _ = reply.send(Err(RaftError::Indeterminate));
        }
        if let Some((_, reply)) = self.promotion.take() {
            // Nothing was appended yet: the caller may retry elsewhere.
            let _ = reply.send(Err(RaftError::NotLeader(None)));
        }
        for proposal in self.proposals.drain(..) {
            // Never appended: the caller may retry elsewhere.
            if let Some(reply) = proposal.reply {
                let _ = reply.send(Err(RaftError::NotLeader(None)));
            }
            if let Some(appended) = proposal.appended {
                let _ = appended.send(Err(RaftError::NotLeader(None)));
            }
        }
        for reply in self.reads.drain() {
            let _ = reply.send(Err(RaftError::NotLeader(None)));
        }
    }
}

impl Handler<StopRole> for Leader {
    type Result = ();
    fn handle(&mut self, _: StopRole, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<PeerReply> for Leader {
    type Result = ();
    fn handle(&mut self, msg: PeerReply, ctx: &mut Context<Self>) {
        let now_ms = self.now_ms();
        if msg.reset {
            self.reads.forget(msg.peer);
        }
        let answer = Answer {
            matched: msg.match_index,
            reset: msg.reset,
            inflight: msg.inflight,
            incarnation: msg.incarnation,
        };
        let grew = self.tracker.answered(msg.peer, answer, now_ms);
        if self.tracker.counts(&self.membership, msg.peer) {
            self.reads.acknowledged(msg.peer, msg.round);
        } else if msg.reset {
            tracing::warn!(
                node = self.cx.id,
                term = self.term,
                peer = msg.peer,
                incarnation = msg.incarnation,
                pinned = ?self.membership.incarnations.get(&msg.peer),
                "a voter answers from a new data directory; it counts toward no quorum until it is replaced (Raft::replace)"
            );
        }
        if grew {
            self.update_commit(ctx);
        }
        self.resolve_reads();
        self.try_hand_over();
        self.retire_if_informed(msg.peer);
        self.try_promote(ctx);
    }
}

/// An AppendEntries reply from `from`, routed by the node.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RouteAppendReply {
    pub from: NodeId,
    pub reply: AppendReply,
}

impl Handler<RouteAppendReply> for Leader {
    type Result = ();
    fn handle(&mut self, msg: RouteAppendReply, _ctx: &mut Context<Self>) {
        if let Some(r) = self.replicators.get(&msg.from) {
            r.do_send(msg.reply);
        }
    }
}

/// An InstallSnapshot reply from a follower, for its replicator.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RouteSnapshotReply {
    pub from: NodeId,
    pub reply: crate::replicator::SnapshotReply,
}

impl Handler<RouteSnapshotReply> for Leader {
    type Result = ();
    fn handle(&mut self, msg: RouteSnapshotReply, _ctx: &mut Context<Self>) {
        if let Some(r) = self.replicators.get(&msg.from) {
            r.do_send(msg.reply);
        }
    }
}
