//! Leadership transfer (dissertation §3.10): the leader stops accepting
//! writes, waits until the target holds everything it has, then sends it
//! TimeoutNow so it campaigns at once (its vote requests are forced past
//! "I heard a leader recently").
//!
//! The leader actor (`leader/transfer.rs`) sends the TimeoutNow this
//! module asks for and bounds the whole transfer by an election timeout.

use super::types::{Membership, NodeId};
use crate::error::TransferError;

/// A transfer under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    target: NodeId,
    sent: bool,
}

/// Whether a transfer may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferStart {
    /// The leader itself is the target: nothing to do.
    AlreadyLeader,
    /// Start handing over.
    Start(Transfer),
}

/// Checks a request by leader `self_id` to hand leadership to `to`.
pub fn start_transfer(
    self_id: NodeId,
    membership: &Membership,
    in_progress: bool,
    to: NodeId,
) -> Result<TransferStart, TransferError> {
    if to == self_id {
        return Ok(TransferStart::AlreadyLeader);
    }
    if !membership.is_voter(to) {
        return Err(TransferError::NotAVoter(to));
    }
    if in_progress {
        return Err(TransferError::InProgress);
    }
    Ok(TransferStart::Start(Transfer {
        target: to,
        sent: false,
    }))
}

impl Transfer {
    /// The node leadership goes to.
    pub fn target(&self) -> NodeId {
        self.target
    }

    /// Returns the target, once, when TimeoutNow should go: the target
    /// has acknowledged the leader's `last_index` and no accepted write is
    /// still waiting to be appended (voters holding it would refuse a
    /// target without it, and the transfer would end with another leader).
    pub fn hand_over(
        &mut self,
        writes_pending: bool,
        target_matched: u64,
        last_index: u64,
    ) -> Option<NodeId> {
        if self.sent || writes_pending || target_matched < last_index {
            return None;
        }
        self.sent = true;
        Some(self.target)
    }

    /// The outcome when this leader's leadership ends: after TimeoutNow it
    /// ended by the target's election, as asked; before, it was lost.
    pub fn outcome_at_step_down(&self) -> Result<(), TransferError> {
        if self.sent {
            Ok(())
        } else {
            Err(TransferError::LeadershipLost(self.target))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(to: NodeId) -> Transfer {
        match start_transfer(1, &Membership::new([1, 2, 3]), false, to) {
            Ok(TransferStart::Start(t)) => t,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn only_a_voter_can_be_handed_leadership_one_transfer_at_a_time() {
        let mut m = Membership::new([1, 2, 3]);
        m.learners.insert(4);
        assert_eq!(
            start_transfer(1, &m, false, 1),
            Ok(TransferStart::AlreadyLeader)
        );
        assert_eq!(
            start_transfer(1, &m, false, 4),
            Err(TransferError::NotAVoter(4))
        );
        assert_eq!(
            start_transfer(1, &m, true, 2),
            Err(TransferError::InProgress)
        );
    }

    #[test]
    fn timeout_now_goes_once_the_target_has_everything() {
        let mut t = start(2);
        assert_eq!(t.hand_over(false, 9, 10), None, "target behind");
        assert_eq!(t.hand_over(true, 10, 10), None, "a write not yet appended");
        assert_eq!(
            t.outcome_at_step_down(),
            Err(TransferError::LeadershipLost(2))
        );
        assert_eq!(t.hand_over(false, 10, 10), Some(2));
        assert_eq!(t.hand_over(false, 10, 10), None, "sent only once");
        assert_eq!(t.outcome_at_step_down(), Ok(()));
    }
}
