//! The messages nodes exchange. Every exchange is a one-way message: a
//! reply is just another message, so a transport may lose, delay, duplicate
//! or reorder any of them and the protocol stays safe.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::core::log::ConflictHint;
use crate::core::session::SessionError;
use crate::core::types::{ClientCommand, Entry, GroupId, LogId, Membership, NodeId};
use crate::error::{MembershipError, RaftError, TransferError};
use crate::storage::snapshot::SnapshotMeta;

/// A message from one node to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Sender.
    pub from: NodeId,
    /// Addressee.
    pub to: NodeId,
    /// The message.
    pub message: Message,
    /// The sender's cluster id (0: not known yet, for a node that joined
    /// and has not heard from its leader). A node refuses messages of
    /// another cluster.
    pub cluster_id: u64,
    /// The sender's incarnation: a new one means the sender lost its state.
    pub incarnation: u64,
    /// The Raft group the message belongs to (0 for a single-group node):
    /// hosts sharing one connection route by it, and a node refuses a
    /// message of another group.
    pub group: GroupId,
}

impl Envelope {
    /// A message from `from` to `to`; the node's outbox fills in its
    /// cluster id and incarnation.
    pub fn new(from: NodeId, to: NodeId, message: Message) -> Self {
        Envelope {
            from,
            to,
            message,
            cluster_id: 0,
            incarnation: 0,
            group: 0,
        }
    }
}

/// A failure reported back to a node that forwarded a client request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteError {
    /// The addressee is not the leader (it may know who is).
    NotLeader(Option<NodeId>),
    /// The write may or may not have been applied.
    Indeterminate,
    /// The addressee is shutting down.
    ShuttingDown,
    /// The state machine could not decode the command.
    BadCommand(String),
    /// A membership change was refused.
    Membership(MembershipError),
    /// A leadership transfer failed.
    Transfer(TransferError),
    /// A snapshot failed.
    Snapshot(String),
    /// A session write was refused.
    Session(SessionError),
}

/// An administrative request, served by the leader; any other node
/// forwards it there ([`Message::ForwardAdmin`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Add a learner.
    AddLearner {
        /// The new member.
        id: NodeId,
        /// Its Raft address.
        address: String,
        /// Its metadata.
        metadata: std::collections::BTreeMap<String, String>,
    },
    /// Add a member as a learner, and promote it once it has been stable
    /// for the stabilization time (`Raft::add_voter`).
    AddVoter {
        /// The new member.
        id: NodeId,
        /// Its Raft address.
        address: String,
        /// Its metadata.
        metadata: std::collections::BTreeMap<String, String>,
    },
    /// Change the voters (joint consensus).
    Change {
        /// The voters after the change.
        voters: std::collections::BTreeSet<NodeId>,
    },
    /// Remove a learner.
    RemoveLearner {
        /// The learner.
        id: NodeId,
    },
    /// Re-admit a voter whose data directory was replaced.
    Replace {
        /// The voter.
        id: NodeId,
    },
    /// Hand leadership to a voter.
    Transfer {
        /// The voter.
        to: NodeId,
    },
    /// Set (or, with `None`, remove) one metadata key of a member.
    SetMetadata {
        /// The member.
        id: NodeId,
        /// The key.
        key: String,
        /// The value.
        value: Option<String>,
    },
}

