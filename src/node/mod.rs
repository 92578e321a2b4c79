//! The `Node` actor: one per server. It is the single writer of the
//! current term, the vote and the role; it routes every inbound message to
//! the role actor of the current term and replaces that actor on every role
//! change. Messages from role actors carry their term, and the node drops
//! those of an older term, so a stale continuation can never act.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use tokio::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::{oneshot, watch, Notify};

use crate::applier::RestoreSnapshot;
use crate::applier::{AbandonWaiters, Applied, Committed, RegisterWaiter, WriteReply};
use crate::candidate::{Candidate, VoteReply};
use crate::config::Config;
use crate::core::log::ConflictHint;
use crate::core::types::{HardState, LogId, Membership, NodeId};
use crate::core::validate::{self, Invalid};
use crate::core::vote::{decide_vote, VoteRequest};
use crate::error::RaftError;
use crate::follower::{AppendEntriesRequest, Follower, ResetElectionTimer, SnapshotChunk};
use crate::identity::IdentityCell;
use crate::io::IoMode;
use crate::leader::{
    AddLearner, ChangeMembership, ChangeReply, Leader, Propose, ReadIndex, ReadReply,
    RouteAppendReply, RouteSnapshotReply, TransferLeadership, TransferReply,
};
use crate::log_store::{
    Close, LastLogId, LogChanged, LogStore, SaveHardState, SaveIdentity, StorageFailed,
};
use crate::message::{Envelope, Message, RemoteError};
use crate::metrics::{Metrics, Role};
use crate::probe::{Probe, ProbeEvent};
use crate::replicator::{AppendReply, SnapshotReply};
use crate::snapshotter::{SnapshotInstalled, SnapshotTaken};
use crate::storage::snapshot::SnapshotStore;
use crate::transport::Transport;

/// What every role actor needs from its node.
#[derive(Clone)]
pub(crate) struct RoleContext {
    pub id: NodeId,
    pub config: Arc<Config>,
    pub node: Addr<Node>,
    pub log: Addr<LogStore>,
    pub transport: Arc<dyn Transport>,
    pub snapshots: SnapshotPorts,
    pub io: IoMode,
    pub probe: Probe,
    pub identity: Arc<IdentityCell>,
}

/// What the roles need for snapshots: the store (a leader sends from it, a
/// follower receives into it), and who hears of an installed one.
#[derive(Clone)]
pub(crate) struct SnapshotPorts {
    pub store: Arc<dyn SnapshotStore>,
    pub restore: Recipient<RestoreSnapshot>,
    pub installed: Recipient<SnapshotInstalled>,
}

/// Stops a role actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopRole;

/// A follower's or candidate's election timer fired in `term`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ElectionTimeout {
    pub term: u64,
}

/// A pre-vote in `term` reached a quorum.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PreVoteWon {
    pub term: u64,
}

/// An election in `term` was won.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ElectionWon {
    pub term: u64,
}

/// The leader of `term` must step down (check-quorum or storage trouble).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StepDown {
    pub term: u64,
}

/// Entries up to `index` are known committed (learned in `term`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CommitTo {
    pub term: u64,
    pub index: u64,
}

/// A message from the network.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Inbound(pub Envelope);

/// A client write submitted on this node.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ClientWrite {
    pub command: Bytes,
    pub reply: WriteReply,
}

/// A client asks for a read index.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ClientRead {
    pub reply: ReadReply,
}

/// Graceful shutdown.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Shutdown;

enum RoleState {
    Follower(Addr<Follower>),
    Candidate {
        addr: Addr<Candidate>,
        pre_vote: bool,
    },
    Leader(Addr<Leader>),
    /// Waiting for our own vote to become durable, or for the log's last
    /// id before starting the next role.
    Pending,
    Stopped,
}

enum Forwarded {
    Write(WriteReply),
    Read(ReadReply),
}

impl Forwarded {
    fn fail(self, error: RaftError) {
        match self {
            Forwarded::Write(r) => drop(r.send(Err(error))),
            Forwarded::Read(r) => drop(r.send(Err(error))),
        }
    }
}

