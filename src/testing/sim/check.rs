//! The invariants the simulator checks while a run goes on (Raft, Figure
//! 3): election safety, leader completeness, state machine safety, and
//! log matching over every node's durable log; and that no session write
//! (a client's, or a forwarding node's own) is applied twice.

use std::collections::BTreeMap;

use crate::core::types::{LogId, NodeId};
use crate::probe::{digest, ProbeEvent};
use crate::storage::{InitialState, MemStorage};

/// A log as index → (entry id, payload digest).
type Digests = BTreeMap<u64, (LogId, u64)>;

/// Everything observed so far, across crashes and restarts.
#[derive(Default)]
pub(super) struct Checker {
    /// term → the node that led it.
    leaders: BTreeMap<u64, NodeId>,
    /// index → (entry id, digest) as first applied anywhere.
    applied: BTreeMap<u64, (LogId, u64, NodeId)>,
    /// (session, sequence) → the index whose entry applied it.
    session_writes: BTreeMap<(u64, u64), u64>,
    /// The first violation found.
    pub(super) violation: Option<String>,
    pub(super) elections: u64,
    /// Nodes that refused to found on a replaced disk (as they must):
    /// the operator's procedure takes over.
    pub(super) refused_founding: std::collections::BTreeSet<NodeId>,
}

impl Checker {
    pub(super) fn fail(&mut self, why: String) {
        if self.violation.is_none() {
            self.violation = Some(why);
        }
    }

    /// Checks one event of `node`, whose durable log is `storage`.
    pub(super) fn on_event(&mut self, node: NodeId, event: &ProbeEvent, storage: &MemStorage) {
        match event {
            ProbeEvent::Leader { term } => {
                self.elections += 1;
                if let Some(other) = self.leaders.insert(*term, node) {
                    if other != node {
                        self.fail(format!(
                            "election safety: nodes {other} and {node} both led term {term}"
                        ));
                    }
                }
                self.leader_completeness(node, *term, &storage.contents());
            }
            ProbeEvent::Applied { entries } => {
                for (id, d) in entries {
                    match self.applied.get(&id.index) {
                        None => {
                            self.applied.insert(id.index, (*id, *d, node));
                        }
                        Some((first, fd, by)) if (first, fd) != (id, d) => {
                            let why = format!(
                                "state machine safety: node {by} applied {first:?} (digest {fd:#x}) at index {}, node {node} applied {id:?} (digest {d:#x})",
                                id.index
                            );
                            self.fail(why);
                        }
                        Some(_) => {}
                    }
                }
            }
            ProbeEvent::SessionApplied {
                session,
                seq,
                index,
            } => {
                let first = *self
                    .session_writes
                    .entry((*session, *seq))
                    .or_insert(*index);
                if first != *index {
                    self.fail(format!(
                        "session write applied twice: sequence {seq} of session {session} at indexes {first} and {index} (node {node})"
                    ));
                }
            }
            ProbeEvent::Failed { cause } if cause.starts_with("refusing to found") => {
                self.refused_founding.insert(node);
            }
            ProbeEvent::Failed { cause } => {
                self.fail(format!("node {node} stopped: {cause}"));
            }
        }
    }

    /// A new leader's log holds every entry applied anywhere (it became
    /// leader after its vote was durable, and the write queue is ordered,
    /// so its durable log is its whole log).
    fn leader_completeness(&mut self, node: NodeId, term: u64, log: &InitialState) {
        let by_index: BTreeMap<u64, (LogId, u64)> = log
            .entries
            .iter()
            .map(|e| (e.log_id.index, (e.log_id, digest(e))))
            .collect();
        let missing = self.applied.iter().find(|(index, (id, d, _))| {
            **index > log.snapshot.index && by_index.get(index) != Some(&(*id, *d))
        });
        if let Some((index, (id, _, by))) = missing {
            let why = format!(
                "leader completeness: node {node} leads term {term} without {id:?} (applied by node {by}); its log has {:?} at index {index}",
                by_index.get(index).map(|(id, _)| id)
            );
            self.fail(why);
        }
    }

    /// Log matching between every two durable logs: where two logs hold
    /// an entry with the same index and term, they hold the same entries
    /// up to it.
    pub(super) fn log_matching(&mut self, logs: &BTreeMap<NodeId, InitialState>) {
        let digests: Vec<(NodeId, Digests)> = logs
            .iter()
            .map(|(id, s)| {
                let m = s
                    .entries
                    .iter()
                    .map(|e| (e.log_id.index, (e.log_id, digest(e))))
                    .collect();
                (*id, m)
            })
            .collect();
        for (i, (a, la)) in digests.iter().enumerate() {
            for (b, lb) in &digests[i + 1..] {
                let Some(top) = la
                    .iter()
                    .rev()
                    .find(|(index, (id, _))| lb.get(index).is_some_and(|(o, _)| o == id))
                    .map(|(index, _)| *index)
                else {
                    continue;
                };
                for (index, ea) in la.range(..=top) {
                    if let Some(eb) = lb.get(index) {
                        if ea != eb {
                            let why = format!(
                                "log matching: nodes {a} and {b} agree on index {top} but differ at {index}: {:?} vs {:?}",
                                ea, eb
                            );
                            self.fail(why);
                            return;
                        }
                    }
                }
            }
        }
    }
}
