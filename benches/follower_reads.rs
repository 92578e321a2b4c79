//! How soon a follower serves a linearizable read of a write that just
//! committed: one client writes through the leader, then asks a follower
//! for a read barrier (`Raft::read_barrier`: the leader's commit index,
//! then wait until the follower has applied it). The barrier waits for the
//! follower to learn the new commit index, so this measures how promptly
//! commit-index advances reach followers. 3 nodes in one process
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

async fn run() -> Sample {
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
    let mut latencies = Vec::new();
    let mut errors = 0;
    let start = Instant::now();
    while start.elapsed() < RUN {
        if writer.write(1).await.is_err() {
            errors += 1;
            continue;
        }
        let t = Instant::now();
        match reader.read_barrier().await {
            Ok(_) => latencies.push(t.elapsed()),
            Err(_) => errors += 1,
        }
    }
    Sample::from_latencies(&mut latencies, start.elapsed(), errors)
}

fn main() {
    let runs: usize = plan_from_args(USAGE, |args| match args {
        [] => Ok(5),
        [runs] => positive(runs, "RUNS"),
        _ => Err("too many arguments".into()),
    });
    let system = actix::System::new();
    let samples: Vec<Sample> = (0..runs).map(|_| system.block_on(run())).collect();
    println!("follower reads/s (median of {runs}) | p50 | p99");
    println!(
        "{:>10.0} | {:>8.2?} | {:>8.2?}",
        median(samples.iter().map(|s| s.per_sec).collect()).unwrap_or_default(),
        median(samples.iter().filter_map(|s| s.p50).collect()).unwrap_or_default(),
        median(samples.iter().filter_map(|s| s.p99).collect()).unwrap_or_default(),
    );
}
