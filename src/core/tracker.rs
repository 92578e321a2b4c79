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
    /// The incarnation that answered last (`None`: none has answered).
    /// Where the configuration pins another one, this peer counts toward
    /// no quorum.
    pub incarnation: Option<u64>,
    /// That incarnation replaced one this leader heard before (a disk
    /// replaced): unless the configuration pins it, it counts toward no
    /// quorum — it may have forgotten its votes and terms, and a stale
    /// leader could commit with it (simulator, seed 3898).
    pub replacement: bool,
}

/// One answer of a peer, as its replicator reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// How far its log now matches.
    pub matched: u64,
    /// It lost its state: `matched` replaces what it acknowledged before.
    pub reset: bool,
    /// AppendEntries still unanswered.
    pub inflight: u64,
    /// The incarnation that answered.
    pub incarnation: u64,
}

impl Answer {
    /// An answer from incarnation 1 matching `matched`.
    #[cfg(test)]
    fn at(matched: u64) -> Self {
        Answer {
            matched,
            incarnation: 1,
            ..Default::default()
        }
    }
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
    pub fn answered(&mut self, peer: NodeId, answer: Answer, now_ms: u64) -> bool {
        let Answer {
            matched,
            reset,
            inflight,
            incarnation,
        } = answer;
        let p = self.peers.entry(peer).or_default();
        p.last_heard_ms = Some(now_ms);
        p.incarnation = Some(incarnation);
        p.replacement |= reset;
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

    /// The incarnation of `peer` that answered last, if any has.
    pub fn incarnation(&self, peer: NodeId) -> Option<u64> {
        self.peers.get(&peer).and_then(|p| p.incarnation)
    }

    /// Whether `peer`'s answers count toward a quorum of `membership`: not
    /// when it answers as another incarnation than the one pinned, nor,
    /// unpinned, as an incarnation that replaced an earlier one.
    pub fn counts(&self, membership: &Membership, peer: NodeId) -> bool {
        let Some(p) = self.peers.get(&peer) else {
            return true;
        };
        match (p.incarnation, membership.incarnations.get(&peer)) {
            (Some(live), Some(pinned)) => live == *pinned,
            (_, None) => !p.replacement,
            (None, Some(_)) => true,
        }
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
            } else if self.counts(membership, n) {
                self.matched(n)
            } else {
                0
            }
        })
    }

    /// Whether a quorum of `membership` (the leader `me` included) has
    /// answered at or after `since_ms` (check-quorum).
    pub fn quorum_heard_since(&self, membership: &Membership, me: NodeId, since_ms: u64) -> bool {
        is_quorum(membership, |n| {
            n == me
                || (self.counts(membership, n)
                    && self
                        .peers
                        .get(&n)
                        .and_then(|p| p.last_heard_ms)
                        .is_some_and(|t| t >= since_ms))
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
        t.answered(2, Answer::at(5), 0);
        t.answered(3, Answer::at(9), 0);
        // The leader's own copy counts only once durable.
        assert_eq!(t.commit_candidate(&three(), 1, 0), 5);
        assert_eq!(t.commit_candidate(&three(), 1, 7), 7);
        assert_eq!(t.commit_candidate(&three(), 1, 12), 9);
    }

    #[test]
    fn a_match_only_grows_unless_the_peer_lost_its_state() {
        let mut t = Tracker::default();
        assert!(t.answered(2, Answer::at(8), 0));
        assert!(!t.answered(2, Answer::at(3), 1), "a stale reply");
        assert_eq!(t.matched(2), 8);
        // A new incarnation of the peer: what it acknowledged is gone.
        let reset = Answer {
            reset: true,
            incarnation: 2,
            ..Answer::at(0)
        };
        assert!(!t.answered(2, reset, 2));
        assert_eq!(t.matched(2), 0);
        t.answered(2, Answer::at(4), 3);
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
        t.answered(3, Answer::at(1), 150);
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
        t.answered(2, Answer::at(0), 10);
        assert!(!t.quorum_heard_since(&joint, 1, 10), "new half silent");
        t.answered(4, Answer::at(0), 10);
        assert!(t.quorum_heard_since(&joint, 1, 10));
    }

    #[test]
    fn inflight_is_the_latest_report() {
        let mut t = Tracker::default();
        let answer = |matched, inflight| Answer {
            inflight,
            ..Answer::at(matched)
        };
        t.answered(2, answer(1, 7), 0);
        t.answered(2, answer(2, 3), 1);
        assert_eq!(
            t.peer(2),
            Some(PeerState {
                matched: 2,
                last_heard_ms: Some(1),
                inflight: 3,
                incarnation: Some(1),
                replacement: false,
            })
        );
    }

    #[test]
    fn a_peer_answering_as_another_incarnation_than_the_pinned_one_counts_for_nothing() {
        let mut pinned = three();
        pinned.incarnations.insert(3, 30);
        let mut t = Tracker::default();
        t.start(2, 0);
        t.start(3, 0);
        let wiped = Answer {
            matched: 9,
            incarnation: 31,
            ..Default::default()
        };
        t.answered(3, wiped, 10);
        assert_eq!(
            t.commit_candidate(&pinned, 1, 9),
            0,
            "only the leader's copy counts"
        );
        assert!(
            !t.quorum_heard_since(&pinned, 1, 5),
            "nor does it keep the leader in office"
        );
        // Unpinned, the same answers count.
        assert_eq!(t.commit_candidate(&three(), 1, 9), 9);
        assert!(t.quorum_heard_since(&three(), 1, 5));
        // The pinned incarnation counts.
        t.answered(
            3,
            Answer {
                incarnation: 30,
                ..wiped
            },
            11,
        );
        assert_eq!(t.commit_candidate(&pinned, 1, 9), 9);
    }

    #[test]
    fn an_unpinned_voter_back_on_a_new_disk_counts_for_nothing() {
        let mut t = Tracker::default();
        t.answered(2, Answer::at(9), 0);
        assert_eq!(t.commit_candidate(&three(), 1, 9), 9);
        let replaced = Answer {
            reset: true,
            incarnation: 2,
            ..Answer::at(0)
        };
        t.answered(2, replaced, 1);
        t.answered(
            2,
            Answer {
                incarnation: 2,
                ..Answer::at(9)
            },
            2,
        );
        assert_eq!(t.commit_candidate(&three(), 1, 9), 0);
        // Once a configuration pins it (replaced through the cluster).
        let mut pinned = three();
        pinned.incarnations.insert(2, 2);
        assert_eq!(t.commit_candidate(&pinned, 1, 9), 9);
    }
}