pub(crate) struct Node {
    cx: RoleContext,
    hs: HardState,
    role: RoleState,
    /// The term the current role actor belongs to.
    role_term: u64,
    leader: Option<NodeId>,
    leader_seen: Option<Instant>,
    membership: Membership,
    last_log_id: LogId,
    commit_index: u64,
    last_applied: u64,
    /// Last index covered by a durable snapshot.
    snapshot_index: u64,
    applier: Recipient<Committed>,
    waiters: Recipient<RegisterWaiter>,
    metrics: watch::Sender<Metrics>,
    /// Woken on every metrics change. Waiters are woken in the order they
    /// began to wait, which a watch channel does not promise (it spreads
    /// them over randomly chosen slots): the simulator needs the order.
    changed: Arc<Notify>,
    /// Requests forwarded to a leader: id → (that leader, its incarnation
    /// when we sent, who waits).
    forwarded: BTreeMap<u64, (NodeId, u64, Forwarded)>,
    /// The latest incarnation heard from each peer.
    incarnations: BTreeMap<NodeId, u64>,
    /// The term this node started in: it may have led that term or an
    /// earlier one in a previous run, whose forwarded writes it does not
    /// remember.
    boot_term: u64,
    /// Tells the applier a leadership of this node ended.
    abandon: Recipient<AbandonWaiters>,
    /// Why the node stopped on its own, once it has.
    stopped_because: Option<String>,
    /// When a refusal of each peer was last logged at `warn`.
    refusals_logged: BTreeMap<NodeId, Instant>,
    next_request: u64,
    /// Forwarded writes already proposed, by (forwarding node, request id):
    /// the network may duplicate a ForwardWrite, and proposing it twice
    /// would apply the write twice.
    seen_forwards: HashSet<(NodeId, u64)>,
    seen_order: VecDeque<(NodeId, u64)>,
}

