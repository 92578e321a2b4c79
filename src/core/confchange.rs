//! Membership changes (dissertation §4.3, joint consensus): which
//! configuration a request leads to, when a learner may become a voter,
//! the sequence C_old,new → C_new a change walks through, and when a
//! removed node may stop receiving the log.
//!
//! The leader actor (`leader/membership.rs`, `leader/mod.rs`) proposes the
//! configurations this module computes and feeds it commit progress.

use std::collections::{BTreeMap, BTreeSet};

use super::types::{Membership, NodeId};
use crate::error::MembershipError;

/// The configuration that adds `id` as a learner (with its address and
/// metadata, when given). Equal to `current` if nothing changes.
pub fn add_learner(
    current: &Membership,
    id: NodeId,
    address: String,
    metadata: BTreeMap<String, String>,
) -> Result<Membership, MembershipError> {
    if current.is_voter(id) {
        return Err(MembershipError::AlreadyVoter(id));
    }
    let mut next = current.clone();
    next.learners.insert(id);
    if !address.is_empty() {
        next.addresses.insert(id, address);
    }
    if !metadata.is_empty() {
        next.metadata.insert(id, metadata);
    }
    Ok(next)
}

/// The configuration with metadata `key` of member `id` set to `value`
/// (removed for `None`); voters and learners unchanged. Equal to `current`
/// if nothing changes.
pub fn set_metadata(
    current: &Membership,
    id: NodeId,
    key: String,
    value: Option<String>,
) -> Result<Membership, MembershipError> {
    if !current.members().contains(&id) {
        return Err(MembershipError::NotAMember(id));
    }
    let mut next = current.clone();
    let entry = next.metadata.entry(id).or_default();
    match value {
        Some(value) => entry.insert(key, value),
        None => entry.remove(&key),
    };
    if entry.is_empty() {
        next.metadata.remove(&id);
    }
    Ok(next)
}

/// The configuration without the learner `id` (a voter leaves by a
/// change of voters instead).
pub fn remove_learner(current: &Membership, id: NodeId) -> Result<Membership, MembershipError> {
    if !current.learners.contains(&id) {
        return Err(MembershipError::NotALearner(id));
    }
    let mut next = current.clone();
    next.learners.remove(&id);
    next.addresses.remove(&id);
    next.metadata.remove(&id);
    Ok(next)
}

/// Checks a request to make `voters` the voters. `Ok(false)`: they already
/// are, nothing to do. Every new voter must already be a member (a learner
/// first, so it can catch up before it counts).
pub fn check_voters(
    current: &Membership,
    voters: &BTreeSet<NodeId>,
) -> Result<bool, MembershipError> {
    if voters.is_empty() {
        return Err(MembershipError::NoVoters);
    }
    if *voters == current.voters {
        return Ok(false);
    }
    match voters
        .iter()
        .find(|id| !current.voters.contains(id) && !current.learners.contains(id))
    {
        Some(id) => Err(MembershipError::NotAMember(*id)),
        None => Ok(true),
    }
}

/// A new voter in `voters` that may not vote yet, with how far behind the
/// leader's `last_index` it is. `matched(id)`: the last index it
/// acknowledged (0: nothing yet in its current incarnation, which is never
/// caught up, however short the log).
pub fn lagging(
    current: &Membership,
    voters: &BTreeSet<NodeId>,
    matched: impl Fn(NodeId) -> u64,
    last_index: u64,
    max_lag: u64,
) -> Option<(NodeId, u64)> {
    voters
        .iter()
        .filter(|id| !current.voters.contains(id))
        .find_map(|&id| {
            let m = matched(id);
            (m == 0 || m + max_lag < last_index).then(|| (id, last_index.saturating_sub(m)))
        })
}

/// The joint configuration C_old,new for new `voters` (promoted learners
/// stop being learners).
pub fn enter_joint(current: &Membership, voters: BTreeSet<NodeId>) -> Membership {
    let mut joint = current.clone();
    joint.old_voters = Some(std::mem::replace(&mut joint.voters, voters));
    joint.learners.retain(|id| !joint.voters.contains(id));
    joint
}

