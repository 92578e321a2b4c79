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
//!   [`Model::interchangeable`](crate::testing::linearizability::Model::interchangeable)) are used in invocation order only, which reduces the choice
//!   among `k` of them from `2^k` subsets to `k + 1` prefixes. Of two configurations that
//!   differ only in the unknown-outcome operations used, one that used a subset of the other's
//!   makes exploring the other pointless.
//! * A completed read-only operation (see [`Model::is_read_only`](crate::testing::linearizability::Model::is_read_only)) is linearized as soon as it
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
//!   and may end in [`CheckResult::Timeout`](crate::testing::linearizability::CheckResult::Timeout).

use std::collections::hash_map::{Entry, HashMap};
use std::fmt::{Debug, Write as _};
use std::hash::{BuildHasherDefault, Hasher};
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

/// One move of the search: linearize the unknown-outcome operations `run` (positions in
/// `Search::unknown`) in order, then the completed operation `done` (invocation-order index).
struct Step {
    run: Vec<u32>,
    /// The run's length, which the relaxed pass tracks without the run itself.
    run_len: u32,
    done: u32,
}

type FxBuild = BuildHasherDefault<FxHasher>;

/// One node of the depth-first search.
struct Level<S> {
    state: S,
    /// Rank, in return order, of the earliest-returning completed operation not linearized yet.
    /// Everything returning earlier is linearized, and nothing invoked after this one returned
    /// may be linearized before it.
    frontier: u32,
    /// Index, in invocation order, of the first completed operation not linearized yet; the
    /// candidate scan starts here instead of at the beginning of the history.
    first_call: u32,
    /// Return ranks above `frontier` that are already linearized, sorted. Stays small because
    /// an operation can only overtake the frontier if it overlaps it.
    extras: Vec<u32>,
    /// The move that produced this node, undone when leaving it.
    via: Option<Step>,
    /// Completed operations that may be linearized next, by invocation-order index.
    ready: Vec<u32>,
    /// Moves still to try, with the states they lead to, in reverse order of preference so
    /// that the next one is popped off the end.
    cands: Vec<(Step, S)>,
    /// The longest runs of unknown-outcome operations built so far, with the states they reach.
    /// Runs one longer are only built once every move with the current length has failed.
    layer: Vec<(S, Vec<u32>)>,
    /// The length of the runs in `layer` (which the relaxed pass leaves empty).
    run_len: u32,
    /// How many unknown-outcome operations the path to this node linearized.
    used: u32,
    /// Every state reached by a run so far, with the sets of operations (sorted positions)
    /// that reached it.
    reached: HashMap<S, Vec<Vec<u32>>, FxBuild>,
}

impl<S> Level<S> {
    fn new(state: S, frontier: u32, first_call: u32, extras: Vec<u32>, via: Option<Step>) -> Self {
        Level {
            state,
            frontier,
            first_call,
            extras,
            via,
            ready: Vec::new(),
            cands: Vec::new(),
            layer: Vec::new(),
            run_len: 0,
            used: 0,
            reached: HashMap::default(),
        }
    }
}

/// The rustc "Fx" hash with a final mix. The search hashes many short integer keys, for which
/// std's DoS-resistant SipHash is several times slower and buys nothing.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut tail = [0u8; 8];
            tail[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(tail) ^ ((rest.len() as u64) << 56));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        // Fx alone leaves the high bits, which hashbrown uses for its control bytes, poorly
        // mixed for small integers; a splitmix64 finaliser fixes that.
        let mut z = self.hash;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The kinds of search pass; see [`Search::run`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pass {
    /// Explores each (completed set, state) with only the first few combinations of
    /// unknown-outcome operations that reached it. A linearization it finds is genuine.
    Quick,
    /// Lets unknown-outcome operations take effect any number of times, in runs no longer than
    /// the number of them invoked so far, and never tracks which were used. This collapses the
    /// combinations, and a failure is genuine, since every real linearization is also a relaxed
    /// one.
    Relaxed,
    /// The exact search.
    Complete,
}

/// How one search pass runs. A pass that hits a limit can no longer prove a history illegal.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct PassConfig {
    pass: Pass,
    /// How many unknown-outcome operations may be linearized in a row.
    max_run: u32,
    /// In the quick pass, how many mutually incomparable sets of unknown-outcome operations
    /// are explored per (completed set, state), and kept per state reached by runs.
    variants: usize,
    /// How many states runs may reach from one node.
    max_reached: usize,
    /// After how many model steps per history operation the pass gives up.
    work_per_op: u64,
}

const UNLIMITED: PassConfig = PassConfig {
    pass: Pass::Complete,
    max_run: u32::MAX,
    variants: usize::MAX,
    max_reached: usize::MAX,
    work_per_op: u64::MAX,
};

/// Finds a linearization of most correct histories fast: a few hundred model steps per
/// operation suffice even with hundreds of timed-out operations, while failing can take a
/// hundred times more, which the cap avoids wasting on incorrect histories.
const QUICK: PassConfig = PassConfig {
    pass: Pass::Quick,
    variants: 1,
    work_per_op: 2000,
    ..UNLIMITED
};

/// Refutes most incorrect histories fast. When unknown-outcome operations have distinct
/// effects (a counter incremented by unique amounts), reuse makes the states reachable from a
/// node grow combinatorially; the pass then stops at once, as it can no longer decide.
const RELAXED: PassConfig = PassConfig {
    pass: Pass::Relaxed,
    max_reached: 4096,
    ..UNLIMITED
};

/// For operations with distinct effects, different sets of them can coincide in effect (with
/// unique amounts, two subsets can still have equal sums), and keeping only the first set
/// that explains a state may leave the wrong operations for later. Keeping several sets is
/// affordable if runs are short, which they are when a timed-out operation that took effect
/// is observed soon after.
const QUICK_SHORT_RUNS: PassConfig = PassConfig {
    pass: Pass::Quick,
    max_run: 2,
    variants: 8,
    ..UNLIMITED
};

