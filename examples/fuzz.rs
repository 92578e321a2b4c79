//! Fuzzes every input a node takes from outside the process (see
//! `regatta::testing::fuzz`): seeded, repeatable, on the stable toolchain.
//!
//! ```text
//! cargo run --release --example fuzz -- --execs 10000000 --seed 1
//! cargo run --release --example fuzz -- --target message --execs 100000
//! cargo run --release --example fuzz -- --write-seeds   # refresh the corpus
//! ```
//!
//! The corpus is `tests/fuzz_corpus/<target>/`. A panic, an execution
//! slower than `--max-exec-ms`, or one allocating more than
//! `--max-alloc-mib` is a finding: its input is written to
//! `fuzz-findings/<target>-<n>.bin` and the exit code is 1. A hang is
//! caught by a watchdog that writes the input and aborts.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use regatta::testing::fuzz;

#[path = "../benches/support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOCATOR: counting_alloc::Counting = counting_alloc::Counting;

#[derive(Parser)]
#[command(about = "Fuzz regatta's decoders and validators")]
struct Args {
    /// Executions in all, spread evenly over the targets.
    #[arg(long, default_value_t = 1_000_000)]
    execs: u64,
    /// Seed of the mutations: the same seed repeats the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only this target (default: all).
    #[arg(long)]
    target: Option<String>,
    /// The corpus folder.
    #[arg(long, default_value = "tests/fuzz_corpus")]
    corpus: PathBuf,
    /// An execution allocating more than this many MiB is a finding.
    #[arg(long, default_value_t = 64)]
    max_alloc_mib: usize,
    /// An execution slower than this is a finding; ten times it, a hang
    /// (the watchdog aborts).
    #[arg(long, default_value_t = 1000)]
    max_exec_ms: u64,
    /// Write each target's seeds into the corpus folder and exit.
    #[arg(long)]
    write_seeds: bool,
}

fn main() {
    counting_alloc::enable();
    let args = Args::parse();
    let mut targets = fuzz::targets();
    if let Some(name) = &args.target {
        targets.retain(|t| t.name == name);
        if targets.is_empty() {
            let names: Vec<&str> = fuzz::targets().iter().map(|t| t.name).collect();
            eprintln!("error: no target {name:?}; targets: {}", names.join(", "));
            std::process::exit(2);
        }
    }
    if args.write_seeds {
        for t in &targets {
            let dir = args.corpus.join(t.name);
            std::fs::create_dir_all(&dir).expect("create the corpus folder");
            for (i, seed) in (t.seeds)().iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i}")), seed).expect("write a seed");
            }
        }
        println!(
            "wrote the seeds of {} targets into {}",
            targets.len(),
            args.corpus.display()
        );
        return;
    }
    // The watchdog: if no execution finishes within ten times the limit,
    // the current input is written out and the process aborts.
    let current: Arc<Mutex<(String, Vec<u8>)>> = Arc::default();
    let done = Arc::new(AtomicU64::new(0));
    let hang_after = Duration::from_millis(args.max_exec_ms.saturating_mul(10).max(1000));
    {
        let (current, done) = (current.clone(), done.clone());
        std::thread::spawn(move || {
            let mut last = u64::MAX;
            loop {
                std::thread::sleep(hang_after);
                let now = done.load(Ordering::Relaxed);
                if now == last {
                    let (target, input) = current.lock().map(|c| c.clone()).unwrap_or_default();
                    let path = write_finding(&target, now, &input);
                    eprintln!("HANG in {target} (no progress for {hang_after:?}); input: {path}");
                    std::process::abort();
                }
                last = now;
            }
        });
    }
    let max_alloc = args.max_alloc_mib << 20;
    let max_exec = Duration::from_millis(args.max_exec_ms);
    let started = Instant::now();
    let mut last_print = Instant::now();
    let mut last_exec = Instant::now();
    println!(
        "fuzzing {} targets, {} executions, seed {}",
        targets.len(),
        args.execs,
        args.seed
    );
    let corpus = args.corpus.is_dir().then_some(args.corpus.as_path());
    let report = fuzz::run(&targets, corpus, args.execs, args.seed, |target, input| {
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        let peak = counting_alloc::take_peak();
        let took = last_exec.elapsed();
        last_exec = Instant::now();
        if let Ok(mut c) = current.lock() {
            c.0.clear();
            c.0.push_str(target);
            c.1.clear();
            c.1.extend_from_slice(input);
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            let rate = n as f64 / started.elapsed().as_secs_f64();
            eprintln!("{n} executions, {rate:.0}/s");
        }
        if peak > max_alloc {
            Some(format!("allocated {} MiB at once", peak >> 20))
        } else if took > max_exec {
            Some(format!("took {took:?}"))
        } else {
            None
        }
    });
    println!("target          executions  slowest");
    for (name, n) in &report.execs {
        println!("{name:<15} {n:>10}  {:?}", report.slowest[name]);
    }
    let secs = report.elapsed.as_secs_f64();
    println!(
        "{} executions in {secs:.1} s ({:.0}/s), {} findings",
        report.total(),
        report.total() as f64 / secs,
        report.findings.len()
    );
    for (i, f) in report.findings.iter().enumerate().take(20) {
        let path = write_finding(f.target, i as u64, &f.input);
        println!("FINDING in {}: {} (input: {path})", f.target, f.message);
    }
    if !report.findings.is_empty() {
        std::process::exit(1);
    }
}

fn write_finding(target: &str, n: u64, input: &[u8]) -> String {
    let dir = PathBuf::from("fuzz-findings");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{target}-{n}.bin"));
    let _ = std::fs::write(&path, input);
    path.display().to_string()
}
