//! Multi-raft under load: what many groups on shared hosts gain over one
//! group on the same machine.
//!
//! Three `regatta::Host`s in one process (each on threads of its own, one
//! fjall database each under `$TMPDIR`, TCP on 127.0.0.1), with G groups
//! founded by all three. C clients write back-to-back through the leader
//! of their group (client i writes to group i mod G). Each run starts
//! fresh hosts, waits for every group's leader, warms up, then measures.
//! The group counts alternate run by run, so their numbers come from the
//! same minutes of this noisy machine. Printed per group count: medians
//! over runs of writes/s, p50 and p99 latency, fsyncs/s of the shared log
//! per host (mean of the three hosts), and where the leaders were (most
//! and fewest groups led by one host).
//!
//! ```text
//! cargo bench --bench multiraft                 # groups 1 and 64, 256 clients, 5 runs
//! cargo bench --bench multiraft -- 3            # 3 runs
//! cargo bench --bench multiraft -- 3 1 16 64    # 3 runs of groups 1, 16 and 64
//! ```
//!
//! Environment: `MULTIRAFT_SECS` (one run, default 3), `MULTIRAFT_WARMUP_SECS`
//! (default 1), `MULTIRAFT_CLIENTS` (default 256).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use regatta::testing::sim::Counter;
use regatta::{Config, GroupId, Host, NodeId, Raft, Role};
use support::{median, medians, plan_from_args, positive, seconds_from_env, temp_dir, Sample};

const USAGE: &str = "\
usage: cargo bench --bench multiraft -- [RUNS [GROUPS...]]

RUNS (default 5) and each GROUPS (default 1 64) are positive integers.
environment: MULTIRAFT_SECS (default 3), MULTIRAFT_WARMUP_SECS (default 1),
MULTIRAFT_CLIENTS (default 256)";

struct Plan {
    runs: usize,
    groups: Vec<u64>,
    clients: usize,
    run: Duration,
    warmup: Duration,
}

fn parse(args: &[String]) -> Result<Plan, String> {
    let runs = match args.first() {
        Some(a) => positive(a, "RUNS")?,
        None => 5,
    };
    let mut groups: Vec<u64> = args
        .iter()
        .skip(1)
        .map(|a| positive(a, "GROUPS"))
        .collect::<Result<_, _>>()?;
    if groups.is_empty() {
        groups = vec![1, 64];
    }
    let clients = match std::env::var("MULTIRAFT_CLIENTS") {
        Ok(v) => positive(&v, "MULTIRAFT_CLIENTS")?,
        Err(_) => 256,
    };
    Ok(Plan {
        runs,
        groups,
        clients,
        run: seconds_from_env("MULTIRAFT_SECS", 3.0)?,
        warmup: seconds_from_env("MULTIRAFT_WARMUP_SECS", 1.0)?,
    })
}

/// One run's results besides the writes.
struct RunStats {
    sample: Sample,
    syncs_per_host_sec: f64,
    /// Groups' writes made durable by one fsync, on average.
    group_writes_per_sync: f64,
    leaders_max: usize,
    leaders_min: usize,
    /// Most and fewest groups led by one host before the balance.
    leaders_before: (usize, usize),
}

fn spread(
    leaders: &BTreeMap<GroupId, (NodeId, Raft<Counter>)>,
    hosts: &[Host<Counter>],
) -> (usize, usize) {
    let mut per_host: BTreeMap<NodeId, usize> = hosts.iter().map(|h| (h.id(), 0)).collect();
    for (host, _) in leaders.values() {
        *per_host.entry(*host).or_default() += 1;
    }
    (
        per_host.values().copied().max().unwrap_or(0),
        per_host.values().copied().min().unwrap_or(0),
    )
}

async fn start_hosts(dir: &std::path::Path) -> Result<Vec<Host<Counter>>, String> {
    let mut hosts = Vec::new();
    for id in 1..=3 {
        let host = Host::builder(id, |_| Counter::default())
            .data_dir(dir.join(format!("host-{id}")))
            .listen("127.0.0.1:0".parse().unwrap())
            .cluster_name("regatta-multiraft-bench")
            .config(Config::default())
            .start()
            .await
            .map_err(|e| format!("host {id} did not start: {e}"))?;
        hosts.push(host);
    }
    for a in &hosts {
        for b in &hosts {
            if a.id() != b.id() {
                a.set_peer_address(b.id(), &b.raft_addr().to_string());
            }
        }
    }
    Ok(hosts)
}