/// [`QUICK`] again, without a work cap, if that is what stopped it.
const QUICK_UNCAPPED: PassConfig = PassConfig {
    pass: Pass::Quick,
    variants: 1,
    ..UNLIMITED
};

const COMPLETE: PassConfig = UNLIMITED;

/// How many model steps pass between clock reads.
const CLOCK_INTERVAL: u64 = 1024;

/// How many operations of the longest linearizable prefix an explanation shows.
const SHOWN: usize = 10;

/// The deepest configuration reached, kept for the explanation of an illegal history.
struct Best<S> {
    /// Completed operations linearized.
    linearized: usize,
    /// Length of the prefix, including unknown-outcome operations.
    len: usize,
    /// The last [`SHOWN`] operations of the prefix (history indices).
    tail: Vec<usize>,
    state: S,
    /// The earliest-returning completed operation the prefix lacks.
    blocked: usize,
}

/// The result of one search pass.
enum Outcome<S> {
    Linearizable,
    Illegal(Best<S>),
    Timeout,
    /// The pass stopped early: it reached its work cap, or could no longer be conclusive.
    Abandoned,
}

/// Explored configurations: for each (linearized completed operations, state), the sets of
/// linearized unknown-outcome operations (bitsets) it was explored with. The completed part is
/// the frontier rank followed by the extras of [`Level`].
type Cache<S> = HashMap<(Box<[u32]>, S), Vec<Box<[u32]>>, FxBuild>;

/// Whether bitset `a` is a subset of bitset `b`.
fn bits_subset(a: &[u32], b: &[u32]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

/// Whether sorted set `a` is a subset of sorted set `b`.
fn sorted_subset(a: &[u32], b: &[u32]) -> bool {
    let mut b = b.iter();
    a.iter().all(|x| b.by_ref().any(|y| y == x))
}

struct Search<'a, M: Model> {
    model: &'a M,
    history: &'a [Operation<M::Input, M::Output>],
    /// Completed operations (history indices) in invocation order.
    done: Vec<usize>,
    done_call: Vec<u64>,
    /// Per completed operation (invocation order): [`Model::is_read_only`].
    done_read_only: Vec<bool>,
    /// Rank of each completed operation (invocation order) in return order.
    done_rank: Vec<u32>,
    /// Return time of each return rank.
    rank_ret: Vec<u64>,
    /// Invocation-order index of each return rank.
    rank_op: Vec<u32>,
    /// Unknown-outcome operations (history indices), grouped by class and in invocation order
    /// within a class; classes are ordered by their first invocation.
    unknown: Vec<usize>,
    unknown_call: Vec<u64>,
    unknown_class: Vec<u32>,
    /// Class `c` is `unknown[class_start[c]..class_start[c + 1]]`.
    class_start: Vec<u32>,
    /// Per completed operation (invocation order): linearized on the current search path.
    lin: Vec<bool>,
    /// Per class: how many of its operations are linearized on the current search path. Only
    /// the next one is ever a candidate, which is sound because they are interchangeable and a
    /// linearization using a later one can use an earlier one instead.
    taken: Vec<u32>,
    /// Per unknown operation: linearized on the current search path.
    unknown_bits: Vec<u32>,
    /// The current search path, as history indices.
    path: Vec<usize>,
    cache: Cache<M::State>,
    /// The current pass.
    cfg: PassConfig,
    /// Whether the current pass hit a limit, which makes its failure inconclusive.
    limited: bool,
    /// Per class, zero between uses: counts the class's operations in a run.
    scratch: Vec<u32>,
    start: Instant,
    budget: Duration,
    /// Model steps taken so far, over all passes.
    work: u64,
    /// The value of `work` at which the current pass gives up.
    work_limit: u64,
    timed_out: bool,
}

impl<'a, M: Model> Search<'a, M> {
    fn new(
        model: &'a M,
        history: &'a [Operation<M::Input, M::Output>],
        start: Instant,
        budget: Duration,
    ) -> Self {
        let mut done: Vec<usize> = (0..history.len())
            .filter(|&i| history[i].ret.is_some())
            .collect();
        done.sort_by_key(|&i| (history[i].call, history[i].ret, i));
        let done_call = done.iter().map(|&i| history[i].call).collect();
        let done_read_only = done
            .iter()
            .map(|&i| model.is_read_only(&history[i].input))
            .collect();
        let mut by_ret: Vec<u32> = (0..done.len() as u32).collect();
        by_ret.sort_by_key(|&d| (history[done[d as usize]].ret, d));
        let mut done_rank = vec![0; done.len()];
        for (rank, &d) in by_ret.iter().enumerate() {
            done_rank[d as usize] = rank as u32;
        }
        let rank_ret = by_ret
            .iter()
            .map(|&d| history[done[d as usize]].ret.unwrap())
            .collect();

        let mut pending: Vec<usize> = (0..history.len())
            .filter(|&i| history[i].ret.is_none())
            .collect();
        pending.sort_by_key(|&i| (history[i].call, i));
        // Operations with a known output are never grouped: the symmetry argument needs
        // identical behaviour in every state, and differing outputs break it.
        let mut classes: Vec<Vec<usize>> = Vec::new();
        for &i in &pending {
            let op = &history[i];
            let class = if op.output.is_none() {
                classes.iter_mut().find(|c| {
                    let rep = &history[c[0]];
                    rep.output.is_none() && model.interchangeable(&rep.input, &op.input)
                })
            } else {
                None
            };
            match class {
                Some(c) => c.push(i),
                None => classes.push(vec![i]),
            }
        }
        // `pending` is in invocation order, so the classes are ordered by first invocation and
        // each class is in invocation order.
        let mut class_start = vec![0u32];
        let mut unknown = Vec::with_capacity(pending.len());
        let mut unknown_class = Vec::with_capacity(pending.len());
        for (c, members) in classes.iter().enumerate() {
            unknown.extend_from_slice(members);
            unknown_class.extend(members.iter().map(|_| c as u32));
            class_start.push(unknown.len() as u32);
        }
        let unknown_call = unknown.iter().map(|&i| history[i].call).collect();

        Search {
            model,
            history,
            lin: vec![false; done.len()],
            done,
            done_call,
            done_read_only,
            done_rank,
            rank_ret,
            rank_op: by_ret,
            taken: vec![0; classes.len()],
            scratch: vec![0; classes.len()],
            unknown_bits: vec![0; pending.len().div_ceil(32)],
            path: Vec::new(),
            unknown,
            unknown_call,
            unknown_class,
            class_start,
            cache: Cache::default(),
            cfg: COMPLETE,
            limited: false,
            start,
            budget,
            work: 0,
            work_limit: u64::MAX,
            timed_out: false,
        }
    }

