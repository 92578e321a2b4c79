//! Who may found a cluster. A node that finds an empty data directory and
//! was given the founding members does not know whether the cluster is new
//! or whether its own disk was replaced under a running cluster — and a
//! voter that founds again on an empty disk has forgotten its votes and
//! the entries it acknowledged. So it asks the other founders first
//! (etcd refuses a "member already bootstrapped" the same way), and founds
//! only once every one of them answers that it holds no state of the
//! cluster — or founds at once when one answers that it founded together
//! with this very directory (which crashed before its founding entry was
//! durable), writing the configuration that one names.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::types::NodeId;

/// A founder's answer to "do you hold state of this cluster?".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FoundingAnswer {
    /// No state: it waits to found too (or to be added).
    Pending,
    /// It founded the cluster together with the asking directory: its
    /// founding configuration names that very incarnation.
    FoundedWithYou {
        /// The founders' incarnations in the founding configuration, so
        /// the asker writes the same first entry.
        incarnations: BTreeMap<NodeId, u64>,
    },
    /// It holds state of the cluster, and the asking directory was not
    /// part of its founding: the cluster exists, the asker's disk is new.
    Exists,
}

/// How a node answers a founding query from `peer`'s `incarnation`;
/// `known` holds the incarnations of members its configuration names (the
/// founders', written into the founding configuration).
pub fn answer(
    pending: bool,
    known: &BTreeMap<NodeId, u64>,
    peer: NodeId,
    incarnation: u64,
) -> FoundingAnswer {
    if pending {
        FoundingAnswer::Pending
    } else if incarnation != 0 && known.get(&peer) == Some(&incarnation) {
        FoundingAnswer::FoundedWithYou {
            incarnations: known.clone(),
        }
    } else {
        FoundingAnswer::Exists
    }
}

/// What a waiting founder does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Found now, naming these incarnations of the founders.
    Found {
        /// The founders' incarnations (this node's own added by the
        /// caller when they came from the answers).
        with: BTreeMap<NodeId, u64>,
    },
    /// Never found: `peer` holds the cluster's state.
    Exists {
        /// A founder that holds state.
        peer: NodeId,
    },
    /// Wait for these founders to answer.
    Wait {
        /// Founders not heard from yet.
        missing: Vec<NodeId>,
    },
}

/// A founder on an empty directory, collecting the others' answers.
#[derive(Clone, Debug)]
pub struct Founding {
    others: BTreeSet<NodeId>,
    answers: BTreeMap<NodeId, (FoundingAnswer, u64)>,
}

impl Founding {
    /// Node `me` founding with `founders`.
    pub fn new(me: NodeId, founders: impl IntoIterator<Item = NodeId>) -> Self {
        Founding {
            others: founders.into_iter().filter(|id| *id != me).collect(),
            answers: BTreeMap::new(),
        }
    }

    /// The founders to ask.
    pub fn others(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.others.iter().copied()
    }

    /// A founder that answered that it holds the cluster's state.
    pub fn exists_from(&self) -> Option<NodeId> {
        self.answers
            .iter()
            .find(|(_, (a, _))| *a == FoundingAnswer::Exists)
            .map(|(peer, _)| *peer)
    }

    /// Records `peer`'s answer, sent by its `incarnation` (a later answer
    /// replaces an earlier one). Answers from non-founders are ignored.
    pub fn record(&mut self, peer: NodeId, answer: FoundingAnswer, incarnation: u64) {
        if self.others.contains(&peer) {
            self.answers.insert(peer, (answer, incarnation));
        }
    }

