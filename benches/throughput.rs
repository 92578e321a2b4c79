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

use actix::prelude::*;
use regatta::testing::Cluster;
use regatta::{Apply, Config, Restore, Snapshot, StateMachine};

#[derive(Default)]
struct Counter(u64);

impl Actor for Counter {
    type Context = Context<Self>;
}
impl StateMachine for Counter {
    type Command = u64;
    type Response = u64;
}
impl Handler<Apply<Counter>> for Counter {
    type Result = Vec<u64>;
    fn handle(&mut self, b: Apply<Counter>, _: &mut Context<Self>) -> Vec<u64> {
        b.entries
            .into_iter()
            .map(|(_, n)| {
                self.0 += n;
                self.0
            })
            .collect()
    }
}
impl Handler<Snapshot> for Counter {
    type Result = Result<regatta::SnapshotData, String>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        Ok(self.0.to_be_bytes().to_vec().into())
    }
}
impl Handler<Restore> for Counter {
    type Result = Result<(), String>;
    fn handle(&mut self, r: Restore, _: &mut Context<Self>) -> Self::Result {
        self.0 = u64::from_be_bytes(r.data[..].try_into().map_err(|_| "bad")?);
        Ok(())
    }
}

const RUN: Duration = Duration::from_secs(3);

struct Sample {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

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
    let elapsed = start.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Sample {
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[v.len() / 2]
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
            median(samples.iter().map(|s| s.per_sec).collect()),
            median(samples.iter().map(|s| s.p50).collect()),
            median(samples.iter().map(|s| s.p99).collect()),
        );
    }
}
