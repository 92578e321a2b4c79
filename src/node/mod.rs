//! The `Node` actor: one per server. It is the single writer of the
//! current term, the vote and the role; it routes every inbound message to
//! the role actor of the current term and replaces that actor on every role
//! change. Messages from role actors carry their term, and the node drops
//! those of an older term, so a stale continuation can never act.

use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::time::Instant;

use actix::prelude::*;
use tokio::sync::{oneshot, watch};

use crate::applier::{AbandonWaiters, Applied, Committed, ComponentFailed, RegisterWaiters};
use crate::candidate::{Candidate, VoteReply};
use crate::core::incarnations::{Heard, Incarnations};
use crate::core::step::{answer_vote, counts_vote_reply, preamble, Preamble};
use crate::core::types::{HardState, LogId, Membership, NodeId};
use crate::core::vote::VoteRequest;
use crate::error::RaftError;
use crate::follower::{AppendEntriesRequest, Follower, ResetElectionTimer, SnapshotChunk};
use crate::leader::{Leader, RouteAppendReply, RouteSnapshotReply};
use crate::log_store::{Close, LastLogId, LogChanged, SaveHardState, StorageFailed};
use crate::message::{Envelope, Message};
use crate::metrics::{Metrics, Notices, Role};
use crate::probe::ProbeEvent;
use crate::replicator::{AppendReply, SnapshotReply};
use crate::snapshotter::SnapshotTaken;

/// Peers whose incarnations (and refusal log times) a node tracks at
/// most: members, joiners and a margin. Messages from further strangers
/// are ignored rather than grow the node's memory.
const MAX_TRACKED_PEERS: usize = 256;

mod add_voter;
mod admission;
mod clients;
mod election;
mod events;
mod founding;
mod inbound;
mod messages;
mod quiescence;

use crate::role::*;
pub(crate) use admission::validate;
pub(crate) use clients::admin_timeout;
use clients::Forwarded;
pub(crate) use messages::*;
pub(crate) use quiescence::WakeGroup;

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

