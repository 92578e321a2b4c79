//! What a node reports about itself, on a watch channel.

use std::collections::BTreeMap;

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
