//! What the node and its role actors (candidate, follower, leader, and
//! the leader's replicators) share: the context a role runs with, and the
//! events a role reports to its node. A leaf of the import graph: the
//! node imports the roles, the roles import this, never the node.

use std::sync::Arc;

use actix::prelude::*;

use crate::applier::RestoreSnapshot;
use crate::config::Config;
use crate::core::types::NodeId;
use crate::identity::IdentityCell;
use crate::io::IoMode;
use crate::log_store::LogStore;
use crate::probe::Probe;
use crate::snapshotter::{SnapshotInstalled, SnapshotTaken};
use crate::storage::snapshot::SnapshotStore;
use crate::transport::Transport;

/// Whether the host with this id has been heard within an election
/// timeout (the hosts' heartbeat).
pub(crate) type HostLiveness = Arc<dyn Fn(NodeId) -> bool + Send + Sync>;

/// What every role actor needs from its node.
#[derive(Clone)]
pub(crate) struct RoleContext {
    pub id: NodeId,
    pub config: Arc<Config>,
    /// Where the role reports to its node.
    pub node: Recipient<RoleEvent>,
    pub log: Addr<LogStore>,
    pub transport: Arc<dyn Transport>,
    pub snapshots: SnapshotPorts,
    pub io: IoMode,
    pub probe: Probe,
    pub identity: Arc<IdentityCell>,
    pub counters: Arc<crate::metrics::Counters>,
    /// The latest log time this node has applied (session entries'
    /// stamps), which a leader's [`crate::core::session::LogClock`]
    /// continues from.
    pub applied_log_time: Arc<std::sync::atomic::AtomicU64>,
    /// The group runs on a [`crate::Host`], whose heartbeat between hosts
    /// stands in for the heartbeats of an idle group: it may quiesce, and
    /// this says whether a host has been heard within an election timeout.
    pub quiescence: Option<HostLiveness>,
    /// The group's span: every actor of the node runs inside it
    /// ([`crate::spawn`]).
    pub span: tracing::Span,
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
pub(crate) struct ElectionTimeout {
    pub term: u64,
}

/// A pre-vote in `term` reached a quorum.
pub(crate) struct PreVoteWon {
    pub term: u64,
}

/// An election in `term` was won.
pub(crate) struct ElectionWon {
    pub term: u64,
}

/// The leader of `term` must step down (check-quorum or storage trouble).
pub(crate) struct StepDown {
    pub term: u64,
}

/// Entries up to `index` are known committed (learned in `term`).
pub(crate) struct CommitTo {
    pub term: u64,
    pub index: u64,
}

/// The leader's periodic report of its followers' progress.
pub(crate) struct ReplicationProgress {
    pub term: u64,
    pub peers: std::collections::BTreeMap<NodeId, crate::metrics::PeerProgress>,
}

/// The role went quiet (`true`: a leader stopped its heartbeats, a
/// follower its election timer) or woke up (`false`) in `term`.
pub(crate) struct Quiesced {
    pub term: u64,
    pub quiet: bool,
}

/// Wakes a quiesced role: a client request or a message for the group
/// came, or the host suspects the leader's host is down.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Unquiesce;

impl RoleContext {
    /// Reports `event` to the node.
    pub fn tell(&self, event: impl Into<RoleEvent>) {
        self.node.do_send(event.into());
    }
}

/// What a role tells its node; the node checks each against its current
/// term and role before acting.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) enum RoleEvent {
    ElectionTimeout(ElectionTimeout),
    PreVoteWon(PreVoteWon),
    ElectionWon(ElectionWon),
    StepDown(StepDown),
    CommitTo(CommitTo),
    ReplicationProgress(ReplicationProgress),
    /// A follower installed a snapshot from its leader.
    SnapshotTaken(SnapshotTaken),
    Quiesced(Quiesced),
}

macro_rules! role_events {
    ($($event:ident),*) => {
        $(impl From<$event> for RoleEvent {
            fn from(event: $event) -> Self {
                RoleEvent::$event(event)
            }
        })*
    };
}

role_events!(
    ElectionTimeout,
    PreVoteWon,
    ElectionWon,
    StepDown,
    CommitTo,
    ReplicationProgress,
    SnapshotTaken,
    Quiesced
);
