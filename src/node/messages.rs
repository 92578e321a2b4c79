//! What the node receives from clients (through [`crate::Raft`]) and from
//! the network. What it shares with its role actors is in [`crate::role`].

use actix::prelude::*;
use bytes::Bytes;

use crate::applier::WriteReply;
use crate::leader::{ChangeReply, ReadReply};
use crate::message::Envelope;

/// A message from the network.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Inbound(pub Envelope);

/// A client write submitted on this node.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ClientWrite {
    pub command: crate::core::types::ClientCommand,
    /// Set by the node once an attempt of this write has been forwarded
    /// (shared by every attempt): from then on a copy may be proposed
    /// elsewhere, so the write keeps its session tag and no later failure
    /// of it is definite.
    pub forwarded: std::sync::Arc<std::sync::atomic::AtomicBool>,
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

/// A client's administrative request (membership, leadership, member
/// metadata): carried out by the leader, forwarded to it by any other
/// node.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ClientAdmin {
    pub request: crate::message::AdminRequest,
    pub reply: ChangeReply,
}
