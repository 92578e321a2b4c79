//! End-to-end write throughput and latency of a 3-node cluster in one
//! process (simulated network, in-memory log): clients 1, 16, 64 and 256,
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

use std::time::{Duration, Instant};

use regatta::testing::sim::Counter;
use regatta::testing::Cluster;
use regatta::Config;

mod support;
use support::{median, Sample};

const RUN: Duration = Duration::from_secs(3);

async fn run(clients: usize) -> Sample {
    let c = Cluster::new(3, Config::default(), 1, |_| Counter::default()).await;
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
    Sample::from_latencies(&mut all, start.elapsed(), 0)
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
    let system = actix::System::new();
    println!("clients | writes/s (median of {runs}) | p50 | p99");
    for clients in counts {
        let samples: Vec<Sample> = (0..runs).map(|_| system.block_on(run(clients))).collect();
        println!(
            "{clients:>7} | {:>10.0} | {:>8.2?} | {:>8.2?}",
            median(samples.iter().map(|s| s.per_sec).collect()).unwrap_or_default(),
            median(samples.iter().filter_map(|s| s.p50).collect()).unwrap_or_default(),
            median(samples.iter().filter_map(|s| s.p99).collect()).unwrap_or_default(),
        );
    }
}
