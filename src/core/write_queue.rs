//! The log store's write queue: every change to durable state — truncate,
//! append, hard state, snapshot point (purge) — in the order it was
//! decided. Adjacent truncates, appends and hard-state updates merge into
//! one [`WriteBatch`] (one fsync for all of them: group commit); a purge
//! is a barrier that nothing crosses, so storage always sees the same
//! sequence of states the in-memory log went through.

use crate::core::types::{Entry, HardState, LogId, Membership};
use crate::storage::{LogStorage, StorageError, WriteBatch};

/// One storage call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WriteOp {
    /// Truncate, append and hard state, applied atomically.
    Write(WriteBatch),
    /// Entries up to `upto` are covered by a durable snapshot.
    Purge { upto: LogId, membership: Membership },
}

/// Operations decided but not yet handed to the writer.
#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    ops: Vec<WriteOp>,
}

impl WriteQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Takes everything queued, in order.
    pub(crate) fn take(&mut self) -> Vec<WriteOp> {
        std::mem::take(&mut self.ops)
    }

    /// The batch at the tail of the queue, started if the tail is a purge.
    fn tail_batch(&mut self) -> &mut WriteBatch {
        if !matches!(self.ops.last(), Some(WriteOp::Write(_))) {
            self.ops.push(WriteOp::Write(WriteBatch::default()));
        }
        match self.ops.last_mut() {
            Some(WriteOp::Write(b)) => b,
            _ => unreachable!("a write batch was just pushed"),
        }
    }

    /// Deletes `from` and everything after it.
    pub(crate) fn truncate(&mut self, from: u64) {
        let batch = self.tail_batch();
        // Entries of this batch follow the log as it stands after its own
        // truncation, so the first of them is where that log ends + 1.
        let first_queued = batch.entries.first().map(|e| e.log_id.index);
        batch.entries.retain(|e| e.log_id.index < from);
        if first_queued.is_none_or(|first| from < first) {
            batch.truncate_from = Some(batch.truncate_from.map_or(from, |t| t.min(from)));
        }
    }

    pub(crate) fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        self.tail_batch().entries.extend(entries);
    }

    pub(crate) fn hard_state(&mut self, hard_state: HardState) {
        self.tail_batch().hard_state = Some(hard_state);
    }

    pub(crate) fn identity(&mut self, identity: crate::core::types::NodeIdentity) {
        self.tail_batch().identity = Some(identity);
    }

    pub(crate) fn founders(
        &mut self,
        founders: std::collections::BTreeMap<crate::core::types::NodeId, u64>,
    ) {
        self.tail_batch().founders = Some(founders);
    }

    pub(crate) fn purge(&mut self, upto: LogId, membership: Membership) {
        self.ops.push(WriteOp::Purge { upto, membership });
    }
}

/// Carries out `ops` on `storage`, one call each, in order; stops at the
/// first failure.
pub(crate) fn execute(storage: &mut dyn LogStorage, ops: Vec<WriteOp>) -> Result<(), StorageError> {
    for op in ops {
        match op {
            WriteOp::Write(batch) if batch.is_empty() => {}
            WriteOp::Write(batch) => storage.write(batch)?,
            WriteOp::Purge { upto, membership } => storage.purge(upto, &membership)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The queue against a model: a log to which every operation is
    //! applied the moment it is issued. Whatever the interleaving of
    //! operations and hand-offs to the writer, and wherever a crash cuts
    //! the writer short, storage must hold a state the model went through
    //! (a prefix of the issued operations, never a reordering), and after
    //! a clean flush exactly the model's state.

    use super::*;
    use crate::core::types::Payload;
    use crate::storage::{InitialState, MemStorage};
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Issue {
        Append(u64),
        Truncate(u64),
        HardState(u64),
        Purge(u64),
        Flush,
    }

    fn arb_issue() -> impl Strategy<Value = Issue> {
        prop_oneof![
            4 => (1..4u64).prop_map(Issue::Append),
            2 => (0..12u64).prop_map(Issue::Truncate),
            1 => (1..5u64).prop_map(Issue::HardState),
            2 => (0..20u64).prop_map(Issue::Purge),
            2 => Just(Issue::Flush),
        ]
    }

    /// The model: the log as the protocol sees it.
    #[derive(Clone, Debug, Default, PartialEq)]
    struct Model {
        snapshot: LogId,
        entries: Vec<Entry>,
        hard_state: HardState,
    }

    impl Model {
        fn last(&self) -> u64 {
            self.entries
                .last()
                .map_or(self.snapshot.index, |e| e.log_id.index)
        }
        fn of(s: &InitialState) -> Model {
            Model {
                snapshot: s.snapshot,
                entries: s.entries.clone(),
                hard_state: s.hard_state,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn storage_passes_only_through_states_the_log_went_through(
            issues in proptest::collection::vec(arb_issue(), 1..60),
            crash_after in proptest::option::of(0usize..40),
        ) {
            let mut queue = WriteQueue::default();
            let mut model = Model::default();
            let mut history = vec![model.clone()];
            let mut jobs: Vec<Vec<WriteOp>> = Vec::new();
            let mut term = 1;
            for issue in issues {
                match issue {
                    Issue::Append(n) => {
                        let start = model.last() + 1;
                        let new: Vec<Entry> = (start..start + n)
                            .map(|i| Entry { log_id: LogId::new(term, i), payload: Payload::Blank })
                            .collect();
                        model.entries.extend(new.iter().cloned());
                        queue.append(new);
                    }
                    Issue::Truncate(from) => {
                        // Never into the snapshot: the log store refuses that.
                        let from = from.max(model.snapshot.index + 1);
                        model.entries.retain(|e| e.log_id.index < from);
                        queue.truncate(from);
                        term += 1;
                    }
                    Issue::HardState(t) => {
                        model.hard_state = HardState { term: t, voted_for: None };
                        queue.hard_state(model.hard_state);
                    }
                    Issue::Purge(upto) => {
                        if upto <= model.snapshot.index {
                            continue;
                        }
                        // Beyond the log is allowed: an installed snapshot.
                        let term_at = model.entries.iter().find(|e| e.log_id.index == upto)
                            .map_or(term, |e| e.log_id.term);
                        let point = LogId::new(term_at, upto);
                        if upto > model.last() {
                            model.entries.clear();
                        } else {
                            model.entries.retain(|e| e.log_id.index > upto);
                        }
                        model.snapshot = point;
                        queue.purge(point, Membership::default());
                    }
                    Issue::Flush => jobs.push(queue.take()),
                }
                history.push(model.clone());
            }
            jobs.push(queue.take());

            let mut storage = MemStorage::new();
            let mut seen = 0;
            let mut executed = 0;
            let mut crashed = false;
            'jobs: for job in jobs {
                for op in job {
                    if crash_after == Some(executed) {
                        crashed = true;
                        break 'jobs;
                    }
                    execute(&mut storage, vec![op]).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    executed += 1;
                    let state = Model::of(&storage.contents());
                    match history[seen..].iter().position(|m| *m == state) {
                        Some(k) => seen += k,
                        None => prop_assert!(false, "storage reached a state the log never had: {state:?}"),
                    }
                }
            }
            if !crashed {
                prop_assert_eq!(Model::of(&storage.contents()), model);
            }
        }
    }
}
