//! Randomized checks of the checker: histories linearizable by
//! construction and their mutants, and agreement with a brute-force
//! search on tiny histories.

use super::*;

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
