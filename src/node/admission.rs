//! What the node lets in from the network: only messages of its own
//! cluster, and only ones that satisfy the protocol's rules.

use tokio::time::Instant;

use super::Node;
use crate::core::types::NodeId;
use crate::core::validate::{self, Invalid};
use crate::log_store::SaveIdentity;
use crate::message::{Envelope, Message};

impl Node {
    /// Whether `env` comes from this node's cluster; refuses it (telling
    /// the sender why) if not. A node that joined learns its cluster id
    /// from the first leader that sends it entries.
    pub(super) fn same_cluster(&mut self, env: &Envelope) -> bool {
        let ours = self.cx.identity.get();
        if let Message::Refused { reason } = &env.message {
            if self.should_log_refusal(env.from) {
                tracing::warn!(node = self.id(), peer = env.from, %reason, "a peer refused our messages");
            }
            return false;
        }
        if env.group != self.cx.identity.group() {
            // A host routes by group, so this is a misrouted or forged
            // message: refused like one of another cluster, never handled.
            crate::metrics::Counters::bump(&self.cx.counters.messages_other_cluster);
            if self.should_log_refusal(env.from) {
                tracing::warn!(
                    node = self.id(),
                    peer = env.from,
                    group = env.group,
                    ours = self.cx.identity.group(),
                    "refusing a message of another group"
                );
            }
            return false;
        }
        if env.cluster_id == ours.cluster_id {
            return true;
        }
        // No cluster id: a node added as a learner that has not heard from
        // its leader yet. Only members may say so: from anyone else it
        // would be a way around the cluster check.
        if env.cluster_id == 0 && (self.membership.is_member(env.from) || self.is_founder(env.from))
        {
            return true;
        }
        if ours.cluster_id == 0
            && matches!(
                env.message,
                Message::AppendEntries { .. } | Message::InstallSnapshot { .. }
            )
        {
            tracing::info!(
                node = self.id(),
                cluster_id = env.cluster_id,
                leader = env.from,
                "joined a cluster"
            );
            self.cx.identity.adopt(env.cluster_id);
            self.cx.log.do_send(SaveIdentity(self.cx.identity.get()));
            return true;
        }
        let reason = if env.cluster_id == 0 {
            format!(
                "node {} belongs to cluster {:#x}; node {} names no cluster and is not a member: add it through a membership change first",
                self.id(),
                ours.cluster_id,
                env.from
            )
        } else {
            format!(
            "node {} belongs to cluster {:#x}; node {} belongs to cluster {:#x}: a node of another cluster (or of an earlier cluster on the same addresses) is refused",
            self.id(),
            ours.cluster_id,
            env.from,
            env.cluster_id
        )
        };
        crate::metrics::Counters::bump(&self.cx.counters.messages_other_cluster);
        if self.should_log_refusal(env.from) {
            tracing::warn!(node = self.id(), peer = env.from, %reason, "refusing a message from another cluster");
        }
        if ours.cluster_id != 0 {
            self.send(env.from, Message::Refused { reason });
        }
        false
    }

    /// Rate-limits refusal warnings to one per peer per ten seconds.
    pub(super) fn should_log_refusal(&mut self, peer: NodeId) -> bool {
        let now = Instant::now();
        if self.refusals_logged.len() >= super::MAX_TRACKED_PEERS {
            // Strangers claiming ever new ids: forget the oldest record
            // rather than grow without bound.
            self.refusals_logged
                .retain(|_, at| now.duration_since(*at) < std::time::Duration::from_secs(10));
            if self.refusals_logged.len() >= super::MAX_TRACKED_PEERS {
                return false;
            }
        }
        match self.refusals_logged.get(&peer) {
            Some(at) if now.duration_since(*at) < std::time::Duration::from_secs(10) => false,
            _ => {
                self.refusals_logged.insert(peer, now);
                true
            }
        }
    }
}

/// Checks a message from the network against the protocol's rules.
pub(crate) fn validate(message: &Message) -> Result<(), Invalid> {
    match message {
        Message::AppendEntries {
            term,
            prev,
            entries,
            ..
        } => validate::append_entries(*term, *prev, entries),
        Message::InstallSnapshot {
            term,
            meta,
            offset,
            data,
        } => validate::install_snapshot(
            *term,
            &validate::SnapshotChunk {
                last_included: meta.last_included,
                membership: &meta.membership,
                size: meta.size,
                offset: *offset,
                len: data.len(),
            },
        ),
        Message::Quiesce {
            term,
            last,
            leader_commit,
        } => validate::quiesce(*term, *last, *leader_commit),
        _ => Ok(()),
    }
}
