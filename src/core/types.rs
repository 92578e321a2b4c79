//! Plain data types shared by every layer: log positions, entries, hard state
//! and cluster membership.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Identifies a node in the cluster.
pub type NodeId = u64;

/// A Raft group's id among the groups a [`crate::Host`] runs (0: the one
/// group of a single-group node).
pub type GroupId = u64;

/// The position of an entry in the log: the term it was created in and its
/// index. `LogId::default()` (term 0, index 0) stands for "before the first
/// entry". Ordering is by term, then index — exactly Raft's "more up to date".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogId {
    /// Term in which the entry was created by a leader.
    pub term: u64,
    /// Position in the log, starting at 1.
    pub index: u64,
}

impl LogId {
    /// Builds a log id.
    pub const fn new(term: u64, index: u64) -> Self {
        LogId { term, index }
    }
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// The no-op a new leader appends to commit entries of earlier terms.
    Blank,
    /// A user command, encoded with rmp-serde.
    Command(Bytes),
    /// A cluster configuration (boxed: rare, and large next to the
    /// other variants, it would otherwise size every entry).
    Membership(Box<Membership>),
    /// Opens a client session; its id is this entry's index.
    OpenSession {
        /// The leader's clock when it appended the entry (ms since the
        /// Unix epoch): session expiry is measured on it.
        time_ms: u64,
    },
    /// A user command tagged with a session: applied at most once.
    Tagged {
        /// The session and sequence number.
        tag: SessionTag,
        /// The leader's clock when it appended the entry.
        time_ms: u64,
        /// The command, encoded with rmp-serde.
        command: Bytes,
    },
}

/// Which session a write belongs to and where it stands in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTag {
    /// The session.
    pub session: u64,
    /// The write's sequence number in the session (from 1).
    pub seq: u64,
    /// The client has the answers of every sequence up to this one: their
    /// cached responses can go.
    pub received: u64,
    /// A node's own session for the writes it forwards, opened on first
    /// use rather than by an entry.
    pub implicit: bool,
}

/// What a client asks the leader to append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientCommand {
    /// An empty entry (a health check).
    Empty,
    /// An untagged command.
    Command(Bytes),
    /// Open a session.
    OpenSession,
    /// A command tagged with a session.
    Tagged(SessionTag, Bytes),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where the entry sits.
    pub log_id: LogId,
    /// What it carries.
    pub payload: Payload,
}

impl Entry {
    /// Approximate size in bytes, used to cap batches.
    pub fn size_hint(&self) -> usize {
        16 + match &self.payload {
            Payload::Blank | Payload::OpenSession { .. } => 0,
            Payload::Command(b) => b.len(),
            Payload::Tagged { command, .. } => command.len() + 40,
            Payload::Membership(m) => 16 * (m.voters.len() + m.learners.len()) + 32,
        }
    }
}

/// The state every node must persist before answering: current term and the
/// vote cast in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: u64,
    /// Candidate that received this node's vote in `term`, if any.
    pub voted_for: Option<NodeId>,
}

/// Who a node is, beyond its id: the cluster it belongs to and this
/// incarnation of its data directory. Both travel with every message, so a
/// node of another cluster is refused, and a node that comes back with an
/// empty directory under its old id is noticed and started over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Generated when the cluster is founded (the same on every founder);
    /// 0 until a node that joined hears from its leader.
    pub cluster_id: u64,
    /// Random, generated when this node's storage was first written.
    pub incarnation: u64,
    /// Whether this incarnation founded the cluster (wrote the founding
    /// entry) rather than joined it — a founder on a replaced disk that
    /// received the cluster's log instead is no founder. A founder may
    /// vote where the configuration names it a voter without pinning its
    /// incarnation; any other node votes as a voter only once a
    /// configuration pins its incarnation. Directories written before
    /// this field existed count as founders (as they behaved then).
    #[serde(default = "written_before_founder_flag")]
    pub founder: bool,
}

fn written_before_founder_flag() -> bool {
    true
}

