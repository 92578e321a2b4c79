//! The depth-first search for a linearization, pass by pass.

use std::collections::hash_map::{Entry, HashMap};
use std::time::{Duration, Instant};

use super::state::*;
use super::*;

pub(super) struct Search<'a, M: Model> {
    pub(super) model: &'a M,
    pub(super) history: &'a [Operation<M::Input, M::Output>],
    /// Completed operations (history indices) in invocation order.
    pub(super) done: Vec<usize>,
    pub(super) done_call: Vec<u64>,
    /// Per completed operation (invocation order): [`Model::is_read_only`].
    pub(super) done_read_only: Vec<bool>,
    /// Rank of each completed operation (invocation order) in return order.
    pub(super) done_rank: Vec<u32>,
    /// Return time of each return rank.
    pub(super) rank_ret: Vec<u64>,
    /// Invocation-order index of each return rank.
    pub(super) rank_op: Vec<u32>,
    /// Unknown-outcome operations (history indices), grouped by class and in invocation order
    /// within a class; classes are ordered by their first invocation.
    pub(super) unknown: Vec<usize>,
    pub(super) unknown_call: Vec<u64>,
    pub(super) unknown_class: Vec<u32>,
    /// Class `c` is `unknown[class_start[c]..class_start[c + 1]]`.
    pub(super) class_start: Vec<u32>,
    /// Per completed operation (invocation order): linearized on the current search path.
    pub(super) lin: Vec<bool>,
    /// Per class: how many of its operations are linearized on the current search path. Only
    /// the next one is ever a candidate, which is sound because they are interchangeable and a
    /// linearization using a later one can use an earlier one instead.
    pub(super) taken: Vec<u32>,
    /// Per unknown operation: linearized on the current search path.
    pub(super) unknown_bits: Vec<u32>,
    /// The current search path, as history indices.
    pub(super) path: Vec<usize>,
    pub(super) cache: Cache<M::State>,
    /// The current pass.
    pub(super) cfg: PassConfig,
    /// Whether the current pass hit a limit, which makes its failure inconclusive.
    pub(super) limited: bool,
    /// Per class, zero between uses: counts the class's operations in a run.
    pub(super) scratch: Vec<u32>,
    pub(super) start: Instant,
    pub(super) budget: Duration,
    /// Model steps taken so far, over all passes.
    pub(super) work: u64,
    /// The value of `work` at which the current pass gives up.
    pub(super) work_limit: u64,
    pub(super) timed_out: bool,
}

impl<'a, M: Model> Search<'a, M> {
    pub(super) fn new(
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
    pub(super) fn run(self) -> CheckResult {
        if self.unknown.is_empty() {
            self.run_passes(&[COMPLETE])
        } else {
            self.run_passes(&[QUICK, RELAXED, QUICK_SHORT_RUNS, QUICK_UNCAPPED, COMPLETE])
        }
    }

    /// Runs `passes` in order until one is conclusive; the last one must be [`COMPLETE`].
    pub(super) fn run_passes(mut self, passes: &[PassConfig]) -> CheckResult {
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
    pub(super) fn verdict(&self, outcome: Outcome<M::State>) -> Option<CheckResult> {
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
    pub(super) fn tick(&mut self) -> bool {
        self.work += 1;
        if self.work.is_multiple_of(CLOCK_INTERVAL) && self.start.elapsed() > self.budget {
            self.timed_out = true;
        }
        !self.timed_out && self.work <= self.work_limit
    }

    /// One depth-first pass over the configurations, starting from the initial state.
    pub(super) fn search(&mut self, cfg: PassConfig) -> Outcome<M::State> {
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

    pub(super) fn input_output(
        &self,
        history_index: usize,
    ) -> (&'a M::Input, Option<&'a M::Output>) {
        let op = &self.history[history_index];
        (&op.input, op.output.as_ref())
    }

    /// Applies `step` (legal in `parent`, leading to `state`) to the search path.
    pub(super) fn apply(
        &mut self,
        step: Step,
        parent: &Level<M::State>,
        state: M::State,
    ) -> Level<M::State> {
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

    pub(super) fn undo(&mut self, step: &Step) {
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
    pub(super) fn visit(&mut self, level: &Level<M::State>) -> bool {
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
    pub(super) fn expand(&mut self, level: &mut Level<M::State>) {
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
    pub(super) fn extend(&mut self, level: &mut Level<M::State>) {
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
    pub(super) fn reach(
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
}
