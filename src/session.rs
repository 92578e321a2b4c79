//! [`Session`]: exactly-once writes (dissertation §6.3). A session is
//! opened through the log; each write carries the session id and a
//! sequence number, and the applier of every node answers a write it has
//! already applied from its cache instead of applying it again. So a write
//! whose outcome is unknown can be retried — by the session itself, or by
//! a client over HTTP with the same sequence number — without applying it
//! twice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::core::session::SessionError;
use crate::core::types::{ClientCommand, SessionTag};
use crate::error::RaftError;
use crate::raft::{encode, Raft, Written};
use crate::sequence::Sequence;
use crate::state_machine::StateMachine;

/// A client session on one node's [`Raft`] handle. Cheap to clone; clones
/// share the sequence numbers, and writes may run concurrently.
///
/// [`Session::write`] retries a write whose outcome is unknown with the
/// same sequence number until the answer is definite or `retry_for`
/// passes, so the write is applied exactly once or, on that final
/// [`RaftError::Timeout`], at most once. Errors are definite — the write
/// was **not** applied — except `Timeout` and `Indeterminate`:
///
/// | error | meaning |
/// |---|---|
/// | `Session(Unknown)` | the session expired or was evicted before this write's first attempt: open a new one; earlier unanswered writes may or may not have applied |
/// | `Session(Stale)`, `Session(TooManyUnacknowledged)` | refused, not applied |
/// | `Indeterminate` | an attempt's outcome was unknown, and a retry was then refused (`Unknown`, `Stale`) or this node stopped: the first attempt may have been applied |
/// | `Codec` | the command did not encode, or the response did not decode (then it **was** applied) |
/// | `ShuttingDown` | this node stopped before any attempt of the write left it |
/// | `Timeout` | no definite answer within `retry_for`: applied at most once |
pub struct Session<SM: StateMachine> {
    raft: Raft<SM>,
    id: u64,
    sequence: Arc<Mutex<Sequence>>,
    retry_for: Duration,
}

impl<SM: StateMachine> Clone for Session<SM> {
    fn clone(&self) -> Self {
        Session {
            raft: self.raft.clone(),
            id: self.id,
            sequence: self.sequence.clone(),
            retry_for: self.retry_for,
        }
    }
}

/// How long [`Session::write`] keeps retrying by default.
const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(30);

impl<SM: StateMachine> Raft<SM> {
    /// Opens a client session (an entry in the log; its index is the
    /// session's id). Any node accepts it.
    pub async fn open_session(&self) -> Result<Session<SM>, RaftError> {
        let (_, id) = self.submit(ClientCommand::OpenSession).await?;
        let id: u64 = rmp_serde::from_slice(&id).map_err(|e| RaftError::Codec(e.to_string()))?;
        Ok(Session::resume(self.clone(), id, 0))
    }
}

impl<SM: StateMachine> Raft<SM> {
    /// One attempt at a write tagged by the caller (an HTTP client that
    /// keeps its own sequence numbers); no retry.
    #[cfg_attr(not(feature = "web"), allow(dead_code))]
    pub(crate) async fn write_tagged(
        &self,
        tag: SessionTag,
        command: SM::Command,
    ) -> Result<Written<SM::Response>, RaftError> {
        let bytes = encode(&command)?;
        Written::decode(self.submit(ClientCommand::Tagged(tag, bytes)).await?)
    }
}

impl<SM: StateMachine> Session<SM> {
    /// Continues session `id` on `raft`, after sequence `last` (for a
    /// client that keeps its session across restarts).
    pub fn resume(raft: Raft<SM>, id: u64, last: u64) -> Self {
        Session {
            raft,
            id,
            sequence: Arc::new(Mutex::new(Sequence::after(last))),
            retry_for: DEFAULT_RETRY_FOR,
        }
    }

    /// How long a write keeps retrying an unknown outcome (default 30 s).
    pub fn retry_for(mut self, limit: Duration) -> Self {
        self.retry_for = limit;
        self
    }

    /// The session's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Writes `command` exactly once; see the table on [`Session`].
    pub async fn write(&self, command: SM::Command) -> Result<SM::Response, RaftError> {
        Ok(self.write_entry(command).await?.response)
    }

    /// [`Session::write`] of a typed command: its own response type
    /// (see [`crate::Command`]).
    pub async fn execute<C: crate::Command<SM>>(
        &self,
        command: C,
    ) -> Result<C::Response, RaftError> {
        crate::command::typed::<SM, C>(self.write(command.into()).await?)
    }

    /// [`Session::write`], with the entry's log position. A retried
    /// write answered from the cache reports the position of the copy
    /// that answered.
    pub async fn write_entry(
        &self,
        command: SM::Command,
    ) -> Result<Written<SM::Response>, RaftError> {
        let bytes = encode(&command)?;
        let seq = self
            .sequence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .begin();
        let result = self.write_tagged(seq, bytes).await;
        self.sequence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .end(seq);
        Written::decode(result?)
    }

    async fn write_tagged(
        &self,
        seq: u64,
        command: bytes::Bytes,
    ) -> Result<(crate::LogId, bytes::Bytes), RaftError> {
        let deadline = Instant::now() + self.retry_for;
        // Whether an earlier attempt may have been applied: then no later
        // refusal proves that the write was not.
        let mut unknown = false;
        loop {
            let received = self
                .sequence
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .received();
            let tag = SessionTag {
                session: self.id,
                seq,
                received,
                implicit: false,
            };
            let (attempt, earlier_forwarded) = self
                .raft
                .submit_tracked(ClientCommand::Tagged(tag, command.clone()))
                .await;
            // An earlier copy that left this node may have been applied,
            // whatever the answer to the latest says.
            unknown |= earlier_forwarded;
            match attempt {
                // Unknown or not submitted: the same sequence number again
                // cannot apply it twice.
                Err(
                    e @ (RaftError::Timeout | RaftError::Indeterminate | RaftError::NotLeader(_)),
                ) if Instant::now() < deadline => {
                    unknown |= e.is_indeterminate();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(RaftError::Indeterminate | RaftError::NotLeader(_)) => {
                    return Err(RaftError::Timeout)
                }
                // An earlier copy may have been applied before the session
                // expired or its floor passed this write, or before this
                // node stopped.
                Err(
                    RaftError::Session(SessionError::Unknown(_) | SessionError::Stale { .. })
                    | RaftError::ShuttingDown,
                ) if unknown => return Err(RaftError::Indeterminate),
                other => return other,
            }
        }
    }
}
