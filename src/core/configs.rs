//! The configurations in a node's log (dissertation §4.1): a node acts on
//! the latest configuration entry in its log, committed or not, so when
//! a conflicting suffix is truncated it falls back to the one before; the
//! configuration at the compaction point travels in the snapshot as the
//! base.
//!
//! The log store actor (`log_store/mod.rs`) keeps one of these beside its
//! entries and reports the latest configuration with its last log id.

use super::types::{Entry, LogId, Membership, Payload};

/// Configuration entries in the log, in order, over the configuration in
/// force at the compaction point.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigLog {
    base: Membership,
    entries: Vec<(LogId, Membership)>,
}

impl ConfigLog {
    /// Configurations over `base`, the one in force at the compaction point.
    pub fn new(base: Membership) -> Self {
        ConfigLog {
            base,
            entries: Vec::new(),
        }
    }

    /// The configuration in force: the latest in the log.
    pub fn latest(&self) -> &Membership {
        self.entries.last().map_or(&self.base, |(_, m)| m)
    }

    /// The configuration in force at `index`: the latest entry at or before
    /// it, or the base.
    pub fn at(&self, index: u64) -> &Membership {
        self.entries
            .iter()
            .rev()
            .find(|(id, _)| id.index <= index)
            .map_or(&self.base, |(_, m)| m)
    }

    /// An entry was appended to the log.
    pub fn appended(&mut self, entry: &Entry) {
        if let Payload::Membership(m) = &entry.payload {
            self.entries.push((entry.log_id, (**m).clone()));
        }
    }

    /// The log lost its entries from `from` on.
    pub fn truncated(&mut self, from: u64) {
        self.entries.retain(|(id, _)| id.index < from);
    }

    /// The log was compacted up to `upto`, where `base` is in force (for
    /// a snapshot from the leader: the snapshot's configuration).
    pub fn compacted(&mut self, upto: u64, base: Membership) {
        self.base = base;
        self.entries.retain(|(id, _)| id.index > upto);
    }

    /// A snapshot that the log does not agree with replaced the whole log:
    /// its configuration is all there is.
    pub fn replaced(&mut self, base: Membership) {
        self.base = base;
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(index: u64, voters: &[u64]) -> Entry {
        Entry {
            log_id: LogId::new(1, index),
            payload: Payload::Membership(Box::new(Membership::new(voters.iter().copied()))),
        }
    }

    #[test]
    fn the_latest_configuration_rules_committed_or_not_and_truncation_reverts_it() {
        let mut configs = ConfigLog::new(Membership::new([1, 2, 3]));
        configs.appended(&config(5, &[1, 2, 3, 4]));
        configs.appended(&Entry {
            log_id: LogId::new(1, 6),
            payload: Payload::Blank,
        });
        configs.appended(&config(8, &[2, 3, 4]));
        assert_eq!(configs.latest(), &Membership::new([2, 3, 4]));
        assert_eq!(configs.at(7), &Membership::new([1, 2, 3, 4]));
        assert_eq!(configs.at(4), &Membership::new([1, 2, 3]));
        // A new leader's log differs from index 8 on: back to the entry at 5.
        configs.truncated(8);
        assert_eq!(configs.latest(), &Membership::new([1, 2, 3, 4]));
        configs.truncated(3);
        assert_eq!(configs.latest(), &Membership::new([1, 2, 3]));
    }

    #[test]
    fn compaction_keeps_the_configuration_in_force_as_the_base() {
        let mut configs = ConfigLog::new(Membership::new([1]));
        configs.appended(&config(2, &[1, 2]));
        configs.appended(&config(9, &[1, 2, 3]));
        let at_5 = configs.at(5).clone();
        assert_eq!(at_5, Membership::new([1, 2]));
        configs.compacted(5, at_5);
        assert_eq!(configs.at(3), &Membership::new([1, 2]));
        assert_eq!(configs.latest(), &Membership::new([1, 2, 3]));
        configs.truncated(6);
        assert_eq!(configs.latest(), &Membership::new([1, 2]), "the base stays");
        configs.replaced(Membership::new([7]));
        assert_eq!(configs.latest(), &Membership::new([7]));
    }
}