/// How many forwarded request ids are remembered for deduplication.
const SEEN_FORWARDS: usize = 65_536;

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cx: RoleContext,
        hs: HardState,
        membership: Membership,
        last_log_id: LogId,
        commit_index: u64,
        snapshot_index: u64,
        applier: Recipient<Committed>,
        waiters: Recipient<RegisterWaiter>,
        metrics: watch::Sender<Metrics>,
        changed: Arc<Notify>,
        abandon: Recipient<AbandonWaiters>,
    ) -> Self {
        Node {
            cx,
            hs,
            role: RoleState::Pending,
            role_term: 0,
            leader: None,
            leader_seen: None,
            membership,
            last_log_id,
            commit_index,
            // Learned from the applier once it has restored the snapshot
            // and applied: a read must not run against an empty state.
            last_applied: 0,
            snapshot_index,
            applier,
            waiters,
            metrics,
            changed,
            forwarded: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            boot_term: hs.term,
            abandon,
            stopped_because: None,
            refusals_logged: BTreeMap::new(),
            // Random start: ids of a restarted node must not collide with
            // those of its previous incarnation in the leader's memory.
            next_request: fastrand::u64(1..u64::MAX / 2),
            seen_forwards: HashSet::new(),
            seen_order: VecDeque::new(),
        }
    }

    fn id(&self) -> NodeId {
        self.cx.id
    }

    fn publish(&self) {
        let role = match &self.role {
            RoleState::Leader(_) => Role::Leader,
            RoleState::Candidate { .. } | RoleState::Pending => Role::Candidate,
            RoleState::Stopped => Role::Shutdown,
            RoleState::Follower(_) if !self.membership.members().contains(&self.id()) => {
                Role::Removed
            }
            RoleState::Follower(_) if !self.membership.is_voter(self.id()) => Role::Learner,
            RoleState::Follower(_) => Role::Follower,
        };
        let m = Metrics {
            id: self.id(),
            role,
            term: self.hs.term,
            leader: self.leader,
            last_log_index: self.last_log_id.index,
            commit_index: self.commit_index,
            last_applied: self.last_applied,
            snapshot_index: self.snapshot_index,
            membership: self.membership.clone(),
            stopped_because: self.stopped_because.clone(),
        };
        let modified = self.metrics.send_if_modified(|old| {
            if *old != m {
                *old = m;
                true
            } else {
                false
            }
        });
        if modified {
            self.changed.notify_waiters();
        }
    }

    fn stop_role(&mut self) {
        match std::mem::replace(&mut self.role, RoleState::Pending) {
            RoleState::Follower(a) => a.do_send(StopRole),
            RoleState::Candidate { addr, .. } => addr.do_send(StopRole),
            RoleState::Leader(a) => {
                a.do_send(StopRole);
                // Its clients cannot know whether their entries will
                // commit under the next leader: tell them now.
                self.abandon.do_send(AbandonWaiters);
            }
            RoleState::Pending | RoleState::Stopped => {}
        }
    }

    /// Fails requests forwarded to a leader other than `leader` (a new
    /// term or a new leader began): a write's fate is unknown, a read can
    /// be retried.
    fn fail_forwarded(&mut self, leader: Option<NodeId>) {
        let stale: Vec<u64> = self
            .forwarded
            .iter()
            .filter(|(_, (to, _, _))| Some(*to) != leader)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some((_, _, f)) = self.forwarded.remove(&id) {
                match f {
                    Forwarded::Write(r) => drop(r.send(Err(RaftError::Indeterminate))),
                    Forwarded::Read(r) => drop(r.send(Err(RaftError::NotLeader(leader)))),
                }
            }
        }
    }

    fn persist_term(&mut self, term: u64) {
        if term > self.hs.term {
            self.fail_forwarded(None);
            self.hs = HardState {
                term,
                voted_for: None,
            };
            // Not waited for: every later acknowledgement in this term waits
            // for a later write, and writes become durable in order.
            self.cx.log.do_send(SaveHardState {
                hard_state: self.hs,
                durable: None,
            });
            self.leader = None;
        }
    }

    fn become_follower(&mut self, term: u64, leader: Option<NodeId>) {
        if matches!(self.role, RoleState::Stopped) {
            return;
        }
        self.persist_term(term);
        if leader.is_some() {
            if self.leader != leader {
                self.fail_forwarded(leader);
            }
            self.leader = leader;
            self.leader_seen = Some(Instant::now());
        }
        let keep = matches!(self.role, RoleState::Follower(_)) && self.role_term == self.hs.term;
        if !keep {
            self.stop_role();
            let f = Follower::new(self.cx.clone(), self.hs.term).start();
            self.role = RoleState::Follower(f);
            self.role_term = self.hs.term;
        }
        self.publish();
    }

    fn leader_alive(&self) -> bool {
        matches!(self.role, RoleState::Leader(_))
            || self
                .leader_seen
                .is_some_and(|t| t.elapsed() < self.cx.config.election_timeout_min)
                && self.leader.is_some()
    }

    fn send(&self, to: NodeId, message: Message) {
        self.cx
            .transport
            .send(Envelope::new(self.id(), to, message));
    }

    fn start_pre_vote(&mut self, ctx: &mut Context<Self>) {
        self.stop_role();
        self.leader = None;
        let term = self.hs.term;
        self.role_term = term;
        self.publish();
        ctx.wait(
            self.cx
                .log
                .send(LastLogId)
                .into_actor(self)
                .map(move |last, act, _| {
                    let (Ok(last), RoleState::Pending) = (last, &act.role) else {
                        return;
                    };
                    if act.hs.term == term {
                        act.start_candidate(term, true, false, last);
                    }
                }),
        );
    }

    fn start_candidate(&mut self, term: u64, pre_vote: bool, force: bool, last: LogId) {
        let membership = self.membership.clone();
        let c = Candidate::new(self.cx.clone(), term, pre_vote, force, membership, last);
        self.role = RoleState::Candidate {
            addr: c.start(),
            pre_vote,
        };
    }

    fn start_election(&mut self, force: bool, ctx: &mut Context<Self>) {
        self.stop_role();
        self.leader = None;
        let term = self.hs.term + 1;
        self.hs = HardState {
            term,
            voted_for: Some(self.id()),
        };
        self.role_term = term;
        self.publish();
        let (durable, durable_rx) = oneshot::channel();
        self.cx.log.do_send(SaveHardState {
            hard_state: self.hs,
            durable: Some(durable),
        });
        let log = self.cx.log.clone();
        // Our own vote counts only once it is durable.
        ctx.spawn(
            async move {
                durable_rx.await.ok()?;
                log.send(LastLogId).await.ok()
            }
            .into_actor(self)
            .map(move |last, act, _| {
                let Some(last) = last else { return };
                if act.hs.term == term && matches!(act.role, RoleState::Pending) {
                    act.start_candidate(term, false, force, last);
                }
            }),
        );
    }

    fn handle_vote_request(
        &mut self,
        from: NodeId,
        req: VoteRequest,
        force: bool,
        ctx: &mut Context<Self>,
    ) {
        let alive = self.leader_alive() && !force;
        ctx.wait(
            self.cx
                .log
                .send(LastLogId)
                .into_actor(self)
                .map(move |last, act, ctx| {
                    let Ok(last) = last else { return };
                    let decision = decide_vote(&act.hs, last, &req, alive);
                    let reply_term = if req.pre_vote && decision.granted {
                        req.term
                    } else {
                        act.hs.term
                    };
                    let reply = Message::RequestVoteResponse {
                        term: reply_term,
                        granted: decision.granted,
                        pre_vote: req.pre_vote,
                    };
                    if decision.granted && !req.pre_vote {
                        if let RoleState::Follower(f) = &act.role {
                            f.do_send(ResetElectionTimer);
                        }
                    }
                    match decision.persist {
                        Some(hs) => {
                            act.hs = hs;
                            let (durable, durable_rx) = oneshot::channel();
                            act.cx.log.do_send(SaveHardState {
                                hard_state: hs,
                                durable: Some(durable),
                            });
                            let transport = act.cx.transport.clone();
                            let id = act.id();
                            ctx.spawn(
                                async move {
                                    if durable_rx.await.is_ok() {
                                        transport.send(Envelope::new(id, from, reply));
                                    }
                                }
                                .into_actor(act),
                            );
                            act.publish();
                        }
                        None => act.send(from, reply),
                    }
                }),
        );
    }

    fn forward(
        &mut self,
        ctx: &mut Context<Self>,
        pending: Forwarded,
        make: impl FnOnce(u64) -> Message,
    ) {
        let Some(leader) = self.leader.filter(|l| *l != self.id()) else {
            pending.fail(RaftError::NotLeader(None));
            return;
        };
        let id = self.next_request;
        self.next_request += 1;
        let incarnation = self.incarnations.get(&leader).copied().unwrap_or(0);
        self.forwarded.insert(id, (leader, incarnation, pending));
        self.send(leader, make(id));
        ctx.run_later(self.cx.config.client_timeout, move |act, _| {
            match act.forwarded.remove(&id) {
                // The leader may have applied it; we cannot tell.
                Some((_, _, Forwarded::Write(r))) => drop(r.send(Err(RaftError::Indeterminate))),
                Some((_, _, Forwarded::Read(r))) => drop(r.send(Err(RaftError::Timeout))),
                None => {}
            }
        });
    }

    /// Sends `to` the outcome of a request it forwarded, once `rx` has it;
    /// `lost` is the answer if the request was dropped (role change).
    fn answer_remote<T: Send + 'static>(
        &self,
        to: NodeId,
        rx: oneshot::Receiver<Result<T, RaftError>>,
        lost: RemoteError,
        make: impl FnOnce(Result<T, RemoteError>) -> Message + Send + 'static,
    ) {
        let transport = self.cx.transport.clone();
        let from = self.id();
        actix::spawn(async move {
            let result = match rx.await {
                Ok(r) => r.map_err(RemoteError::from),
                Err(_) => Err(lost),
            };
            transport.send(Envelope::new(from, to, make(result)));
        });
    }

    /// Stops the node because a part of it failed.
    fn fail(&mut self, cause: String, ctx: &mut Context<Self>) {
        if let Some(probe) = &self.cx.probe {
            probe(
                self.id(),
                ProbeEvent::Failed {
                    cause: cause.clone(),
                },
            );
        }
        self.stopped_because = Some(cause);
        self.shutdown(ctx);
    }

    fn shutdown(&mut self, ctx: &mut Context<Self>) {
        if matches!(self.role, RoleState::Stopped) {
            return;
        }
        self.stop_role();
        self.role = RoleState::Stopped;
        // A forwarded write may have been applied by the leader already:
        // its fate is unknown, whatever stops this node. A read changed
        // nothing.
        for (_, (_, _, f)) in std::mem::take(&mut self.forwarded) {
            match f {
                Forwarded::Write(r) => drop(r.send(Err(RaftError::Indeterminate))),
                Forwarded::Read(r) => drop(r.send(Err(RaftError::ShuttingDown))),
            }
        }
        self.publish();
        ctx.stop();
    }
}