    /// Runs the search passes until one is conclusive.
    ///
    /// Without unknown-outcome operations only the complete pass runs, as there are no
    /// combinations to collapse. Otherwise the passes try cheap, one-sided searches first; see
    /// the `PassConfig` constants for what each is good at.
    fn run(self) -> CheckResult {
        if self.unknown.is_empty() {
            self.run_passes(&[COMPLETE])
        } else {
            self.run_passes(&[QUICK, RELAXED, QUICK_SHORT_RUNS, QUICK_UNCAPPED, COMPLETE])
        }
    }

    /// Runs `passes` in order until one is conclusive; the last one must be [`COMPLETE`].
    fn run_passes(mut self, passes: &[PassConfig]) -> CheckResult {
        if self.done.is_empty() {
            return CheckResult::Ok;
        }
        let mut quick_finished = false;
        for &cfg in passes {
            if cfg == QUICK_UNCAPPED && quick_finished {
                continue;
            }
            let outcome = self.search(cfg);
            quick_finished |= cfg == QUICK && !matches!(outcome, Outcome::Abandoned);
            if let Some(verdict) = self.verdict(outcome) {
                return verdict;
            }
        }
        unreachable!("the complete pass is conclusive")
    }

    /// The verdict implied by the outcome of the pass just run, if it is conclusive.
    fn verdict(&self, outcome: Outcome<M::State>) -> Option<CheckResult> {
        match outcome {
            Outcome::Timeout => Some(CheckResult::Timeout),
            Outcome::Linearizable if self.cfg.pass != Pass::Relaxed => Some(CheckResult::Ok),
            Outcome::Illegal(best) if !self.limited => {
                Some(CheckResult::Illegal(self.explain(&best)))
            }
            _ => None,
        }
    }

    /// Counts one model step and reports whether the pass may go on.
    fn tick(&mut self) -> bool {
        self.work += 1;
        if self.work.is_multiple_of(CLOCK_INTERVAL) && self.start.elapsed() > self.budget {
            self.timed_out = true;
        }
        !self.timed_out && self.work <= self.work_limit
    }

    /// One depth-first pass over the configurations, starting from the initial state.
    fn search(&mut self, cfg: PassConfig) -> Outcome<M::State> {
        self.cfg = cfg;
        self.limited = false;
        let cap = cfg.work_per_op.saturating_mul(self.history.len() as u64);
        self.work_limit = self.work.saturating_add(cap);
        // A pass that succeeds returns without unwinding its path.
        self.lin.fill(false);
        self.taken.fill(0);
        self.unknown_bits.fill(0);
        self.path.clear();
        self.cache.clear();
        let total = self.done.len();
        let mut root = Level::new(self.model.init(), 0, 0, Vec::new(), None);
        self.expand(&mut root);
        let mut best = Best {
            linearized: 0,
            len: 0,
            tail: Vec::new(),
            state: root.state.clone(),
            blocked: self.done[self.rank_op[0] as usize],
        };
        let mut stack = vec![root];

        loop {
            if self.cfg.pass == Pass::Relaxed && self.limited {
                // A relaxed pass is only useful for a conclusive failure, which this can no
                // longer be.
                return Outcome::Abandoned;
            }
            if !self.tick() {
                return if self.timed_out {
                    Outcome::Timeout
                } else {
                    Outcome::Abandoned
                };
            }
            let top = stack
                .last_mut()
                .expect("the root is only popped on failure");
            let Some((step, state)) = top.cands.pop() else {
                if !top.layer.is_empty() {
                    self.extend(top);
                    continue;
                }
                let dead = stack.pop().expect("non-empty");
                if let Some(step) = &dead.via {
                    self.undo(step);
                }
                if stack.is_empty() {
                    return Outcome::Illegal(best);
                }
                continue;
            };
            let mut child = self.apply(step, top, state);
            if !self.visit(&child) {
                self.undo(child.via.as_ref().expect("just applied"));
                continue;
            }
            if child.frontier as usize == total {
                return Outcome::Linearizable;
            }
            self.expand(&mut child);
            let linearized = child.frontier as usize + child.extras.len();
            if linearized > best.linearized {
                best = Best {
                    linearized,
                    len: self.path.len(),
                    tail: self.path[self.path.len().saturating_sub(SHOWN)..].to_vec(),
                    state: child.state.clone(),
                    blocked: self.done[self.rank_op[child.frontier as usize] as usize],
                };
            }
            stack.push(child);
        }
    }

    fn input_output(&self, history_index: usize) -> (&'a M::Input, Option<&'a M::Output>) {
        let op = &self.history[history_index];
        (&op.input, op.output.as_ref())
    }

