//! Read latency and throughput at each consistency: local
//! (`Raft::read_local`), linearizable through a heartbeat round
//! (ReadIndex, `Raft::read` by default) and linearizable from the leader's
//! lease (`Raft::read` with `Config::lease_reads`). Three `regatta::Node`s
//! in one process, each on a thread of its own with its own fjall log and
//! TCP on 127.0.0.1 — two such clusters, one with lease reads on — and
//! clients reading back to back from the leader or from a follower, at 1
//! and 64 clients. Runs alternate between the kinds, so every kind sees
//! the same machine; the medians over runs are printed.
//!
//! ```text
//! cargo bench --bench reads           # 5 runs of 2 s per row
//! cargo bench --bench reads -- 3      # 3 runs
//! ```
//!
//! Environment: `READS_SECS` (length of one run, default 2).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use regatta::testing::sim::Counter;
use regatta::{Config, InitialCluster, Node, Raft};

mod support;
use support::{
    connect, medians, plan_from_args, positive, seconds_from_env, start_node, stop_nodes, temp_dir,
    Sample,
};

const USAGE: &str = "usage: cargo bench --bench reads -- [RUNS]";

/// A read of nothing: the cost is the path to the state machine.
#[derive(Message)]
#[rtype(result = "()")]
struct Ping;

impl Handler<Ping> for Counter {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Local,
    ReadIndex,
    Lease,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::ReadIndex => "ReadIndex",
            Kind::Lease => "lease",
        }
    }
}

struct Cluster {
    nodes: Vec<Node<Counter>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(name: &str, config: Config) -> Result<Cluster, String> {
        let dir = temp_dir("regatta-reads-")?;
        let founders = (1..=3).fold(InitialCluster::new(), |c, id| c.member(id, ""));
        let mut nodes = Vec::new();
        for id in 1..=3 {
            let path = dir.path().join(format!("node-{id}"));
            let node = start_node(
                id,
                Counter::default(),
                name,
                path,
                &founders,
                config.clone(),
                None,
            );
            nodes.push(node.await?);
        }
        connect(&nodes);
        let cluster = Cluster { nodes, _dir: dir };
        // A committed write of the leader's term, so reads may be served.
        cluster.nodes[0]
            .raft()
            .write(1)
            .await
            .map_err(|e| format!("first write: {e}"))?;
        Ok(cluster)
    }

    /// (leader, a follower).
    fn roles(&self) -> Result<(Raft<Counter>, Raft<Counter>), String> {
        let leader_id = self.nodes[0]
            .raft()
            .metrics()
            .borrow()
            .leader
            .ok_or("no leader")?;
        let leader = self
            .nodes
            .iter()
            .find(|n| n.id() == leader_id)
            .ok_or("leader not here")?;
        let follower = self
            .nodes
            .iter()
            .find(|n| n.id() != leader_id)
            .ok_or("no follower")?;
        Ok((leader.raft().clone(), follower.raft().clone()))
    }
}

async fn read(raft: &Raft<Counter>, kind: Kind) -> bool {
    match kind {
        Kind::Local => raft.read_local(Ping).await.is_ok(),
        Kind::ReadIndex | Kind::Lease => raft.read(Ping).await.is_ok(),
    }
}

/// `clients` readers on `raft` for `run`.
async fn measure(raft: Raft<Counter>, kind: Kind, clients: usize, run: Duration) -> Sample {
    let latencies = Rc::new(RefCell::new(Vec::new()));
    let errors = Rc::new(RefCell::new(0u64));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (raft, latencies, errors) = (raft.clone(), latencies.clone(), errors.clone());
            actix_rt::spawn(async move {
                while start.elapsed() < run {
                    let t = Instant::now();
                    if read(&raft, kind).await {
                        latencies.borrow_mut().push(t.elapsed());
                    } else {
                        *errors.borrow_mut() += 1;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    let errors = *errors.borrow();
    let mut all = std::mem::take(&mut *latencies.borrow_mut());
    Sample::from_latencies(&mut all, elapsed, errors)
}

async fn bench(runs: usize, run: Duration) -> Result<(), String> {
    let round = Cluster::start("reads-round", Config::default()).await?;
    let lease_config = Config {
        lease_reads: true,
        ..Config::default()
    };
    let lease = Cluster::start("reads-lease", lease_config).await?;
    let kinds = [Kind::Local, Kind::ReadIndex, Kind::Lease];
    println!("medians of {runs} runs of {run:?} | reads/s | p50 | p99 | errors");
    for clients in [1, 64] {
        for on_leader in [true, false] {
            let mut samples: Vec<Vec<Sample>> = kinds.iter().map(|_| Vec::new()).collect();
            for r in 0..runs {
                // Alternate the order too, so no kind always runs first.
                for i in 0..kinds.len() {
                    let k = (i + r) % kinds.len();
                    let cluster = if kinds[k] == Kind::Lease {
                        &lease
                    } else {
                        &round
                    };
                    let (leader, follower) = cluster.roles()?;
                    let node = if on_leader { leader } else { follower };
                    samples[k].push(measure(node, kinds[k], clients, run).await);
                }
            }
            for (kind, samples) in kinds.iter().zip(&samples) {
                let (rate, p50, p99) = medians(samples);
                let errors: u64 = samples.iter().map(|s| s.errors).sum();
                println!(
                    "{:>2} client(s) on the {:<8} {:<9} | {rate:>7} | {p50:>9} | {p99:>9} | {errors}",
                    clients,
                    if on_leader { "leader" } else { "follower" },
                    kind.name()
                );
            }
        }
    }
    let counts = lease.roles()?.0.counts();
    println!(
        "lease cluster's leader: {} reads from the lease, {} after a round",
        counts.reads_by_lease, counts.reads_by_round
    );
    stop_nodes(round.nodes).await;
    stop_nodes(lease.nodes).await;
    Ok(())
}

fn main() {
    let runs: usize = plan_from_args(USAGE, |args| match args {
        [] => Ok(5),
        [runs] => positive(runs, "RUNS"),
        _ => Err("too many arguments".into()),
    });
    let run = seconds_from_env("READS_SECS", 2.0).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    if let Err(e) = actix::System::new().block_on(bench(runs, run)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