impl Node {
    /// A leader's request of our term arrived: follow `from` (the leader of
    /// this term) and return the follower to hand it to. A leader hearing
    /// from another leader of its own term refuses.
    fn follow(&mut self, from: NodeId) -> Option<Addr<Follower>> {
        if let RoleState::Leader(_) = self.role {
            tracing::error!(
                node = self.id(),
                term = self.hs.term,
                from,
                "request from another leader of our term"
            );
            return None;
        }
        if self.leader != Some(from) {
            tracing::info!(
                node = self.id(),
                term = self.hs.term,
                leader = from,
                "following leader"
            );
        }
        self.become_follower(self.hs.term, Some(from));
        match &self.role {
            RoleState::Follower(f) => Some(f.clone()),
            _ => None,
        }
    }

    /// Whether `env` comes from this node's cluster; refuses it (telling
    /// the sender why) if not. A node that joined learns its cluster id
    /// from the first leader that sends it entries.
    fn same_cluster(&mut self, env: &Envelope) -> bool {
        let ours = self.cx.identity.get();
        if let Message::Refused { reason } = &env.message {
            if self.should_log_refusal(env.from) {
                tracing::warn!(node = self.id(), peer = env.from, %reason, "a peer refused our messages");
            }
            return false;
        }
        if env.cluster_id == 0 || env.cluster_id == ours.cluster_id {
            return true;
        }
        if ours.cluster_id == 0
            && matches!(
                env.message,
                Message::AppendEntries { .. } | Message::InstallSnapshot { .. }
            )
        {
            tracing::info!(
                node = self.id(),
                cluster_id = env.cluster_id,
                leader = env.from,
                "joined a cluster"
            );
            self.cx.identity.adopt(env.cluster_id);
            self.cx.log.do_send(SaveIdentity(self.cx.identity.get()));
            return true;
        }
        let reason = format!(
            "node {} belongs to cluster {:#x}; node {} belongs to cluster {:#x}: a node of another cluster (or of an earlier cluster on the same addresses) is refused",
            self.id(),
            ours.cluster_id,
            env.from,
            env.cluster_id
        );
        if self.should_log_refusal(env.from) {
            tracing::warn!(node = self.id(), peer = env.from, %reason, "refusing a message from another cluster");
        }
        if ours.cluster_id != 0 {
            self.send(env.from, Message::Refused { reason });
        }
        false
    }

