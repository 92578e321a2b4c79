//! What a node reports to the deterministic simulator's invariant checker
//! at the moment it happens (a watch on the metrics would coalesce a
//! leadership that lasts less than one poll). Absent outside the simulator.

use std::sync::Arc;

use crate::core::types::{Entry, LogId, NodeId, Payload};

/// A protocol event worth checking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeEvent {
    /// The node became leader of `term`.
    Leader {
        /// Its term.
        term: u64,
    },
    /// The node applied these entries (id and a digest of the payload).
    Applied {
        /// In log order.
        entries: Vec<(LogId, u64)>,
    },
    /// The node's state machine applied a session write (admitted, not
    /// answered from the cache): `session`'s `seq` at `index`.
    SessionApplied {
        /// The session.
        session: u64,
        /// The write's sequence number in it.
        seq: u64,
        /// The entry that applied it.
        index: u64,
    },
    /// The node stopped because a part of it failed.
    Failed {
        /// The cause.
        cause: String,
    },
}

/// Receives every event of every node.
pub(crate) type Probe = Option<Arc<dyn Fn(NodeId, ProbeEvent) + Send + Sync>>;

/// A digest of an entry's payload that every node computes alike.
pub fn digest(entry: &Entry) -> u64 {
    match &entry.payload {
        Payload::Blank => 0,
        Payload::Command(bytes) => 1 << 32 | crc32fast::hash(bytes) as u64,
        Payload::Membership(m) => {
            2 << 32 | crc32fast::hash(&rmp_serde::to_vec(m).unwrap_or_default()) as u64
        }
        other => 3 << 32 | crc32fast::hash(&rmp_serde::to_vec(other).unwrap_or_default()) as u64,
    }
}
