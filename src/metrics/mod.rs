//! What a node reports about itself: its state on a watch channel
//! ([`Metrics`]), event counts ([`Counts`]) and distributions
//! ([`Histograms`]) kept in relaxed atomics.

pub(crate) mod histogram;

pub(crate) use histogram::AtomicHistograms;
pub use histogram::{Histogram, Histograms};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::core::types::{Membership, NodeId};

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Runs an election (or a pre-vote).
    Candidate,
    /// Leads its term.
    Leader,
    /// Receives the log without voting.
    Learner,
    /// Not in the latest configuration this node knows: removed from the
    /// cluster, or started empty and not yet added.
    Removed,
    /// Stopped (shut down or crashed on a storage error).
    Shutdown,
}

/// A snapshot of a node's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// This node.
    pub id: NodeId,
    /// The cluster's id, generated when it was founded (0 while a node
    /// that joined has not heard from its leader).
    pub cluster_id: u64,
    /// This node's incarnation: the identity of its data directory (a
    /// voter counts only as the incarnation its configuration pins, see
    /// [`Membership::incarnations`]).
    #[serde(default)]
    pub incarnation: u64,
    /// Current role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// The leader this node knows of in `term`.
    pub leader: Option<NodeId>,
    /// Index of the last entry in the log (durable or not).
    pub last_log_index: u64,
    /// Highest index known to be committed.
    pub commit_index: u64,
    /// Highest index applied to the state machine.
    pub last_applied: u64,
    /// Last index covered by a snapshot.
    pub snapshot_index: u64,
    /// The configuration in effect (the latest in the log).
    pub membership: Membership,
    /// Why the node stopped on its own (a part of it failed: storage, the
    /// applier, the state machine); `None` while running or after a
    /// requested shutdown.
    pub stopped_because: Option<String>,
    /// On the leader: how far each other member's log matches, refreshed
    /// a few times per second (empty on other nodes).
    pub replication: BTreeMap<NodeId, PeerProgress>,
    /// The group is quiescent here (a group on a [`crate::Host`] with
    /// nothing to do: its leader sends no heartbeats, this member runs no
    /// election timer; the hosts' own heartbeat watches the leader's host).
    pub quiesced: bool,
}

/// Event counts since the node started, kept in relaxed atomics by the
/// actors (an increment costs a few nanoseconds and takes no lock) and
/// read when someone asks ([`crate::Raft::counts`], `GET /metrics`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub elections_started: AtomicU64,
    pub elections_won: AtomicU64,
    pub leader_changes: AtomicU64,
    pub entries_proposed: AtomicU64,
    pub append_entries_sent: AtomicU64,
    pub append_entries_received: AtomicU64,
    pub append_entries_rejected: AtomicU64,
    pub snapshots_sent: AtomicU64,
    pub snapshots_installed: AtomicU64,
    pub snapshots_built: AtomicU64,
    pub pre_votes_lost: AtomicU64,
    pub messages_invalid: AtomicU64,
    pub messages_other_cluster: AtomicU64,
    pub writes_submitted: AtomicU64,
    pub writes_failed_not_leader: AtomicU64,
    pub writes_failed_timeout: AtomicU64,
    pub writes_failed_indeterminate: AtomicU64,
    pub writes_failed_shutting_down: AtomicU64,
    pub writes_failed_refused: AtomicU64,
    pub reads_by_lease: AtomicU64,
    pub reads_by_round: AtomicU64,
    pub dead_voters_removed: AtomicU64,
    pub histograms: AtomicHistograms,
    /// A gauge: bytes the log takes in storage, sampled by the writer.
    pub log_bytes: AtomicU64,
}

