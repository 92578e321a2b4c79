//! How long writes stop when the leader crashes: three `regatta::Node`s
//! (fjall + TCP on 127.0.0.1, default `Config`: election timeout
//! 300–600 ms, pre-vote, check-quorum) under a steady load of clients
//! writing through the surviving nodes; the leader is aborted (as
//! `kill -9`), and the gap is the time from the crash to the completion
//! of the first write submitted after it. The crashed node then restarts
//! on its directory and catches up before the next round.
//!
//! ```text
//! cargo bench --bench failover            # 20 crashes, 4 clients
//! cargo bench --bench failover -- 5 8     # 5 crashes, 8 clients
//! ```
//!
//! Prints each gap, then their p50, p90 and maximum.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regatta::testing::sim::Counter;
use regatta::{Config, InitialCluster, Node, Raft, Role};

mod support;
use support::{connect, median, plan_from_args, positive, start_node, stop_nodes, temp_dir};

const CLUSTER_ID: &str = "regatta-failover-bench";
const USAGE: &str = "usage: cargo bench --bench failover -- [CRASHES [CLIENTS]]";
const WAIT: Duration = Duration::from_secs(30);

struct Plan {
    crashes: usize,
    clients: usize,
}

fn parse_plan(args: &[String]) -> Result<Plan, String> {
    let crashes = args.first().map_or(Ok(20), |a| positive(a, "CRASHES"))?;
    let clients = args.get(1).map_or(Ok(4), |a| positive(a, "CLIENTS"))?;
    if args.len() > 2 {
        return Err("too many arguments".into());
    }
    Ok(Plan { crashes, clients })
}

/// Handles of the running nodes, shared with the clients (a crashed node
/// has none).
type Live = Arc<Mutex<Vec<Raft<Counter>>>>;

/// Successful writes: (submitted, completed).
type Done = Arc<Mutex<Vec<(Instant, Instant)>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn client(live: Live, done: Done, stop: Arc<std::sync::atomic::AtomicBool>, n: usize) {
    let mut turn = n;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let raft = {
            let live = lock(&live);
            turn += 1;
            live.get(turn % live.len().max(1)).cloned()
        };
        let Some(raft) = raft else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let submitted = Instant::now();
        if raft.write(1).await.is_ok() {
            lock(&done).push((submitted, Instant::now()));
        }
    }
}

async fn leader_of(nodes: &[Option<Node<Counter>>]) -> Option<usize> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        for (i, node) in nodes.iter().enumerate() {
            if let Some(n) = node {
                if n.raft().metrics().borrow().role == Role::Leader {
                    return Some(i);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

async fn bench(plan: &Plan) -> Result<Vec<Duration>, String> {
    let dir = temp_dir("regatta-failover-")?;
    let founders = (1..=3).fold(InitialCluster::new(), |c, id| c.member(id, ""));
    let start = |id: u64| {
        let node_dir = dir.path().join(format!("node-{id}"));
        let founders = founders.clone();
        async move {
            let config = Config::default();
            start_node(
                id,
                Counter::default(),
                CLUSTER_ID,
                node_dir,
                &founders,
                config,
                None,
            )
            .await
        }
    };
    let mut nodes: Vec<Option<Node<Counter>>> = Vec::new();
    for id in 1..=3 {
        nodes.push(Some(start(id).await?));
    }
    connect(nodes.iter().flatten());
    let live: Live = Arc::new(Mutex::new(
        nodes.iter().flatten().map(|n| n.raft().clone()).collect(),
    ));
    let done: Done = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..plan.clients)
        .map(|n| actix_rt::spawn(client(live.clone(), done.clone(), stop.clone(), n)))
        .collect();
    let mut gaps = Vec::new();
    for round in 0..plan.crashes {
        let leader = leader_of(&nodes).await.ok_or("no leader")?;
        // Steady state first: writes flowing for a while.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let victim = nodes[leader].take().ok_or("leader missing")?;
        let victim_id = victim.id();
        lock(&live).retain(|r| r.id() != victim_id);
        let crashed = Instant::now();
        victim.abort().await;
        let resumed = loop {
            let first = lock(&done)
                .iter()
                .filter(|(submitted, _)| *submitted >= crashed)
                .map(|(_, completed)| *completed)
                .min();
            if let Some(at) = first {
                break at;
            }
            if crashed.elapsed() > WAIT {
                return Err(format!("round {round}: no write succeeded within {WAIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let gap = resumed - crashed;
        println!(
            "crash {:>2}: node {victim_id} was leader; writes resumed after {gap:.0?}",
            round + 1
        );
        gaps.push(gap);
        // The crashed node comes back on its directory and catches up.
        let restarted = start(victim_id).await?;
        nodes[leader] = Some(restarted);
        connect(nodes.iter().flatten());
        let new_leader = leader_of(&nodes).await.ok_or("no leader after restart")?;
        let commit = nodes[new_leader]
            .as_ref()
            .map(|n| n.raft().metrics().borrow().commit_index)
            .unwrap_or(0);
        let back = nodes[leader].as_ref().ok_or("restarted node missing")?;
        back.raft()
            .wait_applied(commit, WAIT)
            .await
            .map_err(|e| format!("node {victim_id} did not catch up: {e}"))?;
        lock(&live).push(back.raft().clone());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    stop_nodes(nodes.into_iter().flatten()).await;
    Ok(gaps)
}

fn main() {
    let plan = plan_from_args(USAGE, parse_plan);
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_writer(std::io::stderr)
        .try_init();
    println!(
        "## Failover: {} leader crashes under {} clients (3 nodes, fjall + TCP, default Config)\n",
        plan.crashes, plan.clients
    );
    let system = actix::System::new();
    let mut gaps = match system.block_on(bench(&plan)) {
        Ok(gaps) => gaps,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    gaps.sort();
    let at = |p: f64| gaps[((gaps.len() as f64 * p) as usize).min(gaps.len() - 1)];
    println!(
        "\nwrites resumed after: p50 {:.0?}, p90 {:.0?}, max {:.0?} (median {:.0?})",
        at(0.5),
        at(0.9),
        gaps[gaps.len() - 1],
        median(gaps.clone()).unwrap_or_default()
    );
}
