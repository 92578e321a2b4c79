//! What the other actors read from the log: the last id, entries for a
//! peer (or the snapshot point they fell behind), where to resume after a
//! conflict, and committed ranges for the applier.

use actix::prelude::*;

use super::*;

/// The last log id.
#[derive(Message)]
#[rtype(result = "LogId")]
pub(crate) struct LastLogId;

impl Handler<LastLogId> for LogStore {
    type Result = MessageResult<LastLogId>;
    fn handle(&mut self, _: LastLogId, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.log.last_log_id())
    }
}

/// Entries for a replicator, starting at `from`, with the id before them.
#[derive(Message)]
#[rtype(result = "Result<(LogId, Vec<Entry>), ReadError>")]
pub(crate) struct ReadForPeer {
    pub from: u64,
    pub max_entries: usize,
    pub max_bytes: usize,
}

impl Handler<ReadForPeer> for LogStore {
    type Result = Result<(LogId, Vec<Entry>), ReadError>;
    fn handle(&mut self, msg: ReadForPeer, _ctx: &mut Context<Self>) -> Self::Result {
        self.log.read(msg.from, msg.max_entries, msg.max_bytes)
    }
}

/// Where a replicator resumes after a refusal (fast backtracking).
#[derive(Message)]
#[rtype(result = "u64")]
pub(crate) struct NextIndexAfterConflict(pub ConflictHint);

impl Handler<NextIndexAfterConflict> for LogStore {
    type Result = u64;
    fn handle(&mut self, msg: NextIndexAfterConflict, _ctx: &mut Context<Self>) -> u64 {
        self.log.next_index_after_conflict(msg.0)
    }
}

/// Committed entries for the applier: `from..=to`, at most `max`.
#[derive(Message)]
#[rtype(result = "Vec<Entry>")]
pub(crate) struct ReadRange {
    pub from: u64,
    pub to: u64,
    pub max: usize,
}

impl Handler<ReadRange> for LogStore {
    type Result = MessageResult<ReadRange>;
    fn handle(&mut self, msg: ReadRange, _ctx: &mut Context<Self>) -> Self::Result {
        let mut out = Vec::new();
        let mut i = msg.from;
        while i <= msg.to && out.len() < msg.max {
            match self.log.get(i) {
                Some(e) => out.push(e.clone()),
                None => break,
            }
            i += 1;
        }
        MessageResult(out)
    }
}
