//! Which forwarded writes a leader has already proposed in its term. The
//! network may deliver a forward twice; each copy proposed would get its
//! own answer, and the first answer back is the one the client hears. A
//! later copy's answer can contradict the first copy's outcome — a
//! session refusal ("unknown session", once the session was evicted) for
//! a write the first copy applied (simulator, seed 156) — so a leader
//! proposes each forward once and drops its copies.
//!
//! Bounded: forwards of the current term only (a forward names the term
//! it was sent to and is proposed only in it), at most [`REMEMBERED`] of
//! them. A copy delayed past that many later forwards is proposed again:
//! the session tag still keeps it from being applied twice.

use std::collections::{HashSet, VecDeque};

use super::types::NodeId;

/// Forwards remembered per term.
pub const REMEMBERED: usize = 16_384;

/// A forward as its sender names it: node, incarnation, request id.
pub type ForwardId = (NodeId, u64, u64);

/// The forwards proposed in one term.
#[derive(Debug, Default)]
pub struct SeenForwards {
    term: u64,
    set: HashSet<ForwardId>,
    order: VecDeque<ForwardId>,
}

impl SeenForwards {
    /// Whether `forward`, sent to the leader of `term`, is new (then it is
    /// remembered) rather than a copy of one already proposed.
    pub fn first_copy(&mut self, term: u64, forward: ForwardId) -> bool {
        if term != self.term {
            self.term = term;
            self.set.clear();
            self.order.clear();
        }
        if !self.set.insert(forward) {
            return false;
        }
        self.order.push_back(forward);
        if self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_recognized_in_its_term_only_and_memory_is_bounded() {
        let mut seen = SeenForwards::default();
        assert!(seen.first_copy(3, (2, 7, 1)));
        assert!(!seen.first_copy(3, (2, 7, 1)), "a network duplicate");
        assert!(
            seen.first_copy(3, (2, 8, 1)),
            "another incarnation's request 1"
        );
        assert!(seen.first_copy(4, (2, 7, 1)), "a new term starts afresh");
        for id in 2..(REMEMBERED as u64 + 10) {
            assert!(seen.first_copy(4, (2, 7, id)));
        }
        assert!(seen.set.len() <= REMEMBERED && seen.order.len() <= REMEMBERED);
        assert!(seen.first_copy(4, (2, 7, 1)), "forgotten, long ago");
    }
}