    /// Rate-limits refusal warnings to one per peer per ten seconds.
    fn should_log_refusal(&mut self, peer: NodeId) -> bool {
        let now = Instant::now();
        match self.refusals_logged.get(&peer) {
            Some(at) if now.duration_since(*at) < std::time::Duration::from_secs(10) => false,
            _ => {
                self.refusals_logged.insert(peer, now);
                true
            }
        }
    }

    /// Tells the transport where every member listens: addresses travel in
    /// the configuration, so a restarted node needs no address flags.
    fn learn_addresses(&self) {
        for (id, addr) in &self.membership.addresses {
            if *id != self.id() {
                self.cx.transport.set_address(*id, addr);
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Waiters find the metrics sender gone when they look again.
        self.changed.notify_waiters();
    }
}

impl Actor for Node {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        tracing::info!(
            node = self.id(),
            term = self.hs.term,
            last_index = self.last_log_id.index,
            "node started"
        );
        self.learn_addresses();
        self.become_follower(self.hs.term, None);
    }
}

impl Handler<Inbound> for Node {
    type Result = ();

    fn handle(&mut self, Inbound(env): Inbound, ctx: &mut Context<Self>) {
        if matches!(self.role, RoleState::Stopped) || env.to != self.id() {
            return;
        }
        let from = env.from;
        let incarnation = env.incarnation;
        if !self.same_cluster(&env) {
            return;
        }
        if incarnation != 0 {
            self.incarnations.insert(from, incarnation);
        }
        if let Err(rule) = validate(&env.message) {
            tracing::warn!(
                node = self.id(),
                term = self.hs.term,
                from,
                %rule,
                "invalid message refused"
            );
            return;
        }
        if let Some(term) = env.message.term() {
            // A node that hears a live leader ignores vote requests without
            // adopting their term: a rejoining node cannot disrupt it.
            if let Message::RequestVote {
                pre_vote,
                force: false,
                ..
            } = &env.message
            {
                if term > self.hs.term && self.leader_alive() {
                    let reply = Message::RequestVoteResponse {
                        term: self.hs.term,
                        granted: false,
                        pre_vote: *pre_vote,
                    };
                    self.send(from, reply);
                    return;
                }
            }
            let adopts = !matches!(
                env.message,
                Message::RequestVote { pre_vote: true, .. }
                    | Message::RequestVoteResponse {
                        pre_vote: true,
                        granted: true,
                        ..
                    }
            );
            if adopts && term > self.hs.term {
                let leader = matches!(env.message, Message::AppendEntries { .. }).then_some(from);
                tracing::debug!(node = self.id(), term, from, "newer term seen");
                self.become_follower(term, leader);
            } else if term < self.hs.term {
                // Tell the stale sender about the newer term.
                match env.message {
                    Message::AppendEntries { prev, round, .. } => self.send(
                        from,
                        Message::AppendEntriesResponse {
                            term: self.hs.term,
                            result: Err(ConflictHint {
                                conflict_term: None,
                                first_index: 0,
                            }),
                            prev_index: prev.index,
                            round,
                        },
                    ),
                    Message::RequestVote { pre_vote, .. } => self.send(
                        from,
                        Message::RequestVoteResponse {
                            term: self.hs.term,
                            granted: false,
                            pre_vote,
                        },
                    ),
                    Message::InstallSnapshot { meta, .. } => self.send(
                        from,
                        Message::InstallSnapshotResponse {
                            term: self.hs.term,
                            last_included: meta.last_included,
                            received: 0,
                            done: false,
                        },
                    ),
                    _ => {}
                }
                return;
            }
        }
        match env.message {
            Message::AppendEntries {
                term: _,
                prev,
                entries,
                leader_commit,
                round,
            } => {
                let commit_index = self.commit_index;
                if let Some(f) = self.follow(from) {
                    f.do_send(AppendEntriesRequest {
                        from,
                        prev,
                        entries,
                        leader_commit,
                        round,
                        commit_index,
                    });
                }
            }
            Message::InstallSnapshot {
                meta, offset, data, ..
            } => {
                let commit_index = self.commit_index;
                if let Some(f) = self.follow(from) {
                    f.do_send(SnapshotChunk {
                        from,
                        meta,
                        offset,
                        data,
                        commit_index,
                    });
                }
            }
            Message::InstallSnapshotResponse {
                last_included,
                received,
                done,
                ..
            } => {
                if let RoleState::Leader(l) = &self.role {
                    l.do_send(RouteSnapshotReply {
                        from,
                        reply: SnapshotReply {
                            last_included,
                            received,
                            done,
                            incarnation,
                        },
                    });
                }
            }
            Message::AppendEntriesResponse {
                result,
                prev_index,
                round,
                ..
            } => {
                if let RoleState::Leader(l) = &self.role {
                    l.do_send(RouteAppendReply {
                        from,
                        reply: AppendReply {
                            result,
                            prev_index,
                            round,
                            incarnation,
                        },
                    });
                }
            }
            Message::RequestVote {
                term,
                last_log_id,
                pre_vote,
                force,
            } => {
                let req = VoteRequest {
                    term,
                    candidate: from,
                    last_log_id,
                    pre_vote,
                };
                self.handle_vote_request(from, req, force, ctx);
            }
            Message::RequestVoteResponse {
                term,
                granted,
                pre_vote,
            } => {
                if let RoleState::Candidate { addr, pre_vote: p } = &self.role {
                    let expected = if *p { self.hs.term + 1 } else { self.hs.term };
                    if *p == pre_vote && (term == expected || (!granted && term <= expected)) {
                        addr.do_send(VoteReply { from, granted });
                    }
                }
            }
            Message::TimeoutNow { .. } => {
                if self.membership.is_voter(self.id()) && !matches!(self.role, RoleState::Leader(_))
                {
                    tracing::info!(
                        node = self.id(),
                        term = self.hs.term,
                        "TimeoutNow: campaigning at once"
                    );
                    self.start_election(true, ctx);
                }
            }
            Message::ForwardWrite { id, term, command } => {
                // Whatever our role, a duplicate gets no second answer: a
                // "not leader" to a copy must not race the real outcome.
                if !self.seen_forwards.insert((from, id)) {
                    tracing::debug!(
                        node = self.id(),
                        from,
                        id,
                        "duplicate forwarded write ignored"
                    );
                    return;
                }
                self.seen_order.push_back((from, id));
                if self.seen_order.len() > SEEN_FORWARDS {
                    if let Some(old) = self.seen_order.pop_front() {
                        self.seen_forwards.remove(&old);
                    }
                }
                let (tx, rx) = oneshot::channel();
                match &self.role {
                    // Only for the term it was sent to: a copy delayed past
                    // a restart of this node must not be proposed again by
                    // its next incarnation, which leads a later term.
                    RoleState::Leader(l) if term == self.hs.term => {
                        l.do_send(Propose { command, reply: tx })
                    }
                    // Sent to the leader of `term`, which this node was;
                    // if that was in a previous run, that run may have
                    // proposed an earlier copy: the outcome is unknown.
                    _ if term <= self.boot_term => drop(tx.send(Err(RaftError::Indeterminate))),
                    _ => drop(tx.send(Err(RaftError::NotLeader(self.leader)))),
                }
                self.answer_remote(from, rx, RemoteError::Indeterminate, move |result| {
                    Message::ForwardWriteResponse { id, result }
                });
            }
            Message::ForwardWriteResponse { id, result } => {
                if let Some((_, sent_to, Forwarded::Write(r))) = self.forwarded.remove(&id) {
                    let result = result.map_err(|e| match e {
                        // The leader's node was stopping: it may have
                        // appended the write before.
                        RemoteError::ShuttingDown => RaftError::Indeterminate,
                        // "Not leader" says this copy was not proposed. It
                        // speaks for the original only if it comes from the
                        // incarnation we sent to: a restarted node does not
                        // remember what its predecessor proposed.
                        RemoteError::NotLeader(_) if sent_to == 0 || incarnation != sent_to => {
                            RaftError::Indeterminate
                        }
                        e => RaftError::from(e),
                    });
                    let _ = r.send(result);
                }
            }
            Message::ReadIndexRequest { id } => {
                let (tx, rx) = oneshot::channel();
                match &self.role {
                    RoleState::Leader(l) => l.do_send(ReadIndex { reply: tx }),
                    _ => drop(tx.send(Err(RaftError::NotLeader(self.leader)))),
                }
                self.answer_remote(from, rx, RemoteError::NotLeader(None), move |result| {
                    Message::ReadIndexResponse { id, result }
                });
            }
            Message::Refused { .. } => {} // handled by `same_cluster`
            Message::ReadIndexResponse { id, result } => {
                if let Some((_, _, Forwarded::Read(r))) = self.forwarded.remove(&id) {
                    let _ = r.send(result.map_err(RaftError::from));
                }
            }
        }
    }
}

/// Checks a message from the network against the protocol's rules.
fn validate(message: &Message) -> Result<(), Invalid> {
    match message {
        Message::AppendEntries {
            term,
            prev,
            entries,
            ..
        } => validate::append_entries(*term, *prev, entries),
        Message::InstallSnapshot {
            term,
            meta,
            offset,
            data,
        } => validate::install_snapshot(
            *term,
            &validate::SnapshotChunk {
                last_included: meta.last_included,
                membership: &meta.membership,
                size: meta.size,
                offset: *offset,
                len: data.len(),
            },
        ),
        _ => Ok(()),
    }
}

/// A part of the node (applier, state machine, snapshotter) stopped on
/// its own: the node cannot go on safely, and stops whole.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct ComponentFailed {
    pub component: &'static str,
    pub cause: String,
}

