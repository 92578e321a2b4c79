//! What the node receives from clients and its own parts, and what it
//! gives its role actors.

use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;

use super::Node;
use crate::applier::{RestoreSnapshot, WriteReply};
use crate::config::Config;
use crate::core::types::NodeId;
use crate::identity::IdentityCell;
use crate::io::IoMode;
use crate::leader::{ChangeReply, ReadReply, TransferReply};
use crate::log_store::LogStore;
use crate::message::Envelope;
use crate::probe::Probe;
use crate::snapshotter::SnapshotInstalled;
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
    pub counters: Arc<crate::metrics::Counters>,
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

/// The leader's periodic report of its followers' progress.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ReplicationProgress {
    pub term: u64,
    pub peers: std::collections::BTreeMap<NodeId, crate::metrics::PeerProgress>,
}

/// A message from the network.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Inbound(pub Envelope);

/// A client write submitted on this node.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ClientWrite {
    pub command: crate::core::types::ClientCommand,
    pub reply: WriteReply,
    /// The client's write span, followed through append and apply.
    pub span: tracing::Span,
}

/// A client asks this node, if it leads, to append a command and say
/// where at once; never forwarded.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ClientPropose {
    pub command: Bytes,
    pub appended:
        tokio::sync::oneshot::Sender<Result<crate::core::types::LogId, crate::error::RaftError>>,
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

/// A membership change asked of this node (served only by the leader).
#[derive(Clone, Debug)]
pub(crate) enum MembershipRequest {
    AddLearner {
        id: NodeId,
        address: String,
        metadata: std::collections::BTreeMap<String, String>,
    },
    Change {
        voters: std::collections::BTreeSet<NodeId>,
    },
    RemoveLearner {
        id: NodeId,
    },
}

/// A client asks this node (the leader) to hand leadership to `to`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ClientTransfer {
    pub to: NodeId,
    pub reply: TransferReply,
}

/// A client's membership request.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ClientMembership {
    pub request: MembershipRequest,
    pub reply: ChangeReply,
}