/// Protocol messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Leader → follower: entries to append (none for a heartbeat).
    AppendEntries {
        /// Leader's term.
        term: u64,
        /// The entry just before `entries`.
        prev: LogId,
        /// Entries to store.
        entries: Vec<Entry>,
        /// Leader's commit index.
        leader_commit: u64,
        /// Leader's heartbeat round, echoed back; confirms leadership for
        /// ReadIndex and check-quorum.
        round: u64,
    },
    /// Follower → leader.
    AppendEntriesResponse {
        /// Follower's term.
        term: u64,
        /// On success: the last entry now known to match. `Err` carries
        /// the conflict hint for a refusal.
        result: Result<LogId, ConflictHint>,
        /// `prev.index` of the request answered.
        prev_index: u64,
        /// Echo of the request's round.
        round: u64,
    },
    /// Candidate → voter.
    RequestVote {
        /// Candidate's term (the next term, for a pre-vote).
        term: u64,
        /// Candidate's last entry.
        last_log_id: LogId,
        /// Whether this is a pre-vote.
        pre_vote: bool,
        /// Set by a leadership transfer: ignore "I heard a leader recently".
        force: bool,
    },
    /// Voter → candidate.
    RequestVoteResponse {
        /// Term of the request (pre-vote) or of the voter (vote).
        term: u64,
        /// Whether the vote was granted.
        granted: bool,
        /// Whether it answers a pre-vote.
        pre_vote: bool,
    },
    /// Leader → follower: one chunk of a snapshot, for a follower that
    /// needs entries the leader has compacted.
    InstallSnapshot {
        /// Leader's term.
        term: u64,
        /// The snapshot being sent (the same in every chunk).
        meta: SnapshotMeta,
        /// Where `data` starts in the snapshot.
        offset: u64,
        /// The chunk.
        data: Bytes,
    },
    /// Follower → leader.
    InstallSnapshotResponse {
        /// Follower's term.
        term: u64,
        /// The snapshot answered.
        last_included: LogId,
        /// Bytes the follower holds (where the next chunk should start).
        received: u64,
        /// The follower has installed the snapshot (or already had its
        /// contents).
        done: bool,
    },
    /// Leader → transfer target: start an election now.
    TimeoutNow {
        /// Leader's term.
        term: u64,
    },
    /// Any node → leader: a client write to propose.
    ForwardWrite {
        /// Request id chosen by the forwarding node.
        id: u64,
        /// The term of the leader it is sent to: only that leader, in that
        /// term, may propose it.
        term: u64,
        /// What to append.
        command: ClientCommand,
    },
    /// Leader → forwarding node: where the entry landed and the state
    /// machine's encoded response.
    ForwardWriteResponse {
        /// Request id.
        id: u64,
        /// The entry's position and encoded response, or the failure.
        result: Result<(LogId, Bytes), RemoteError>,
    },
    /// Any node → leader: an administrative request to carry out.
    ForwardAdmin {
        /// Request id chosen by the forwarding node.
        id: u64,
        /// The term of the leader it is sent to.
        term: u64,
        /// What to do.
        request: AdminRequest,
    },
    /// Leader → forwarding node: the configuration after the request, or
    /// the failure.
    ForwardAdminResponse {
        /// Request id.
        id: u64,
        /// The outcome.
        result: Result<Membership, RemoteError>,
    },
    /// Any node → leader: ask for a read index.
    ReadIndexRequest {
        /// Request id chosen by the asking node.
        id: u64,
    },
    /// Any node → sender of a message it refused (another cluster): says
    /// why, so both sides log it. Never answered.
    Refused {
        /// Why.
        reason: String,
    },
    /// Leader → asking node: the index to wait for before reading.
    ReadIndexResponse {
        /// Request id.
        id: u64,
        /// The read index or a failure.
        result: Result<u64, RemoteError>,
    },
    /// Founder on an empty directory → the other founders: do you hold
    /// state of this cluster? (see [`crate::core::founding`]).
    FoundingQuery,
    /// Founder → founder on an empty directory: the answer.
    FoundingReply {
        /// Whether the cluster exists.
        answer: crate::core::founding::FoundingAnswer,
    },
    /// Leader → follower of a group on a [`crate::Host`]: the group is
    /// idle (every member holds and has committed the whole log), so the
    /// leader stops its heartbeats. A follower whose log ends at `last`
    /// answers as to a heartbeat and stops its election timer until a
    /// message of the group, a client request, or its host's suspicion of
    /// the leader's host wakes it (quiescence).
    Quiesce {
        /// Leader's term.
        term: u64,
        /// The leader's last entry, committed.
        last: LogId,
        /// The leader's commit index (`last.index`).
        leader_commit: u64,
    },
    /// Host → peer host, every heartbeat interval: this host is alive. One
    /// per interval per direction whatever the number of groups; quiesced
    /// groups rely on it instead of heartbeats of their own. Handled by
    /// the host, never by a group.
    HostHeartbeat,
    /// Host → member host of the envelope's group (whose cluster id the
    /// envelope carries): the group was deleted; delete your replica.
    /// Answered by [`Message::GroupDeleted`]. Handled by the host.
    DeleteGroup,
    /// Host → host: this host holds no replica of the envelope's group
    /// any more. Handled by the host.
    GroupDeleted,
}