impl Handler<ComponentFailed> for Node {
    type Result = ();
    fn handle(&mut self, msg: ComponentFailed, ctx: &mut Context<Self>) {
        if matches!(self.role, RoleState::Stopped) {
            return;
        }
        let cause = format!("the {} stopped: {}", msg.component, msg.cause);
        tracing::error!(node = self.id(), term = self.hs.term, %cause, "stopping the node");
        self.fail(cause, ctx);
    }
}

impl Handler<ElectionTimeout> for Node {
    type Result = ();
    fn handle(&mut self, msg: ElectionTimeout, ctx: &mut Context<Self>) {
        if msg.term != self.hs.term || msg.term != self.role_term {
            return;
        }
        match self.role {
            RoleState::Follower(_) | RoleState::Candidate { .. } => {}
            _ => return,
        }
        if !self.membership.is_voter(self.id()) {
            // Learners and removed nodes never campaign.
            return;
        }
        tracing::info!(node = self.id(), term = self.hs.term, "election timeout");
        if self.cx.config.pre_vote {
            self.start_pre_vote(ctx);
        } else {
            self.start_election(false, ctx);
        }
    }
}

impl Handler<PreVoteWon> for Node {
    type Result = ();
    fn handle(&mut self, msg: PreVoteWon, ctx: &mut Context<Self>) {
        if msg.term == self.hs.term
            && matches!(self.role, RoleState::Candidate { pre_vote: true, .. })
        {
            self.start_election(false, ctx);
        }
    }
}

