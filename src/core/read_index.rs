//! Linearizable reads on the leader (ReadIndex, thesis §6.4), as a pure
//! queue: a read is served at the commit index the leader had when it
//! arrived, once (1) an entry of the leader's own term has committed — until
//! then the leader may not know the latest committed index — and (2) a
//! quorum has acknowledged a heartbeat round started after the read
//! arrived — proof that no newer leader existed at that time.
//!
//! The caller sends each new round to the followers (its number travels in
//! AppendEntries and comes back in the replies) and hands the reads this
//! queue releases to the state machine once applied up to their index.

use std::collections::BTreeMap;

use super::quorum::is_quorum;
use super::types::{Membership, NodeId};

/// Reads waiting on a leader, with their waiters `R` (reply channels in
/// the actor; anything in tests).
#[derive(Debug)]
pub struct ReadIndexQueue<R> {
    /// The latest heartbeat round started.
    round: u64,
    /// The highest round each peer has acknowledged.
    acked: BTreeMap<NodeId, u64>,
    /// Reads that arrived before this term's first entry committed.
    waiting_commit: Vec<R>,
    /// Reads waiting for their round: (round, read index, waiter).
    waiting_round: Vec<(u64, u64, R)>,
}

impl<R> Default for ReadIndexQueue<R> {
    fn default() -> Self {
        ReadIndexQueue {
            round: 0,
            acked: BTreeMap::new(),
            waiting_commit: Vec::new(),
            waiting_round: Vec::new(),
        }
    }
}

/// What the leader must do after a read arrives or its own-term entry
/// commits.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadAction {
    /// Nothing yet (waiting for this term's first commit).
    Wait,
    /// Send heartbeats carrying this round number to every peer.
    SendRound(u64),
}

impl<R> ReadIndexQueue<R> {
    /// The round to stamp on the next AppendEntries.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// A read arrives; `commit_index` is the leader's now, and
    /// `term_committed` whether an entry of its term has committed.
    pub fn request(&mut self, waiter: R, commit_index: u64, term_committed: bool) -> ReadAction {
        if !term_committed {
            self.waiting_commit.push(waiter);
            return ReadAction::Wait;
        }
        self.round += 1;
        self.waiting_round.push((self.round, commit_index, waiter));
        ReadAction::SendRound(self.round)
    }

    /// The leader's first entry of its term committed at `commit_index`:
    /// the reads that waited for it start their round.
    pub fn term_committed(&mut self, commit_index: u64) -> ReadAction {
        if self.waiting_commit.is_empty() {
            return ReadAction::Wait;
        }
        self.round += 1;
        let round = self.round;
        self.waiting_round.extend(
            self.waiting_commit
                .drain(..)
                .map(|waiter| (round, commit_index, waiter)),
        );
        ReadAction::SendRound(round)
    }

    /// Starts a round of its own (for the lease: heartbeats renew it) and
    /// returns its number.
    pub fn new_round(&mut self) -> u64 {
        self.round += 1;
        self.round
    }

    /// Whether a quorum of `membership` (the leader `me` counting itself)
    /// has acknowledged `round`.
    pub fn confirmed(&self, membership: &Membership, me: NodeId, round: u64) -> bool {
        is_quorum(membership, |n| {
            n == me || self.acked.get(&n).is_some_and(|r| *r >= round)
        })
    }

    /// `peer` answered an AppendEntries of `round`.
    pub fn acknowledged(&mut self, peer: NodeId, round: u64) {
        let acked = self.acked.entry(peer).or_default();
        *acked = (*acked).max(round);
    }

    /// `peer` left the configuration, or came back with new state: what it
    /// acknowledged no longer counts.
    pub fn forget(&mut self, peer: NodeId) {
        self.acked.remove(&peer);
    }