impl Message {
    /// The term the message carries, for messages that take part in the
    /// term rules (client forwarding does not).
    pub fn term(&self) -> Option<u64> {
        match self {
            Message::AppendEntries { term, .. }
            | Message::AppendEntriesResponse { term, .. }
            | Message::RequestVote { term, .. }
            | Message::RequestVoteResponse { term, .. }
            | Message::InstallSnapshot { term, .. }
            | Message::InstallSnapshotResponse { term, .. }
            | Message::TimeoutNow { term }
            | Message::Quiesce { term, .. } => Some(*term),
            _ => None,
        }
    }

    /// Whether this starts an exchange (a request) rather than answering one.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Message::AppendEntries { .. }
                | Message::InstallSnapshot { .. }
                | Message::RequestVote { .. }
                | Message::TimeoutNow { .. }
                | Message::Quiesce { .. }
                | Message::ForwardWrite { .. }
                | Message::ForwardAdmin { .. }
                | Message::ReadIndexRequest { .. }
                | Message::FoundingQuery
        )
    }
}

impl From<RemoteError> for RaftError {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::NotLeader(h) => RaftError::NotLeader(h),
            RemoteError::Indeterminate => RaftError::Indeterminate,
            RemoteError::ShuttingDown => RaftError::ShuttingDown,
            RemoteError::BadCommand(s) => RaftError::Codec(s),
            RemoteError::Membership(s) => RaftError::Membership(s),
            RemoteError::Transfer(s) => RaftError::Transfer(s),
            RemoteError::Snapshot(s) => RaftError::Snapshot(s),
            RemoteError::Session(e) => RaftError::Session(e),
        }
    }
}

impl From<RaftError> for RemoteError {
    fn from(e: RaftError) -> Self {
        match e {
            RaftError::NotLeader(h) => RemoteError::NotLeader(h),
            RaftError::ShuttingDown => RemoteError::ShuttingDown,
            RaftError::Codec(s) => RemoteError::BadCommand(s),
            RaftError::Membership(s) => RemoteError::Membership(s),
            RaftError::Transfer(s) => RemoteError::Transfer(s),
            RaftError::Snapshot(s) => RemoteError::Snapshot(s),
            RaftError::Session(e) => RemoteError::Session(e),
            RaftError::Timeout | RaftError::Indeterminate => RemoteError::Indeterminate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{MembershipError, RaftError, TransferError};

    #[test]
    fn every_error_survives_the_trip_to_the_forwarding_node() {
        let all = [
            RaftError::NotLeader(Some(3)),
            RaftError::Indeterminate,
            RaftError::ShuttingDown,
            RaftError::Membership(MembershipError::ChangeInProgress),
            RaftError::Membership(MembershipError::LearnerBehind {
                learner: 4,
                behind: 9,
            }),
            RaftError::Transfer(TransferError::InProgress),
            RaftError::Snapshot("s".into()),
            RaftError::Codec("c".into()),
        ];
        for e in all {
            assert_eq!(RaftError::from(RemoteError::from(e.clone())), e);
        }
        // A timeout on the leader's side is, for the forwarder, unknown.
        let timeout = RaftError::from(RemoteError::from(RaftError::Timeout));
        assert!(timeout.is_indeterminate());
    }
}
