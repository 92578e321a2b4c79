//! End-to-end write throughput and latency through the HTTP API of a
//! three-process cluster of the counter example (`counter serve`, as in
//! README.md "A three-process cluster"): three OS processes on 127.0.0.1,
//! each with its own fjall log (fsync per batch) in a temporary directory,
//! Raft over TCP and actix-web on loopback.
//!
//! `cargo bench` does not build examples, so build the release example
//! binary first:
//!
//! ```text
//! cargo build --release --example counter && cargo bench --bench http
//! ```
//!
//! ```text
//! cargo bench --bench http              # clients 1, 16, 64, 256, 5 runs each
//! cargo bench --bench http -- 64        # 64 clients, 5 runs
//! cargo bench --bench http -- 64 3      # 64 clients, 3 runs
//! ```
//!
//! Every client is one OS thread with one persistent keep-alive HTTP/1.1
//! connection (a hand-rolled client: the request with a Content-Length,
//! headers read up to `\r\n\r\n`, then exactly Content-Length body bytes),
//! sending `POST /counter/incr` `{"by":1}` back-to-back. Three tables:
//!
//! - **leader**: every client talks to the leader's HTTP address;
//! - **follower**: every client talks to the same follower, which
//!   forwards every write to the leader (what a client of one follower
//!   sees);
//! - **spread**: client `i` talks to node `i mod 3`, the two followers
//!   first, so a lone client is always forwarded and larger counts send
//!   about two thirds of the writes through a follower (which forwards them
//!   to the leader over the Raft transport).
//!
//! A fresh cluster per table row: started, waited for (bounded) until all
//! three nodes agree on a leader through `GET /cluster/status`, one write
//! to prove it commits, a warm-up with that many clients, then the runs.
//! Each run opens new connections before the clock starts. Printed per
//! row: the median over runs of writes/s (200 answers per second), the
//! medians of the per-run p50 and p99 latency of a 200 answer, and the
//! number of non-200 answers and of I/O errors (timeouts, closed or refused
//! connections) over the measured runs; notes below each table say what
//! went wrong (status codes with a sample body, WARN/ERROR lines the nodes
//! logged after start-up, a leader change, a node that exited badly).
//!
//! Environment (seconds, fractions allowed):
//!
//! - `HTTP_BENCH_SECS`: length of one run (default 3);
//! - `HTTP_BENCH_WARMUP_SECS`: warm-up per row, not measured (default 1);
//! - `REGATTA_IDLE_SPIN_US`: the nodes' `--idle-spin-us` (default 0).
//!
//! A smoke test: `HTTP_BENCH_SECS=0.5 HTTP_BENCH_WARMUP_SECS=0.2 cargo
//! bench --bench http -- 16 1`.
//!
//! The clients run on the same machine as the three servers and compete
//! with them for the CPU. Data directories and the nodes' logs (stderr, at
//! the default `info` level) go to a temporary directory under `$TMPDIR`
//! (else `/tmp`), kept and printed when a row fails. The child processes
//! are killed when the bench exits, errors included (a drop guard; on Linux
//! also `PR_SET_PDEATHSIG`, should the bench itself be killed).
//!
//! Modules: `client` (the HTTP client), `cluster` (the `serve` processes),
//! `load` (the client threads and their tally), `measure` (one table row),
//! `report` (the tables).

#[path = "../support/mod.rs"]
mod support;

mod client;
mod cluster;
mod load;
mod measure;
mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use measure::Target;
use report::table;
use support::{file_system_of, plan_from_args, positive, progress, seconds_from_env};

const EXAMPLE: &str = "counter";
const CLIENT_COUNTS: [usize; 4] = [1, 16, 64, 256];
const DEFAULT_RUNS: usize = 5;
const WRITE_PATH: &str = "/counter/incr";
const WRITE_BODY: &str = r#"{"by":1}"#;

const USAGE: &str = "\
usage: cargo bench --bench http -- [CLIENTS [RUNS]]

  (none)         clients 1, 16, 64 and 256, 5 runs each
  CLIENTS        that many clients only
  CLIENTS RUNS   that many clients, RUNS runs