/// C_new, the configuration that ends a joint one: the new voters, and
/// addresses and metadata of members only, incarnations of voters only.
pub fn leave_joint(joint: &Membership) -> Membership {
    let mut target = joint.clone();
    target.old_voters = None;
    let members = target.members();
    target.addresses.retain(|id, _| members.contains(id));
    target.metadata.retain(|id, _| members.contains(id));
    target
        .incarnations
        .retain(|id, _| joint.voters.contains(id));
    target
}

/// The two configurations that make voter `id` a learner (the first step
/// of replacing its incarnation): C_old,new without it as a voter, then
/// C_new with it a learner — at its address, with its metadata, its pin
/// dropped.
pub fn demote(current: &Membership, id: NodeId) -> (Membership, Membership) {
    let mut voters = current.voters.clone();
    voters.remove(&id);
    let mut joint = enter_joint(current, voters);
    // A learner already in C_old,new (a voter of its old half too): a
    // leader that inherits the joint entry finishes it from the entry
    // alone, and must land on the same C_new.
    joint.learners.insert(id);
    let target = leave_joint(&joint);
    (joint, target)
}

/// `next` with the incarnation of each voter that has none pinned yet
/// pinned to `known(id)`, where known. The leader proposes every
/// configuration through this: a new voter is pinned to the incarnation
/// that caught up (`lagging` admits no other), and a founder to the one
/// that has acknowledged the leader's term. A pinned incarnation is never
/// changed here: only a replacement (remove, then add) changes it.
pub fn pin_voters(mut next: Membership, known: impl Fn(NodeId) -> Option<u64>) -> Membership {
    let voters: Vec<NodeId> = next
        .voters
        .iter()
        .chain(next.old_voters.iter().flatten())
        .copied()
        .collect();
    for id in voters {
        if let (None, Some(incarnation)) = (next.incarnations.get(&id), known(id)) {
            next.incarnations.insert(id, incarnation);
        }
    }
    next
}

/// Where a change under way stands: the configuration entry it waits to
/// see committed and, in the joint phase, the C_new to append after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeDriver {
    awaiting: Option<u64>,
    then: Option<Membership>,
}

/// What the leader does next for a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeStep {
    /// The awaited entry has not committed (or not been appended) yet.
    Wait,
    /// C_old,new committed: append this C_new.
    Propose(Membership),
    /// The last configuration, at `index`, committed: the change is done.
    Done {
        /// Index of that configuration entry.
        index: u64,
    },
}

impl ChangeDriver {
    /// A change of one entry (learners only), not yet appended.
    pub fn single() -> Self {
        ChangeDriver::default()
    }

    /// A change of voters: C_old,new (not yet appended), then `target`.
    pub fn joint(target: Membership) -> Self {
        ChangeDriver {
            awaiting: None,
            then: Some(target),
        }
    }

    /// A new leader finishing its predecessor's joint change: `target`
    /// follows once the entry at `index` (the new leader's first, after
    /// C_old,new in its log) has committed.
    pub fn resume(index: u64, target: Membership) -> Self {
        ChangeDriver {
            awaiting: Some(index),
            then: Some(target),
        }
    }

    /// A configuration entry was appended at `index`: the first one
    /// appended after a step is the one that step waits for.
    pub fn appended(&mut self, index: u64) {
        self.awaiting.get_or_insert(index);
    }

    /// The commit index moved to `commit_index`.
    pub fn committed(&mut self, commit_index: u64) -> ChangeStep {
        let Some(awaiting) = self.awaiting.filter(|i| *i <= commit_index) else {
            return ChangeStep::Wait;
        };
        match self.then.take() {
            Some(next) => {
                self.awaiting = None;
                ChangeStep::Propose(next)
            }
            None => ChangeStep::Done { index: awaiting },
        }
    }
}

/// Removed members the leader still sends the log to until each holds the
/// configuration that removes it, so it learns it was removed (instead of
/// timing out and campaigning): node → index of that configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leaving {
    nodes: BTreeMap<NodeId, u64>,
}

impl Leaving {
    /// `id` left in the configuration at `index`.
    pub fn leave(&mut self, id: NodeId, index: u64) {
        self.nodes.insert(id, index);
    }

