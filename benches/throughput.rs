//! End-to-end write throughput and latency of a 3-node cluster in one
//! process (simulated network without faults, in-memory log): clients 1, 16, 64 and 256,
//! each writing back-to-back through the leader's `Raft` handle.
//!
//! ```text
//! cargo bench --bench throughput            # all client counts, 5 runs each
//! cargo bench --bench throughput -- 64 3    # 64 clients, 3 runs
//! ```
//!
//! Prints, per client count, the median over runs of writes/s, p50 and p99.
//! With `THROUGHPUT_SESSIONS=1` every client writes in its own client
//! session (`Session::write`: tagged entries, the applier's dedup cache).
//! With `THROUGHPUT_COUNT=1` it also prints, per write, the allocations
//! (every thread, a counting allocator) and the context switches (every
//! thread of the process, from `/proc/self/task/*/status`) — the costs the
//! write path is meant to shed; counting slows the run a little.
//! Messages between nodes are handed over without encoding (like
//! openraft's in-process benchmark); `THROUGHPUT_ENCODE=1` encodes and
//! decodes each one as the simulated network does by default.

use std::time::{Duration, Instant};

use regatta::testing::sim::Counter;
use regatta::testing::Cluster;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
mod support;
use support::{median, Sample};

#[global_allocator]
static ALLOCATOR: counting_alloc::Counting = counting_alloc::Counting;

/// Context switches of every thread of this process so far (Linux).
fn context_switches() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
        for line in status.lines() {
            if let Some(rest) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += rest.trim().parse::<u64>().ok()?;
            }
        }
    }
    Some(total)
}

/// Costs per write of one run.
#[derive(Clone, Copy, Default)]
struct PerWrite {
    allocations: f64,
    context_switches: f64,
}

const RUN: Duration = Duration::from_secs(3);

async fn run(clients: usize) -> (Sample, PerWrite) {
    let c = Cluster::new(3, support::bench_config(), 1, |_| Counter::default()).await;
    // Messages are handed over, not encoded, as openraft's in-process
    // benchmark does: this measures the protocol's path, not the codec.
    c.net()
        .set_encoding(std::env::var("THROUGHPUT_ENCODE").is_ok_and(|v| v == "1"));
    let leader = c
        .wait_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let raft = c.raft(leader).clone();
    // Warm up.
    for _ in 0..100 {
        raft.write(1).await.expect("warm-up write");
    }
    let sessions = std::env::var("THROUGHPUT_SESSIONS").is_ok_and(|v| v == "1");
    let mut opened = Vec::new();
    for _ in 0..clients {
        opened.push(if sessions {
            Some(raft.open_session().await.expect("open a session"))
        } else {
            None
        });
    }
    let (allocs_before, switches_before) = (counting_alloc::allocations(), context_switches());
    let start = Instant::now();
    let tasks: Vec<_> = opened
        .into_iter()
        .map(|session| {
            let r = raft.clone();
            actix_rt::spawn(async move {
                let mut lat = Vec::new();
                while start.elapsed() < RUN {
                    let t = Instant::now();
                    let written = match &session {
                        Some(s) => s.write(1).await.is_ok(),
                        None => r.write(1).await.is_ok(),
                    };
                    if written {
                        lat.push(t.elapsed());
                    }
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    let elapsed = start.elapsed();
    let writes = all.len().max(1) as f64;
    let per_write = PerWrite {
        allocations: (counting_alloc::allocations() - allocs_before) as f64 / writes,
        context_switches: match (switches_before, context_switches()) {
            (Some(before), Some(after)) => after.saturating_sub(before) as f64 / writes,
            _ => f64::NAN,
        },
    };
    (Sample::from_latencies(&mut all, elapsed, 0), per_write)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let counts: Vec<usize> = match args.first().and_then(|a| a.parse().ok()) {
        Some(n) => vec![n],
        None => vec![1, 16, 64, 256],
    };
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let counting = std::env::var("THROUGHPUT_COUNT").is_ok_and(|v| v == "1");
    if counting {
        counting_alloc::enable();
    }
    let system = actix::System::new();
    print!("clients | writes/s (median of {runs}) | p50 | p99");
    println!(
        "{}",
        if counting {
            " | allocations/write | context switches/write"
        } else {
            ""
        }
    );
    for clients in counts {
        let results: Vec<(Sample, PerWrite)> =
            (0..runs).map(|_| system.block_on(run(clients))).collect();
        let samples: Vec<&Sample> = results.iter().map(|(s, _)| s).collect();
        print!(
            "{clients:>7} | {:>10.0} | {:>8.2?} | {:>8.2?}",
            median(samples.iter().map(|s| s.per_sec).collect()).unwrap_or_default(),
            median(samples.iter().filter_map(|s| s.p50).collect()).unwrap_or_default(),
            median(samples.iter().filter_map(|s| s.p99).collect()).unwrap_or_default(),
        );
        if counting {
            let costs: Vec<&PerWrite> = results.iter().map(|(_, c)| c).collect();
            print!(
                " | {:>6.1} | {:>6.2}",
                median(costs.iter().map(|c| c.allocations).collect()).unwrap_or_default(),
                median(costs.iter().map(|c| c.context_switches).collect()).unwrap_or_default(),
            );
        }
        println!();
    }
}
