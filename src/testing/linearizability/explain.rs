//! What a failed check reports: the longest linearizable prefix found and
//! the operations that could not follow it.

use std::fmt::Write as _;

use super::state::*;
use super::*;

impl<'a, M: Model> Search<'a, M> {
    pub(super) fn explain(&self, best: &Best<M::State>) -> String {
        let mut out = if self.cfg.pass == Pass::Relaxed {
            // The prefix may need timed-out operations to take effect more than once, so it
            // is no genuine linearization, and the path does not record them.
            format!(
                "not linearizable: at most {} of {} completed operations can be linearized, even \
                 letting timed-out operations take effect more than once.\nthe last {} of {} \
                 completed operations of the longest such prefix (timed-out ones not shown), \
                 ending in state {:?}:",
                best.linearized,
                self.done.len(),
                best.tail.len(),
                best.len,
                best.state
            )
        } else {
            format!(
                "not linearizable: at most {} of {} completed operations can be linearized.\nthe \
                 last {} of {} operations of the longest linearizable prefix, ending in state \
                 {:?}:",
                best.linearized,
                self.done.len(),
                best.tail.len(),
                best.len,
                best.state
            )
        };
        for &i in &best.tail {
            let _ = write!(out, "\n  {}", self.describe(i));
        }
        let _ = write!(
            out,
            "\nno extension of it linearizes this operation before it returned:\n  {}",
            self.describe(best.blocked)
        );
        out
    }

    pub(super) fn describe(&self, i: usize) -> String {
        let op = &self.history[i];
        let output = match &op.output {
            Some(o) => format!("{o:?}"),
            None => "?".to_string(),
        };
        let ret = match op.ret {
            Some(r) => r.to_string(),
            None => "never".to_string(),
        };
        format!(
            "#{i} client {}: {:?} -> {output} [{}, {ret}]",
            op.client, op.input, op.call
        )
    }
}