impl Handler<ElectionWon> for Node {
    type Result = ();
    fn handle(&mut self, msg: ElectionWon, ctx: &mut Context<Self>) {
        if msg.term != self.hs.term
            || !matches!(
                self.role,
                RoleState::Candidate {
                    pre_vote: false,
                    ..
                }
            )
        {
            return;
        }
        self.stop_role();
        self.leader = Some(self.id());
        let term = msg.term;
        ctx.wait(
            self.cx
                .log
                .send(LastLogId)
                .into_actor(self)
                .map(move |last, act, _| {
                    let Ok(last) = last else { return };
                    if act.hs.term != term || !matches!(act.role, RoleState::Pending) {
                        return;
                    }
                    let l = Leader::new(
                        act.cx.clone(),
                        term,
                        act.membership.clone(),
                        last,
                        act.commit_index,
                        act.waiters.clone(),
                    );
                    act.role = RoleState::Leader(l.start());
                    act.role_term = term;
                    act.publish();
                    if let Some(probe) = &act.cx.probe {
                        probe(act.id(), ProbeEvent::Leader { term });
                    }
                }),
        );
    }
}

impl Handler<StepDown> for Node {
    type Result = ();
    fn handle(&mut self, msg: StepDown, _ctx: &mut Context<Self>) {
        if msg.term == self.hs.term && matches!(self.role, RoleState::Leader(_)) {
            self.stop_role();
            self.leader = None;
            self.become_follower(self.hs.term, None);
        }
    }
}

impl Handler<CommitTo> for Node {
    type Result = ();
    fn handle(&mut self, msg: CommitTo, _ctx: &mut Context<Self>) {
        if msg.term == self.hs.term && msg.index > self.commit_index {
            self.commit_index = msg.index;
            self.applier.do_send(Committed(msg.index));
            self.publish();
        }
    }
}

