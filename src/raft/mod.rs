//! [`Raft`]: the cloneable handle through which an application starts a
//! node, writes, reads and watches it.

mod admin;
mod backup;
mod client;
mod start;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::applier::Applier;
use crate::config::Config;
use crate::core::types::{ClientCommand, LogId, Membership, NodeId};
use crate::error::RaftError;
use crate::error::StartError;
use crate::identity::{IdentityCell, Outbox};
use crate::log_store::{LogStore, Subscribe, WriterThread};
use crate::message::Envelope;
use crate::metrics::{Counters, Counts, Histograms, Metrics, Notices, Role, Traffic};
use crate::node::{ClientAdmin, ClientPropose, ClientRead, ClientWrite, Inbound, Node, Shutdown};
use crate::role::{RoleContext, SnapshotPorts};
use crate::sequence::ForwardingSession;
use crate::snapshotter::{Snapshotter, TakeSnapshot};
use crate::state_machine::StateMachine;
use crate::storage::LogStorage;
use crate::transport::Transport;

/// What differs between a node in production, one on a host and one
/// under the simulator.
#[derive(Clone, Default)]
pub(crate) struct Environment {
    pub io: crate::io::IoMode,
    pub probe: crate::probe::Probe,
    /// A founder on an empty directory asks the other founders whether
    /// the cluster exists before founding it (see
    /// [`crate::core::founding`]); without this it founds at once.
    pub ask_founders: bool,
    /// The service's name (`NodeBuilder::cluster_name`), stamped on backups.
    pub cluster_name: String,
    /// The Raft group the node belongs to (0: a single-group node); its
    /// messages carry it, and it refuses those of another group.
    pub group: crate::core::types::GroupId,
    /// The group may quiesce when idle: only on a host, whose heartbeat
    /// between hosts then watches the leader's host in its stead (this
    /// says whether a host was heard within an election timeout).
    pub quiesce: Option<crate::role::HostLiveness>,
    /// A host's writer thread, shared by every group of its database (one
    /// fsync per round for all), instead of a writer of the node's own.
    pub shared_writer: Option<crate::log_store::SharedWriter>,
}

/// A committed and applied write: where it sits in the log and what the
/// state machine answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written<R> {
    /// The entry's position.
    pub log_id: LogId,
    /// The state machine's response.
    pub response: R,
}

impl<R: serde::de::DeserializeOwned> Written<R> {
    /// The entry's position with its encoded response, decoded.
    pub(crate) fn decode((log_id, response): (LogId, bytes::Bytes)) -> Result<Self, RaftError> {
        let response =
            rmp_serde::from_slice(&response).map_err(|e| RaftError::Codec(e.to_string()))?;
        Ok(Written { log_id, response })
    }
}

/// The answer of [`Raft::read_local`]: possibly stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRead<T> {
    /// What the state machine answered.
    pub value: T,
    /// The state machine had applied at least the entries up to this
    /// index when it answered.
    pub applied: u64,
}

pub(crate) fn encode<T: serde::Serialize>(command: &T) -> Result<bytes::Bytes, RaftError> {
    let bytes = rmp_serde::to_vec(command).map_err(|e| RaftError::Codec(e.to_string()))?;
    Ok(bytes.into())
}

/// A handle to a running node. Cheap to clone and usable from any thread.
pub struct Raft<SM: StateMachine> {
    id: NodeId,
    node: Addr<Node>,
    sm: Addr<SM>,
    metrics: watch::Receiver<Metrics>,
    /// Woken on every metrics change (in the order waiters came), and
    /// when the node stops.
    notices: Arc<Notices>,
    config: Arc<Config>,
    writer: WriterThread,
    snapshotter: Addr<Snapshotter>,
    /// The log, for the entries a backup ships after its snapshot.
    log: Addr<LogStore>,
    /// Where the snapshots are, for backups.
    snapshots: Arc<dyn crate::storage::SnapshotStore>,
    /// The service's name, stamped on backups.
    cluster_name: Arc<str>,
    /// Tags the plain writes this node forwards.
    forwarding: Arc<ForwardingSession>,
    counters: Arc<Counters>,
    transport: Arc<dyn Transport>,
}

impl<SM: StateMachine> Clone for Raft<SM> {
    fn clone(&self) -> Self {
        Raft {
            id: self.id,
            node: self.node.clone(),
            sm: self.sm.clone(),
            metrics: self.metrics.clone(),
            notices: self.notices.clone(),
            config: self.config.clone(),
            writer: self.writer.clone(),
            snapshotter: self.snapshotter.clone(),
            log: self.log.clone(),
            snapshots: self.snapshots.clone(),
            cluster_name: self.cluster_name.clone(),
            forwarding: self.forwarding.clone(),
            counters: self.counters.clone(),
            transport: self.transport.clone(),
        }
    }
}

