//! InstallSnapshot (Raft §7) in chunks, one in flight: what the leader
//! sends next and when it resends, and how a follower takes a chunk.
//!
//! A lost chunk or acknowledgement is resent after an RPC-scale timeout,
//! doubling on each silent resend up to a longer bound, so a lossy network
//! recovers within milliseconds while a slow link is not flooded with
//! copies of a chunk still in transit. The replicator
//! (`replicator/snapshot.rs`) and follower (`follower/snapshot.rs`)
//! actors hold the bytes and carry these decisions out.

use std::ops::Range;

use super::types::LogId;

/// The leader's side of one snapshot being sent to one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSend {
    last_included: LogId,
    size: u64,
    chunk_bytes: u64,
    /// Where the chunk in flight starts.
    offset: u64,
    sent_at_ms: u64,
    /// How long the chunk in flight may go unanswered before it is resent.
    resend_after_ms: u64,
    rpc_timeout_ms: u64,
    max_resend_after_ms: u64,
}

/// What the leader does after a follower's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendStep {
    /// Nothing (an answer about another snapshot, or a duplicate).
    Wait,
    /// Send this byte range of the snapshot.
    Send(Range<u64>),
    /// The follower has installed the snapshot.
    Done,
}

impl SnapshotSend {
    /// Starts sending the snapshot ending at `last_included`, of `size`
    /// bytes, in chunks of `chunk_bytes`. A chunk unanswered for
    /// `rpc_timeout_ms` is resent, then after twice that, and so on up to
    /// `max_resend_after_ms`.
    pub fn new(
        last_included: LogId,
        size: u64,
        chunk_bytes: u64,
        rpc_timeout_ms: u64,
        max_resend_after_ms: u64,
    ) -> Self {
        let rpc_timeout_ms = rpc_timeout_ms.max(1);
        SnapshotSend {
            last_included,
            size,
            chunk_bytes: chunk_bytes.max(1),
            offset: 0,
            sent_at_ms: 0,
            resend_after_ms: rpc_timeout_ms,
            rpc_timeout_ms,
            max_resend_after_ms: max_resend_after_ms.max(rpc_timeout_ms),
        }
    }

    /// The chunk at the current offset, recorded as sent at `now_ms`.
    pub fn chunk(&mut self, now_ms: u64) -> Range<u64> {
        self.sent_at_ms = now_ms;
        let start = self.offset.min(self.size);
        start..(start + self.chunk_bytes).min(self.size)
    }

    /// The follower answered about `last_included`: it holds `received`
    /// bytes, and has installed the snapshot if `done`.
    pub fn on_reply(
        &mut self,
        last_included: LogId,
        received: u64,
        done: bool,
        now_ms: u64,
    ) -> SendStep {
        if last_included != self.last_included {
            return SendStep::Wait;
        }
        if done {
            return SendStep::Done;
        }
        if received != self.offset {
            // Progress, or the follower asks to resume elsewhere (from 0
            // after it lost the transfer).
            self.offset = received.min(self.size);
            self.resend_after_ms = self.rpc_timeout_ms;
            return SendStep::Send(self.chunk(now_ms));
        }
        // The follower still holds only what it held: our chunk was lost
        // or refused. Resend, but not faster than an RPC timeout (the same
        // answer arrives for every duplicate of an older chunk).
        if now_ms.saturating_sub(self.sent_at_ms) >= self.rpc_timeout_ms {
            return SendStep::Send(self.chunk(now_ms));
        }
        SendStep::Wait
    }

    /// Called periodically: the chunk to resend, if the one in flight has
    /// gone unanswered too long.
    pub fn on_tick(&mut self, now_ms: u64) -> Option<Range<u64>> {
        if now_ms.saturating_sub(self.sent_at_ms) < self.resend_after_ms {
            return None;
        }
        self.resend_after_ms = (self.resend_after_ms * 2).min(self.max_resend_after_ms);
        Some(self.chunk(now_ms))
    }
}

/// What a follower does with a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkStep {
    /// It already holds everything the snapshot covers, committed: answer
    /// "done" (a stale or duplicate transfer).
    AlreadyHave,
    /// A chunk of a transfer it knows nothing of (it restarted, or a newer
    /// snapshot replaced it): ask for the start.
    AskFromStart,
    /// The first chunk of a new transfer: open a new sink, then write.
    Begin,
    /// A chunk of the transfer under way.
    Continue,
}