impl Counters {
    /// Adds one.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> Counts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            elections_started: get(&self.elections_started),
            elections_won: get(&self.elections_won),
            leader_changes: get(&self.leader_changes),
            entries_proposed: get(&self.entries_proposed),
            append_entries_sent: get(&self.append_entries_sent),
            append_entries_received: get(&self.append_entries_received),
            append_entries_rejected: get(&self.append_entries_rejected),
            snapshots_sent: get(&self.snapshots_sent),
            snapshots_installed: get(&self.snapshots_installed),
            snapshots_built: get(&self.snapshots_built),
            pre_votes_lost: get(&self.pre_votes_lost),
            messages_invalid: get(&self.messages_invalid),
            messages_other_cluster: get(&self.messages_other_cluster),
            writes_submitted: get(&self.writes_submitted),
            writes_failed_not_leader: get(&self.writes_failed_not_leader),
            writes_failed_timeout: get(&self.writes_failed_timeout),
            writes_failed_indeterminate: get(&self.writes_failed_indeterminate),
            writes_failed_shutting_down: get(&self.writes_failed_shutting_down),
            writes_failed_refused: get(&self.writes_failed_refused),
            reads_by_lease: get(&self.reads_by_lease),
            reads_by_round: get(&self.reads_by_round),
            dead_voters_removed: get(&self.dead_voters_removed),
            log_bytes: get(&self.log_bytes),
        }
    }

    /// Counts a client write that failed, by what the caller may do next.
    pub(crate) fn write_failed(&self, error: &crate::RaftError) {
        use crate::RaftError as E;
        Self::bump(match error {
            E::NotLeader(_) => &self.writes_failed_not_leader,
            E::Timeout => &self.writes_failed_timeout,
            E::Indeterminate => &self.writes_failed_indeterminate,
            E::ShuttingDown => &self.writes_failed_shutting_down,
            E::Membership(_) | E::Transfer(_) | E::Session(_) | E::Snapshot(_) | E::Codec(_) => {
                &self.writes_failed_refused
            }
        });
    }
}

/// How often things happened on a node since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Elections this node started as a candidate (pre-votes not counted).
    pub elections_started: u64,
    /// Elections this node won.
    pub elections_won: u64,
    /// Times this node learned of a new leader.
    pub leader_changes: u64,
    /// Entries this node appended as leader (client writes, blanks,
    /// configurations).
    pub entries_proposed: u64,
    /// AppendEntries sent (heartbeats included), as leader.
    pub append_entries_sent: u64,
    /// AppendEntries received, as follower.
    pub append_entries_received: u64,
    /// AppendEntries refused for a log mismatch, as follower.
    pub append_entries_rejected: u64,
    /// Snapshots a follower of this leader finished installing.
    pub snapshots_sent: u64,
    /// Snapshots this node received and installed.
    pub snapshots_installed: u64,
    /// Snapshots this node built of its own state machine.
    pub snapshots_built: u64,
    /// Pre-votes this node lost (a majority would not follow it).
    pub pre_votes_lost: u64,
    /// Messages refused because they break a protocol rule.
    pub messages_invalid: u64,
    /// Messages refused because they come from another cluster.
    pub messages_other_cluster: u64,
    /// Client writes submitted through this node ([`crate::Raft::write`]
    /// and the session writes), forwarded ones included.
    pub writes_submitted: u64,
    /// Writes failed with [`crate::RaftError::NotLeader`].
    pub writes_failed_not_leader: u64,
    /// Writes failed with [`crate::RaftError::Timeout`].
    pub writes_failed_timeout: u64,
    /// Writes failed with [`crate::RaftError::Indeterminate`].
    pub writes_failed_indeterminate: u64,
    /// Writes failed with [`crate::RaftError::ShuttingDown`].
    pub writes_failed_shutting_down: u64,
    /// Writes refused for any other reason (session, encoding, …).
    pub writes_failed_refused: u64,
    /// Linearizable reads this node answered as leader from its lease,
    /// without a heartbeat round ([`crate::Config::lease_reads`]).
    pub reads_by_lease: u64,
    /// Linearizable reads this node answered as leader after a heartbeat
    /// round (ReadIndex).
    pub reads_by_round: u64,
    /// Voters this node removed as leader because they were unreachable
    /// ([`crate::Config::dead_voter_cleanup`]).
    pub dead_voters_removed: u64,
    /// Bytes the log and hard state take in storage (on disk for fjall),
    /// sampled at most once a second after a write.
    pub log_bytes: u64,
}

/// The leader's view of one member's replication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerProgress {
    /// The last index known to match the leader's log.
    pub matched: u64,
    /// Entries the member is behind the leader's last entry.
    pub lag: u64,
    /// Milliseconds since the member last answered, when it has.
    pub last_contact_ms: Option<u64>,
    /// AppendEntries sent to the member and not yet answered.
    #[serde(default)]
    pub inflight: u64,
}

/// Bytes a transport moved to and from one peer since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Bytes written to the peer (frames with their length prefixes).
    pub sent: u64,
    /// Bytes read from the peer.
    pub received: u64,
}

/// How a node tells its handles that something changed. Waiters are woken
/// in the order they began to wait, which a watch channel does not promise
/// (it spreads them over randomly chosen slots): the simulator needs the
/// order.
#[derive(Debug, Default)]
pub(crate) struct Notices {
    /// Woken on every metrics change.
    pub changed: tokio::sync::Notify,
    /// Woken once, when the node stops: for waiters that care only about
    /// that, so they are not woken by every commit.
    pub stopped: tokio::sync::Notify,
}