/// The leader's handle of every group, once each has one.
async fn leaders(
    hosts: &[Host<Counter>],
    groups: u64,
) -> Result<BTreeMap<GroupId, (NodeId, Raft<Counter>)>, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut found = BTreeMap::new();
        for host in hosts {
            for info in host.groups() {
                if info.role == Role::Leader {
                    found.insert(info.group, (host.id(), host.group(info.group).unwrap()));
                }
            }
        }
        if found.len() as u64 == groups {
            return Ok(found);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {groups} groups have a leader",
                found.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn drive(targets: &[Raft<Counter>], clients: usize, run: Duration) -> Sample {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let raft = targets[i % targets.len()].clone();
            actix_rt::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while start.elapsed() < run {
                    let t = Instant::now();
                    match raft.write(1).await {
                        Ok(_) => latencies.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        match task.await {
            Ok((latencies, e)) => {
                all.extend(latencies);
                errors += e;
            }
            Err(_) => errors += 1,
        }
    }
    Sample::from_latencies(&mut all, start.elapsed(), errors)
}

async fn one_run(plan: &Plan, groups: u64) -> Result<RunStats, String> {
    let dir = temp_dir("regatta-multiraft-")?;
    let hosts = start_hosts(dir.path()).await?;
    for host in &hosts {
        for group in 1..=groups {
            host.create_group(group, [1, 2, 3])
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let elected = spread(&leaders(&hosts, groups).await?, &hosts);
    hosts[0].balance_leaders().await;
    // Transfers settle within an election timeout; wait for every group
    // to name its leader again.
    let leaders = leaders(&hosts, groups).await?;
    let (leaders_max, leaders_min) = spread(&leaders, &hosts);
    let targets: Vec<Raft<Counter>> = leaders.values().map(|(_, r)| r.clone()).collect();
    let _ = drive(&targets, plan.clients, plan.warmup).await;
    let before: Vec<(u64, u64)> = hosts
        .iter()
        .map(|h| (h.counts().log_syncs, h.counts().log_group_writes))
        .collect();
    let sample = drive(&targets, plan.clients, plan.run).await;
    let (syncs, group_writes) = hosts
        .iter()
        .zip(before)
        .map(|(h, (s, w))| (h.counts().log_syncs - s, h.counts().log_group_writes - w))
        .fold((0, 0), |(s, w), (ds, dw)| (s + ds, w + dw));
    for host in hosts {
        host.shutdown().await;
    }
    Ok(RunStats {
        sample,
        syncs_per_host_sec: syncs as f64 / 3.0 / plan.run.as_secs_f64(),
        group_writes_per_sync: group_writes as f64 / syncs.max(1) as f64,
        leaders_max,
        leaders_min,
        leaders_before: elected,
    })
}

fn main() {
    let plan = plan_from_args(USAGE, parse);
    let system = actix_rt::System::new();
    let result: Result<(), String> = system.block_on(async {
        let mut results: BTreeMap<u64, Vec<RunStats>> = BTreeMap::new();
        for run in 0..plan.runs {
            for &groups in &plan.groups {
                eprintln!("run {}/{}: {groups} groups", run + 1, plan.runs);
                results
                    .entry(groups)
                    .or_default()
                    .push(one_run(&plan, groups).await?);
            }
        }
        println!(
            "## Multi-raft: 3 hosts in one process, {} clients, {} runs of {:?} (alternating), medians\n",
            plan.clients, plan.runs, plan.run
        );
        println!("| groups | writes/s | p50 | p99 | failed | fsyncs/s per host | group writes per fsync | leaders per host, max/min: elected → balanced |");
        println!("|-------:|---------:|----:|----:|-------:|------------------:|-----------------------:|:---------------------------|");
        for (groups, runs) in &results {
            let samples: Vec<Sample> = runs
                .iter()
                .map(|r| Sample {
                    per_sec: r.sample.per_sec,
                    p50: r.sample.p50,
                    p99: r.sample.p99,
                    errors: r.sample.errors,
                })
                .collect();
            let (rate, p50, p99) = medians(&samples);
            let failed: u64 = runs.iter().map(|r| r.sample.errors).sum();
            let syncs = median(runs.iter().map(|r| r.syncs_per_host_sec).collect()).unwrap_or(0.0);
            let per_sync =
                median(runs.iter().map(|r| r.group_writes_per_sync).collect()).unwrap_or(0.0);
            let spread: Vec<String> = runs
                .iter()
                .map(|r| {
                    format!(
                        "{}/{} → {}/{}",
                        r.leaders_before.0, r.leaders_before.1, r.leaders_max, r.leaders_min
                    )
                })
                .collect();
            println!(
                "| {groups} | {rate} | {p50} | {p99} | {failed} | {syncs:.0} | {per_sync:.1} | {} |",
                spread.join(", ")
            );
        }
        let rates: Vec<String> = results
            .iter()
            .map(|(g, runs)| {
                let each: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.sample.per_sec)).collect();
                format!("{g} groups: {}", each.join(", "))
            })
            .collect();
        println!("\nEvery run's writes/s: {}.", rates.join("; "));
        Ok(())
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
