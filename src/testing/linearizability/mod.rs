//! Linearizability checking of client-observed histories against a sequential model.
//!
//! The search is the Wing–Gong algorithm as refined by Lowe and used by Porcupine: repeatedly
//! pick an operation that may take effect next (nothing still unlinearized returned before it
//! was invoked), apply it to the model, and backtrack when no pick works. A cache of explored
//! (set of linearized operations, model state) pairs prunes the search, because the rest of the
//! search depends on nothing else.
//!
//! Differences from the textbook version, all made to keep realistic test histories cheap:
//!
//! * The linearized set of completed operations is cached compactly: how many were linearized
//!   in return-time order without gaps, plus the few linearized ahead of that point. A
//!   configuration where nothing is in flight is therefore keyed by little more than the model
//!   state, which gives the benefit of splitting the history at quiescent points for free.
//! * Operations with unknown outcome have no return event: they may be linearized any time
//!   after their invocation, or never, and the search succeeds once every completed operation
//!   is linearized. Since trailing ones can always be dropped, they are only linearized in
//!   "runs" right before a completed operation, and shorter runs are tried first: a timed-out
//!   operation is assumed to have taken effect only when an observed output needs it.
//! * Unknown-outcome operations the model declares interchangeable (see
//!   [`Model::interchangeable`]) are used in invocation order only, which reduces the choice
//!   among `k` of them from `2^k` subsets to `k + 1` prefixes. Of two configurations that
//!   differ only in the unknown-outcome operations used, one that used a subset of the other's
//!   makes exploring the other pointless.
//! * A completed read-only operation (see [`Model::is_read_only`]) is linearized as soon as it
//!   is legal, without branching, and an unknown-outcome operation that would not change the
//!   state is never linearized: in both cases the alternatives cannot do better.
//! * Which unknown-outcome operations explain a jump in the observed state is often ambiguous
//!   (a counter jumping by 3: one `Incr(3)`, or `Incr(1)` and `Incr(2)`; with unique amounts,
//!   two subsets can still have equal sums), and keeping every combination apart multiplies
//!   the search. So several passes run until one is conclusive. Quick passes keep only the
//!   first combination(s) reaching each state: a linearization they find is genuine, and they
//!   decide most correct histories. A relaxed pass lets unknown-outcome operations take effect
//!   more than once and forgets which were used: every real linearization is also a relaxed
//!   one, so its failure is genuine, and it refutes most incorrect histories. Only when these
//!   are inconclusive does the exact search run, which may need the whole budget. In
//!   particular, proving a history illegal when many operations with distinct effects timed out
//!   (a counter incremented by unique amounts) is exponential in how many are pending at once,
//!   and may end in [`CheckResult::Timeout`].

use std::fmt::Debug;

use std::time::{Duration, Instant};

/// A sequential specification.
pub trait Model {
    /// The model's state; hashed and compared to recognise configurations already explored.
    type State: Clone + Eq + std::hash::Hash + std::fmt::Debug;
    /// What a client asked the system to do.
    type Input: std::fmt::Debug;
    /// What the system answered.
    type Output: std::fmt::Debug;

    /// The state before any operation has taken effect.
    fn init(&self) -> Self::State;

    /// Applies `input` to `state`. `output` is None when the client never learned the outcome
    /// (timeout): then any output is acceptable. Returns the next state if the (input, output)
    /// pair is legal in `state`, else None.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Whether two unknown-outcome operations with inputs `a` and `b` are interchangeable, i.e.
    /// `step(s, a, None) == step(s, b, None)` for every state `s` (typically: `a == b`).
    ///
    /// Optional, but worth implementing when histories contain many timed-out operations: the
    /// checker then only considers linearizing interchangeable operations in invocation order,
    /// which turns a search over subsets of them into one over prefixes. The default, `false`,
    /// is always sound; returning `true` for operations that are not interchangeable is not.
    fn interchangeable(&self, a: &Self::Input, b: &Self::Input) -> bool {
        let _ = (a, b);
        false
    }

