//! Checks on messages from the network before any of them is acted on.
//! A message that breaks one of these rules cannot come from a correct
//! leader of the term it claims: it is refused with the rule it broke,
//! and the node carries on.

use std::fmt;

use super::log::ConflictHint;
use super::types::{Entry, LogId, Membership};

/// The rule a message broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn refuse(why: String) -> Result<(), Invalid> {
    Err(Invalid(why))
}

/// A log position is sound: term 0 only before the first entry.
fn position(what: &str, id: LogId, term: u64) -> Result<(), Invalid> {
    if id.term > term {
        return refuse(format!(
            "{what} {id:?} has a term above the message's term {term}"
        ));
    }
    if (id.index == 0) != (id.term == 0) {
        return refuse(format!("{what} {id:?}: only index 0 has term 0"));
    }
    Ok(())
}

/// AppendEntries: `prev` sound; entries contiguous from `prev.index + 1`;
/// their terms non-decreasing, at least `prev.term` and at most `term`.
pub fn append_entries(term: u64, prev: LogId, entries: &[Entry]) -> Result<(), Invalid> {
    position("prev", prev, term)?;
    let mut expected = prev;
    for e in entries {
        let Some(next) = expected.index.checked_add(1) else {
            return refuse("entry index overflows".into());
        };
        if e.log_id.index != next {
            return refuse(format!(
                "entries are not contiguous: {:?} follows {expected:?}",
                e.log_id
            ));
        }
        if e.log_id.term < expected.term {
            return refuse(format!(
                "entry terms go down: {:?} follows {expected:?}",
                e.log_id
            ));
        }
        position("entry", e.log_id, term)?;
        expected = e.log_id;
    }
    Ok(())
}

/// Quiesce: `last` sound, and the commit index it announces is exactly
/// `last` (a leader quiesces only with its whole log committed).
pub fn quiesce(term: u64, last: LogId, leader_commit: u64) -> Result<(), Invalid> {
    position("last", last, term)?;
    if leader_commit != last.index {
        return refuse(format!(
            "quiesce announces commit index {leader_commit} for a log ending at {last:?}"
        ));
    }
    Ok(())
}

/// A snapshot as announced in InstallSnapshot.
pub struct SnapshotChunk<'a> {
    /// The last entry the snapshot covers.
    pub last_included: LogId,
    /// The configuration at that entry.
    pub membership: &'a Membership,
    /// The snapshot's size in bytes.
    pub size: u64,
    /// Where this chunk starts.
    pub offset: u64,
    /// This chunk's length.
    pub len: usize,
}

/// InstallSnapshot: the snapshot's last entry sound, its configuration
/// has a voter, and the chunk lies within the snapshot.
pub fn install_snapshot(term: u64, chunk: &SnapshotChunk<'_>) -> Result<(), Invalid> {
    position("snapshot", chunk.last_included, term)?;
    if chunk.last_included.index == 0 {
        return refuse("a snapshot must cover at least one entry".into());
    }
    if chunk.membership.voters.is_empty() {
        return refuse("the snapshot's configuration has no voter".into());
    }
    let end = chunk.offset.checked_add(chunk.len as u64);
    if end.is_none_or(|end| end > chunk.size) {
        return refuse(format!(
            "chunk at {} of {} bytes runs past the snapshot's {} bytes",
            chunk.offset, chunk.len, chunk.size
        ));
    }
    Ok(())
}

