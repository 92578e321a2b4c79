//! The `Leader` actor, one per term: batches client proposals into log
//! appends, runs a `Replicator` per peer, advances the commit index over a
//! possibly joint configuration, serves ReadIndex and checks it still hears
//! from a quorum.

use std::collections::BTreeMap;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::applier::{RegisterWaiter, WriteReply};
use crate::core::quorum::{is_quorum, leader_commit, quorum_index};
use crate::core::types::{Entry, LogId, Membership, NodeId, Payload};
use crate::error::RaftError;
use crate::log_store::LeaderAppend;
use crate::node::{CommitTo, RoleContext, StepDown, StopRole};
use crate::replicator::{AppendReply, Replicator, Wake};

/// Where a read index goes.
pub(crate) type ReadReply = oneshot::Sender<Result<u64, RaftError>>;

pub(crate) struct Leader {
    cx: RoleContext,
    term: u64,
    membership: Membership,
    waiters: Recipient<RegisterWaiter>,
    replicators: BTreeMap<NodeId, Addr<Replicator>>,
    matches: BTreeMap<NodeId, u64>,
    last_heard: BTreeMap<NodeId, Instant>,
    acked_round: BTreeMap<NodeId, u64>,
    /// Last index of this node's own log known durable.
    self_durable: u64,
    last_index: u64,
    first_index_of_term: u64,
    commit_index: u64,
    proposals: Vec<(Payload, Option<WriteReply>)>,
    flush_scheduled: bool,
    round: u64,
    /// Reads waiting for a heartbeat round: (round, read index, reply).
    reads: Vec<(u64, u64, ReadReply)>,
    /// Reads waiting for this term's first entry to commit.
    reads_waiting_commit: Vec<ReadReply>,
}

impl Leader {
    pub(crate) fn new(
        cx: RoleContext,
        term: u64,
        membership: Membership,
        last_log_id: LogId,
        commit_index: u64,
        waiters: Recipient<RegisterWaiter>,
    ) -> Self {
        Leader {
            cx,
            term,
            membership,
            waiters,
            replicators: BTreeMap::new(),
            matches: BTreeMap::new(),
            last_heard: BTreeMap::new(),
            acked_round: BTreeMap::new(),
            self_durable: 0,
            last_index: last_log_id.index,
            first_index_of_term: last_log_id.index + 1,
            commit_index,
            proposals: Vec::new(),
            flush_scheduled: false,
            round: 0,
            reads: Vec::new(),
            reads_waiting_commit: Vec::new(),
        }
    }

    fn propose(&mut self, payload: Payload, reply: Option<WriteReply>, ctx: &mut Context<Self>) {
        self.proposals.push((payload, reply));
        if !self.flush_scheduled {
            // Everything already in the mailbox lands in the same append.
            self.flush_scheduled = true;
            ctx.notify(FlushProposals);
        }
    }

    fn wake_all(&self) {
        let wake = Wake {
            last_index: self.last_index,
            commit_index: self.commit_index,
            round: self.round,
        };
        for r in self.replicators.values() {
            r.do_send(wake);
        }
    }

    fn update_commit(&mut self) {
        let id = self.cx.id;
        let candidate = quorum_index(&self.membership, |n| {
            if n == id {
                self.self_durable
            } else {
                self.matches.get(&n).copied().unwrap_or(0)
            }
        });
        let new = leader_commit(self.commit_index, candidate, self.first_index_of_term);
        if new > self.commit_index {
            self.commit_index = new;
            self.cx.node.do_send(CommitTo {
                term: self.term,
                index: new,
            });
            self.wake_all();
            if new >= self.first_index_of_term {
                for reply in std::mem::take(&mut self.reads_waiting_commit) {
                    self.start_read(reply);
                }
            }
        }
    }

    fn start_read(&mut self, reply: ReadReply) {
        self.round += 1;
        self.reads.push((self.round, self.commit_index, reply));
        self.wake_all();
        self.resolve_reads();
    }

    fn resolve_reads(&mut self) {
        let id = self.cx.id;
        let acked = &self.acked_round;
        let membership = &self.membership;
        let mut i = 0;
        while i < self.reads.len() {
            let round = self.reads[i].0;
            if is_quorum(membership, |n| {
                n == id || acked.get(&n).is_some_and(|r| *r >= round)
            }) {
                let (_, index, reply) = self.reads.swap_remove(i);
                let _ = reply.send(Ok(index));
            } else {
                i += 1;
            }
        }
    }
}

