//! The search's bookkeeping: a step, a level of the depth-first search,
//! the passes and their limits, and the cache of explored configurations.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{BuildHasherDefault, Hasher};

/// One move of the search: linearize the unknown-outcome operations `run` (positions in
/// `Search::unknown`) in order, then the completed operation `done` (invocation-order index).
pub(super) struct Step {
    pub(super) run: Vec<u32>,
    /// The run's length, which the relaxed pass tracks without the run itself.
    pub(super) run_len: u32,
    pub(super) done: u32,
}

pub(super) type FxBuild = BuildHasherDefault<FxHasher>;

/// One node of the depth-first search.
pub(super) struct Level<S> {
    pub(super) state: S,
    /// Rank, in return order, of the earliest-returning completed operation not linearized yet.
    /// Everything returning earlier is linearized, and nothing invoked after this one returned
    /// may be linearized before it.
    pub(super) frontier: u32,
    /// Index, in invocation order, of the first completed operation not linearized yet; the
    /// candidate scan starts here instead of at the beginning of the history.
    pub(super) first_call: u32,
    /// Return ranks above `frontier` that are already linearized, sorted. Stays small because
    /// an operation can only overtake the frontier if it overlaps it.
    pub(super) extras: Vec<u32>,
    /// The move that produced this node, undone when leaving it.
    pub(super) via: Option<Step>,
    /// Completed operations that may be linearized next, by invocation-order index.
    pub(super) ready: Vec<u32>,
    /// Moves still to try, with the states they lead to, in reverse order of preference so
    /// that the next one is popped off the end.
    pub(super) cands: Vec<(Step, S)>,
    /// The longest runs of unknown-outcome operations built so far, with the states they reach.
    /// Runs one longer are only built once every move with the current length has failed.
    pub(super) layer: Vec<(S, Vec<u32>)>,
    /// The length of the runs in `layer` (which the relaxed pass leaves empty).
    pub(super) run_len: u32,
    /// How many unknown-outcome operations the path to this node linearized.
    pub(super) used: u32,
    /// Every state reached by a run so far, with the sets of operations (sorted positions)
    /// that reached it.
    pub(super) reached: HashMap<S, Vec<Vec<u32>>, FxBuild>,
}

impl<S> Level<S> {
    pub(super) fn new(
        state: S,
        frontier: u32,
        first_call: u32,
        extras: Vec<u32>,
        via: Option<Step>,
    ) -> Self {
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
pub(super) struct FxHasher {
    pub(super) hash: u64,
}

impl FxHasher {
    pub(super) fn add(&mut self, word: u64) {
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
pub(super) enum Pass {
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
pub(super) struct PassConfig {
    pub(super) pass: Pass,
    /// How many unknown-outcome operations may be linearized in a row.
    pub(super) max_run: u32,
    /// In the quick pass, how many mutually incomparable sets of unknown-outcome operations
    /// are explored per (completed set, state), and kept per state reached by runs.
    pub(super) variants: usize,
    /// How many states runs may reach from one node.
    pub(super) max_reached: usize,
    /// After how many model steps per history operation the pass gives up.
    pub(super) work_per_op: u64,
}

pub(super) const UNLIMITED: PassConfig = PassConfig {
    pass: Pass::Complete,
    max_run: u32::MAX,
    variants: usize::MAX,
    max_reached: usize::MAX,
    work_per_op: u64::MAX,
};

/// Finds a linearization of most correct histories fast: a few hundred model steps per
/// operation suffice even with hundreds of timed-out operations, while failing can take a
/// hundred times more, which the cap avoids wasting on incorrect histories.
pub(super) const QUICK: PassConfig = PassConfig {
    pass: Pass::Quick,
    variants: 1,
    work_per_op: 2000,
    ..UNLIMITED
};

/// Refutes most incorrect histories fast. When unknown-outcome operations have distinct
/// effects (a counter incremented by unique amounts), reuse makes the states reachable from a
/// node grow combinatorially; the pass then stops at once, as it can no longer decide.
pub(super) const RELAXED: PassConfig = PassConfig {
    pass: Pass::Relaxed,
    max_reached: 4096,
    ..UNLIMITED
};

/// For operations with distinct effects, different sets of them can coincide in effect (with
/// unique amounts, two subsets can still have equal sums), and keeping only the first set
/// that explains a state may leave the wrong operations for later. Keeping several sets is
/// affordable if runs are short, which they are when a timed-out operation that took effect
/// is observed soon after.
pub(super) const QUICK_SHORT_RUNS: PassConfig = PassConfig {
    pass: Pass::Quick,
    max_run: 2,
    variants: 8,
    ..UNLIMITED
};

/// [`QUICK`] again, without a work cap, if that is what stopped it.
pub(super) const QUICK_UNCAPPED: PassConfig = PassConfig {
    pass: Pass::Quick,
    variants: 1,
    ..UNLIMITED
};

pub(super) const COMPLETE: PassConfig = UNLIMITED;

/// How many model steps pass between clock reads.
pub(super) const CLOCK_INTERVAL: u64 = 1024;

/// How many operations of the longest linearizable prefix an explanation shows.
pub(super) const SHOWN: usize = 10;

/// The deepest configuration reached, kept for the explanation of an illegal history.
pub(super) struct Best<S> {
    /// Completed operations linearized.
    pub(super) linearized: usize,
    /// Length of the prefix, including unknown-outcome operations.
    pub(super) len: usize,
    /// The last [`SHOWN`] operations of the prefix (history indices).
    pub(super) tail: Vec<usize>,
    pub(super) state: S,
    /// The earliest-returning completed operation the prefix lacks.
    pub(super) blocked: usize,
}

/// The result of one search pass.
pub(super) enum Outcome<S> {
    Linearizable,
    Illegal(Best<S>),
    Timeout,
    /// The pass stopped early: it reached its work cap, or could no longer be conclusive.
    Abandoned,
}

/// Explored configurations: for each (linearized completed operations, state), the sets of
/// linearized unknown-outcome operations (bitsets) it was explored with. The completed part is
/// the frontier rank followed by the extras of [`Level`].
pub(super) type Cache<S> = HashMap<(Box<[u32]>, S), Vec<Box<[u32]>>, FxBuild>;

/// Whether bitset `a` is a subset of bitset `b`.
pub(super) fn bits_subset(a: &[u32], b: &[u32]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

/// Whether sorted set `a` is a subset of sorted set `b`.
pub(super) fn sorted_subset(a: &[u32], b: &[u32]) -> bool {
    let mut b = b.iter();
    a.iter().all(|x| b.by_ref().any(|y| y == x))
}
