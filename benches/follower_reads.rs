//! How soon a follower has a write that just committed: one client writes
//! through the leader; then the time until a follower has applied it (how
//! promptly commit-index advances reach followers), and the time of a
//! linearizable read barrier on that follower (`Raft::read_barrier`: the
//! leader's commit index after a heartbeat round, then wait until the
//! follower has applied it). 3 nodes in one process
//! (simulated network, in-memory log), default `Config` (heartbeat 50 ms).
//!
//! ```text
//! cargo bench --bench follower_reads           # 5 runs of 3 s
//! cargo bench --bench follower_reads -- 3      # 3 runs
//! ```
//!
//! Prints the median over runs of follower reads/s, p50 and p99.

use std::time::{Duration, Instant};

use regatta::testing::sim::Counter;
use regatta::testing::Cluster;
use regatta::Config;

mod support;
use support::{median, plan_from_args, positive, Sample};

const RUN: Duration = Duration::from_secs(3);
const USAGE: &str = "usage: cargo bench --bench follower_reads -- [RUNS]";

async fn run() -> (Sample, Sample) {
    let c = Cluster::new(3, Config::default(), 1, |_| Counter::default()).await;
    let leader = c
        .wait_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let follower = c
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let (writer, reader) = (c.raft(leader).clone(), c.raft(follower).clone());
    let (mut applied, mut reads) = (Vec::new(), Vec::new());
    let mut errors = 0;
    let start = Instant::now();
    while start.elapsed() < RUN {
        let Ok(written) = writer.write_entry(1).await else {
            errors += 1;
            continue;
        };
        let t = Instant::now();
        if reader
            .wait_applied(written.log_id.index, Duration::from_secs(5))
            .await
            .is_err()
        {
            errors += 1;
            continue;
        }
        applied.push(t.elapsed());
        let t = Instant::now();
        match reader.read_barrier().await {
            Ok(_) => reads.push(t.elapsed()),
            Err(_) => errors += 1,
        }
    }
    let elapsed = start.elapsed();
    (
        Sample::from_latencies(&mut applied, elapsed, errors),
        Sample::from_latencies(&mut reads, elapsed, errors),
    )
}

fn main() {
    let runs: usize = plan_from_args(USAGE, |args| match args {
        [] => Ok(5),
        [runs] => positive(runs, "RUNS"),
        _ => Err("too many arguments".into()),
    });
    let system = actix::System::new();
    let samples: Vec<(Sample, Sample)> = (0..runs).map(|_| system.block_on(run())).collect();
    println!("medians of {runs} runs | per second | p50 | p99");
    for (name, pick) in [
        ("follower applied the write", 0),
        ("follower read barrier", 1),
    ] {
        let of = |s: &(Sample, Sample)| if pick == 0 { s.0.per_sec } else { s.1.per_sec };
        let p50 = |s: &(Sample, Sample)| if pick == 0 { s.0.p50 } else { s.1.p50 };
        let p99 = |s: &(Sample, Sample)| if pick == 0 { s.0.p99 } else { s.1.p99 };
        println!(
            "{name:<27} | {:>6.0} | {:>8.2?} | {:>8.2?}",
            median(samples.iter().map(of).collect()).unwrap_or_default(),
            median(samples.iter().filter_map(p50).collect()).unwrap_or_default(),
            median(samples.iter().filter_map(p99).collect()).unwrap_or_default(),
        );
    }
}