    /// The reads a quorum of `membership` (the leader `me` counting
    /// itself) has confirmed, with their read index.
    pub fn ready(&mut self, membership: &Membership, me: NodeId) -> Vec<(u64, R)> {
        let acked = &self.acked;
        let mut ready = Vec::new();
        let mut i = 0;
        while i < self.waiting_round.len() {
            let round = self.waiting_round[i].0;
            if is_quorum(membership, |n| {
                n == me || acked.get(&n).is_some_and(|r| *r >= round)
            }) {
                let (_, index, waiter) = self.waiting_round.swap_remove(i);
                ready.push((index, waiter));
            } else {
                i += 1;
            }
        }
        ready
    }

    /// Whether no read waits.
    pub fn is_idle(&self) -> bool {
        self.waiting_commit.is_empty() && self.waiting_round.is_empty()
    }

    /// Every waiting read, for failing them when leadership ends.
    pub fn drain(&mut self) -> Vec<R> {
        let mut all: Vec<R> = self.waiting_round.drain(..).map(|(_, _, w)| w).collect();
        all.append(&mut self.waiting_commit);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        Membership::new([1, 2, 3])
    }

    #[test]
    fn a_read_waits_for_the_leaders_first_commit_of_its_term() {
        let mut q = ReadIndexQueue::default();
        assert_eq!(q.request("r", 5, false), ReadAction::Wait);
        // Even a unanimous acknowledgement does not release it.
        q.acknowledged(2, 99);
        q.acknowledged(3, 99);
        assert!(q.ready(&three(), 1).is_empty());
        // Once the term's entry commits, it gets the commit index of then
        // and a round of its own.
        assert_eq!(q.term_committed(7), ReadAction::SendRound(1));
        assert_eq!(q.ready(&three(), 1), vec![(7, "r")]);
    }

    #[test]
    fn a_read_needs_a_quorum_to_acknowledge_a_round_started_after_it() {
        let mut q = ReadIndexQueue::default();
        q.acknowledged(2, 0);
        assert_eq!(q.request("r", 10, true), ReadAction::SendRound(1));
        // An acknowledgement of an older round proves nothing.
        assert!(q.ready(&three(), 1).is_empty());
        q.acknowledged(3, 1);
        assert_eq!(q.ready(&three(), 1), vec![(10, "r")]);
        assert!(q.ready(&three(), 1).is_empty(), "served once");
    }

    #[test]
    fn the_leader_alone_is_not_a_quorum_of_three_but_is_of_one() {
        let mut q = ReadIndexQueue::default();
        q.request("r", 3, true);
        assert!(q.ready(&three(), 1).is_empty());
        assert_eq!(q.ready(&Membership::new([1]), 1), vec![(3, "r")]);
    }

    #[test]
    fn a_joint_configuration_needs_both_majorities() {
        let mut joint = Membership::new([1, 4, 5]);
        joint.old_voters = Some([1, 2, 3].into());
        let mut q = ReadIndexQueue::default();
        q.request("r", 8, true);
        q.acknowledged(2, 1);
        q.acknowledged(3, 1);
        assert!(q.ready(&joint, 1).is_empty(), "the new majority is missing");
        q.acknowledged(4, 1);
        assert_eq!(q.ready(&joint, 1), vec![(8, "r")]);
    }

    #[test]
    fn a_forgotten_peer_no_longer_confirms() {
        let mut q = ReadIndexQueue::default();
        q.acknowledged(2, 5);
        q.forget(2);
        q.request("r", 1, true);
        assert!(q.ready(&three(), 1).is_empty());
    }

    #[test]
    fn later_reads_wait_for_their_own_round() {
        let mut q = ReadIndexQueue::default();
        q.request("a", 1, true);
        q.request("b", 2, true);
        q.acknowledged(2, 1);
        assert_eq!(q.ready(&three(), 1), vec![(1, "a")]);
        q.acknowledged(3, 2);
        assert_eq!(q.ready(&three(), 1), vec![(2, "b")]);
    }

    #[test]
    fn drain_returns_every_waiting_read() {
        let mut q = ReadIndexQueue::default();
        q.request("early", 0, false);
        q.request("late", 4, true);
        let mut all = q.drain();
        all.sort();
        assert_eq!(all, vec!["early", "late"]);
        assert!(q.ready(&Membership::new([1]), 1).is_empty());
    }
}