    /// Applies `step` (legal in `parent`, leading to `state`) to the search path.
    fn apply(&mut self, step: Step, parent: &Level<M::State>, state: M::State) -> Level<M::State> {
        // The relaxed pass leaves runs empty: it does not track which operations were used.
        for &u in &step.run {
            let c = self.unknown_class[u as usize] as usize;
            debug_assert_eq!(u, self.class_start[c] + self.taken[c]);
            self.taken[c] += 1;
            self.unknown_bits[(u / 32) as usize] ^= 1 << (u % 32);
            self.path.push(self.unknown[u as usize]);
        }
        let d = step.done;
        self.lin[d as usize] = true;
        self.path.push(self.done[d as usize]);
        let mut frontier = parent.frontier;
        let mut extras = parent.extras.clone();
        let rank = self.done_rank[d as usize];
        if rank == frontier {
            frontier += 1;
            let caught_up = extras
                .iter()
                .zip(frontier..)
                .take_while(|(r, f)| *r == f)
                .count();
            extras.drain(..caught_up);
            frontier += caught_up as u32;
        } else {
            let at = extras.partition_point(|&r| r < rank);
            extras.insert(at, rank);
        }
        let mut first_call = parent.first_call;
        while (first_call as usize) < self.lin.len() && self.lin[first_call as usize] {
            first_call += 1;
        }
        let used = parent.used + step.run_len;
        let mut level = Level::new(state, frontier, first_call, extras, Some(step));
        level.used = used;
        level
    }

    fn undo(&mut self, step: &Step) {
        self.lin[step.done as usize] = false;
        self.path.pop();
        for &u in step.run.iter().rev() {
            let c = self.unknown_class[u as usize] as usize;
            self.taken[c] -= 1;
            self.unknown_bits[(u / 32) as usize] ^= 1 << (u % 32);
            self.path.pop();
        }
    }

    /// Records that the search reached `level`, or returns false if exploring it is pointless:
    /// because it was explored before, or one with the same completed operations and state was
    /// explored using a subset of its unknown-outcome operations, and so with every option this
    /// one has.
    fn visit(&mut self, level: &Level<M::State>) -> bool {
        let mut done = Vec::with_capacity(1 + level.extras.len());
        done.push(level.frontier);
        done.extend_from_slice(&level.extras);
        // The relaxed pass cannot tell unknown-outcome operations apart, only count them, and
        // fewer used leaves more room.
        let relaxed = self.cfg.pass == Pass::Relaxed;
        let used = [level.used];
        let bits: &[u32] = if relaxed { &used } else { &self.unknown_bits };
        let subset = |a: &[u32], b: &[u32]| {
            if relaxed {
                a[0] <= b[0]
            } else {
                bits_subset(a, b)
            }
        };
        match self
            .cache
            .entry((done.into_boxed_slice(), level.state.clone()))
        {
            Entry::Vacant(entry) => {
                entry.insert(vec![bits.into()]);
                true
            }
            Entry::Occupied(mut entry) => {
                let seen = entry.get_mut();
                if seen.iter().any(|s| subset(s, bits)) {
                    return false;
                }
                let before = seen.len();
                seen.retain(|s| !subset(bits, s));
                if seen.len() == before && seen.len() >= self.cfg.variants {
                    self.limited = true;
                    return false;
                }
                seen.push(bits.into());
                true
            }
        }
    }

    /// Lists the completed operations that may be linearized next (those invoked no later than
    /// the earliest return among unlinearized completed operations) and the moves that
    /// linearize one of them directly.
    ///
    /// A legal read-only operation is the only move: placing it now is at least as good as
    /// later, and branching on it would send the search down paths that only fail once the
    /// read returns. Otherwise operations that happen to leave the state unchanged go first,
    /// for the same reason.
    fn expand(&mut self, level: &mut Level<M::State>) {
        let deadline = self.rank_ret[level.frontier as usize];
        for d in level.first_call as usize..self.done.len() {
            if self.done_call[d] > deadline {
                break;
            }
            if !self.lin[d] {
                level.ready.push(d as u32);
            }
        }
        let mut unchanged = 0;
        for i in 0..level.ready.len() {
            let d = level.ready[i];
            if !self.tick() {
                return;
            }
            let (input, output) = self.input_output(self.done[d as usize]);
            let Some(next) = self.model.step(&level.state, input, output) else {
                continue;
            };
            let step = Step {
                run: Vec::new(),
                run_len: 0,
                done: d,
            };
            if self.done_read_only[d as usize] {
                level.cands.clear();
                level.cands.push((step, next));
                return;
            }
            if next == level.state {
                level.cands.insert(unchanged, (step, next));
                unchanged += 1;
            } else {
                level.cands.push((step, next));
            }
        }
        level.cands.reverse();
        if !self.unknown.is_empty() {
            level.layer.push((level.state.clone(), Vec::new()));
        }
    }

