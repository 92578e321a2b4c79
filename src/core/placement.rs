//! Where group leaders should be: spreading the leadership of many
//! groups evenly over the hosts that are their members.

use std::collections::BTreeMap;

use super::types::{GroupId, NodeId};

/// The transfers (group, new leader) that even out the number of groups
/// each host leads: while the busiest host leads more than the idlest
/// member of one of its groups plus one, that group moves there. Hosts
/// that lead nothing but are members count (with zero). Deterministic:
/// groups are taken in id order.
pub fn spread(
    leaders: &BTreeMap<GroupId, NodeId>,
    members: &BTreeMap<GroupId, Vec<NodeId>>,
) -> Vec<(GroupId, NodeId)> {
    let mut load: BTreeMap<NodeId, usize> = BTreeMap::new();
    for voters in members.values() {
        for v in voters {
            load.entry(*v).or_default();
        }
    }
    for leader in leaders.values() {
        *load.entry(*leader).or_default() += 1;
    }
    let mut current = leaders.clone();
    let mut moves = Vec::new();
    // Each move lowers the sum of squared loads, so this ends.
    loop {
        let best = current
            .iter()
            .filter_map(|(group, leader)| {
                let target = members
                    .get(group)?
                    .iter()
                    .filter(|m| *m != leader)
                    .min_by_key(|m| (load[m], **m))?;
                let gain = load[leader] as i64 - load[target] as i64;
                (gain > 1).then_some((gain, *group, *leader, *target))
            })
            // The largest gap first; among equals the lowest group id.
            .max_by_key(|(gain, group, _, _)| (*gain, std::cmp::Reverse(*group)));
        let Some((_, group, from, to)) = best else {
            return moves;
        };
        *load.get_mut(&from).expect("counted") -= 1;
        *load.get_mut(&to).expect("counted") += 1;
        current.insert(group, to);
        moves.push((group, to));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread_of(leaders: &BTreeMap<GroupId, NodeId>) -> BTreeMap<NodeId, usize> {
        let mut load = BTreeMap::new();
        for l in leaders.values() {
            *load.entry(*l).or_default() += 1;
        }
        load
    }

    #[test]
    fn sixty_four_groups_led_by_one_host_end_up_within_one_of_each_other() {
        let members: BTreeMap<GroupId, Vec<NodeId>> =
            (1..=64).map(|g| (g, vec![1, 2, 3])).collect();
        let mut leaders: BTreeMap<GroupId, NodeId> = (1..=64).map(|g| (g, 1)).collect();
        for (group, to) in spread(&leaders, &members) {
            leaders.insert(group, to);
        }
        let load = spread_of(&leaders);
        assert_eq!(load.values().sum::<usize>(), 64);
        let (max, min) = (load.values().max().unwrap(), load.values().min().unwrap());
        assert!(max - min <= 1, "{load:?}");
        assert_eq!(load.len(), 3);
    }

    #[test]
    fn a_balanced_placement_moves_nothing_and_moves_stay_within_members() {
        let members: BTreeMap<GroupId, Vec<NodeId>> = [
            (1, vec![1, 2]),
            (2, vec![1, 2]),
            (3, vec![2, 3]),
            (4, vec![2, 3]),
        ]
        .into();
        let balanced: BTreeMap<GroupId, NodeId> = [(1, 1), (2, 2), (3, 3), (4, 2)].into();
        assert!(spread(&balanced, &members).is_empty());
        // Host 2 leads all four: groups 1-2 may only go to 1, 3-4 to 3.
        let skewed: BTreeMap<GroupId, NodeId> = (1..=4).map(|g| (g, 2)).collect();
        let moves = spread(&skewed, &members);
        for (group, to) in &moves {
            assert!(members[group].contains(to));
        }
        let mut after = skewed.clone();
        after.extend(moves);
        let load = spread_of(&after);
        assert!(
            load.values().max().unwrap() - load.values().min().unwrap() <= 1,
            "{load:?}"
        );
    }
}