    /// Whether no removed node still waits to learn it was removed.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether `id`, having acknowledged up to `matched`, now holds the
    /// configuration that removed it; if so it is forgotten here and its
    /// replication may stop.
    pub fn informed(&mut self, id: NodeId, matched: u64) -> bool {
        match self.nodes.get(&id) {
            Some(&needed) if matched >= needed => {
                self.nodes.remove(&id);
                true
            }
            _ => false,
        }
    }

    /// Leaving nodes that `members` takes back: they start over (what they
    /// acknowledged before may be gone, their directory may be new).
    pub fn returning(&mut self, members: &BTreeSet<NodeId>) -> Vec<NodeId> {
        let back: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|id| members.contains(id))
            .collect();
        for id in &back {
            self.nodes.remove(id);
        }
        back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn three() -> Membership {
        let mut m = Membership::new([1, 2, 3]);
        m.learners.insert(4);
        for id in 1..=4 {
            m.addresses.insert(id, format!("127.0.0.1:{id}"));
        }
        m
    }

    #[test]
    fn learners_come_and_go_in_one_entry() {
        let m = three();
        let added = add_learner(&m, 5, "127.0.0.1:5".into(), BTreeMap::new()).unwrap();
        assert!(added.learners.contains(&5) && !added.is_joint());
        assert_eq!(added.addresses[&5], "127.0.0.1:5");
        assert_eq!(
            add_learner(&m, 4, String::new(), BTreeMap::new()).unwrap(),
            m,
            "re-adding a learner changes nothing"
        );
        assert_eq!(
            add_learner(&m, 2, String::new(), BTreeMap::new()),
            Err(MembershipError::AlreadyVoter(2))
        );
        let removed = remove_learner(&m, 4).unwrap();
        assert!(!removed.learners.contains(&4) && !removed.addresses.contains_key(&4));
        assert_eq!(remove_learner(&m, 2), Err(MembershipError::NotALearner(2)));
    }

    #[test]
    fn a_new_voter_must_be_a_member_and_a_configuration_needs_voters() {
        let m = three();
        assert_eq!(check_voters(&m, &set(&[])), Err(MembershipError::NoVoters));
        assert_eq!(check_voters(&m, &set(&[1, 2, 3])), Ok(false));
        assert_eq!(check_voters(&m, &set(&[1, 2, 4])), Ok(true));
        assert_eq!(
            check_voters(&m, &set(&[1, 2, 9])),
            Err(MembershipError::NotAMember(9))
        );
    }

    #[test]
    fn a_learner_votes_only_once_caught_up() {
        let m = three();
        let voters = set(&[1, 2, 3, 4]);
        // Nothing acknowledged yet: not caught up even on a short log.
        assert_eq!(lagging(&m, &voters, |_| 0, 3, 100), Some((4, 3)));
        assert_eq!(lagging(&m, &voters, |_| 400, 1000, 100), Some((4, 600)));
        assert_eq!(lagging(&m, &voters, |_| 900, 1000, 100), None);
        // Existing voters are never "lagging learners".
        assert_eq!(lagging(&m, &set(&[1, 2]), |_| 0, 1000, 100), None);
    }

    #[test]
    fn a_voter_change_goes_through_the_joint_configuration() {
        let m = three();
        let joint = enter_joint(&m, set(&[2, 3, 4]));
        assert_eq!(joint.old_voters, Some(set(&[1, 2, 3])));
        assert_eq!(joint.voters, set(&[2, 3, 4]));
        assert!(joint.learners.is_empty(), "the promoted learner votes");
        let target = leave_joint(&joint);
        assert!(!target.is_joint());
        assert!(
            !target.addresses.contains_key(&1),
            "the removed voter's address goes"
        );

        let mut driver = ChangeDriver::joint(target.clone());
        assert_eq!(
            driver.committed(100),
            ChangeStep::Wait,
            "nothing appended yet"
        );
        driver.appended(10);
        driver.appended(11); // a later entry does not move what is awaited
        assert_eq!(driver.committed(9), ChangeStep::Wait);
        assert_eq!(driver.committed(10), ChangeStep::Propose(target));
        assert_eq!(
            driver.committed(10),
            ChangeStep::Wait,
            "C_new not appended yet"
        );
        driver.appended(12);
        assert_eq!(driver.committed(12), ChangeStep::Done { index: 12 });
    }