    /// Builds the runs one longer than `level.layer` and the moves that follow one of them with
    /// a completed operation. Runs that would not change the state, or that reach a state
    /// already reached with a subset of their operations, are dropped: the shorter run offers
    /// the same moves and more operations left for later.
    fn extend(&mut self, level: &mut Level<M::State>) {
        let deadline = self.rank_ret[level.frontier as usize];
        let layer = std::mem::take(&mut level.layer);
        let relaxed = self.cfg.pass == Pass::Relaxed;
        if relaxed {
            // Reuse makes runs unbounded, so bound the operations used so far by how many a
            // real linearization could have used: those invoked by now.
            let invoked: usize = (0..self.taken.len())
                .map(|c| {
                    let members = &self.unknown_call
                        [self.class_start[c] as usize..self.class_start[c + 1] as usize];
                    members.partition_point(|&call| call <= deadline)
                })
                .sum();
            if (level.used + level.run_len) as usize >= invoked {
                return;
            }
        }
        if level.run_len >= self.cfg.max_run {
            self.limited = true;
            return;
        }
        if level.run_len == 0 {
            // The empty run reaches the level's own state, with the smallest possible set.
            level.reached.insert(level.state.clone(), vec![Vec::new()]);
        }
        level.run_len += 1;
        for (state, run) in &layer {
            for &u in run {
                self.scratch[self.unknown_class[u as usize] as usize] += 1;
            }
            for c in 0..self.taken.len() {
                let start = self.class_start[c];
                // Classes are ordered by first invocation, so no later class has a candidate.
                if self.unknown_call[start as usize] > deadline {
                    break;
                }
                // The relaxed pass always uses a class's first operation, which has the same
                // effect as any other and is available the longest.
                let u = if relaxed {
                    start
                } else {
                    start + self.taken[c] + self.scratch[c]
                };
                if u == self.class_start[c + 1] || self.unknown_call[u as usize] > deadline {
                    continue;
                }
                if !self.tick() {
                    break;
                }
                let (input, output) = self.input_output(self.unknown[u as usize]);
                let Some(next) = self.model.step(state, input, output) else {
                    continue;
                };
                if next == *state {
                    continue;
                }
                if level.reached.len() >= self.cfg.max_reached {
                    self.limited = true;
                    break;
                }
                let mut longer = Vec::new();
                if !relaxed {
                    longer.reserve_exact(run.len() + 1);
                    longer.extend_from_slice(run);
                    longer.push(u);
                }
                if !self.reach(&mut level.reached, &next, &longer) {
                    continue;
                }
                // As in `expand`, a legal read-only operation is the only move after this run.
                let moves = level.cands.len();
                for i in 0..level.ready.len() {
                    let d = level.ready[i];
                    if !self.tick() {
                        break;
                    }
                    let (input, output) = self.input_output(self.done[d as usize]);
                    if let Some(after) = self.model.step(&next, input, output) {
                        let step = Step {
                            run: longer.clone(),
                            run_len: level.run_len,
                            done: d,
                        };
                        if self.done_read_only[d as usize] {
                            level.cands.truncate(moves);
                            level.cands.push((step, after));
                            break;
                        }
                        level.cands.push((step, after));
                    }
                }
                level.layer.push((next, longer));
            }
            for &u in run {
                self.scratch[self.unknown_class[u as usize] as usize] = 0;
            }
        }
        level.cands.reverse();
    }

    /// Records that `run` reaches `state`, or returns false if exploring it is pointless (a
    /// run using a subset of its operations already reached the state) or beyond the pass's
    /// limits. Runs are built shortest first, so no earlier run can use a strict superset. The
    /// relaxed pass does not care which operations a run used, so the first run to reach a
    /// state, being shortest, leaves the most room for longer ones.
    fn reach(
        &mut self,
        reached: &mut HashMap<M::State, Vec<Vec<u32>>, FxBuild>,
        state: &M::State,
        run: &[u32],
    ) -> bool {
        let relaxed = self.cfg.pass == Pass::Relaxed;
        let single = relaxed || self.cfg.variants == 1;
        let seen = match reached.entry(state.clone()) {
            Entry::Vacant(entry) => entry.insert(Vec::new()),
            Entry::Occupied(_) if single => {
                self.limited |= !relaxed;
                return false;
            }
            Entry::Occupied(entry) => entry.into_mut(),
        };
        if single {
            return true;
        }
        let mut set = run.to_vec();
        set.sort_unstable();
        if seen.iter().any(|s| sorted_subset(s, &set)) {
            return false;
        }
        if seen.len() >= self.cfg.variants {
            self.limited = true;
            return false;
        }
        seen.push(set);
        true
    }

