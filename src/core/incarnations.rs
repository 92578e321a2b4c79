//! Which incarnation of each peer is live. An incarnation is the identity
//! of one data directory: a node whose disk was replaced comes back under
//! its old id with a new one. Once a peer's incarnation has been replaced,
//! everything its retired incarnation sends — late, duplicated or
//! reordered on the network — is ignored for good: its acknowledgements
//! and votes speak for a disk that no longer exists.
//!
//! Incarnation ids are random, so "newer" means "heard after": the first
//! one heard is live, a different one replaces it, and a replaced one
//! never comes back. The memory is bounded: per peer the last
//! [`RETIRED_PER_PEER`] retired ids, and at most `max_peers` peers.

use std::collections::{BTreeMap, VecDeque};

use super::types::{Membership, NodeId, NodeIdentity};

/// Retired incarnations remembered per peer (a disk replaced this many
/// times while copies of the first one's messages are still in flight is
/// beyond any network's delay).
pub const RETIRED_PER_PEER: usize = 8;

/// What a message's incarnation says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// The live incarnation (or the sender did not say: incarnation 0).
    Live,
    /// The first heard of this peer.
    First,
    /// A new incarnation replaced `retired`: forget what the old one said.
    Replaced {
        /// The incarnation that is gone for good.
        retired: u64,
    },
    /// A retired incarnation: ignore the message.
    Retired,
    /// A peer this node has no room to track: ignore the message.
    Untracked,
}

#[derive(Clone, Debug, Default)]
struct Peer {
    live: u64,
    retired: VecDeque<u64>,
}

/// The live and retired incarnations of each peer.
#[derive(Clone, Debug)]
pub struct Incarnations {
    peers: BTreeMap<NodeId, Peer>,
    max_peers: usize,
}

impl Incarnations {
    /// Tracks at most `max_peers` peers.
    pub fn new(max_peers: usize) -> Self {
        Incarnations {
            peers: BTreeMap::new(),
            max_peers,
        }
    }

    /// Classifies a message from `peer` stamped with `incarnation`, and
    /// records what it teaches.
    pub fn hear(&mut self, peer: NodeId, incarnation: u64) -> Heard {
        if incarnation == 0 {
            return Heard::Live;
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.max_peers {
            return Heard::Untracked;
        }
        let p = self.peers.entry(peer).or_default();
        if p.live == incarnation {
            return Heard::Live;
        }
        if p.retired.contains(&incarnation) {
            return Heard::Retired;
        }
        if p.live == 0 {
            p.live = incarnation;
            return Heard::First;
        }
        let retired = std::mem::replace(&mut p.live, incarnation);
        if p.retired.len() >= RETIRED_PER_PEER {
            p.retired.pop_front();
        }
        p.retired.push_back(retired);
        Heard::Replaced { retired }
    }

    /// Takes `incarnation` as `peer`'s live one if nothing is known of
    /// `peer` yet: the incarnation a configuration pins is older than any
    /// other of that node heard later (a replacement), so after a restart
    /// of this node a late message from the pinned one cannot pass for
    /// news once its replacement has been heard (simulator, seed 11732).
    pub fn seed(&mut self, peer: NodeId, incarnation: u64) {
        if incarnation == 0 || self.peers.contains_key(&peer) || self.peers.len() >= self.max_peers
        {
            return;
        }
        self.peers.insert(
            peer,
            Peer {
                live: incarnation,
                retired: VecDeque::new(),
            },
        );
    }

    /// The live incarnation of `peer`, once heard.
    pub fn live(&self, peer: NodeId) -> Option<u64> {
        self.peers.get(&peer).map(|p| p.live).filter(|i| *i != 0)
    }

    /// Whether `incarnation` of `peer` was replaced.
    pub fn is_retired(&self, peer: NodeId, incarnation: u64) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.retired.contains(&incarnation))
    }

    /// Forgets peers for which `keep` is false (no longer members), so
    /// the table stays within the cluster's size.
    pub fn retain(&mut self, mut keep: impl FnMut(NodeId) -> bool) {
        self.peers.retain(|id, _| keep(*id));
    }

    /// Number of peers tracked.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

