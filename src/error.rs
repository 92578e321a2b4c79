//! Errors a client of the [`crate::Raft`] handle can see.

use crate::core::types::NodeId;
use crate::message::RemoteError;

/// Why a write or read did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// No leader could be reached; the request was not submitted, retrying is safe.
    #[error("not leader (leader hint: {0:?})")]
    NotLeader(Option<NodeId>),
    /// The request did not complete in time. For a write, it may or may not
    /// have been applied.
    #[error("timed out")]
    Timeout,
    /// The write was submitted but its fate is unknown (leadership was lost
    /// or the reply was lost); it may or may not have been applied.
    #[error("outcome unknown: the write may or may not have been applied")]
    Indeterminate,
    /// The node is shutting down or has stopped.
    #[error("node is shutting down")]
    ShuttingDown,
    /// A membership change was refused (another is in progress, a new
    /// voter is not a caught-up learner, ...); nothing was changed.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// A leadership transfer did not happen; the leader carries on.
    #[error("leadership transfer failed: {0}")]
    Transfer(String),
    /// A snapshot could not be taken or stored.
    #[error("snapshot failed: {0}")]
    Snapshot(String),
    /// A command or response could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(String),
}

impl RaftError {
    /// Whether the write may have been applied despite the error.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, RaftError::Timeout | RaftError::Indeterminate)
    }
}

impl From<RemoteError> for RaftError {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::NotLeader(h) => RaftError::NotLeader(h),
            RemoteError::Indeterminate => RaftError::Indeterminate,
            RemoteError::ShuttingDown => RaftError::ShuttingDown,
            RemoteError::BadCommand(s) => RaftError::Codec(s),
        }
    }
}

impl From<RaftError> for RemoteError {
    fn from(e: RaftError) -> Self {
        match e {
            RaftError::NotLeader(h) => RemoteError::NotLeader(h),
            RaftError::ShuttingDown => RemoteError::ShuttingDown,
            RaftError::Codec(s) => RemoteError::BadCommand(s),
            RaftError::Snapshot(_) | RaftError::Membership(_) | RaftError::Transfer(_) => {
                RemoteError::ShuttingDown
            }
            RaftError::Timeout | RaftError::Indeterminate => RemoteError::Indeterminate,
        }
    }
}
