//! Errors a client of the [`crate::Raft`] handle can see.

use serde::{Deserialize, Serialize};

use crate::core::session::SessionError;
use crate::core::types::NodeId;
use crate::storage::StorageError;

/// Why a write or read did not succeed, and whether a retry is safe.
///
/// **Definite** errors mean nothing left this node for a leader: the
/// operation did not happen and retrying cannot apply it twice.
/// **Indeterminate** errors ([`RaftError::is_indeterminate`]) mean the
/// write may have reached a leader: it may be applied (now or later, by a
/// later leader) or not; retrying a non-idempotent write may apply it
/// twice. Read the state back, or make the command idempotent, before
/// retrying.
///
/// How each way [`crate::Raft::write`] can fail is classified:
///
/// | where it fails | error | kind |
/// |---|---|---|
/// | the command does not encode | `Codec` | definite |
/// | this node has stopped (its mailbox is closed, or it is stopped) before any attempt was forwarded | `ShuttingDown` | definite |
/// | no leader known until the client timeout, and no attempt was forwarded | `NotLeader` | definite |
/// | an attempt was forwarded, then a later one found no leader until the client timeout, or this node stopped | `Indeterminate` | indeterminate (the forwarded copy may be applied) |
/// | the leader refuses: it is handing over leadership, or stepped down before appending | `NotLeader` | definite |
/// | the client timeout passes after the write was handed to a leader | `Timeout` | indeterminate |
/// | the leader appended the entry, then lost leadership (or another leader's entry took its index) | `Indeterminate` | indeterminate |
/// | this node forwarded the write, then a new term or leader began, this node stopped, or the leader's answer was lost | `Indeterminate` | indeterminate |
/// | the node stopped while the write was in its hands (the request was dropped) | `Indeterminate` | indeterminate |
/// | the state machine's response does not decode (the write **was** applied) | `Codec` | definite about the failure to read the answer: do not retry |
///
/// `Membership`, `Transfer` and `Snapshot` come only from those
/// operations: each says nothing changed, except where its doc says
/// otherwise. [`RaftError::is_retryable`] tells whether the same call may
/// succeed later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// No leader could be reached; nothing was submitted: retrying is
    /// safe (the hint, if any, names the leader to try).
    #[error("not leader (leader hint: {0:?}); nothing was submitted, retry")]
    NotLeader(Option<NodeId>),
    /// The request did not complete in time. For a write, it may or may not
    /// have been applied.
    #[error("timed out; a write may or may not have been applied")]
    Timeout,
    /// The write was submitted but its fate is unknown (leadership was lost
    /// or the reply was lost); it may or may not have been applied.
    #[error("outcome unknown: the write may or may not have been applied")]
    Indeterminate,
    /// This node is shutting down or has stopped; nothing was submitted
    /// through it: retry on another node.
    #[error("node is shutting down; nothing was submitted, retry on another node")]
    ShuttingDown,
    /// A membership change was refused; nothing was changed. The reason
    /// says whether waiting and retrying can help.
    #[error("membership change refused: {0}")]
    Membership(MembershipError),
    /// A leadership transfer did not happen; the leader carries on.
    #[error("leadership transfer failed: {0}")]
    Transfer(TransferError),
    /// A session write was refused; it was not applied (definite). The
    /// reason says what to do.
    #[error("session write refused: {0}")]
    Session(SessionError),
    /// A snapshot could not be taken or stored.
    #[error("snapshot failed: {0}")]
    Snapshot(String),
    /// A command or response could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(String),
}

impl RaftError {
    /// Whether the write may have been applied despite the error (a retry
    /// may apply it twice).
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, RaftError::Timeout | RaftError::Indeterminate)
    }

    /// Whether retrying the same call later can succeed without any other
    /// change: no leader yet, a change or transfer already under way, a
    /// learner still catching up. `false` for errors that need the request
    /// fixed (a codec error, a node that is not a member) and for
    /// indeterminate ones (see [`RaftError::is_indeterminate`]: check first).
    pub fn is_retryable(&self) -> bool {
        match self {
            RaftError::NotLeader(_) | RaftError::ShuttingDown | RaftError::Snapshot(_) => true,
            RaftError::Membership(e) => e.is_retryable(),
            RaftError::Session(e) => matches!(e, SessionError::TooManyUnacknowledged { .. }),
            RaftError::Transfer(e) => e.is_retryable(),
            RaftError::Timeout | RaftError::Indeterminate | RaftError::Codec(_) => false,
        }
    }
}