/// Whether this node (`me`, in the incarnation and with the origin
/// `identity` says) may vote — grant votes and stand as a candidate —
/// under `membership`, its latest configuration.
///
/// - Without a configuration, no (it cannot know what it would elect).
/// - Where its incarnation is pinned, only as that incarnation: a voter
///   back on an empty disk has forgotten its votes and what it
///   acknowledged.
/// - Where it is an unpinned voter, only if it is a founder: a node that
///   joined is pinned when promoted, so an unpinned configuration naming
///   it a voter (one from a snapshot or a log taken before its promotion)
///   speaks of an earlier incarnation (simulator seed 81,100).
/// - Learners vote, as before: a joint configuration may need them.
pub fn may_vote(membership: &Membership, me: NodeId, identity: NodeIdentity) -> bool {
    if membership.voters.is_empty() {
        return false;
    }
    match membership.incarnations.get(&me) {
        Some(pinned) => *pinned == identity.incarnation,
        None => identity.founder || !membership.is_voter(me),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_incarnation_never_comes_back() {
        let mut t = Incarnations::new(16);
        assert_eq!(t.hear(2, 7), Heard::First);
        assert_eq!(t.hear(2, 7), Heard::Live);
        assert_eq!(t.hear(2, 8), Heard::Replaced { retired: 7 });
        // Late and duplicated copies from 7: ignored every time, and 8
        // stays live (the bug: the last one heard became live again).
        assert_eq!(t.hear(2, 7), Heard::Retired);
        assert_eq!(t.hear(2, 7), Heard::Retired);
        assert_eq!(t.live(2), Some(8));
        assert!(t.is_retired(2, 7));
        // Unstamped messages say nothing.
        assert_eq!(t.hear(2, 0), Heard::Live);
        assert_eq!(t.live(2), Some(8));
    }

    #[test]
    fn memory_is_bounded_per_peer_and_in_peers() {
        let mut t = Incarnations::new(2);
        for i in 1..=20 {
            t.hear(2, i);
        }
        assert_eq!(t.live(2), Some(20));
        assert!(t.is_retired(2, 19) && t.is_retired(2, 12));
        assert!(
            !t.is_retired(2, 11),
            "only the last {RETIRED_PER_PEER} are kept"
        );
        assert_eq!(t.hear(3, 5), Heard::First);
        assert_eq!(t.hear(4, 5), Heard::Untracked);
        t.retain(|id| id != 3);
        assert_eq!(t.hear(4, 5), Heard::First);
        assert_eq!(t.len(), 2);
    }
    #[test]
    fn who_may_vote() {
        let founder = NodeIdentity {
            cluster_id: 7,
            incarnation: 11,
            founder: true,
        };
        let joiner = NodeIdentity {
            founder: false,
            ..founder
        };
        let mut m = Membership::new([1, 2, 3]);
        assert!(
            !may_vote(&Membership::default(), 3, founder),
            "no configuration"
        );
        assert!(may_vote(&m, 3, founder), "an unpinned founder");
        assert!(
            !may_vote(&m, 3, joiner),
            "a joiner named an unpinned voter: the configuration speaks of an earlier incarnation"
        );
        m.learners.insert(4);
        assert!(may_vote(&m, 4, joiner), "learners vote");
        m.incarnations.insert(3, 11);
        assert!(may_vote(&m, 3, joiner), "pinned to this incarnation");
        m.incarnations.insert(3, 12);
        assert!(!may_vote(&m, 3, founder), "pinned to another incarnation");
        assert!(m.counts(3, 12) && !m.counts(3, 11) && m.counts(2, 99));
    }

    #[test]
    fn a_pinned_incarnation_seeded_after_a_restart_stays_behind_its_replacement() {
        let mut t = Incarnations::new(4);
        t.seed(5, 10);
        assert_eq!(t.hear(5, 10), Heard::Live);
        assert_eq!(t.hear(5, 11), Heard::Replaced { retired: 10 });
        assert_eq!(
            t.hear(5, 10),
            Heard::Retired,
            "a late message of the pinned one"
        );
        t.seed(5, 12);
        assert_eq!(
            t.live(5),
            Some(11),
            "seeding never overrides what was heard"
        );
    }
}