    /// What to do with the answers so far: one founder that founded with
    /// this very directory gives the configuration to write, whatever the
    /// others say; otherwise every founder must answer, and any that holds
    /// state forbids founding.
    ///
    /// "Founded with you" wins over "exists": it names this directory's
    /// incarnation, so the directory was a founder and lost nothing
    /// durable but its founding entry (a vote or an acknowledged entry is
    /// synced after that entry, so a directory holding neither is empty
    /// only if that entry was lost too). "Exists" says only that the
    /// answering node holds state — or is itself waiting on an empty
    /// directory to be added back. So an "exists" waits for the other
    /// answers: refusing at once made a founder that lost its unsynced
    /// founding entry stop for good when a replaced founder answered
    /// first (simulator, seed 7032672).
    pub fn decide(&self) -> Decision {
        if let Some(incarnations) = self.answers.values().find_map(|(a, _)| match a {
            FoundingAnswer::FoundedWithYou { incarnations } => Some(incarnations),
            _ => None,
        }) {
            return Decision::Found {
                with: incarnations.clone(),
            };
        }
        let missing: Vec<NodeId> = self
            .others
            .iter()
            .filter(|id| !self.answers.contains_key(id))
            .copied()
            .collect();
        if !missing.is_empty() {
            return Decision::Wait { missing };
        }
        if let Some(peer) = self.exists_from() {
            return Decision::Exists { peer };
        }
        Decision::Found {
            with: self
                .answers
                .iter()
                .map(|(id, (_, incarnation))| (*id, *incarnation))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn founders_found_together_once_all_have_answered() {
        let mut f = Founding::new(1, [1, 2, 3]);
        assert_eq!(
            f.decide(),
            Decision::Wait {
                missing: vec![2, 3]
            }
        );
        f.record(2, FoundingAnswer::Pending, 20);
        assert_eq!(f.decide(), Decision::Wait { missing: vec![3] });
        f.record(3, FoundingAnswer::Pending, 30);
        assert_eq!(
            f.decide(),
            Decision::Found {
                with: BTreeMap::from([(2, 20), (3, 30)])
            }
        );
        // A founder that founded with this directory (which lost its
        // unsynced founding entry) gives the configuration to write, even
        // while another founder is silent.
        let mut f = Founding::new(1, [1, 2, 3]);
        let founded = BTreeMap::from([(1, 10), (2, 20), (3, 30)]);
        f.record(
            2,
            FoundingAnswer::FoundedWithYou {
                incarnations: founded.clone(),
            },
            20,
        );
        assert_eq!(f.decide(), Decision::Found { with: founded });
        // A single founder founds at once.
        assert!(matches!(
            Founding::new(1, [1]).decide(),
            Decision::Found { .. }
        ));
    }

    #[test]
    fn one_founder_holding_state_forbids_founding() {
        let mut f = Founding::new(2, [1, 2, 3]);
        f.record(3, FoundingAnswer::Exists, 30);
        // Node 1 may yet vouch for this directory: wait for it.
        assert_eq!(f.decide(), Decision::Wait { missing: vec![1] });
        assert_eq!(f.exists_from(), Some(3));
        f.record(9, FoundingAnswer::Pending, 90);
        f.record(1, FoundingAnswer::Pending, 10);
        assert_eq!(f.decide(), Decision::Exists { peer: 3 });
    }

    /// Seed 7032672: a founder lost its unsynced founding entry; the
    /// first answer came from a founder on a replaced disk ("exists"),
    /// the second from one that founded with it. Refusing on the first
    /// answer left two of three members out for good.
    #[test]
    fn a_founder_that_founded_with_this_directory_outweighs_an_exists() {
        let founded = BTreeMap::from([(1, 10), (2, 20), (3, 30)]);
        let mut f = Founding::new(2, [1, 2, 3]);
        f.record(3, FoundingAnswer::Exists, 31);
        f.record(
            1,
            FoundingAnswer::FoundedWithYou {
                incarnations: founded.clone(),
            },
            10,
        );
        assert_eq!(f.decide(), Decision::Found { with: founded });
    }

    #[test]
    fn a_founded_node_recognizes_only_the_directories_it_founded_with() {
        let with = BTreeMap::from([(2, 20)]);
        assert_eq!(answer(true, &with, 2, 99), FoundingAnswer::Pending);
        assert_eq!(
            answer(false, &with, 2, 20),
            FoundingAnswer::FoundedWithYou {
                incarnations: with.clone()
            }
        );
        // Node 2 on a new disk (a new incarnation): the cluster exists.
        assert_eq!(answer(false, &with, 2, 21), FoundingAnswer::Exists);
        assert_eq!(answer(false, &with, 2, 0), FoundingAnswer::Exists);
        assert_eq!(
            answer(false, &BTreeMap::new(), 3, 30),
            FoundingAnswer::Exists
        );
    }
}
