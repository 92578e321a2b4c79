//! The contract between regatta and the user's state machine actor.

use actix::prelude::*;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::core::types::LogId;

/// A user's replicated state machine: an actix actor that applies committed
/// commands in log order.
///
/// Implement [`Handler<Apply<Self>>`](Apply) to apply a batch (one response
/// per command, in order), and [`Handler<Snapshot>`](Snapshot) /
/// [`Handler<Restore>`](Restore) to save and replace the whole state.
/// Applying must be deterministic: every replica applies the same commands
/// in the same order and must reach the same state.
///
/// Reads are ordinary messages of your own, sent through
/// [`crate::Raft::read`] which first makes them linearizable.
pub trait StateMachine:
    Actor<Context = Context<Self>> + Handler<Apply<Self>> + Handler<Snapshot> + Handler<Restore>
{
    /// A command, as proposed by clients and stored in the log.
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What applying one command returns to the client that proposed it.
    type Response: Serialize + DeserializeOwned + Send + 'static;
}

/// A batch of committed commands, in log order.
pub struct Apply<SM: StateMachine> {
    /// Each command with the log position it was committed at.
    pub entries: Vec<(LogId, SM::Command)>,
}

impl<SM: StateMachine> Message for Apply<SM> {
    type Result = Vec<SM::Response>;
}

/// Asks for the whole state as bytes. Sent between two `Apply` batches, so
/// the snapshot reflects exactly the entries applied so far. A state machine
/// with a large state should copy-on-write (or clone cheaply) and serialize
/// off its mailbox so applying is not stopped for long.
pub struct Snapshot;

impl Message for Snapshot {
    type Result = Result<Bytes, String>;
}

/// Replaces the whole state with one produced by [`Snapshot`].
pub struct Restore {
    /// The bytes a `Snapshot` produced.
    pub data: Bytes,
}

impl Message for Restore {
    type Result = Result<(), String>;
}