    fn explain(&self, best: &Best<M::State>) -> String {
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

    fn describe(&self, i: usize) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use CounterInput::{Incr, Read};

    const BUDGET: Duration = Duration::from_secs(10);

    fn op(
        client: u64,
        input: CounterInput,
        call: u64,
        ret: u64,
        out: u64,
    ) -> Operation<CounterInput, u64> {
        Operation {
            client,
            input,
            call,
            ret: Some(ret),
            output: Some(out),
        }
    }

    fn lost(client: u64, input: CounterInput, call: u64) -> Operation<CounterInput, u64> {
        Operation {
            client,
            input,
            call,
            ret: None,
            output: None,
        }
    }

    fn verdict(history: &[Operation<CounterInput, u64>]) -> CheckResult {
        check(&CounterModel, history, BUDGET)
    }

    fn assert_illegal(history: &[Operation<CounterInput, u64>]) {
        match verdict(history) {
            CheckResult::Illegal(why) => assert!(why.contains("not linearizable"), "{why}"),
            other => panic!("expected Illegal, got {other:?}"),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(verdict(&[]), CheckResult::Ok);
    }

    #[test]
    fn accepts_sequential_history() {
        let h = [
            op(0, Read, 0, 1, 0),
            op(0, Incr(2), 2, 3, 2),
            op(1, Incr(1), 4, 5, 3),
            op(1, Read, 6, 7, 3),
        ];
        assert_eq!(verdict(&h), CheckResult::Ok);
    }

    #[test]
    fn accepts_concurrent_history() {
        // Client 1 invoked later but took effect first, which overlap allows; the reads see
        // the two possible intermediate values from inside the overlap.
        let h = [
            op(0, Incr(1), 0, 10, 3),
            op(1, Incr(2), 2, 8, 2),
            op(2, Read, 3, 4, 0),
            op(2, Read, 5, 9, 2),
            op(3, Read, 10, 11, 3),
        ];
        assert_eq!(verdict(&h), CheckResult::Ok);
    }

    #[test]
    fn equal_timestamps_count_as_concurrent() {
        let h = [op(0, Incr(1), 0, 5, 2), op(1, Incr(1), 5, 6, 1)];
        assert_eq!(verdict(&h), CheckResult::Ok);
    }

    #[test]
    fn rejects_lost_increment() {
        let h = [op(0, Incr(1), 0, 1, 1), op(1, Incr(1), 2, 3, 1)];
        assert_illegal(&h);
    }

    #[test]
    fn rejects_stale_read() {
        let h = [
            op(0, Incr(1), 0, 1, 1),
            op(1, Read, 0, 5, 1),
            op(1, Read, 6, 7, 0),
        ];
        assert_illegal(&h);
    }

    #[test]
    fn explanation_names_the_blocked_operation() {
        let h = [
            op(0, Incr(1), 0, 1, 1),
            op(0, Incr(1), 2, 3, 2),
            op(1, Read, 4, 5, 1),
        ];
        let CheckResult::Illegal(why) = verdict(&h) else {
            panic!("expected Illegal");
        };
        assert!(why.contains("at most 2 of 3"), "{why}");
        assert!(why.contains("#2 client 1: Read -> 1 [4, 5]"), "{why}");
    }

    #[test]
    fn completed_op_without_output_must_take_effect() {
        let mut incr = op(0, Incr(1), 0, 1, 0);
        incr.output = None;
        assert_illegal(&[incr.clone(), op(1, Read, 2, 3, 0)]);
        assert_eq!(verdict(&[incr, op(1, Read, 2, 3, 1)]), CheckResult::Ok);
    }

    #[test]
    #[should_panic(expected = "before its invocation")]
    fn rejects_malformed_operation() {
        verdict(&[op(0, Read, 5, 4, 0)]);
    }

    #[test]
    fn unknown_op_that_must_have_happened() {
        let h = [
            lost(0, Incr(5), 0),
            op(1, Read, 10, 11, 0),
            op(1, Read, 12, 13, 5),
            op(1, Incr(1), 14, 15, 6),
        ];
        assert_eq!(verdict(&h), CheckResult::Ok);
    }

    #[test]
    fn unknown_op_that_must_not_have_happened() {
        let h = [
            lost(0, Incr(5), 0),
            op(1, Incr(1), 10, 11, 1),
            op(1, Read, 12, 13, 1),
        ];
        assert_eq!(verdict(&h), CheckResult::Ok);
    }

    #[test]
    fn unknown_op_cannot_take_effect_before_its_call() {
        let h = [op(1, Read, 0, 1, 5), lost(0, Incr(5), 2)];
        assert_illegal(&h);
    }

    #[test]
    fn unknown_op_cannot_take_effect_twice() {
        let h = [
            lost(0, Incr(1), 0),
            op(1, Read, 1, 2, 1),
            op(1, Incr(1), 3, 4, 3),
        ];
        assert_illegal(&h);
    }

    #[test]
    fn unknown_op_with_observed_output_must_match() {
        let mut half = lost(0, Incr(1), 0);
        half.output = Some(7);
        let h = [half, op(1, Read, 1, 2, 1)];
        assert_illegal(&h);
    }

    #[test]
    fn timed_out_ops_pick_the_right_subset() {
        // Only the amounts 1 and 4 explain the read of 5; 2 must be omitted.
        let h = [
            lost(0, Incr(2), 0),
            lost(1, Incr(1), 1),
            lost(2, Incr(4), 2),
            op(3, Read, 10, 11, 5),
            op(3, Incr(3), 12, 13, 8),
        ];
        assert_eq!(verdict(&h), CheckResult::Ok);
    }

    /// A counter that does not declare any inputs interchangeable, so timed-out increments
    /// force a search over subsets.
    struct OpaqueCounter;

    impl Model for OpaqueCounter {
        type State = u64;
        type Input = CounterInput;
        type Output = u64;
        fn init(&self) -> u64 {
            0
        }
        fn step(&self, s: &u64, i: &CounterInput, o: Option<&u64>) -> Option<u64> {
            CounterModel.step(s, i, o)
        }
    }

    #[test]
    fn gives_up_when_the_budget_runs_out() {
        // One timed-out Incr(1) and thirty timed-out Incr(10)s cannot explain reading 2.
        // Without the interchangeability hint the exact search has to rule out every subset of
        // the Incr(10)s (the relaxed pass cannot help: it may use the Incr(1) twice); with it,
        // only how many of each were used matters.
        let mut h = vec![lost(0, Incr(1), 0)];
        h.extend((1..=30).map(|c| lost(c, Incr(10), c)));
        h.push(op(99, Read, 100, 101, 2));
        let budget = Duration::from_millis(50);
        assert_eq!(check(&OpaqueCounter, &h, budget), CheckResult::Timeout);
        assert!(matches!(
            check(&CounterModel, &h, budget),
            CheckResult::Illegal(_)
        ));
    }

    /// splitmix64: small, seedable and good enough for generating test histories.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// Simulates sequential clients of a real atomic counter: each operation takes effect at a
    /// random instant inside its interval, so the history is linearizable by construction.
    /// Timed-out operations take effect at some later instant, or never. Increments are by up
    /// to `max_incr`, or by unique amounts if None.
    fn simulate(
        rng: &mut Rng,
        clients: u64,
        ops: usize,
        timeout_percent: u64,
        max_incr: Option<u64>,
    ) -> Vec<Operation<CounterInput, u64>> {
        let mut clock: Vec<u64> = (0..clients).map(|_| rng.below(10)).collect();
        let mut history = Vec::with_capacity(ops);
        let mut effects = Vec::new();
        for i in 0..ops {
            let client = rng.below(clients);
            let call = clock[client as usize] + rng.below(5);
            let duration = 1 + rng.below(30);
            let input = match max_incr {
                _ if rng.chance(50) => Read,
                Some(max) => Incr(1 + rng.below(max)),
                None => Incr((client + 1) * 1_000_000 + i as u64),
            };
            let timed_out = rng.chance(timeout_percent);
            if !timed_out {
                effects.push((call + rng.below(duration + 1), rng.next(), i));
            } else if rng.chance(50) {
                // The client gave up, but the request still took effect, possibly much later.
                effects.push((call + rng.below(1000), rng.next(), i));
            }
            clock[client as usize] = call + duration;
            history.push(Operation {
                client,
                input,
                call,
                ret: (!timed_out).then_some(call + duration),
                output: None,
            });
        }
        // The random tiebreak makes simultaneous effects take effect in either order.
        effects.sort_unstable();
        let mut value = 0;
        for (_, _, i) in effects {
            let op = &mut history[i];
            if let Incr(by) = op.input {
                value += by;
            }
            if op.ret.is_some() {
                op.output = Some(value);
            }
        }
        history
    }

    /// Breaks a linearizable history in a way that is guaranteed to be illegal, or returns
    /// None if the history has no suitable operations.
    fn mutate(
        rng: &mut Rng,
        mut h: Vec<Operation<CounterInput, u64>>,
    ) -> Option<Vec<Operation<CounterInput, u64>>> {
        let completed = |h: &[Operation<CounterInput, u64>], want_read: bool| -> Vec<usize> {
            (0..h.len())
                .filter(|&i| h[i].ret.is_some() && (h[i].input == Read) == want_read)
                .collect()
        };
        let reads = completed(&h, true);
        let incrs = completed(&h, false);
        match rng.below(3) {
            0 => {
                // A read of a value above every increment ever attempted.
                let &r = reads.get(rng.below(reads.len().max(1) as u64) as usize)?;
                let total: u64 = h
                    .iter()
                    .map(|o| if let Incr(by) = o.input { by } else { 0 })
                    .sum();
                h[r].output = Some(total + 1 + rng.below(10));
            }
            1 => {
                // A read older than a value already observed before it was invoked: the
                // counter never decreases.
                let stale = reads.iter().copied().find_map(|r| {
                    let seen = h
                        .iter()
                        .filter(|o| o.ret.is_some_and(|ret| ret < h[r].call))
                        .filter_map(|o| o.output)
                        .max()?;
                    (seen > 0).then(|| (r, seen - 1))
                })?;
                h[stale.0].output = Some(stale.1);
            }
            _ => {
                // Two increments returning the same value: every increment by at least 1
                // produces a value no other increment does.
                if incrs.len() < 2 {
                    return None;
                }
                let a = incrs[rng.below(incrs.len() as u64) as usize];
                let b = incrs[rng.below(incrs.len() as u64) as usize];
                if a == b {
                    return None;
                }
                h[b].output = h[a].output;
            }
        }
        Some(h)
    }

    fn seed() -> u64 {
        let seed = std::env::var("LINCHECK_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("seed = {seed} (rerun with LINCHECK_SEED={seed})");
        seed
    }

    #[test]
    fn random_histories_and_their_mutants() {
        let seed = seed();
        let mut rng = Rng(seed);
        let mut mutants = 0;
        for round in 0..60 {
            // With unique amounts, refuting a broken history takes time exponential in the
            // timed-out increments pending at once, so those rounds have fewer timeouts.
            let (amounts, max_timeouts) = if round % 2 == 0 {
                (Some(3), 20)
            } else {
                (None, 6)
            };
            let clients = 2 + rng.below(8);
            let ops = 20 + rng.below(150) as usize;
            let timeout_percent = rng.below(max_timeouts);
            let h = simulate(&mut rng, clients, ops, timeout_percent, amounts);
            assert_eq!(
                verdict(&h),
                CheckResult::Ok,
                "seed {seed} round {round}: {h:?}"
            );
            if let Some(m) = mutate(&mut rng, h) {
                mutants += 1;
                let v = verdict(&m);
                assert!(
                    matches!(v, CheckResult::Illegal(_)),
                    "seed {seed} round {round}: mutant not rejected ({v:?}): {m:?}"
                );
            }
        }
        assert!(mutants >= 20, "seed {seed}: only {mutants} mutants");
    }

    /// The definition, executed: tries every order consistent with real time, with every
    /// subset of the unknown-outcome operations. Exponential; for tiny histories only.
    fn brute_force<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> bool {
        fn go<M: Model>(
            model: &M,
            h: &[Operation<M::Input, M::Output>],
            used: &mut Vec<bool>,
            state: &M::State,
        ) -> bool {
            let pending_done = |used: &[bool], i: usize| !used[i] && h[i].ret.is_some();
            if !(0..h.len()).any(|i| pending_done(used, i)) {
                return true;
            }
            for x in 0..h.len() {
                let blocked = (0..h.len())
                    .any(|y| pending_done(used, y) && h[y].ret.is_some_and(|r| r < h[x].call));
                if used[x] || blocked {
                    continue;
                }
                if let Some(next) = model.step(state, &h[x].input, h[x].output.as_ref()) {
                    used[x] = true;
                    let ok = go(model, h, used, &next);
                    used[x] = false;
                    if ok {
                        return true;
                    }
                }
            }
            false
        }
        go(
            model,
            history,
            &mut vec![false; history.len()],
            &model.init(),
        )
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    enum RegIn {
        Write(u8),
        Read,
        Cas(u8, u8),
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    enum RegOut {
        Ack,
        Value(u8),
        Swapped(bool),
    }

    /// A register with compare-and-set: unlike the counter, states recur and some operations
    /// leave the state unchanged without being read-only.
    struct Register {
        hints: bool,
    }

    impl Model for Register {
        type State = u8;
        type Input = RegIn;
        type Output = RegOut;
        fn init(&self) -> u8 {
            0
        }
        fn step(&self, s: &u8, i: &RegIn, o: Option<&RegOut>) -> Option<u8> {
            let (next, out) = match *i {
                RegIn::Write(v) => (v, RegOut::Ack),
                RegIn::Read => (*s, RegOut::Value(*s)),
                RegIn::Cas(from, to) if *s == from => (to, RegOut::Swapped(true)),
                RegIn::Cas(..) => (*s, RegOut::Swapped(false)),
            };
            match o {
                Some(o) if *o != out => None,
                _ => Some(next),
            }
        }
        fn interchangeable(&self, a: &RegIn, b: &RegIn) -> bool {
            self.hints && a == b
        }
        fn is_read_only(&self, i: &RegIn) -> bool {
            self.hints && *i == RegIn::Read
        }
    }

    /// Random tiny histories with random outputs, so that both verdicts are common.
    fn tiny<I, O>(
        rng: &mut Rng,
        mut input: impl FnMut(&mut Rng) -> I,
        mut output: impl FnMut(&mut Rng, &I) -> O,
    ) -> Vec<Operation<I, O>> {
        let n = 1 + rng.below(7) as usize;
        (0..n)
            .map(|i| {
                let call = rng.below(12);
                let input = input(rng);
                let known = rng.chance(70);
                Operation {
                    client: i as u64,
                    ret: known.then(|| call + rng.below(6)),
                    output: (known || rng.chance(20)).then(|| output(rng, &input)),
                    input,
                    call,
                }
            })
            .collect()
    }

    /// Checks that `check`, and each pass on its own, agree with the brute force on `h`.
    fn agrees<M: Model>(model: &M, h: &[Operation<M::Input, M::Output>]) -> bool {
        let expected = brute_force(model, h);
        let verdicts = [QUICK, RELAXED, QUICK_SHORT_RUNS, QUICK_UNCAPPED, COMPLETE].map(|pass| {
            let search = Search::new(model, h, Instant::now(), BUDGET);
            (pass, search.run_passes(&[pass, COMPLETE]))
        });
        for (pass, verdict) in std::iter::once((None, check(model, h, BUDGET)))
            .chain(verdicts.map(|(pass, verdict)| (Some(pass.pass), verdict)))
        {
            match verdict {
                CheckResult::Ok => assert!(expected, "{pass:?} accepted an illegal {h:?}"),
                CheckResult::Illegal(_) => assert!(!expected, "{pass:?} rejected a legal {h:?}"),
                CheckResult::Timeout => panic!("{pass:?} timed out on {h:?}"),
            }
        }
        expected
    }

    #[test]
    fn agrees_with_brute_force() {
        let seed = seed();
        let mut rng = Rng(seed);
        let mut linearizable = [0; 2];
        for _ in 0..1500 {
            let h = tiny(
                &mut rng,
                |r| {
                    if r.chance(50) {
                        Incr(1 + r.below(3))
                    } else {
                        Read
                    }
                },
                |r, _| r.below(8),
            );
            linearizable[usize::from(agrees(&CounterModel, &h))] += 1;
            agrees(&OpaqueCounter, &h);
            // Varied amounts make different sets of timed-out increments coincide in effect.
            let h = tiny(
                &mut rng,
                |r| {
                    if r.chance(70) {
                        Incr(1 + r.below(12))
                    } else {
                        Read
                    }
                },
                |r, _| r.below(24),
            );
            agrees(&CounterModel, &h);
            let h = tiny(
                &mut rng,
                |r| match r.below(3) {
                    0 => RegIn::Write(r.below(3) as u8),
                    1 => RegIn::Read,
                    _ => RegIn::Cas(r.below(3) as u8, r.below(3) as u8),
                },
                |r, i| match i {
                    RegIn::Write(_) => RegOut::Ack,
                    RegIn::Read => RegOut::Value(r.below(3) as u8),
                    RegIn::Cas(..) => RegOut::Swapped(r.chance(50)),
                },
            );
            linearizable[usize::from(agrees(&Register { hints: true }, &h))] += 1;
            agrees(&Register { hints: false }, &h);
        }
        assert!(
            linearizable.iter().all(|&n| n > 300),
            "seed {seed}: {linearizable:?}"
        );
    }

    /// Checks a big linearizable history within a budget a test can afford. The seeds are
    /// fixed to keep the test's running time predictable.
    fn check_large(seed: u64, clients: u64, timeout_percent: u64, max_incr: Option<u64>) {
        let h = simulate(&mut Rng(seed), clients, 2000, timeout_percent, max_incr);
        let timed_out = h.iter().filter(|o| o.ret.is_none()).count();
        let started = Instant::now();
        let verdict = check(&CounterModel, &h, Duration::from_secs(5));
        println!(
            "{timed_out} of 2000 timed out; checked in {:?}",
            started.elapsed()
        );
        assert_eq!(verdict, CheckResult::Ok, "seed {seed}");
    }

    #[test]
    fn large_history_with_many_timeouts() {
        check_large(1, 10, 15, Some(3));
    }

    #[test]
    fn large_history_with_unique_amounts() {
        // Unique amounts make every set of timed-out increments a distinct state, the hardest
        // case for the search, and are what a test identifying writes by amount produces.
        check_large(2, 6, 10, None);
        check_large(3, 10, 15, None);
    }

    #[test]
    fn medium_mutants_are_refuted() {
        let seed = seed();
        let mut rng = Rng(seed);
        let h = simulate(&mut rng, 8, 400, 15, Some(3));
        let m = std::iter::repeat_with(|| mutate(&mut rng, h.clone()))
            .flatten()
            .next()
            .expect("400 operations always offer some mutation");
        let budget = Duration::from_secs(5);
        assert!(
            matches!(check(&CounterModel, &m, budget), CheckResult::Illegal(_)),
            "seed {seed}"
        );
    }
}