    #[test]
    fn a_new_leader_finishes_an_interrupted_joint_change_after_its_own_entry() {
        let joint = enter_joint(&three(), set(&[2, 3, 4]));
        let mut driver = ChangeDriver::resume(20, leave_joint(&joint));
        assert_eq!(driver.committed(19), ChangeStep::Wait);
        assert!(matches!(driver.committed(20), ChangeStep::Propose(_)));
    }

    #[test]
    fn a_removed_node_is_replicated_to_until_it_holds_its_removal() {
        let mut leaving = Leaving::default();
        leaving.leave(1, 12);
        leaving.leave(5, 12);
        assert!(!leaving.informed(1, 11));
        assert!(leaving.informed(1, 12));
        assert!(!leaving.informed(1, 12), "forgotten once informed");
        assert_eq!(leaving.returning(&set(&[2, 3, 5])), vec![5]);
        assert!(
            !leaving.informed(5, 100),
            "a returning node is no longer leaving"
        );
    }

    #[test]
    fn voters_are_pinned_once_and_removed_voters_lose_their_pin() {
        let mut current = three();
        current.incarnations.insert(1, 10);
        let known = |id: NodeId| Some(100 + id);
        // Promoting learner 4: the new voter and the unpinned founders are
        // pinned; a pinned incarnation never changes here.
        let joint = pin_voters(enter_joint(&current, set(&[1, 2, 4])), known);
        assert_eq!(
            joint.incarnations,
            [(1, 10), (2, 102), (3, 103), (4, 104)].into()
        );
        // Voter 3 leaves: its pin goes with it.
        let target = leave_joint(&joint);
        assert_eq!(target.incarnations, [(1, 10), (2, 102), (4, 104)].into());
        // Unknown incarnations stay unpinned.
        let none = pin_voters(Membership::new([1, 2]), |_| None);
        assert!(none.incarnations.is_empty());
    }

    #[test]
    fn a_demoted_voter_stays_a_learner_at_its_address_without_its_pin() {
        let mut current = three();
        current
            .metadata
            .insert(3, [("api".into(), "h:1".into())].into());
        current.incarnations = [(1, 11), (2, 12), (3, 13)].into();
        let (joint, target) = demote(&current, 3);
        assert_eq!(joint.voters, set(&[1, 2]));
        assert_eq!(joint.old_voters, Some(set(&[1, 2, 3])));
        assert_eq!(
            joint.incarnations.get(&3),
            Some(&13),
            "C_old still counts it"
        );
        assert_eq!(target.voters, set(&[1, 2]));
        assert_eq!(target.learners, set(&[3, 4]));
        assert_eq!(target.addresses.get(&3), current.addresses.get(&3));
        assert_eq!(target.metadata.get(&3), current.metadata.get(&3));
        assert_eq!(target.incarnations, [(1, 11), (2, 12)].into());
    }

    /// A leader elected while the demotion's joint entry is the last
    /// configuration finishes the change from that entry alone (the first
    /// leader's target died with it): it must land on the same target, or
    /// the voter being replaced is dropped from the group (found by the
    /// multi-group simulator, seed 5695 of 4 hosts and 6 groups).
    #[test]
    fn a_new_leader_finishing_a_demotion_keeps_the_voter_a_learner() {
        let mut current = three();
        current.incarnations = [(1, 11), (2, 12), (3, 13)].into();
        let (joint, target) = demote(&current, 3);
        assert_eq!(leave_joint(&joint), target);
    }

    #[test]
    fn metadata_changes_leave_the_members_alone() {
        let current = Membership::new([1, 2]);
        let next = set_metadata(&current, 2, "api".into(), Some("h:1".into())).unwrap();
        assert_eq!(next.voters, current.voters);
        assert_eq!(next.metadata[&2]["api"], "h:1");
        let back = set_metadata(&next, 2, "api".into(), None).unwrap();
        assert_eq!(back, current, "removing the last key leaves no empty map");
        assert_eq!(
            set_metadata(&current, 9, "api".into(), None),
            Err(MembershipError::NotAMember(9))
        );
    }
}