    /// Whether operations with this input never change the state, i.e. `step(s, input, o)` is
    /// `None` or `Some(s)` for every state `s` and output `o`.
    ///
    /// Optional, but worth implementing for models with reads: the checker then linearizes a
    /// completed read as soon as it is legal instead of also exploring orders that postpone it,
    /// which otherwise dominates the cost of proving a history illegal. The default, `false`,
    /// is always sound; returning `true` for an operation that can change the state is not.
    fn is_read_only(&self, input: &Self::Input) -> bool {
        let _ = input;
        false
    }
}

/// One client operation as observed by the client.
#[derive(Clone, Debug)]
pub struct Operation<I, O> {
    /// The client that issued the operation. Only shown in explanations: the order of
    /// operations comes from the timestamps alone.
    pub client: u64,
    /// What the client asked for.
    pub input: I,
    /// Invocation time (any monotonic unit, e.g. nanoseconds since test start).
    pub call: u64,
    /// Completion time; None when the outcome is unknown (timeout / indeterminate):
    /// such an operation may take effect at any point after `call`, or never.
    pub ret: Option<u64>,
    /// The observed output; None when unknown.
    pub output: Option<O>,
}

/// The verdict of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// The history is linearizable.
    Ok,
    /// The history is not linearizable; the string explains the longest linearizable prefix
    /// found and the operation that could not be placed after it.
    Illegal(String),
    /// The budget ran out before the search could decide either way.
    Timeout,
}

/// Checks whether `history` is linearizable with respect to `model`, giving up after `budget`.
///
/// Operations are compared by timestamps only: `a` precedes `b` iff `a.ret < b.call`, so equal
/// timestamps count as concurrent. An operation with `ret: None` may be linearized anywhere
/// after its `call`, or omitted; if it nevertheless has an `output`, that output must match
/// when it is linearized. An operation with `ret: Some(_)` but no `output` did take effect.
///
/// The search is exponential in the worst case, hence the budget. Correct histories are
/// usually fast even with hundreds of timed-out operations; proving a history illegal can take
/// long when many timed-out operations with distinct effects (say, increments by unique
/// amounts) are pending at once, and [`Model::interchangeable`] and [`Model::is_read_only`]
/// matter a lot for speed.
///
/// # Panics
///
/// If an operation returns before it is invoked (`ret < call`), since that is a bug in the
/// recording harness rather than in the system under test.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: Duration,
) -> CheckResult {
    let start = Instant::now();
    for (i, op) in history.iter().enumerate() {
        if let Some(ret) = op.ret {
            assert!(
                ret >= op.call,
                "operation #{i} returns at {ret}, before its invocation at {}",
                op.call
            );
        }
    }
    Search::new(model, history, start, budget).run()
}

/// A replicated counter: `Incr(by)` returns the value after the increment, `Read` returns the value.
pub struct CounterModel;

/// Operations on [`CounterModel`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CounterInput {
    /// Adds the amount and returns the new value.
    Incr(u64),
    /// Returns the current value.
    Read,
}

impl Model for CounterModel {
    type State = u64;
    type Input = CounterInput;
    type Output = u64;

    fn init(&self) -> u64 {
        0
    }

    fn step(&self, state: &u64, input: &CounterInput, output: Option<&u64>) -> Option<u64> {
        let next = match input {
            // Overflow is treated as illegal rather than wrapping: a test counter reaching
            // u64::MAX means corrupted outputs, and wrapping would let them pass.
            CounterInput::Incr(by) => state.checked_add(*by)?,
            CounterInput::Read => *state,
        };
        match output {
            Some(&out) if out != next => None,
            _ => Some(next),
        }
    }

    fn interchangeable(&self, a: &CounterInput, b: &CounterInput) -> bool {
        a == b
    }

    fn is_read_only(&self, input: &CounterInput) -> bool {
        *input == CounterInput::Read
    }
}

mod explain;
mod search;
mod state;
#[cfg(test)]
mod tests;

use search::Search;