impl<SM: StateMachine> Raft<SM> {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Hands a message received from the network to this node. Transports
    /// call this for every inbound message.
    pub fn deliver(&self, envelope: Envelope) {
        self.node.do_send(Inbound(envelope));
    }

    /// Wakes the group if it is quiescent here (its host suspects the
    /// leader's host is down).
    #[cfg_attr(not(all(feature = "fjall", feature = "tcp")), allow(dead_code))]
    pub(crate) fn wake_group(&self) {
        self.node.do_send(crate::node::WakeGroup);
    }

    /// The address of the user's state machine actor.
    pub fn state_machine(&self) -> &Addr<SM> {
        &self.sm
    }

    /// How often things happened on this node since it started.
    pub fn counts(&self) -> Counts {
        self.counters.read()
    }

    /// Latencies and batch sizes this node recorded since it started.
    pub fn histograms(&self) -> Histograms {
        self.counters.histograms.read()
    }

    /// Bytes the transport moved to and from each peer (empty for
    /// transports that do not count).
    pub fn traffic(&self) -> BTreeMap<NodeId, Traffic> {
        self.transport.traffic()
    }

    /// The node's metrics, updated on every change. The receiver starts
    /// with the current metrics seen: its `changed()` waits for the next
    /// change after this call.
    pub fn metrics(&self) -> watch::Receiver<Metrics> {
        // A clone inherits the version this handle's own receiver last saw,
        // which is never marked: without this, `changed()` on every new
        // receiver returned at once, and a loop that took a fresh receiver
        // per wait spun.
        let mut rx = self.metrics.clone();
        rx.mark_unchanged();
        rx
    }

    /// Waits until the metrics satisfy `condition`, up to `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        condition: impl Fn(&Metrics) -> bool,
    ) -> Result<Metrics, RaftError> {
        let result = tokio::time::timeout(timeout, async {
            loop {
                let changed = self.notices.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                {
                    let m = self.metrics.borrow();
                    if condition(&m) {
                        return Ok(m.clone());
                    }
                }
                if self.metrics.has_changed().is_err() {
                    return Err(RaftError::ShuttingDown);
                }
                changed.await;
            }
        })
        .await;
        result.map_err(|_| RaftError::Timeout)?
    }

    /// Waits until the node has stopped, on its own or by request, and
    /// returns why it stopped on its own (a part of it failed: storage,
    /// the applier, the state machine), or `None` after a requested
    /// shutdown. Unlike [`Raft::wait_for`], which looks at every metrics
    /// change (several per write), this wakes only when the node stops:
    /// for a watcher that lives as long as the node.
    ///
    /// ```no_run
    /// # async fn watch<SM: regatta::StateMachine>(raft: regatta::Raft<SM>) {
    /// if let Some(cause) = raft.stopped().await {
    ///     eprintln!("the node stopped: {cause}");
    /// }
    /// # }
    /// ```
    pub async fn stopped(&self) -> Option<String> {
        loop {
            let stopped = self.notices.stopped.notified();
            tokio::pin!(stopped);
            stopped.as_mut().enable();
            {
                let m = self.metrics.borrow();
                if m.role == Role::Shutdown {
                    return m.stopped_because.clone();
                }
            }
            if self.metrics.has_changed().is_err() {
                return self.metrics.borrow().stopped_because.clone();
            }
            stopped.await;
        }
    }

    /// Waits until this node knows a leader; returns its id.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<NodeId, RaftError> {
        let m = self.wait_for(timeout, |m| m.leader.is_some()).await?;
        m.leader.ok_or(RaftError::Timeout)
    }

    /// Waits until this node has applied at least `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<Metrics, RaftError> {
        self.wait_for(timeout, |m| m.last_applied >= index).await
    }

    /// Stops the node gracefully: pending client calls fail with
    /// [`RaftError::ShuttingDown`], queued log writes are made durable,
    /// then every actor of the node stops.
    pub async fn shutdown(&self) {
        let _ = self.node.send(Shutdown).await;
        self.join_writer();
    }

    /// Blocks until the log writer thread has exited (after the node's
    /// actors are gone), so the storage can be reopened.
    pub(crate) fn join_writer(&self) {
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}
