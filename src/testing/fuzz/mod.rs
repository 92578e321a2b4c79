//! A mutation fuzzer for every input a node takes from outside the
//! process: frames and handshakes from peers, messages after decoding and
//! validation, snapshot chunks, snapshot meta files, stored log records,
//! HTTP bodies. It runs on the stable toolchain, seeded and repeatable:
//! each execution takes an input from the corpus (or a target's seeds),
//! mutates it (bit flips, byte edits, insertions, deletions, splices,
//! boundary values, length fields) and feeds it to the target under
//! `catch_unwind`. A panic is a finding; the input is written out.
//!
//! `cargo run --release --example fuzz -- --execs N --seed S` runs it; the
//! corpus lives in `tests/fuzz_corpus/<target>/`; `cargo test` runs a
//! short pass (`tests/fuzz.rs`).

mod targets;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use targets::{all as targets, Target};

/// Largest input the mutator produces.
const MAX_INPUT: usize = 64 * 1024;

/// A panicking input of a target.
#[derive(Clone, Debug)]
pub struct Finding {
    /// The target.
    pub target: &'static str,
    /// The panic message.
    pub message: String,
    /// The input.
    pub input: Vec<u8>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Executions per target.
    pub execs: BTreeMap<&'static str, u64>,
    /// Slowest single execution per target.
    pub slowest: BTreeMap<&'static str, Duration>,
    /// Inputs that made a target panic.
    pub findings: Vec<Finding>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Report {
    /// Executions over all targets.
    pub fn total(&self) -> u64 {
        self.execs.values().sum()
    }
}

/// The corpus of one target: the files in `dir/<target>/`, or the
/// target's seeds if there are none.
pub fn corpus(dir: Option<&Path>, target: &Target) -> Vec<Vec<u8>> {
    let mut inputs = Vec::new();
    if let Some(dir) = dir {
        if let Ok(entries) = std::fs::read_dir(dir.join(target.name)) {
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            inputs.extend(paths.iter().filter_map(|p| std::fs::read(p).ok()));
        }
    }
    if inputs.is_empty() {
        inputs = (target.seeds)();
    }
    inputs
}

/// Runs `execs` executions spread evenly over `targets`, from `seed`.
/// `each` is called after every execution with the target's name (for
/// progress and for an allocation check by the caller); it returns an
/// extra finding message, if any.
pub fn run(
    targets: &[Target],
    corpus_dir: Option<&Path>,
    execs: u64,
    seed: u64,
    mut each: impl FnMut(&'static str, &[u8]) -> Option<String>,
) -> Report {
    let started = Instant::now();
    let mut report = Report::default();
    let mut rng = fastrand::Rng::with_seed(seed);
    let corpora: Vec<Vec<Vec<u8>>> = targets.iter().map(|t| corpus(corpus_dir, t)).collect();
    // Quiet panics: each is caught and reported once, not printed.
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for n in 0..execs {
        let which = (n % targets.len() as u64) as usize;
        let target = &targets[which];
        let input = mutate(&mut rng, &corpora[which]);
        let t = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
        let took = t.elapsed();
        *report.execs.entry(target.name).or_default() += 1;
        let slowest = report.slowest.entry(target.name).or_default();
        *slowest = (*slowest).max(took);
        let mut found = outcome.err().map(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into())
        });
        if let Some(extra) = each(target.name, &input) {
            found.get_or_insert(extra);
        }
        if let Some(message) = found {
            report.findings.push(Finding {
                target: target.name,
                message,
                input,
            });
        }
    }
    std::panic::set_hook(previous_hook);
    report.elapsed = started.elapsed();
    report
}

/// A mutated copy of a corpus input.
fn mutate(rng: &mut fastrand::Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut input = corpus
        .get(rng.usize(..corpus.len().max(1)))
        .cloned()
        .unwrap_or_default();
    for _ in 0..rng.usize(1..=4) {
        match rng.u8(..8) {
            // Flip a bit.
            0 if !input.is_empty() => {
                let i = rng.usize(..input.len());
                input[i] ^= 1 << rng.u8(..8);
            }
            // Overwrite a byte with a boundary value.
            1 if !input.is_empty() => {
                let i = rng.usize(..input.len());
                input[i] = *rng
                    .choice(&[0x00u8, 0x7f, 0x80, 0xc0, 0xc1, 0xdc, 0xdd, 0xff])
                    .unwrap_or(&0);
            }
            // Insert random bytes.
            2 => {
                let at = rng.usize(..=input.len());
                let bytes: Vec<u8> = (0..rng.usize(1..16)).map(|_| rng.u8(..)).collect();
                input.splice(at..at, bytes);
            }
            // Delete a range.
            3 if !input.is_empty() => {
                let at = rng.usize(..input.len());
                let end = (at + rng.usize(1..32)).min(input.len());
                input.drain(at..end);
            }
            // Splice in part of another corpus input.
            4 if !corpus.is_empty() => {
                let other = &corpus[rng.usize(..corpus.len())];
                if !other.is_empty() {
                    let from = rng.usize(..other.len());
                    let end = (from + rng.usize(1..64)).min(other.len());
                    let at = rng.usize(..=input.len());
                    input.splice(at..at, other[from..end].iter().copied());
                }
            }
            // Write a big or boundary 32-bit number (lengths, counts).
            5 if input.len() >= 4 => {
                let at = rng.usize(..=input.len() - 4);
                let value = *rng
                    .choice(&[0u32, 1, 0x7fff_ffff, 0xffff_ffff, 0x0100_0000, 65_536])
                    .unwrap_or(&0);
                input[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
            // Truncate.
            6 if !input.is_empty() => input.truncate(rng.usize(..input.len())),
            // Duplicate a range (repeated fields, repeated frames).
            _ if !input.is_empty() => {
                let at = rng.usize(..input.len());
                let end = (at + rng.usize(1..64)).min(input.len());
                let copy = input[at..end].to_vec();
                let to = rng.usize(..=input.len());
                input.splice(to..to, copy);
            }
            _ => input.push(rng.u8(..)),
        }
    }
    input.truncate(MAX_INPUT);
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_target_is_found_and_its_input_kept() {
        fn fragile(input: &[u8]) {
            assert!(!input.starts_with(b"\xff"), "boom");
        }
        fn seeds() -> Vec<Vec<u8>> {
            vec![b"\x00abc".to_vec()]
        }
        let target = Target {
            name: "fragile",
            run: fragile,
            seeds,
        };
        let report = run(&[target], None, 20_000, 1, |_, _| None);
        assert_eq!(report.total(), 20_000);
        let finding = report.findings.first().expect("the fuzzer finds the crash");
        assert!(finding.input.starts_with(b"\xff"));
        assert_eq!(finding.message, "boom");
    }

    #[test]
    fn runs_are_repeatable_from_their_seed() {
        let corpus = vec![b"hello world".to_vec()];
        let a: Vec<Vec<u8>> = {
            let mut rng = fastrand::Rng::with_seed(9);
            (0..50).map(|_| mutate(&mut rng, &corpus)).collect()
        };
        let mut rng = fastrand::Rng::with_seed(9);
        let b: Vec<Vec<u8>> = (0..50).map(|_| mutate(&mut rng, &corpus)).collect();
        assert_eq!(a, b);
    }
}
