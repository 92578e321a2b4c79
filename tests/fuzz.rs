//! A short pass of the fuzzer over every target (the long runs are
//! `cargo run --release --example fuzz`): no input from the corpus or its
//! mutations may make a decoder or validator panic.

use std::path::Path;

use regatta::testing::fuzz;

#[test]
fn no_target_panics_on_a_short_fuzzing_pass() {
    let seed = std::env::var("REGATTA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!("fuzz seed {seed} (rerun with REGATTA_FUZZ_SEED={seed})");
    let targets = fuzz::targets();
    assert!(targets.len() >= 7, "a target is missing");
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus");
    for t in &targets {
        assert!(
            corpus.join(t.name).is_dir(),
            "no corpus for {}: run the fuzz example with --write-seeds",
            t.name
        );
    }
    let report = fuzz::run(&targets, Some(&corpus), 210_000, seed, |_, _| None);
    println!(
        "{} executions in {:?}: {:?}",
        report.total(),
        report.elapsed,
        report.execs
    );
    assert_eq!(report.total(), 210_000);
    if let Some(f) = report.findings.first() {
        panic!(
            "{} panicked: {} on input {:02x?}",
            f.target, f.message, f.input
        );
    }
}
