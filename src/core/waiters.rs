//! Matching applied entries to the clients waiting for them. A client
//! waits for the position (term, index) its leader appended its write at;
//! the entry applied at that index answers it only if it is the same
//! entry — same term. An entry of another term there means a later leader
//! overwrote the write: whether it commits elsewhere (forwarded, retried)
//! is unknown here, so the client hears "indeterminate", never another
//! command's result.
//!
//! The applier actor (`applier/mod.rs`) keeps one of these; `W` is what it
//! answers a client through.

use std::collections::BTreeMap;

use super::types::LogId;

/// Clients waiting for their entries to be applied, by index.
#[derive(Debug)]
pub struct Waiters<W> {
    by_index: BTreeMap<u64, (u64, W)>,
}

impl<W> Default for Waiters<W> {
    fn default() -> Self {
        Waiters {
            by_index: BTreeMap::new(),
        }
    }
}

/// The waiter for an applied entry, and whether the entry is its own.
#[derive(Debug, PartialEq, Eq)]
pub enum Matched<W> {
    /// The applied entry is the client's: answer with its result.
    Answer(W),
    /// Another leader's entry took the position: the outcome is unknown.
    Overwritten(W),
}

impl<W> Waiters<W> {
    /// Registers a waiter for the entry at `log_id`, given what has been
    /// applied. `Err(w)`: that index is applied already, so the entry
    /// there cannot be matched any more (answer indeterminate). `Ok` with
    /// a displaced waiter: an older registration at the same index, which
    /// lost its entry (answer indeterminate).
    pub fn register(
        &mut self,
        log_id: LogId,
        waiter: W,
        last_applied: u64,
    ) -> Result<Option<W>, W> {
        if log_id.index <= last_applied {
            return Err(waiter);
        }
        Ok(self
            .by_index
            .insert(log_id.index, (log_id.term, waiter))
            .map(|(_, w)| w))
    }

    /// Whether a client waits for the entry at `index` (on a follower,
    /// nobody does).
    pub fn waits(&self, index: u64) -> bool {
        self.by_index.contains_key(&index)
    }

    /// The entry at `log_id` was applied.
    pub fn applied(&mut self, log_id: LogId) -> Option<Matched<W>> {
        let (term, waiter) = self.by_index.remove(&log_id.index)?;
        Some(if term == log_id.term {
            Matched::Answer(waiter)
        } else {
            Matched::Overwritten(waiter)
        })
    }

    /// Removes the waiters up to `index` (entries applied without a
    /// result for a client: blanks, configurations, a snapshot).
    pub fn settle_upto(&mut self, index: u64) -> Vec<W> {
        // Popping allocates nothing when none are left behind (the usual
        // case, once per applied batch); `split_off` always did.
        let mut settled = Vec::new();
        while let Some(entry) = self.by_index.first_entry() {
            if *entry.key() > index {
                break;
            }
            settled.push(entry.remove().1);
        }
        settled
    }

    /// Removes every waiter (the node stops, or steps down).
    pub fn drain(&mut self) -> Vec<W> {
        std::mem::take(&mut self.by_index)
            .into_values()
            .map(|(_, w)| w)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_answered_only_by_its_own_entry() {
        let mut w = Waiters::default();
        assert_eq!(w.register(LogId::new(2, 10), "a", 5), Ok(None));
        assert_eq!(w.register(LogId::new(2, 11), "b", 5), Ok(None));
        assert_eq!(w.applied(LogId::new(2, 10)), Some(Matched::Answer("a")));
        // Index 11 was overwritten by the term-3 leader's entry.
        assert_eq!(
            w.applied(LogId::new(3, 11)),
            Some(Matched::Overwritten("b"))
        );
        assert_eq!(w.applied(LogId::new(3, 12)), None, "nobody waits there");
    }

    #[test]
    fn a_position_already_applied_or_taken_again_is_indeterminate() {
        let mut w = Waiters::default();
        assert_eq!(w.register(LogId::new(2, 5), "late", 5), Err("late"));
        assert_eq!(w.register(LogId::new(2, 6), "old", 5), Ok(None));
        // A later leader appended at the same index for another client.
        assert_eq!(w.register(LogId::new(3, 6), "new", 5), Ok(Some("old")));
        assert_eq!(w.applied(LogId::new(3, 6)), Some(Matched::Answer("new")));
    }

    #[test]
    fn waiters_settle_up_to_an_index_or_all_at_once() {
        let mut w = Waiters::default();
        for i in 1..=5 {
            w.register(LogId::new(1, i), i, 0).unwrap();
        }
        assert_eq!(w.settle_upto(3), vec![1, 2, 3]);
        assert_eq!(w.drain(), vec![4, 5]);
        assert!(w.drain().is_empty());
    }
}
