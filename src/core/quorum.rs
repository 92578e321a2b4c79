//! Majorities over a possibly joint configuration: vote tallies and the
//! commit index.

use std::collections::BTreeSet;

use super::types::{Membership, NodeId};

fn majority_of(set: &BTreeSet<NodeId>, yes: &impl Fn(NodeId) -> bool) -> bool {
    // An empty voter set has no majority: a node without a configuration
    // can neither elect nor commit.
    !set.is_empty() && set.iter().filter(|id| yes(**id)).count() * 2 > set.len()
}

/// Whether the nodes for which `yes` holds form a quorum: a majority of
/// `voters` and, during a joint change, also a majority of `old_voters`.
pub fn is_quorum(membership: &Membership, yes: impl Fn(NodeId) -> bool) -> bool {
    majority_of(&membership.voters, &yes)
        && membership
            .old_voters
            .as_ref()
            .is_none_or(|old| majority_of(old, &yes))
}

fn majority_index(set: &BTreeSet<NodeId>, match_index: &impl Fn(NodeId) -> u64) -> u64 {
    if set.is_empty() {
        return 0;
    }
    let mut indices: Vec<u64> = set.iter().map(|id| match_index(*id)).collect();
    indices.sort_unstable_by(|a, b| b.cmp(a));
    // The (n/2+1)-th highest index is held by a majority.
    indices[set.len() / 2]
}

/// The highest index stored on a quorum, given each voter's match index
/// (the leader passes its own durable last index for itself).
///
/// This is only a candidate for the commit index: the leader may commit it
/// only if the entry there is of its own term (see [`leader_commit`]).
pub fn quorum_index(membership: &Membership, match_index: impl Fn(NodeId) -> u64) -> u64 {
    let new = majority_index(&membership.voters, &match_index);
    match &membership.old_voters {
        Some(old) => new.min(majority_index(old, &match_index)),
        None => new,
    }
}

/// The leader's commit rule (Raft §5.4.2, Figure 8): an index stored on a
/// quorum becomes committed by counting replicas only if the entry there was
/// created in the leader's own term; earlier entries then commit with it.
///
/// `first_index_of_term` is the index of the leader's first entry (its blank
/// entry): every index at or after it holds an entry of the leader's term.
pub fn leader_commit(current_commit: u64, quorum_index: u64, first_index_of_term: u64) -> u64 {
    if quorum_index > current_commit && quorum_index >= first_index_of_term {
        quorum_index
    } else {
        current_commit
    }
}

/// Outcome of an election (or pre-election) so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionResult {
    /// A quorum granted.
    Won,
    /// A quorum refused: this round cannot be won.
    Lost,
    /// Neither yet.
    Pending,
}

/// Counts vote replies, first reply per voter wins.
#[derive(Clone, Debug)]
pub struct VoteTally {
    membership: Membership,
    granted: BTreeSet<NodeId>,
    refused: BTreeSet<NodeId>,
}

impl VoteTally {
    /// A tally over `membership`'s voters.
    pub fn new(membership: Membership) -> Self {
        VoteTally {
            membership,
            granted: BTreeSet::new(),
            refused: BTreeSet::new(),
        }
    }