impl Handler<LogChanged> for Node {
    type Result = ();
    fn handle(&mut self, msg: LogChanged, _ctx: &mut Context<Self>) {
        self.last_log_id = msg.last_log_id;
        self.membership = msg.membership;
        self.learn_addresses();
        self.publish();
    }
}

impl Handler<SnapshotTaken> for Node {
    type Result = ();
    fn handle(&mut self, msg: SnapshotTaken, _ctx: &mut Context<Self>) {
        if msg.0.index > self.snapshot_index {
            self.snapshot_index = msg.0.index;
            self.publish();
        }
    }
}

impl Handler<Applied> for Node {
    type Result = ();
    fn handle(&mut self, msg: Applied, _ctx: &mut Context<Self>) {
        self.last_applied = self.last_applied.max(msg.0);
        self.publish();
    }
}

impl Handler<StorageFailed> for Node {
    type Result = ();
    fn handle(&mut self, msg: StorageFailed, ctx: &mut Context<Self>) {
        tracing::error!(node = self.id(), error = %msg.0, "stopping after a storage failure");
        self.fail(format!("the log storage failed: {}", msg.0), ctx);
    }
}

impl Handler<ClientWrite> for Node {
    type Result = ();
    fn handle(&mut self, msg: ClientWrite, ctx: &mut Context<Self>) {
        match &self.role {
            RoleState::Leader(l) => l.do_send(Propose {
                command: msg.command,
                reply: msg.reply,
            }),
            RoleState::Stopped => drop(msg.reply.send(Err(RaftError::ShuttingDown))),
            _ => {
                let (command, term) = (msg.command, self.hs.term);
                self.forward(ctx, Forwarded::Write(msg.reply), move |id| {
                    Message::ForwardWrite { id, term, command }
                });
            }
        }
    }
}

/// A membership change asked of this node (served only by the leader).
#[derive(Clone, Debug)]
pub(crate) enum MembershipRequest {
    AddLearner {
        id: NodeId,
        address: String,
    },
    Change {
        voters: std::collections::BTreeSet<NodeId>,
    },
}

/// A client asks this node (the leader) to hand leadership to `to`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ClientTransfer {
    pub to: NodeId,
    pub reply: TransferReply,
}

impl Handler<ClientTransfer> for Node {
    type Result = ();
    fn handle(&mut self, msg: ClientTransfer, _ctx: &mut Context<Self>) {
        match &self.role {
            RoleState::Leader(l) => l.do_send(TransferLeadership {
                to: msg.to,
                reply: msg.reply,
            }),
            RoleState::Stopped => drop(msg.reply.send(Err(RaftError::ShuttingDown))),
            _ => drop(msg.reply.send(Err(RaftError::NotLeader(self.leader)))),
        }
    }
}

/// A client's membership request.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ClientMembership {
    pub request: MembershipRequest,
    pub reply: ChangeReply,
}

impl Handler<ClientMembership> for Node {
    type Result = ();
    fn handle(&mut self, msg: ClientMembership, _ctx: &mut Context<Self>) {
        let reply = msg.reply;
        match (&self.role, msg.request) {
            (RoleState::Leader(l), MembershipRequest::AddLearner { id, address }) => {
                l.do_send(AddLearner { id, address, reply })
            }
            (RoleState::Leader(l), MembershipRequest::Change { voters }) => {
                l.do_send(ChangeMembership { voters, reply })
            }
            (RoleState::Stopped, _) => drop(reply.send(Err(RaftError::ShuttingDown))),
            _ => drop(reply.send(Err(RaftError::NotLeader(self.leader)))),
        }
    }
}

impl Handler<ClientRead> for Node {
    type Result = ();
    fn handle(&mut self, msg: ClientRead, ctx: &mut Context<Self>) {
        match &self.role {
            RoleState::Leader(l) => l.do_send(ReadIndex { reply: msg.reply }),
            RoleState::Stopped => drop(msg.reply.send(Err(RaftError::ShuttingDown))),
            _ => self.forward(ctx, Forwarded::Read(msg.reply), |id| {
                Message::ReadIndexRequest { id }
            }),
        }
    }
}

impl Handler<Shutdown> for Node {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        tracing::info!(node = self.id(), term = self.hs.term, "shutting down");
        self.stop_role();
        let close = self.cx.log.send(Close);
        Box::pin(
            async move {
                let _ = close.await;
            }
            .into_actor(self)
            .map(|_, act, ctx| act.shutdown(ctx)),
        )
    }
}
