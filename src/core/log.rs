//! The in-memory log: the follower's consistency check with conflict hints,
//! the leader's fast backtracking, and batched reads for replication.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::types::{Entry, LogId};

/// Why a follower refused an AppendEntries, with what the leader needs to
/// skip a whole term at a time (Raft §5.3, "fast backtracking").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictHint {
    /// The term of the follower's entry at the leader's `prev` index, if the
    /// follower has an entry there.
    pub conflict_term: Option<u64>,
    /// The first index the follower holds of `conflict_term`, or, when the
    /// follower's log is too short, its last index + 1.
    pub first_index: u64,
}

/// What a follower must do to its log to accept an AppendEntries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendPlan {
    /// Delete this index and everything after it first (a conflict).
    pub truncate_from: Option<u64>,
    /// Then append `entries[skip..]`; the first `skip` entries are already
    /// present with the same term.
    pub skip: usize,
    /// The last index known to match the leader after the append.
    pub last_matched: LogId,
}

/// Failure to read entries for a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The requested entries were compacted into a snapshot.
    Compacted,
}

/// The log of one node: entries after the last snapshot, in memory. The
/// durable copy lives in a `LogStorage`; this is the authoritative view the
/// protocol decides on.
#[derive(Clone, Debug, Default)]
pub struct RaftLog {
    /// Last entry covered by the snapshot (purged from `entries`).
    snapshot: LogId,
    entries: VecDeque<Entry>,
}

impl RaftLog {
    /// A log whose entries after `snapshot` are `entries` (contiguous).
    pub fn new(snapshot: LogId, entries: Vec<Entry>) -> Self {
        RaftLog {
            snapshot,
            entries: entries.into(),
        }
    }

    /// The id of the last entry (or of the snapshot when empty).
    pub fn last_log_id(&self) -> LogId {
        self.entries.back().map_or(self.snapshot, |e| e.log_id)
    }

    /// The last index covered by the snapshot.
    pub fn snapshot_id(&self) -> LogId {
        self.snapshot
    }

    /// The first index held in memory (snapshot index + 1).
    pub fn first_index(&self) -> u64 {
        self.snapshot.index + 1
    }