    /// Every voter of the configuration counted over.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.membership.all_voters()
    }

    /// Records `from`'s answer; a second answer from the same voter and
    /// answers from non-voters are ignored.
    pub fn record(&mut self, from: NodeId, granted: bool) -> ElectionResult {
        if self.membership.is_voter(from)
            && !self.granted.contains(&from)
            && !self.refused.contains(&from)
        {
            if granted {
                self.granted.insert(from);
            } else {
                self.refused.insert(from);
            }
        }
        self.result()
    }

    /// The outcome so far.
    pub fn result(&self) -> ElectionResult {
        if is_quorum(&self.membership, |id| self.granted.contains(&id)) {
            ElectionResult::Won
        } else if !is_quorum(&self.membership, |id| !self.refused.contains(&id)) {
            // Even if every silent voter granted, no quorum is possible.
            ElectionResult::Lost
        } else {
            ElectionResult::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn joint(old: &[NodeId], new: &[NodeId]) -> Membership {
        Membership {
            voters: new.iter().copied().collect(),
            old_voters: Some(old.iter().copied().collect()),
            ..Default::default()
        }
    }

    #[test]
    fn one_round_elections_in_clusters_of_1_3_5() {
        // Single node: its own vote wins.
        let mut t = VoteTally::new(Membership::new([1]));
        assert_eq!(t.record(1, true), ElectionResult::Won);

        // 3 nodes: self + one grant wins; two refusals lose; one refusal pends.
        let mut t = VoteTally::new(Membership::new([1, 2, 3]));
        assert_eq!(t.record(1, true), ElectionResult::Pending);
        assert_eq!(t.record(2, false), ElectionResult::Pending);
        assert_eq!(t.record(3, true), ElectionResult::Won);
        let mut t = VoteTally::new(Membership::new([1, 2, 3]));
        t.record(1, true);
        t.record(2, false);
        assert_eq!(t.record(3, false), ElectionResult::Lost);

        // 5 nodes: 3 grants win, 3 refusals lose, 2-2 pends.
        let mut t = VoteTally::new(Membership::new([1, 2, 3, 4, 5]));
        t.record(1, true);
        t.record(2, true);
        t.record(3, false);
        assert_eq!(t.record(4, false), ElectionResult::Pending);
        assert_eq!(t.record(5, true), ElectionResult::Won);
        let mut t = VoteTally::new(Membership::new([1, 2, 3, 4, 5]));
        t.record(1, true);
        t.record(2, false);
        t.record(3, false);
        assert_eq!(t.record(4, false), ElectionResult::Lost);
    }

    #[test]
    fn duplicate_and_non_voter_replies_do_not_count() {
        let mut t = VoteTally::new(Membership::new([1, 2, 3]));
        t.record(1, true);
        // A duplicated grant from 1 and a grant from non-voter 9 are ignored.
        assert_eq!(t.record(1, true), ElectionResult::Pending);
        assert_eq!(t.record(9, true), ElectionResult::Pending);
        // 2 refused first; a later grant from 2 is ignored.
        t.record(2, false);
        assert_eq!(t.record(2, true), ElectionResult::Pending);
    }

    #[test]
    fn joint_election_needs_both_majorities() {
        let m = joint(&[1, 2, 3], &[3, 4, 5]);
        let mut t = VoteTally::new(m.clone());
        t.record(1, true);
        t.record(2, true); // majority of old only
        assert_eq!(t.result(), ElectionResult::Pending);
        t.record(3, true); // 3 is in both: now majority of new needs one more
        assert_eq!(t.result(), ElectionResult::Pending);
        assert_eq!(t.record(4, true), ElectionResult::Won);

        let mut t = VoteTally::new(m);
        t.record(4, false);
        t.record(5, false); // majority of new refused
        assert_eq!(t.result(), ElectionResult::Lost);
    }

    #[test]
    fn commit_index_over_simple_and_joint_configurations() {
        let m = Membership::new([1, 2, 3, 4, 5]);
        let matches: BTreeMap<NodeId, u64> = [(1, 10), (2, 9), (3, 7), (4, 3), (5, 1)].into();
        assert_eq!(quorum_index(&m, |id| matches[&id]), 7);

        let j = joint(&[1, 2, 3], &[3, 4, 5]);
        // Old majority holds 9, new majority only 3.
        assert_eq!(quorum_index(&j, |id| matches[&id]), 3);
        assert_eq!(quorum_index(&Membership::default(), |_| 5), 0);
    }

    #[test]
    fn leader_commits_only_entries_of_its_own_term_by_counting() {
        // Figure 8 (c): the leader of term 4 has replicated index 2 (term 2)
        // to a majority, but its own first entry is at index 3: not committed.
        assert_eq!(leader_commit(1, 2, 3), 1);
        // Once an entry of its term (index 3) is on a majority, everything up
        // to 3 commits, including index 2.
        assert_eq!(leader_commit(1, 3, 3), 3);
        // The commit index never goes backwards.
        assert_eq!(leader_commit(5, 4, 3), 5);
    }
}
