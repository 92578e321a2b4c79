//! What a node reports about itself, on a watch channel.

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
    pub messages_refused: AtomicU64,
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
            messages_refused: get(&self.messages_refused),
        }
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
    /// Messages refused: invalid, or from another cluster.
    pub messages_refused: u64,
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
}
