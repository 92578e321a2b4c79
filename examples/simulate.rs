//! Runs the deterministic simulator over many seeds: a replicated counter
//! under every fault (loss, duplication, reordering, partitions, crashes
//! that lose unsynced writes, slow disks, snapshots, membership changes),
//! each seed checked for Raft's invariants and a linearizable history.
//!
//! ```sh
//! cargo run --release --example simulate -- --seeds 100000 --nodes 5
//! cargo run --release --example simulate -- --seeds 100000 --sessions   # exactly-once clients
//! cargo run --release --example simulate -- --seeds 100000 --slow-apply # a state machine slow to answer
//! cargo run --release --example simulate -- --seed 1234 --nodes 3 --log debug   # replay one
//! cargo run --release --example simulate -- --seeds 1000 --nodes 5 --groups 8   # multi-raft: 8 groups on 5 hosts
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use regatta::testing::sim::{counter_with, run_counter, Failure, Faults, HostSimulation};

#[derive(Parser)]
#[command(about = "Run regatta's deterministic simulator over many seeds")]
struct Args {
    /// How many seeds to run (from --first).
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Replay just this seed (implies --seeds 1).
    #[arg(long)]
    seed: Option<u64>,
    /// Founding members of the cluster (hosts, with --groups).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Raft groups sharing the hosts (multi-raft); each is founded by
    /// three of the --nodes hosts.
    #[arg(long, default_value_t = 1)]
    groups: u64,
    /// Virtual seconds of faults per seed.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Log filter for a replay (error, warn, info, debug, trace).
    #[arg(long)]
    log: Option<String>,
    /// Clients write in exactly-once sessions and retry every unknown
    /// outcome until it is definite.
    #[arg(long)]
    sessions: bool,
    /// The state machine answers each batch a few milliseconds after
    /// applying it, as one on a busy thread of its own does (one group).
    #[arg(long)]
    slow_apply: bool,
    /// Worker threads, each running its share of the seeds.
    #[arg(long, default_value_t = 1)]
    threads: u64,
}

fn main() {
    let args = Args::parse();
    if let Some(level) = &args.log {
        let filter = level.parse::<tracing::Level>().unwrap_or_else(|_| {
            eprintln!("--log: unknown level {level:?}");
            std::process::exit(2)
        });
        tracing_subscriber::fmt()
            .with_max_level(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let (first, seeds) = match args.seed {
        Some(s) => (s, 1),
        None => (args.first, args.seeds),
    };
    if args.nodes == 0 || args.threads == 0 || args.groups == 0 {
        eprintln!("--nodes, --groups and --threads must be at least 1");
        std::process::exit(2);
    }
    if args.groups > 1 && (args.sessions || args.slow_apply) {
        eprintln!("--sessions and --slow-apply run one group; leave out --groups");
        std::process::exit(2);
    }
    let started = Instant::now();
    let threads: Vec<_> = (0..args.threads)
        .map(|t| {
            let (nodes, groups, seconds, threads, sessions, slow) = (
                args.nodes,
                args.groups,
                args.seconds,
                args.threads,
                args.sessions,
                args.slow_apply,
            );
            let verbose = args.seed.is_some() || args.log.is_some();
            std::thread::spawn(move || {
                let duration = Duration::from_secs(seconds);
                let sim = counter_with(nodes, Faults::all(), slow)
                    .sessions(sessions)
                    .duration(duration);
                let hosts = HostSimulation::new(nodes, groups)
                    .faults(Faults::all())
                    .duration(duration);
                // One seed: its virtual time and a line describing it.
                let run = |seed| -> Result<(Duration, String), Failure> {
                    if groups > 1 {
                        let r = hosts.run(seed)?;
                        Ok((r.simulated, format!(
                            "{} writes acknowledged per group, {} elections, {} host crashes, {} messages, quiet {:?} after the clients stopped, then {} messages in a second, {:?} simulated in {:?}, trace {:#x}",
                            r.acknowledged.iter().map(|n| n.to_string()).collect::<Vec<_>>().join("/"),
                            r.elections, r.crashes, r.messages, r.quiet_after, r.idle_messages, r.simulated, r.wall, r.trace
                        )))
                    } else {
                        let r = run_counter(&sim, seed)?;
                        Ok((r.simulated, format!(
                            "{} writes acknowledged of {}, {} elections, {} crashes, {} messages, {:?} simulated in {:?}, trace {:#x}",
                            r.acknowledged(), r.history.len(), r.elections, r.crashes, r.messages, r.simulated, r.wall, r.trace
                        )))
                    }
                };
                let mut simulated = Duration::ZERO;
                let mut done = 0u64;
                for seed in (first + t..first + seeds).step_by(threads as usize) {
                    match run(seed) {
                        Ok((virtual_time, line)) => {
                            simulated += virtual_time;
                            done += 1;
                            if verbose {
                                println!("seed {seed}: ok — {line}");
                            }
                            if done.is_multiple_of(1000) {
                                eprintln!("thread {t}: {done} seeds ok (last {seed}), {:.0} s elapsed", started.elapsed().as_secs_f64());
                            }
                        }
                        Err(f) => {
                            // The failure's replay line names the run's
                            // shape; the state machine's and clients' flags
                            // are this program's.
                            let flags = [(sessions, " --sessions"), (slow, " --slow-apply")]
                                .iter()
                                .filter(|(on, _)| *on)
                                .map(|(_, flag)| *flag)
                                .collect::<String>();
                            eprintln!("FAILED: {f}{flags}");
                            return Err((done, simulated));
                        }
                    }
                }
                Ok((done, simulated))
            })
        })
        .collect();
    let mut total = (0, Duration::ZERO);
    let mut failed = false;
    for t in threads {
        // A failed thread still counts the seeds that passed before it.
        let (done, simulated) = match t.join() {
            Ok(Ok(passed)) => passed,
            Ok(Err(passed)) => {
                failed = true;
                passed
            }
            Err(_) => {
                failed = true;
                (0, Duration::ZERO)
            }
        };
        total.0 += done;
        total.1 += simulated;
    }
    let wall = started.elapsed();
    println!(
        "{} seeds of {} nodes and {} group(s) passed in {:.1} s: {:.0} s simulated, {:.0}x real time",
        total.0,
        args.nodes,
        args.groups,
        wall.as_secs_f64(),
        total.1.as_secs_f64(),
        total.1.as_secs_f64() / wall.as_secs_f64()
    );
    if failed {
        std::process::exit(1);
    }
}