/// The cluster id the founders of a cluster derive, each on its own, from
/// the founding configuration and a token (FNV-1a over both): equal for
/// every founder, different for another configuration or token.
pub fn founding_cluster_id(founders: &Membership, token: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let encoded = rmp_serde::to_vec(founders).unwrap_or_default();
    for byte in encoded.iter().chain(&[0xff]).chain(token.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

/// A cluster configuration. During a joint-consensus change `old_voters` holds
/// C_old while `voters` holds C_new; decisions then need a majority of both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Voting members (C_new during a joint change).
    pub voters: BTreeSet<NodeId>,
    /// C_old while a joint change is in progress.
    pub old_voters: Option<BTreeSet<NodeId>>,
    /// Non-voting members that receive the log.
    pub learners: BTreeSet<NodeId>,
    /// Network address of each member, so a member added at runtime is
    /// reachable from every node. May be empty for transports that route by id.
    pub addresses: BTreeMap<NodeId, String>,
    /// Free-form metadata of each member, set when it is added (its
    /// HTTP/API address under [`API_ADDRESS`], say), so any node can tell
    /// clients where the leader serves them.
    #[serde(default)]
    pub metadata: BTreeMap<NodeId, BTreeMap<String, String>>,
    /// The incarnation (data directory) of voters, where pinned: a voter's
    /// votes and acknowledgements count only from this incarnation, so a
    /// voter back on an empty disk counts for nothing until it is
    /// replaced. A voter is pinned when it is promoted (and founders at the
    /// first change after founding: the founding entry must be the same on
    /// every founder, so it names none; see `core::founding`).
    #[serde(default)]
    pub incarnations: BTreeMap<NodeId, u64>,
}

/// The metadata key under which a member's API (HTTP) address is kept;
/// `NotLeader` answers of the web scope name the leader's.
pub const API_ADDRESS: &str = "api";

impl Membership {
    /// A configuration of `voters` only, without addresses.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            ..Default::default()
        }
    }

    /// Whether a joint change is in progress.
    pub fn is_joint(&self) -> bool {
        self.old_voters.is_some()
    }

    /// Whether `id` votes in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.old_voters.as_ref().is_some_and(|o| o.contains(&id))
    }

    /// Whether `id`, speaking from `incarnation`, counts toward a quorum of
    /// this configuration (as far as incarnations go): yes unless another
    /// incarnation of it is pinned.
    pub fn counts(&self, id: NodeId, incarnation: u64) -> bool {
        self.incarnations
            .get(&id)
            .is_none_or(|pinned| *pinned == incarnation)
    }

    /// Whether `id` receives the log: a voter of either half or a learner.
    /// [`Membership::members`] without building the set.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Every node that receives the log: voters of both halves and learners.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        if let Some(old) = &self.old_voters {
            all.extend(old.iter().copied());
        }
        all.extend(self.learners.iter().copied());
        all
    }

    /// The API address member `id` published (metadata [`API_ADDRESS`]).
    pub fn api_address(&self, id: NodeId) -> Option<&str> {
        self.metadata.get(&id)?.get(API_ADDRESS).map(String::as_str)
    }

    /// Every voter of either half.
    pub fn all_voters(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        if let Some(old) = &self.old_voters {
            all.extend(old.iter().copied());
        }
        all
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_identity_written_before_the_founder_flag_reads_as_a_founder() {
        #[derive(Serialize)]
        struct Before {
            cluster_id: u64,
            incarnation: u64,
        }
        let bytes = rmp_serde::to_vec(&Before {
            cluster_id: 7,
            incarnation: 9,
        })
        .unwrap();
        let read: NodeIdentity = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            read,
            NodeIdentity {
                cluster_id: 7,
                incarnation: 9,
                founder: true
            }
        );
    }

    use super::*;

    #[test]
    fn members_are_the_voters_of_both_halves_and_the_learners() {
        let m = Membership {
            voters: [1, 2].into(),
            old_voters: Some([2, 3].into()),
            learners: [4].into(),
            ..Default::default()
        };
        for id in 1..=5 {
            assert_eq!(m.is_member(id), m.members().contains(&id), "node {id}");
        }
        assert_eq!(m.members(), [1, 2, 3, 4].into());
    }

    /// A configuration as builds before member metadata stored it (data
    /// directories and snapshots of those builds still hold it).
    #[derive(Serialize)]
    struct MembershipWithoutMetadata {
        voters: BTreeSet<NodeId>,
        old_voters: Option<BTreeSet<NodeId>>,
        learners: BTreeSet<NodeId>,
        addresses: BTreeMap<NodeId, String>,
    }

    #[test]
    fn a_configuration_stored_without_metadata_still_decodes() {
        let old = MembershipWithoutMetadata {
            voters: [1, 2].into(),
            old_voters: None,
            learners: [3].into(),
            addresses: [(1, "a:1".to_string())].into(),
        };
        let bytes = rmp_serde::to_vec(&old).unwrap();
        let decoded: Membership = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(decoded.voters, old.voters);
        assert_eq!(decoded.learners, old.learners);
        assert_eq!(decoded.addresses, old.addresses);
        assert!(decoded.metadata.is_empty());
    }
}
