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

/// Asks for the whole state. Sent between two `Apply` batches, so the
/// snapshot reflects exactly the entries applied so far.
///
/// Applying stops while the handler runs, so a state machine with a large
/// state should answer with [`SnapshotData::deferred`]: take a cheap,
/// immutable copy of its state in the handler (clone `Arc`s, or use a
/// persistent data structure) and return a closure that serializes that
/// copy; regatta runs the closure on a background thread while applying
/// goes on. A small state can answer [`SnapshotData::ready`] bytes.
pub struct Snapshot;

impl Message for Snapshot {
    type Result = Result<SnapshotData, String>;
}

/// A state machine's answer to [`Snapshot`]: its state as bytes, now or
/// from a closure run off the state machine's thread.
pub struct SnapshotData(Produce);

enum Produce {
    Ready(Bytes),
    Deferred(Box<dyn FnOnce() -> Result<Bytes, String> + Send>),
}

impl SnapshotData {
    /// The state, already serialized.
    pub fn ready(bytes: impl Into<Bytes>) -> Self {
        SnapshotData(Produce::Ready(bytes.into()))
    }

    /// A closure that serializes a copy of the state; run on a background
    /// thread.
    pub fn deferred(serialize: impl FnOnce() -> Result<Bytes, String> + Send + 'static) -> Self {
        SnapshotData(Produce::Deferred(Box::new(serialize)))
    }

    /// The bytes (running the closure, if deferred, on this thread).
    pub(crate) fn produce(self) -> Result<Bytes, String> {
        match self.0 {
            Produce::Ready(bytes) => Ok(bytes),
            Produce::Deferred(serialize) => serialize(),
        }
    }
}

impl From<Bytes> for SnapshotData {
    fn from(bytes: Bytes) -> Self {
        Self::ready(bytes)
    }
}

impl From<Vec<u8>> for SnapshotData {
    fn from(bytes: Vec<u8>) -> Self {
        Self::ready(bytes)
    }
}

/// Replaces the whole state with one produced by [`Snapshot`].
pub struct Restore {
    /// The bytes a `Snapshot` produced.
    pub data: Bytes,
    /// The last log entry the snapshot covers: the next `Apply` starts
    /// after it.
    pub last_included: LogId,
}

impl Message for Restore {
    type Result = Result<(), String>;
}
