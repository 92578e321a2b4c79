//! What a leader knows of its peers: how far each one's log matches, when
//! it last answered, how many AppendEntries it has unanswered. From that
//! come the commit candidate (the quorum index over durable copies) and
//! check-quorum (step down when no quorum has answered lately).
//!
//! Time is explicit: the caller passes "now" in milliseconds on a clock of
//! its own (virtual under the simulator).

use std::collections::BTreeMap;

use super::quorum::{is_quorum, quorum_index};
use super::types::{Membership, NodeId};

/// One peer, as the leader sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerState {
    /// The last index known to match the leader's log.
    pub matched: u64,
    /// When the peer last answered (or when its replication started).
    pub last_heard_ms: Option<u64>,
    /// AppendEntries sent and not yet answered, at its last answer.
    pub inflight: u64,
}

/// The leader's peers.
#[derive(Debug, Default)]
pub struct Tracker {
    peers: BTreeMap<NodeId, PeerState>,
}

impl Tracker {
    /// Replication to `peer` starts at `now_ms`: that counts as hearing
    /// from it, so a new leader is not deposed before its first round.
    pub fn start(&mut self, peer: NodeId, now_ms: u64) {
        self.peers.entry(peer).or_default().last_heard_ms = Some(now_ms);
    }

    /// `peer` is no longer replicated to.
    pub fn remove(&mut self, peer: NodeId) {
        self.peers.remove(&peer);
    }

    /// `peer` may have lost what it acknowledged (it came back with a new
    /// directory): its match starts over.
    pub fn forget_match(&mut self, peer: NodeId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.matched = 0;
        }
    }

    /// `peer` answered at `now_ms`. With `reset`, `matched` replaces what
    /// it acknowledged before (it lost its state); otherwise the match
    /// only grows. Returns whether the match grew.
    pub fn answered(
        &mut self,
        peer: NodeId,
        matched: u64,
        reset: bool,
        inflight: u64,
        now_ms: u64,
    ) -> bool {
        let p = self.peers.entry(peer).or_default();
        p.last_heard_ms = Some(now_ms);
        p.inflight = inflight;
        if reset {
            p.matched = matched;
            false
        } else if matched > p.matched {
            p.matched = matched;
            true
        } else {
            false
        }
    }

    /// How far `peer`'s log matches (0 when unknown).
    pub fn matched(&self, peer: NodeId) -> u64 {
        self.peers.get(&peer).map_or(0, |p| p.matched)
    }

    /// `peer`'s state, if tracked.
    pub fn peer(&self, peer: NodeId) -> Option<PeerState> {
        self.peers.get(&peer).copied()
    }

    /// The highest index stored durably on a quorum of `membership`, the
    /// leader `me` counting with `self_durable`. The caller still applies
    /// the own-term commit rule.
    pub fn commit_candidate(&self, membership: &Membership, me: NodeId, self_durable: u64) -> u64 {
        quorum_index(membership, |n| {
            if n == me {
                self_durable
            } else {
                self.matched(n)
            }
        })
    }

    /// Whether a quorum of `membership` (the leader `me` included) has
    /// answered at or after `since_ms` (check-quorum).
    pub fn quorum_heard_since(&self, membership: &Membership, me: NodeId, since_ms: u64) -> bool {
        is_quorum(membership, |n| {
            n == me
                || self
                    .peers
                    .get(&n)
                    .and_then(|p| p.last_heard_ms)
                    .is_some_and(|t| t >= since_ms)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        Membership::new([1, 2, 3])
    }

    #[test]
    fn the_commit_candidate_is_the_quorum_of_durable_copies() {
        let mut t = Tracker::default();
        t.answered(2, 5, false, 0, 0);
        t.answered(3, 9, false, 0, 0);
        // The leader's own copy counts only once durable.
        assert_eq!(t.commit_candidate(&three(), 1, 0), 5);
        assert_eq!(t.commit_candidate(&three(), 1, 7), 7);
        assert_eq!(t.commit_candidate(&three(), 1, 12), 9);
    }

    #[test]
    fn a_match_only_grows_unless_the_peer_lost_its_state() {
        let mut t = Tracker::default();
        assert!(t.answered(2, 8, false, 1, 0));
        assert!(!t.answered(2, 3, false, 0, 1), "a stale reply");
        assert_eq!(t.matched(2), 8);
        // A new incarnation of the peer: what it acknowledged is gone.
        assert!(!t.answered(2, 0, true, 0, 2));
        assert_eq!(t.matched(2), 0);
        t.answered(2, 4, false, 0, 3);
        t.forget_match(2);
        assert_eq!(t.matched(2), 0);
    }

    #[test]
    fn check_quorum_needs_a_quorum_heard_lately() {
        let mut t = Tracker::default();
        t.start(2, 100);
        t.start(3, 100);
        assert!(t.quorum_heard_since(&three(), 1, 100), "start counts");
        assert!(!t.quorum_heard_since(&three(), 1, 101));
        t.answered(3, 1, false, 0, 150);
        assert!(t.quorum_heard_since(&three(), 1, 120));
        t.remove(3);
        assert!(!t.quorum_heard_since(&three(), 1, 120));
        // A single-node cluster always hears itself.
        assert!(Tracker::default().quorum_heard_since(&Membership::new([1]), 1, u64::MAX));
    }

    #[test]
    fn check_quorum_in_a_joint_configuration_needs_both_halves() {
        let mut joint = Membership::new([1, 4, 5]);
        joint.old_voters = Some([1, 2, 3].into());
        let mut t = Tracker::default();
        t.answered(2, 0, false, 0, 10);
        assert!(!t.quorum_heard_since(&joint, 1, 10), "new half silent");
        t.answered(4, 0, false, 0, 10);
        assert!(t.quorum_heard_since(&joint, 1, 10));
    }

    #[test]
    fn inflight_is_the_latest_report() {
        let mut t = Tracker::default();
        t.answered(2, 1, false, 7, 0);
        t.answered(2, 2, false, 3, 1);
        assert_eq!(
            t.peer(2),
            Some(PeerState {
                matched: 2,
                last_heard_ms: Some(1),
                inflight: 3
            })
        );
    }
}
