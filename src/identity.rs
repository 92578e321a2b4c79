//! This node's identity as its messages carry it: every envelope that
//! leaves is stamped with the cluster id and the incarnation (a joining
//! node learns the cluster id from its leader, so it can change once).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::core::types::{GroupId, NodeId, NodeIdentity};
use crate::message::Envelope;
use crate::transport::Transport;

/// The identity, shared by the node and its outbox.
#[derive(Debug)]
pub(crate) struct IdentityCell {
    cluster_id: AtomicU64,
    incarnation: u64,
    /// The Raft group this node belongs to (0: a single-group node).
    group: GroupId,
    founder: std::sync::atomic::AtomicBool,
}

impl IdentityCell {
    pub(crate) fn new(identity: NodeIdentity, group: GroupId) -> Arc<Self> {
        Arc::new(IdentityCell {
            cluster_id: AtomicU64::new(identity.cluster_id),
            incarnation: identity.incarnation,
            group,
            founder: identity.founder.into(),
        })
    }

    pub(crate) fn get(&self) -> NodeIdentity {
        NodeIdentity {
            cluster_id: self.cluster_id.load(Ordering::Relaxed),
            incarnation: self.incarnation,
            founder: self.founder.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn group(&self) -> GroupId {
        self.group
    }

    /// This incarnation founded the cluster (after asking the others).
    pub(crate) fn mark_founder(&self) {
        self.founder.store(true, Ordering::Relaxed);
    }

    /// Adopts the cluster id a joining node learned from its leader.
    pub(crate) fn adopt(&self, cluster_id: u64) {
        self.cluster_id.store(cluster_id, Ordering::Relaxed);
    }
}

/// The node's way out: the user's transport, behind a stamp.
pub(crate) struct Outbox {
    transport: Arc<dyn Transport>,
    identity: Arc<IdentityCell>,
}

impl Outbox {
    pub(crate) fn new(transport: Arc<dyn Transport>, identity: Arc<IdentityCell>) -> Arc<Self> {
        Arc::new(Outbox {
            transport,
            identity,
        })
    }
}

impl Transport for Outbox {
    fn send(&self, mut envelope: Envelope) {
        let identity = self.identity.get();
        envelope.cluster_id = identity.cluster_id;
        envelope.incarnation = identity.incarnation;
        envelope.group = self.identity.group;
        self.transport.send(envelope);
    }

    fn set_address(&self, id: NodeId, address: &str) {
        self.transport.set_address(id, address);
    }

    fn traffic(&self) -> std::collections::BTreeMap<NodeId, crate::Traffic> {
        self.transport.traffic()
    }
}