pub(crate) struct Node {
    cx: RoleContext,
    hs: HardState,
    role: RoleState,
    /// The term the current role actor belongs to.
    role_term: u64,
    leader: Option<NodeId>,
    leader_seen: Option<Instant>,
    /// When this node started: with lease reads it votes for no one for
    /// an election timeout after, as if it had just heard a leader.
    started: Instant,
    membership: Membership,
    last_log_id: LogId,
    commit_index: u64,
    last_applied: u64,
    /// Last index covered by a durable snapshot.
    snapshot_index: u64,
    applier: Recipient<Committed>,
    waiters: Recipient<RegisterWaiters>,
    metrics: watch::Sender<Metrics>,
    /// Woken on every metrics change, and when the node stops.
    notices: Arc<Notices>,
    /// Requests forwarded to a leader: id → (that leader, its incarnation
    /// when we sent, who waits).
    forwarded: BTreeMap<u64, (NodeId, u64, Forwarded)>,
    /// When each forwarded request gives up, earliest first (answered ones
    /// too, until then): swept by one timer, not a timer per request —
    /// actix polls every timer of an actor each time it wakes.
    forward_deadlines: std::collections::BTreeSet<(Instant, u64)>,
    /// Whether the sweep of `forward_deadlines` is scheduled.
    forward_sweep_scheduled: bool,
    /// Forwarded writes proposed in the current term (copies dropped).
    seen_forwards: crate::core::forwards::SeenForwards,
    /// The live incarnation of each peer, and those replaced (ignored
    /// for good).
    incarnations: Incarnations,
    /// Waiting to found the cluster on an empty directory.
    founding: Option<founding::PendingFounding>,
    /// The founders' incarnations this node founded with, until its log
    /// holds the founding configuration.
    founded_incarnations: BTreeMap<NodeId, u64>,
    /// The term this node started in: it may have led that term or an
    /// earlier one in a previous run, whose forwarded writes it does not
    /// remember.
    boot_term: u64,
    /// Tells the applier a leadership of this node ended.
    abandon: Recipient<AbandonWaiters>,
    /// Why the node stopped on its own, once it has.
    stopped_because: Option<String>,
    /// The leader's latest report of its followers' progress.
    replication: std::collections::BTreeMap<NodeId, crate::metrics::PeerProgress>,
    /// When a refusal of each peer was last logged at `warn`.
    refusals_logged: BTreeMap<NodeId, Instant>,
    next_request: u64,
    /// The current role actor reported itself quiescent.
    quiesced: bool,
}

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
        waiters: Recipient<RegisterWaiters>,
        metrics: watch::Sender<Metrics>,
        notices: Arc<Notices>,
        abandon: Recipient<AbandonWaiters>,
    ) -> Self {
        let incarnations = Self::seeded(&membership);
        Node {
            cx,
            hs,
            role: RoleState::Pending,
            role_term: 0,
            leader: None,
            leader_seen: None,
            started: Instant::now(),
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
            notices,
            forwarded: BTreeMap::new(),
            forward_deadlines: Default::default(),
            forward_sweep_scheduled: false,
            seen_forwards: Default::default(),
            incarnations,
            founding: None,
            founded_incarnations: BTreeMap::new(),
            boot_term: hs.term,
            abandon,
            stopped_because: None,
            replication: Default::default(),
            quiesced: false,
            refusals_logged: BTreeMap::new(),
            // Random start: ids of a restarted node must not collide with
            // those of its previous incarnation in the leader's memory.
            next_request: fastrand::u64(1..u64::MAX / 2),
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
            RoleState::Follower(_) if !self.membership.is_member(self.id()) => Role::Removed,
            RoleState::Follower(_) if !self.membership.is_voter(self.id()) => Role::Learner,
            RoleState::Follower(_) => Role::Follower,
        };
        let none = BTreeMap::new();
        let replication = match role {
            Role::Leader => &self.replication,
            _ => &none,
        };
        // Compared and copied field by field in place: most calls (every
        // append, commit and apply) change only a counter, and then
        // nothing is allocated.
        let modified = self.metrics.send_if_modified(|m| {
            // Every field is looked at (an array, not `||`, which would
            // stop at the first change).
            [
                update(&mut m.id, &self.id()),
                update(&mut m.cluster_id, &self.cx.identity.get().cluster_id),
                update(&mut m.role, &role),
                update(&mut m.term, &self.hs.term),
                update(&mut m.leader, &self.leader),
                update(&mut m.last_log_index, &self.last_log_id.index),
                update(&mut m.commit_index, &self.commit_index),
                update(&mut m.last_applied, &self.last_applied),
                update(&mut m.snapshot_index, &self.snapshot_index),
                update(&mut m.membership, &self.membership),
                update(&mut m.stopped_because, &self.stopped_because),
                update(&mut m.replication, replication),
                update(&mut m.quiesced, &self.quiesced),
            ]
            .contains(&true)
        });
        if modified {
            self.notices.changed.notify_waiters();
        }
    }

    /// The incarnation table a node starts with: the pinned ones.
    fn seeded(membership: &Membership) -> Incarnations {
        let mut table = Incarnations::new(MAX_TRACKED_PEERS);
        for (peer, incarnation) in &membership.incarnations {
            table.seed(*peer, *incarnation);
        }
        table
    }

    /// Peers not heard from yet start at the incarnation the configuration
    /// pins (`Incarnations::seed`).
    pub(super) fn seed_pinned_incarnations(&mut self) {
        for (peer, incarnation) in &self.membership.incarnations {
            if *peer != self.id() {
                self.incarnations.seed(*peer, *incarnation);
            }
        }
    }

    fn stop_role(&mut self) {
        self.quiesced = false;
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
                crate::metrics::Counters::bump(&self.cx.counters.leader_changes);
            }
            self.leader = leader;
            self.leader_seen = Some(Instant::now());
        }
        let keep = matches!(self.role, RoleState::Follower(_)) && self.role_term == self.hs.term;
        if !keep {
            self.stop_role();
            let f =
                crate::spawn::start_in(Follower::new(self.cx.clone(), self.hs.term), &self.cx.span);
            self.role = RoleState::Follower(f);
            self.role_term = self.hs.term;
        }
        self.publish();
    }

    /// Whether this node must refuse (pre-)votes: it leads, or heard a
    /// leader within an election timeout, or — with lease reads — started
    /// less than one ago: it may have acknowledged a leader just before
    /// it restarted, and that leader's lease counts on its refusal.
    fn leader_alive(&self) -> bool {
        matches!(self.role, RoleState::Leader(_))
            || self.cx.config.lease_reads
                && self.started.elapsed() < self.cx.config.election_timeout_min
            || self
                .leader_seen
                .is_some_and(|t| t.elapsed() < self.cx.config.election_timeout_min)
                && self.leader.is_some()
            // A quiescent follower's leader is alive as long as its host
            // is heard.
            || self.quiesced && self.leader_host_heard()
    }

    fn send(&self, to: NodeId, message: Message) {
        self.cx
            .transport
            .send(Envelope::new(self.id(), to, message));
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
        // What is queued is still made durable and the log writer ends
        // before the node reports itself stopped: whoever stops it next
        // (Node::shutdown) waits for that thread, on the thread the log
        // store runs on.
        self.stop_role();
        let close = self.cx.log.send(Close);
        ctx.wait(
            async move {
                let _ = close.await;
            }
            .into_actor(self)
            .map(|_, act, ctx| act.shutdown(ctx)),
        );
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
                Forwarded::Admin(r) => drop(r.send(Err(RaftError::Indeterminate))),
                Forwarded::Read(r) => drop(r.send(Err(RaftError::ShuttingDown))),
            }
        }
        self.publish();
        self.notices.stopped.notify_waiters();
        ctx.stop();
    }
}

impl Node {
    /// A leader's request of our term arrived: follow `from` (the leader of
    /// this term) and return the follower to hand it to. A leader hearing
    /// from another leader of its own term refuses.
    fn follow(&mut self, from: NodeId) -> Option<&Addr<Follower>> {
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
        // Borrowed, not cloned: cloning an actix address allocates, and
        // this runs for every AppendEntries.
        match &self.role {
            RoleState::Follower(f) => Some(f),
            _ => None,
        }
    }

    /// Tells the transport where every member listens: addresses travel in
    /// the configuration, so a restarted node needs no address flags.
    /// This node waits to found the cluster of `members` (its directory
    /// is empty): it asks the other founders first.
    /// Sets up founding: `members` if this node waits to found, and the
    /// incarnations it founded with if it did.
    pub(crate) fn founding(
        mut self,
        members: Option<Membership>,
        founders: BTreeMap<NodeId, u64>,
    ) -> Self {
        self.founding = members.map(|m| founding::PendingFounding::new(self.id(), m));
        self.founded_incarnations = founders;
        self
    }

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
        self.notices.changed.notify_waiters();
        self.notices.stopped.notify_waiters();
    }
}

impl Actor for Node {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(
            node = self.id(),
            term = self.hs.term,
            last_index = self.last_log_id.index,
            "node started"
        );
        self.learn_addresses();
        self.become_follower(self.hs.term, None);
        self.start_founding(ctx);
    }
}

/// Sets `slot` to `value` if they differ (cloning only then); whether it
/// did.
fn update<T: PartialEq + Clone>(slot: &mut T, value: &T) -> bool {
    let differs = slot != value;
    if differs {
        *slot = value.clone();
    }
    differs
}