    /// The term of the entry at `index`; `None` if beyond the log or
    /// compacted (the snapshot's own index still answers).
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.get(index).map(|e| e.log_id.term)
    }

    /// The entry at `index`, if held.
    pub fn get(&self, index: u64) -> Option<&Entry> {
        if index <= self.snapshot.index {
            return None;
        }
        self.entries.get((index - self.snapshot.index - 1) as usize)
    }

    /// The follower's consistency check (Raft §5.3): does our log contain an
    /// entry at `prev` with `prev`'s term? If so, which of `entries` are new
    /// and where does our log conflict with them.
    pub fn plan_append(&self, prev: LogId, entries: &[Entry]) -> Result<AppendPlan, ConflictHint> {
        if prev.index < self.snapshot.index {
            // Everything up to the snapshot is committed and therefore
            // matches the leader; skip entries we have compacted.
            let covered = (self.snapshot.index - prev.index) as usize;
            if covered >= entries.len() {
                return Ok(AppendPlan {
                    truncate_from: None,
                    skip: entries.len(),
                    last_matched: self.snapshot,
                });
            }
            let rest_prev = entries[covered - 1].log_id;
            return self
                .plan_append(rest_prev, &entries[covered..])
                .map(|mut p| {
                    p.skip += covered;
                    p
                });
        }
        match self.term_at(prev.index) {
            None => {
                return Err(ConflictHint {
                    conflict_term: None,
                    first_index: self.last_log_id().index + 1,
                })
            }
            Some(t) if t != prev.term => {
                let mut first = prev.index;
                while first > self.first_index() && self.term_at(first - 1) == Some(t) {
                    first -= 1;
                }
                return Err(ConflictHint {
                    conflict_term: Some(t),
                    first_index: first,
                });
            }
            Some(_) => {}
        }
        let mut skip = 0;
        let mut truncate_from = None;
        for e in entries {
            match self.term_at(e.log_id.index) {
                Some(t) if t == e.log_id.term => skip += 1,
                Some(_) => {
                    truncate_from = Some(e.log_id.index);
                    break;
                }
                None => break,
            }
        }
        Ok(AppendPlan {
            truncate_from,
            skip,
            last_matched: entries.last().map_or(prev, |e| e.log_id),
        })
    }

    /// Carries out a plan from [`RaftLog::plan_append`].
    pub fn apply_plan(&mut self, plan: &AppendPlan, entries: &[Entry]) {
        if let Some(from) = plan.truncate_from {
            self.truncate_from(from);
        }
        for e in &entries[plan.skip..] {
            self.push(e.clone());
        }
    }

    /// Appends one entry; it must directly follow the last one.
    pub fn push(&mut self, entry: Entry) {
        assert_eq!(
            entry.log_id.index,
            self.last_log_id().index + 1,
            "log entries must be contiguous"
        );
        self.entries.push_back(entry);
    }

    /// Deletes `index` and everything after it.
    pub fn truncate_from(&mut self, index: u64) {
        let keep = index.saturating_sub(self.snapshot.index + 1) as usize;
        self.entries.truncate(keep);
    }

    /// Drops entries up to and including `upto`, which a snapshot now covers.
    pub fn purge_upto(&mut self, upto: LogId) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.log_id.index <= upto.index)
        {
            self.entries.pop_front();
        }
        if upto.index > self.snapshot.index {
            self.snapshot = upto;
        }
    }

    /// The leader's fast backtracking: where to resume after a refusal.
    /// If the leader has entries of the follower's conflicting term, resume
    /// after its last one; otherwise skip the follower's whole term.
    pub fn next_index_after_conflict(&self, hint: ConflictHint) -> u64 {
        let next = match hint.conflict_term.and_then(|t| self.last_index_of_term(t)) {
            Some(last) => last + 1,
            None => hint.first_index,
        };
        next.clamp(1, self.last_log_id().index + 1)
    }

    /// The index of our last entry of `term`, if we hold any.
    fn last_index_of_term(&self, term: u64) -> Option<u64> {
        // Terms never decrease along the log: scan back from the end only
        // while the terms are still at or above `term`.
        self.entries
            .iter()
            .rev()
            .take_while(|e| e.log_id.term >= term)
            .find(|e| e.log_id.term == term)
            .map(|e| e.log_id.index)
    }

    /// Up to `max_entries` entries starting at `from` and no more than
    /// `max_bytes` (at least one entry), with the id of the entry before them.
    pub fn read(
        &self,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<(LogId, Vec<Entry>), ReadError> {
        if from <= self.snapshot.index {
            return Err(ReadError::Compacted);
        }
        let prev_index = from.saturating_sub(1);
        let Some(prev_term) =
            self.term_at(prev_index)
                .or(if prev_index == 0 { Some(0) } else { None })
        else {
            return if prev_index < self.snapshot.index {
                Err(ReadError::Compacted)
            } else {
                // Beyond our log: nothing to send, the prev is our last.
                Ok((self.last_log_id(), Vec::new()))
            };
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut i = from;
        while out.len() < max_entries {
            let Some(e) = self.get(i) else { break };
            bytes += e.size_hint();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
            i += 1;
        }
        Ok((LogId::new(prev_term, prev_index), out))
    }

    /// Number of entries held in memory.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entries are held in memory.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::Payload;

    fn log_of(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, t)| Entry {
                log_id: LogId::new(*t, i as u64 + 1),
                payload: Payload::Blank,
            })
            .collect();
        RaftLog::new(LogId::default(), entries)
    }

    fn terms(log: &RaftLog) -> Vec<u64> {
        (1..=log.last_log_id().index)
            .map(|i| log.term_at(i).unwrap())
            .collect()
    }

    /// The leader brings a follower to equality by probing backwards with
    /// conflict hints, then sending the rest; returns the rounds it took.
    fn replicate(leader: &RaftLog, follower: &mut RaftLog) -> usize {
        let mut next = leader.last_log_id().index + 1;
        for round in 1..=50 {
            let (prev, entries) = leader.read(next, usize::MAX, usize::MAX).unwrap();
            match follower.plan_append(prev, &entries) {
                Ok(plan) => {
                    follower.apply_plan(&plan, &entries);
                    // The follower's log must also drop anything beyond the
                    // leader's (an extra conflicting suffix): the leader's
                    // entries always end at its last index here.
                    if follower.last_log_id() != leader.last_log_id() {
                        follower.truncate_from(leader.last_log_id().index + 1);
                    }
                    return round;
                }
                Err(hint) => next = leader.next_index_after_conflict(hint),
            }
        }
        panic!("did not converge");
    }

    #[test]
    fn figure_7_followers_are_brought_to_equality() {
        // Leader of term 8 in Figure 7 (its log before appending new entries).
        let leader = log_of(&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6]);
        let followers: [&[u64]; 6] = [
            &[1, 1, 1, 4, 4, 5, 5, 6, 6],          // (a) missing one
            &[1, 1, 1, 4],                         // (b) missing many
            &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],    // (c) extra uncommitted
            &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], // (d) extra of later term
            &[1, 1, 1, 4, 4, 4, 4],                // (e) missing + extra
            &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],    // (f) many extra old terms
        ];
        for (name, f) in ["a", "b", "c", "d", "e", "f"].iter().zip(followers) {
            let mut follower = log_of(f);
            let rounds = replicate(&leader, &mut follower);
            assert_eq!(terms(&follower), terms(&leader), "follower ({name})");
            // Fast backtracking skips a term per round, not an entry.
            assert!(rounds <= 4, "follower ({name}) took {rounds} rounds");
        }
    }

    #[test]
    fn consistency_check_refuses_missing_or_mismatched_prev() {
        let log = log_of(&[1, 1, 2]);
        // prev beyond our log: hint says how long we are.
        let err = log.plan_append(LogId::new(2, 5), &[]).unwrap_err();
        assert_eq!(
            err,
            ConflictHint {
                conflict_term: None,
                first_index: 4
            }
        );
        // prev with a different term: hint names our term and its first index.
        let err = log.plan_append(LogId::new(3, 3), &[]).unwrap_err();
        assert_eq!(
            err,
            ConflictHint {
                conflict_term: Some(2),
                first_index: 3
            }
        );
        let err = log.plan_append(LogId::new(3, 2), &[]).unwrap_err();
        assert_eq!(
            err,
            ConflictHint {
                conflict_term: Some(1),
                first_index: 1
            }
        );
        // Matching prev is accepted.
        assert!(log.plan_append(LogId::new(1, 2), &[]).is_ok());
        assert!(log.plan_append(LogId::default(), &[]).is_ok());
    }

    #[test]
    fn follower_deletes_conflicting_entry_and_all_that_follow() {
        let mut log = log_of(&[1, 1, 2, 2, 2]);
        let new = vec![
            Entry {
                log_id: LogId::new(1, 2),
                payload: Payload::Blank,
            },
            Entry {
                log_id: LogId::new(3, 3),
                payload: Payload::Blank,
            },
        ];
        let plan = log.plan_append(LogId::new(1, 1), &new).unwrap();
        assert_eq!(plan.truncate_from, Some(3));
        assert_eq!(plan.skip, 1);
        log.apply_plan(&plan, &new);
        assert_eq!(terms(&log), vec![1, 1, 3]);
    }

    #[test]
    fn stale_append_does_not_truncate_matching_suffix() {
        // A delayed AppendEntries carrying a prefix of what we already hold
        // must not delete the newer entries after it.
        let mut log = log_of(&[1, 1, 1, 1]);
        let old = vec![Entry {
            log_id: LogId::new(1, 2),
            payload: Payload::Blank,
        }];
        let plan = log.plan_append(LogId::new(1, 1), &old).unwrap();
        assert_eq!(plan.truncate_from, None);
        log.apply_plan(&plan, &old);
        assert_eq!(terms(&log), vec![1, 1, 1, 1]);
        assert_eq!(plan.last_matched, LogId::new(1, 2));
    }

    #[test]
    fn reads_respect_caps_and_compaction() {
        let mut log = log_of(&[1, 1, 2, 2, 3]);
        let (prev, e) = log.read(2, 2, usize::MAX).unwrap();
        assert_eq!(prev, LogId::new(1, 1));
        assert_eq!(e.len(), 2);
        // Byte cap still returns at least one entry.
        assert_eq!(log.read(2, 10, 1).unwrap().1.len(), 1);
        log.purge_upto(LogId::new(2, 3));
        assert_eq!(log.read(2, 10, 100), Err(ReadError::Compacted));
        // Reading from the very start after compaction needs the snapshot too.
        assert_eq!(log.read(1, 10, 100), Err(ReadError::Compacted));
        let (prev, e) = log.read(4, 10, usize::MAX).unwrap();
        assert_eq!(prev, LogId::new(2, 3));
        assert_eq!(e.len(), 2);
        // A follower behind the snapshot accepts entries it already covers.
        let entries: Vec<Entry> = log_of(&[1, 1, 2, 2, 3]).entries.into();
        let plan = log.plan_append(LogId::default(), &entries).unwrap();
        assert_eq!(plan.skip, 5);
    }
}