CLIENTS and RUNS are positive integers. Build the server binary first:
  cargo build --release --example counter

environment:
  HTTP_BENCH_SECS          one run, seconds (default 3)
  HTTP_BENCH_WARMUP_SECS   warm-up per client count and table, seconds (default 1)
  REGATTA_IDLE_SPIN_US     the nodes' --idle-spin-us (default 0)";

// ---------------------------------------------------------------------------
// Command line

struct Plan {
    clients: Vec<usize>,
    runs: usize,
    run: Duration,
    warmup: Duration,
}

fn parse_plan(args: &[String]) -> Result<Plan, String> {
    let mut plan = Plan {
        clients: CLIENT_COUNTS.to_vec(),
        runs: DEFAULT_RUNS,
        run: seconds_from_env("HTTP_BENCH_SECS", 3.0)?,
        warmup: seconds_from_env("HTTP_BENCH_WARMUP_SECS", 1.0)?,
    };
    match args {
        [] => {}
        [clients] => plan.clients = vec![positive(clients, "CLIENTS")?],
        [clients, runs] => {
            plan.clients = vec![positive(clients, "CLIENTS")?];
            plan.runs = positive(runs, "RUNS")?;
        }
        _ => return Err(format!("too many arguments: {args:?}")),
    }
    Ok(plan)
}

// ---------------------------------------------------------------------------
// The server binary

/// `target/release/examples/counter`, next to this bench's `deps` directory.
fn example_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("path of this bench: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| format!("no target directory above {}", exe.display()))?;
    Ok(profile_dir.join("examples").join(EXAMPLE))
}

/// The newest source file the binary depends on, when it is newer than
/// the binary (a stale build would measure old code).
fn newer_source(binary: &Path) -> Option<PathBuf> {
    fn newest(path: &Path, best: &mut Option<(SystemTime, PathBuf)>) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                for entry in entries.flatten() {
                    newest(&entry.path(), best);
                }
            }
        } else if let Ok(modified) = meta.modified() {
            if best.as_ref().is_none_or(|(t, _)| modified > *t) {
                *best = Some((modified, path.to_path_buf()));
            }
        }
    }
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut best = None;
    // Sources only: cargo does not relink the binary for a Cargo.toml or
    // Cargo.lock change that leaves it as it was.
    for part in ["src", "examples"] {
        newest(&root.join(part), &mut best);
    }
    best.filter(|(t, _)| *t > built).map(|(_, path)| path)
}

fn run(plan: &Plan, binary: &Path) -> Result<(), String> {
    let base = std::env::temp_dir();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "Server: {} (`serve`, default flags, log level info); data under {} on {}; \
         {cores} CPUs shared by the 3 servers and the client threads. Request body \
         `{WRITE_BODY}`; one OS thread and one keep-alive HTTP/1.1 connection per client; \
         a fresh cluster per row, {:?} warm-up, then {} runs of {:?}; medians over runs; \
         non-200 and I/O errors summed over the runs.\n",
        binary.display(),
        base.display(),
        file_system_of(&base).unwrap_or_else(|| "an unknown file system".into()),
        plan.warmup,
        plan.runs,
        plan.run,
    );
    table(plan, binary, Target::Leader)?;
    println!();
    table(plan, binary, Target::Follower)?;
    println!();
    table(plan, binary, Target::Spread)
}

fn main() {
    let plan = plan_from_args(USAGE, parse_plan);
    let binary = match example_binary() {
        Ok(path) if path.is_file() => path,
        Ok(path) => {
            eprintln!(
                "error: {} not found.\n`cargo bench` does not build examples: run\n\n    \
                 cargo build --release --example {EXAMPLE}\n\nfirst, then \
                 `cargo bench --bench http` again.",
                path.display()
            );
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Some(source) = newer_source(&binary) {
        eprintln!(
            "warning: {} is newer than {}: the numbers may be of old code; rebuild with \
             `cargo build --release --example {EXAMPLE}`",
            source.display(),
            binary.display()
        );
    }
    // Every cluster is dropped (its processes killed) before `run` returns.
    if let Err(e) = run(&plan, &binary) {
        progress("");
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
