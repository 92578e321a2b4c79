//! The leader's lease (thesis §6.4.1), for reads without a heartbeat
//! round: a follower that heard the leader refuses to vote for anyone
//! else for an election timeout (`step::preamble`, `vote::decide_vote`),
//! so once a quorum has acknowledged a heartbeat round that began at `t`,
//! no other leader can be elected before `t` plus that timeout (shortened
//! for clocks that run at different rates). Until then the leader's
//! commit index is the latest, and it may answer reads from it.
//!
//! Rounds are those of [`super::read_index::ReadIndexQueue`]; this keeps
//! when each one began. The leader gives the lease up for the rest of its
//! term once it sends TimeoutNow: that makes its target campaign at once,
//! and the followers grant it their votes whoever they heard.

use std::collections::VecDeque;

/// Rounds remembered at most; older ones are dropped first (a round that
/// no quorum confirmed for this long has no lease left to give).
const MAX_ROUNDS: usize = 4096;

/// When the leader's recent heartbeat rounds began.
#[derive(Debug, Default)]
pub struct Lease {
    /// (round, began at ms), oldest first.
    began: VecDeque<(u64, u64)>,
    /// A TimeoutNow was sent this term: no lease until the term ends.
    revoked: bool,
}

impl Lease {
    /// Round `round` began at `now_ms` (its heartbeats go out now).
    pub fn round_began(&mut self, round: u64, now_ms: u64) {
        if self.began.len() == MAX_ROUNDS {
            self.began.pop_front();
        }
        self.began.push_back((round, now_ms));
    }

    /// Gives the lease up for the rest of the term (a TimeoutNow was sent).
    pub fn revoke(&mut self) {
        self.revoked = true;
        self.began.clear();
    }

    /// Whether the lease holds at `now_ms`: some round that began less
    /// than `duration_ms` ago is `confirmed` (acknowledged by a quorum).
    pub fn holds(
        &mut self,
        now_ms: u64,
        duration_ms: u64,
        confirmed: impl Fn(u64) -> bool,
    ) -> bool {
        if self.revoked {
            return false;
        }
        while self
            .began
            .front()
            .is_some_and(|(_, at)| at.saturating_add(duration_ms) <= now_ms)
        {
            self.began.pop_front();
        }
        // Newest first: the newest confirmed round gives the longest lease,
        // and every round older than it is of no more use.
        let Some(newest) = self.began.iter().rposition(|(round, _)| confirmed(*round)) else {
            return false;
        };
        self.began.drain(..newest);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmed_round_gives_a_lease_until_its_start_plus_the_duration() {
        let mut lease = Lease::default();
        lease.round_began(1, 1_000);
        assert!(!lease.holds(1_001, 270, |_| false), "not confirmed yet");
        assert!(lease.holds(1_100, 270, |r| r == 1));
        assert!(lease.holds(1_269, 270, |r| r == 1));
        // Measured from when the round began, not from the confirmation.
        assert!(!lease.holds(1_270, 270, |r| r == 1));
    }

    #[test]
    fn the_newest_confirmed_round_counts_and_unconfirmed_ones_do_not() {
        let mut lease = Lease::default();
        lease.round_began(1, 0);
        lease.round_began(2, 100);
        lease.round_began(3, 200);
        // Round 3 is not confirmed: round 2's lease ends at 370.
        assert!(lease.holds(300, 270, |r| r <= 2));
        assert!(!lease.holds(370, 270, |r| r <= 2));
        assert!(lease.holds(400, 270, |r| r <= 3));
    }

    #[test]
    fn a_revoked_lease_holds_no_more_this_term() {
        let mut lease = Lease::default();
        lease.round_began(1, 0);
        lease.revoke();
        lease.round_began(2, 10);
        assert!(!lease.holds(20, 270, |_| true));
    }

    #[test]
    fn memory_is_bounded_when_no_round_is_confirmed() {
        let mut lease = Lease::default();
        for round in 0..(MAX_ROUNDS as u64 * 2) {
            lease.round_began(round, 0);
        }
        assert_eq!(lease.began.len(), MAX_ROUNDS);
        assert!(!lease.holds(1, 270, |_| false));
    }
}