/// Why a membership change was refused. Nothing was changed in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MembershipError {
    /// Another change (or a promotion waiting for a learner) is under way:
    /// retry once it has finished.
    #[error("another membership change is in progress; retry when it has finished")]
    ChangeInProgress,
    /// The node to add as a learner already votes.
    #[error("node {0} is already a voter")]
    AlreadyVoter(NodeId),
    /// A configuration must keep at least one voter.
    #[error("a configuration needs at least one voter")]
    NoVoters,
    /// The node to remove as a learner is not one (a voter is removed by
    /// changing the voters).
    #[error("node {0} is not a learner")]
    NotALearner(NodeId),
    /// A new voter must first be added as a learner.
    #[error("node {0} is not a member: add it as a learner first")]
    NotAMember(NodeId),
    /// A new voter is a learner that has not caught up within the leader's
    /// wait of an election timeout: retry once it has caught up, or remove
    /// the learner.
    #[error("learner {learner} has not caught up: {behind} entries behind")]
    LearnerBehind {
        /// The lagging learner.
        learner: NodeId,
        /// How far behind the leader's last entry it was.
        behind: u64,
    },
    /// The node to replace is not a voter (a learner is removed and added
    /// again instead).
    #[error("node {0} is not a voter")]
    NotAVoter(NodeId),
    /// The voter to replace still answers as the incarnation the
    /// configuration names (or has not answered at all): start the
    /// replacement (the node on its new directory, with `--join`) and
    /// retry once the leader hears from it. The leader itself cannot be
    /// replaced: transfer leadership first.
    #[error("node {0} has not come back with a new data directory (or is the leader): start it on its new directory with --join, then retry")]
    NotReplaced(NodeId),
    /// A member added with `add_voter` caught up at times but never stayed
    /// caught up and in contact for the whole stabilization time: it
    /// stays a learner. Check its link and disk, then retry.
    #[error("learner {learner} was never stable for the stabilization time (longest: {longest_ms} ms); it stays a learner")]
    NotStable {
        /// The learner.
        learner: NodeId,
        /// Its longest healthy stretch.
        longest_ms: u64,
    },
    /// The new voters did not become eligible in time (none was found
    /// lagging: they had not acknowledged anything yet); retry.
    #[error("the change timed out waiting for the new voters")]
    TimedOut,
}

impl MembershipError {
    /// Whether the same change may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            MembershipError::ChangeInProgress
                | MembershipError::LearnerBehind { .. }
                | MembershipError::NotStable { .. }
                | MembershipError::NotReplaced(_)
                | MembershipError::TimedOut
        )
    }
}

/// Why a leadership transfer did not happen. The leader carries on
/// (unless it lost leadership for another reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum TransferError {
    /// Only a voter can lead.
    #[error("node {0} is not a voter")]
    NotAVoter(NodeId),
    /// Another transfer is under way; retry once it has finished.
    #[error("a transfer is already in progress")]
    InProgress,
    /// This node lost leadership (to an election) before the target was
    /// ready; find the new leader and retry there if still wanted.
    #[error("leadership lost before node {0} was ready")]
    LeadershipLost(NodeId),
    /// The target did not catch up and win within an election timeout.
    #[error("node {0} did not take over within an election timeout")]
    TargetDidNotTakeOver(NodeId),
}

impl TransferError {
    /// Whether the same transfer may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, TransferError::NotAVoter(_))
    }
}

/// Why a node could not start. Nothing was written to its data directory
/// unless the variant says otherwise; each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Node ids start at 1.
    #[error("node id 0 is not valid: node ids start at 1")]
    InvalidId,
    /// A required builder input is missing.
    #[error("{0} is required: set it on the builder")]
    Missing(&'static str),
    /// Both a founding configuration and "join" were given.
    #[error("give either an initial cluster (to found a cluster) or join (to be added to one), not both")]
    InitialClusterAndJoin,
    /// The founding configuration does not list this node.
    #[error("the initial cluster does not list this node ({id}): add it, or start with join to be added later")]
    NotInInitialCluster {
        /// This node.
        id: NodeId,
    },
    /// The data directory belongs to another cluster than the one this
    /// node was told to join ([`crate::Config::join_cluster_id`]).
    #[error("the data directory belongs to cluster {found:#x}, not to cluster {expected:#x} that this node was told to join: give it a new directory, or the right cluster id")]
    WrongCluster {
        /// The cluster id this node was told to join.
        expected: u64,
        /// The cluster id in the directory.
        found: u64,
    },
    /// The founding configuration has no voter.
    #[error("the initial cluster is empty: list at least one voter")]
    EmptyInitialCluster,
    /// This node's address in the founding configuration is not the one it
    /// listens on (or advertises).
    #[error("node {id} listens on (or advertises) {ours}, but the initial cluster gives {listed}: make them agree")]
    AddressMismatch {
        /// This node.
        id: NodeId,
        /// The listen or advertised address.
        ours: String,
        /// The address in the initial cluster.
        listed: String,
    },
    /// The data directory holds no state and neither founding nor joining
    /// was asked for.
    #[error("{dir} holds no state: a new node needs an initial cluster (to found a cluster) or join (to be added to one)")]
    NoInitialState {
        /// The data directory.
        dir: String,
    },
    /// Another process (or node) holds the data directory.
    #[error(
        "{dir} is in use by another process or node: stop it, or give this node its own directory"
    )]
    DirectoryInUse {
        /// The data directory.
        dir: String,
    },
    /// The data directory belongs to another cluster or format version.
    #[error("{dir} belongs to another cluster or format ({detail}): point this node at its own directory, or wipe it and re-add the node")]
    OtherCluster {
        /// The data directory.
        dir: String,
        /// What differs.
        detail: String,
    },
    /// The data directory could not be read or written (corrupt data,
    /// I/O error).
    #[error("{dir}: {source}")]
    Storage {
        /// The data directory (empty for storage that has none).
        dir: String,
        /// What failed.
        source: StorageError,
    },
    /// The transport could not listen.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The listen address.
        addr: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A [`crate::Config`] value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The TLS files cannot be used (missing, unparsable, a key that does
    /// not match, a certificate that does not name this node).
    #[error("{0}: fix the files or the paths given to the builder")]
    Tls(String),
    /// The node's thread or runtime could not be started.
    #[error("cannot start the node's runtime: {0}")]
    Runtime(String),
    /// A backup could not be restored into the data directory (nothing
    /// was written unless the file passed every check).
    #[error("cannot restore the backup: {0}")]
    Restore(String),
}

impl From<StorageError> for StartError {
    fn from(source: StorageError) -> Self {
        StartError::Storage {
            dir: String::new(),
            source,
        }
    }
}