impl Actor for Leader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(node = self.cx.id, term = self.term, "became leader");
        let now = Instant::now();
        for peer in self.membership.members() {
            if peer == self.cx.id {
                continue;
            }
            let r = Replicator::new(
                self.cx.clone(),
                ctx.address(),
                self.term,
                peer,
                self.last_index,
                self.commit_index,
            )
            .start();
            self.replicators.insert(peer, r);
            self.last_heard.insert(peer, now);
        }
        // The blank entry commits everything of earlier terms (§5.4.2) and
        // lets ReadIndex know this term's commit index is current.
        self.propose(Payload::Blank, None, ctx);
        if self.cx.config.check_quorum {
            ctx.run_interval(self.cx.config.election_timeout_max, |act, _ctx| {
                let cutoff = Instant::now() - act.cx.config.election_timeout_max;
                let id = act.cx.id;
                let heard = &act.last_heard;
                if !is_quorum(&act.membership, |n| {
                    n == id || heard.get(&n).is_some_and(|t| *t >= cutoff)
                }) {
                    tracing::warn!(
                        node = id,
                        term = act.term,
                        "no quorum heard within an election timeout; stepping down"
                    );
                    act.cx.node.do_send(StepDown { term: act.term });
                }
            });
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        for r in self.replicators.values() {
            r.do_send(StopRole);
        }
        for (_, reply) in self.proposals.drain(..) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(RaftError::NotLeader(None)));
            }
        }
        for (_, _, reply) in self.reads.drain(..) {
            let _ = reply.send(Err(RaftError::NotLeader(None)));
        }
        for reply in self.reads_waiting_commit.drain(..) {
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

/// A client write to append.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Propose {
    pub command: Bytes,
    pub reply: WriteReply,
}

impl Handler<Propose> for Leader {
    type Result = ();
    fn handle(&mut self, msg: Propose, ctx: &mut Context<Self>) {
        self.propose(Payload::Command(msg.command), Some(msg.reply), ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct FlushProposals;

impl Handler<FlushProposals> for Leader {
    type Result = ();
    fn handle(&mut self, _: FlushProposals, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        if self.proposals.is_empty() {
            return;
        }
        let mut entries = Vec::with_capacity(self.proposals.len());
        for (payload, reply) in self.proposals.drain(..) {
            self.last_index += 1;
            let log_id = LogId::new(self.term, self.last_index);
            if let Some(reply) = reply {
                self.waiters.do_send(RegisterWaiter { log_id, reply });
            }
            entries.push(Entry { log_id, payload });
        }
        let last = self.last_index;
        let (durable, durable_rx) = oneshot::channel();
        self.cx.log.do_send(LeaderAppend { entries, durable });
        // Replicate while our own copy is being made durable (thesis
        // §10.2.1); we count ourselves only once it is.
        self.wake_all();
        ctx.spawn(
            async move { durable_rx.await.is_ok() }
                .into_actor(self)
                .map(move |durable, act, _ctx| {
                    if durable {
                        act.self_durable = act.self_durable.max(last);
                        act.update_commit();
                    } else {
                        tracing::error!(
                            node = act.cx.id,
                            term = act.term,
                            "own append was not stored"
                        );
                        act.cx.node.do_send(StepDown { term: act.term });
                    }
                }),
        );
    }
}

/// A reply from a peer, relayed by its replicator.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PeerReply {
    pub peer: NodeId,
    pub match_index: u64,
    pub round: u64,
}

impl Handler<PeerReply> for Leader {
    type Result = ();
    fn handle(&mut self, msg: PeerReply, _ctx: &mut Context<Self>) {
        self.last_heard.insert(msg.peer, Instant::now());
        let round = self.acked_round.entry(msg.peer).or_default();
        *round = (*round).max(msg.round);
        let m = self.matches.entry(msg.peer).or_default();
        if msg.match_index > *m {
            *m = msg.match_index;
            self.update_commit();
        }
        self.resolve_reads();
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

/// Asks for a read index (ReadIndex, thesis §6.4).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ReadIndex {
    pub reply: ReadReply,
}

impl Handler<ReadIndex> for Leader {
    type Result = ();
    fn handle(&mut self, msg: ReadIndex, _ctx: &mut Context<Self>) {
        if self.commit_index < self.first_index_of_term {
            // Until our blank entry commits we may not know the latest
            // committed index.
            self.reads_waiting_commit.push(msg.reply);
        } else {
            self.start_read(msg.reply);
        }
    }
}