/// An AppendEntries answer, checked against what this leader can have
/// sent (`last_index`, the end of its log, in its `term`): a success
/// acknowledges no entry past it nor of a later term, and a refusal names
/// a `prev_index` within it and a hint that does not point past it.
/// Responses are network input like requests: a peer that is confused,
/// foreign or hostile must not move the leader's counting.
pub fn append_response(
    term: u64,
    last_index: u64,
    result: &Result<LogId, ConflictHint>,
    prev_index: u64,
) -> Result<(), Invalid> {
    if prev_index > last_index {
        return refuse(format!(
            "answers an AppendEntries after index {prev_index}, past this leader's last index {last_index}"
        ));
    }
    match result {
        Ok(matched) => {
            position("acknowledged entry", *matched, term)?;
            if matched.index > last_index {
                return refuse(format!(
                    "acknowledges {matched:?}, past this leader's last index {last_index}"
                ));
            }
        }
        Err(hint) => {
            if hint.conflict_term.is_some_and(|t| t > term) {
                return refuse(format!(
                    "the conflicting term {:?} is above the message's term {term}",
                    hint.conflict_term
                ));
            }
            if hint.first_index > prev_index.saturating_add(1) {
                return refuse(format!(
                    "the hint's first index {} is past the refused position {prev_index}",
                    hint.first_index
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::Payload;

    fn entries(ids: &[(u64, u64)]) -> Vec<Entry> {
        ids.iter()
            .map(|(t, i)| Entry {
                log_id: LogId::new(*t, *i),
                payload: Payload::Blank,
            })
            .collect()
    }

    #[test]
    fn quiesce_rules() {
        assert!(quiesce(3, LogId::new(2, 7), 7).is_ok());
        assert!(
            quiesce(3, LogId::new(4, 7), 7).is_err(),
            "a term above the message's"
        );
        assert!(
            quiesce(3, LogId::new(2, 7), 6).is_err(),
            "not all committed"
        );
        assert!(
            quiesce(3, LogId::new(2, 7), 8).is_err(),
            "committed beyond the log"
        );
    }

    #[test]
    fn append_entries_rules() {
        let p = LogId::new(1, 1);
        assert!(append_entries(2, p, &entries(&[(1, 2), (2, 3)])).is_ok());
        assert!(append_entries(2, p, &[]).is_ok());
        assert!(append_entries(2, LogId::default(), &entries(&[(1, 1)])).is_ok());
        // A gap, a repeat, a step back in term, a term above the message's.
        assert!(append_entries(2, p, &entries(&[(2, 5)])).is_err());
        assert!(append_entries(2, p, &entries(&[(2, 2), (2, 2)])).is_err());
        assert!(append_entries(2, p, &entries(&[(2, 2), (1, 3)])).is_err());
        assert!(append_entries(2, LogId::new(2, 4), &entries(&[(1, 5)])).is_err());
        assert!(append_entries(2, p, &entries(&[(3, 2)])).is_err());
        assert!(append_entries(2, LogId::new(3, 1), &[]).is_err());
        // Term 0 belongs to index 0 only; indices do not wrap.
        assert!(append_entries(2, LogId::new(0, 4), &[]).is_err());
        assert!(append_entries(2, LogId::new(2, u64::MAX), &entries(&[(2, 0)])).is_err());
    }

    #[test]
    fn install_snapshot_rules() {
        let voters = Membership::new([1]);
        let none = Membership::default();
        let chunk = |t, i, offset, len, membership| SnapshotChunk {
            last_included: LogId::new(t, i),
            membership,
            size: 100,
            offset,
            len,
        };
        assert!(install_snapshot(2, &chunk(2, 10, 0, 100, &voters)).is_ok());
        assert!(install_snapshot(2, &chunk(2, 10, 50, 50, &voters)).is_ok());
        assert!(install_snapshot(2, &chunk(3, 10, 0, 10, &voters)).is_err());
        assert!(install_snapshot(2, &chunk(0, 0, 0, 10, &voters)).is_err());
        assert!(install_snapshot(2, &chunk(2, 10, 90, 20, &voters)).is_err());
        assert!(install_snapshot(2, &chunk(2, 10, u64::MAX, 1, &voters)).is_err());
        assert!(install_snapshot(2, &chunk(2, 10, 0, 10, &none)).is_err());
    }

    #[test]
    fn append_response_rules() {
        let hint = |conflict_term, first_index| {
            Err(ConflictHint {
                conflict_term,
                first_index,
            })
        };
        assert!(append_response(3, 10, &Ok(LogId::new(3, 10)), 9).is_ok());
        assert!(append_response(3, 10, &Ok(LogId::default()), 0).is_ok());
        assert!(append_response(3, 10, &hint(Some(2), 4), 9).is_ok());
        assert!(append_response(3, 10, &hint(None, 6), 9).is_ok());
        // Past the leader's log, a later term, a hint pointing ahead.
        assert!(append_response(3, 10, &Ok(LogId::new(3, 11)), 9).is_err());
        assert!(append_response(3, 10, &Ok(LogId::new(4, 10)), 9).is_err());
        assert!(append_response(3, 10, &hint(None, 1), u64::MAX).is_err());
        assert!(append_response(3, 10, &hint(Some(4), 1), 9).is_err());
        assert!(append_response(3, 10, &hint(None, 12), 9).is_err());
        assert!(append_response(3, u64::MAX, &hint(None, u64::MAX), u64::MAX).is_ok());
    }
}