/// Classifies a chunk of the snapshot ending at `snapshot_index`, at
/// `offset`, for a follower whose commit index is `commit_index` and which
/// is receiving that same snapshot already if `receiving_it`.
pub fn receive_chunk(
    commit_index: u64,
    snapshot_index: u64,
    receiving_it: bool,
    offset: u64,
) -> ChunkStep {
    if snapshot_index <= commit_index {
        ChunkStep::AlreadyHave
    } else if receiving_it {
        ChunkStep::Continue
    } else if offset == 0 {
        ChunkStep::Begin
    } else {
        ChunkStep::AskFromStart
    }
}

/// Whether a chunk of `len` bytes at `offset` is the next one for a sink
/// holding `written` bytes (anything else is a duplicate or leaves a gap:
/// the follower answers with `written`, and the leader resumes there).
pub fn chunk_is_next(offset: u64, written: u64, len: usize) -> bool {
    offset == written && len > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: LogId = LogId {
        term: 3,
        index: 500,
    };

    fn sender() -> SnapshotSend {
        // 10 bytes in chunks of 4; resend after 100 ms, backing off to 800.
        SnapshotSend::new(AT, 10, 4, 100, 800)
    }

    #[test]
    fn chunks_go_one_at_a_time_as_they_are_acknowledged() {
        let mut s = sender();
        assert_eq!(s.chunk(0), 0..4);
        assert_eq!(s.on_reply(AT, 4, false, 5), SendStep::Send(4..8));
        assert_eq!(s.on_reply(AT, 8, false, 10), SendStep::Send(8..10));
        assert_eq!(s.on_reply(AT, 10, true, 15), SendStep::Done);
    }

    #[test]
    fn answers_about_another_snapshot_and_early_duplicates_are_ignored() {
        let mut s = sender();
        s.chunk(0);
        assert_eq!(s.on_reply(LogId::new(2, 90), 4, false, 1), SendStep::Wait);
        assert_eq!(s.on_reply(AT, 4, false, 2), SendStep::Send(4..8));
        // A second copy of the same acknowledgement, before the RPC timeout.
        assert_eq!(s.on_reply(AT, 4, false, 3), SendStep::Wait);
        // After it, the follower evidently lacks our chunk: resend.
        assert_eq!(s.on_reply(AT, 4, false, 103), SendStep::Send(4..8));
    }

    #[test]
    fn a_follower_that_lost_the_transfer_gets_it_from_the_start() {
        let mut s = sender();
        s.chunk(0);
        s.on_reply(AT, 4, false, 1);
        assert_eq!(s.on_reply(AT, 0, false, 2), SendStep::Send(0..4));
    }

    #[test]
    fn a_lost_chunk_is_resent_after_an_rpc_timeout_backing_off_on_silence() {
        let mut s = sender();
        s.chunk(0);
        assert_eq!(s.on_tick(99), None);
        assert_eq!(s.on_tick(100), Some(0..4), "first resend: one RPC timeout");
        assert_eq!(s.on_tick(299), None);
        assert_eq!(s.on_tick(300), Some(0..4), "then twice that");
        assert_eq!(s.on_tick(700), Some(0..4));
        assert_eq!(s.on_tick(1500), Some(0..4), "capped at the longer bound");
        assert_eq!(s.on_tick(2299), None);
        assert_eq!(s.on_tick(2300), Some(0..4));
        // Progress brings the RPC-scale timeout back.
        assert_eq!(s.on_reply(AT, 4, false, 2400), SendStep::Send(4..8));
        assert_eq!(s.on_tick(2500), Some(4..8));
    }

    #[test]
    fn a_follower_takes_chunks_in_order_only() {
        assert_eq!(receive_chunk(600, 500, false, 0), ChunkStep::AlreadyHave);
        assert_eq!(receive_chunk(500, 500, true, 4), ChunkStep::AlreadyHave);
        assert_eq!(receive_chunk(10, 500, false, 0), ChunkStep::Begin);
        assert_eq!(receive_chunk(10, 500, false, 4), ChunkStep::AskFromStart);
        assert_eq!(receive_chunk(10, 500, true, 4), ChunkStep::Continue);
        assert!(chunk_is_next(4, 4, 4));
        assert!(!chunk_is_next(0, 4, 4), "duplicate");
        assert!(!chunk_is_next(8, 4, 4), "gap");
        assert!(!chunk_is_next(4, 4, 0), "empty");
    }
}
