//! How messages leave a node: the [`Transport`] trait and its bundled
//! implementations.

pub use crate::message::{Envelope, Message, RemoteError};

#[cfg(feature = "testing")]
pub mod sim;
#[cfg(feature = "tcp")]
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;

/// Sends messages to other nodes.
///
/// The contract:
/// - `send` never blocks and never fails loudly: a message that cannot be
///   delivered (peer down, queue full, partition) is dropped. Raft retries
///   everything it needs.
/// - No ordering, exactly-once or delivery guarantee is required; messages
///   may be lost, duplicated, delayed or reordered.
/// - Delivered messages are handed to the addressee with
///   [`crate::Raft::deliver`] (or its inbound recipient).
/// - A transport must bound its memory: a slow or dead peer may not make
///   queues grow without limit.
pub trait Transport: Send + Sync + 'static {
    /// Sends `envelope` to `envelope.to`, best effort.
    fn send(&self, envelope: Envelope);

    /// Learns or updates the address of a peer (from a configuration entry).
    /// Transports that route by node id ignore it.
    fn set_address(&self, _id: crate::NodeId, _address: &str) {}

    /// Bytes moved to and from each peer, for the metrics; transports that
    /// do not count return nothing.
    fn traffic(&self) -> std::collections::BTreeMap<crate::NodeId, crate::Traffic> {
        Default::default()
    }
}
