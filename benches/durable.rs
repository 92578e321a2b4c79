//! Durable write throughput and latency, in two parts:
//!
//! - **raw**: the disk limit. [`FjallStorage`] (one fjall write batch plus
//!   an fsync, `PersistMode::SyncAll`, per call) in a temporary directory,
//!   written through [`LogStorage::write`] exactly as a node's log writer
//!   thread does: batches of 1, 64 and 256 entries carrying 256-byte
//!   commands (consecutive indices, term 1), back-to-back. A fresh store per
//!   run. Prints, per batch size, the median over runs of batches/s,
//!   entries/s and the per-run p50 and p99 latency of one `write` call.
//! - **cluster**: end to end. Three `regatta::Node`s in one process, each
//!   on a thread of its own with its own fjall log and TCP transport on
//!   127.0.0.1; clients 1, 16, 64 and 256, each writing back-to-back
//!   through the leader's [`Raft::write`]. One cluster per client count,
//!   warmed up with that many clients, then measured over several runs.
//!   Prints the median over runs of writes/s and of per-run p50 and p99,
//!   next to the physical limit measured just before in the same run
//!   (loopback round trip and fsync: 1 / (fsync p50 + round trip) for one
//!   client, the disk's group-commit entries/s at a batch of N for N
//!   clients) and the ratio to it.
//!
//! ```text
//! cargo bench --bench durable                   # both parts, 5 runs each
//! cargo bench --bench durable -- raw            # raw part only, 5 runs
//! cargo bench --bench durable -- raw 3          # raw part, 3 runs
//! cargo bench --bench durable -- raw 3 64       # raw part, batches of 64 only, 3 runs
//! cargo bench --bench durable -- cluster        # cluster part only, 5 runs
//! cargo bench --bench durable -- cluster 64 3   # cluster part, 64 clients, 3 runs
//! cargo bench --bench durable -- all 3          # both parts, 3 runs
//! ```
//!
//! Environment (seconds, fractions allowed):
//!
//! - `DURABLE_RAW_SECS`: length of one raw run (default 2);
//! - `DURABLE_CLUSTER_SECS`: length of one cluster run (default 3);
//! - `DURABLE_WARMUP_SECS`: warm-up before every raw run and before the
//!   runs of every client count, not measured (default 1);
//! - `DURABLE_TLS=1`: the cluster's nodes talk mutual TLS (certificates of
//!   a test CA), to measure what TLS costs on the write path.
//!
//! A smoke test: `DURABLE_RAW_SECS=0.2 DURABLE_CLUSTER_SECS=0.5
//! DURABLE_WARMUP_SECS=0.1 cargo bench --bench durable -- all 1`.
//!
//! The temporary directories are created under `$TMPDIR` (else `/tmp`); the
//! raw numbers mean something only on the disk under test, so the directory
//! and, on Linux, its file system are printed with the results (a `tmpfs`
//! makes fsync free).

#[path = "../examples/service/certs.rs"]
mod certs;
#[path = "../src/bin/regatta/disk.rs"]
mod disk;
mod support;

use std::time::{Duration, Instant};

use regatta::testing::sim::Counter;
use regatta::{InitialCluster, Node, Raft, Role};
use support::{
    connect, file_system_of, loopback_rtt, median, medians, plan_from_args, positive,
    seconds_from_env, start_node, stop_nodes, temp_dir, Sample,
};

const CLUSTER_ID: &str = "regatta-durable-bench";
const RAW_BATCHES: [usize; 3] = [1, 64, 256];
const CLIENT_COUNTS: [usize; 4] = [1, 16, 64, 256];
const DEFAULT_RUNS: usize = 5;

const USAGE: &str = "\
usage: cargo bench --bench durable -- [PART]

parts:
  (none) | all [RUNS]        both parts (default 5 runs)
  raw [RUNS [BATCH]]         FjallStorage::write alone, batches of 1, 64, 256
                             entries (or BATCH only)
  cluster [CLIENTS [RUNS]]   3 nodes, fjall + TCP, clients 1, 16, 64, 256
                             (or CLIENTS only)

RUNS, BATCH and CLIENTS are positive integers.

environment (seconds, fractions allowed):
  DURABLE_RAW_SECS       one raw run (default 2)
  DURABLE_CLUSTER_SECS   one cluster run (default 3)
  DURABLE_WARMUP_SECS    warm-up per raw run and per client count (default 1)";

// ---------------------------------------------------------------------------
// Command line

enum Part {
    Raw,
    Cluster,
}

struct Plan {
    parts: Vec<Part>,
    runs: usize,
    batches: Vec<usize>,
    clients: Vec<usize>,
    raw_run: Duration,
    cluster_run: Duration,
    warmup: Duration,
}

fn parse_plan(args: &[String]) -> Result<Plan, String> {
    let mut plan = Plan {
        parts: vec![Part::Raw, Part::Cluster],
        runs: DEFAULT_RUNS,
        batches: RAW_BATCHES.to_vec(),
        clients: CLIENT_COUNTS.to_vec(),
        raw_run: seconds_from_env("DURABLE_RAW_SECS", 2.0)?,
        cluster_run: seconds_from_env("DURABLE_CLUSTER_SECS", 3.0)?,
        warmup: seconds_from_env("DURABLE_WARMUP_SECS", 1.0)?,
    };
    let Some((part, rest)) = args.split_first() else {
        return Ok(plan);
    };
    match (part.as_str(), rest) {
        ("all", []) => {}
        ("all", [runs]) => plan.runs = positive(runs, "RUNS")?,
        ("raw", rest) if rest.len() <= 2 => {
            plan.parts = vec![Part::Raw];
            if let Some(runs) = rest.first() {
                plan.runs = positive(runs, "RUNS")?;
            }
            if let Some(batch) = rest.get(1) {
                plan.batches = vec![positive(batch, "BATCH")?];
            }
        }
        ("cluster", rest) if rest.len() <= 2 => {
            plan.parts = vec![Part::Cluster];
            if let Some(clients) = rest.first() {
                plan.clients = vec![positive(clients, "CLIENTS")?];
            }
            if let Some(runs) = rest.get(1) {
                plan.runs = positive(runs, "RUNS")?;
            }
        }
        ("all" | "raw" | "cluster", _) => return Err(format!("too many arguments after {part}")),
        _ => return Err(format!("unknown part {part:?}")),
    }
    Ok(plan)
}

// ---------------------------------------------------------------------------
// Part (a): the raw disk limit

/// One raw run on a fresh store: warm up, then write `batch`-entry batches
/// back-to-back for `run` (the same measurement as `counter check disk`).
fn raw_run(batch: usize, run: Duration, warmup: Duration) -> Result<Sample, String> {
    let dir = temp_dir("regatta-durable-")?;
    let mut measured = disk::measure(&dir.path().join("log"), batch, warmup, run)?;
    Ok(Sample::from_latencies(
        &mut measured.latencies,
        measured.elapsed,
        0,
    ))
}

fn raw_part(plan: &Plan) -> Result<(), String> {
    let base = std::env::temp_dir();
    println!("## Raw disk limit: FjallStorage::write (fjall batch + fsync, SyncAll)\n");
    println!(
        "{}-byte command payloads, term 1, consecutive indices; a fresh store per \
         run under {} on {}; {:?} warm-up + {:?} per run; medians of {} runs.\n",
        disk::PAYLOAD_BYTES,
        base.display(),
        file_system_of(&base).unwrap_or_else(|| "an unknown file system".into()),
        plan.warmup,
        plan.raw_run,
        plan.runs,
    );

    println!("| entries/batch | batches/s | entries/s | p50 batch latency | p99 batch latency |");
    println!("|--------------:|----------:|----------:|------------------:|------------------:|");
    for &batch in &plan.batches {
        let mut samples = Vec::with_capacity(plan.runs);
        for _ in 0..plan.runs {
            samples.push(raw_run(batch, plan.raw_run, plan.warmup)?);
        }
        let batches_per_sec = median(samples.iter().map(|s| s.per_sec).collect());
        let (rate, p50, p99) = medians(&samples);
        let entries = batches_per_sec.map_or("-".into(), |r| format!("{:.0}", r * batch as f64));
        println!("| {batch:>13} | {rate:>9} | {entries:>9} | {p50:>17} | {p99:>17} |");
    }
    println!();
    Ok(())
}

// ---------------------------------------------------------------------------
// Part (b): end to end, 3 nodes with fjall and TCP

/// Whether `DURABLE_TLS=1` asks for mutual TLS between the nodes.
fn tls_on() -> bool {
    std::env::var("DURABLE_TLS").is_ok_and(|v| v == "1")
}

struct BenchCluster {
    nodes: Vec<Node<Counter>>,
    /// Position of the leader in `nodes`.
    leader: usize,
    /// Removed after the nodes are stopped.
    _dir: tempfile::TempDir,
}

impl BenchCluster {
    async fn start() -> Result<BenchCluster, String> {
        let dir = temp_dir("regatta-durable-")?;
        // Ports are picked by the OS: founders without addresses, told
        // them once every node listens.
        let founders = (1..=3).fold(InitialCluster::new(), |c, id| c.member(id, ""));
        let certs = dir.path().join("certs");
        if tls_on() {
            certs::write_cluster(&certs, &[1, 2, 3])?;
        }
        let mut nodes = Vec::new();
        for id in 1..=3 {
            let node_dir = dir.path().join(format!("node-{id}"));
            let tls = tls_on().then(|| {
                regatta::transport::tls::TlsConfig::new(
                    certs.join("ca.pem"),
                    certs.join(format!("node-{id}.pem")),
                    certs.join(format!("node-{id}.key")),
                )
            });
            let started = start_node(
                id,
                Counter::default(),
                CLUSTER_ID,
                node_dir,
                &founders,
                support::bench_config(),
                tls,
            )
            .await;
            match started {
                Ok(node) => nodes.push(node),
                Err(e) => {
                    stop_nodes(nodes).await;
                    return Err(e);
                }
            }
        }
        connect(&nodes);
        match Self::find_leader(&nodes).await {
            Ok(leader) => Ok(BenchCluster {
                nodes,
                leader,
                _dir: dir,
            }),
            Err(e) => {
                stop_nodes(nodes).await;
                Err(e)
            }
        }
    }

    /// Waits for an elected leader that knows it is leader.
    async fn find_leader(nodes: &[Node<Counter>]) -> Result<usize, String> {
        let timeout = Duration::from_secs(10);
        let id = nodes[0]
            .raft()
            .wait_leader(timeout)
            .await
            .map_err(|e| format!("no leader elected: {e}"))?;
        let leader = nodes
            .iter()
            .position(|n| n.id() == id)
            .ok_or_else(|| format!("leader {id} is not a node of the cluster"))?;
        nodes[leader]
            .raft()
            .wait_for(timeout, |m| m.role == Role::Leader)
            .await
            .map_err(|e| format!("node {id} never took office: {e}"))?;
        Ok(leader)
    }

    fn leader(&self) -> &Raft<Counter> {
        self.nodes[self.leader].raft()
    }

    fn dropped_messages(&self) -> u64 {
        self.nodes.iter().map(|n| n.dropped_messages()).sum()
    }

    async fn shutdown(self) {
        stop_nodes(self.nodes).await;
    }
}

/// `clients` tasks writing back-to-back through `raft` for `run`.
async fn cluster_run(raft: &Raft<Counter>, clients: usize, run: Duration) -> Sample {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let r = raft.clone();
            actix_rt::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                while start.elapsed() < run {
                    let t = Instant::now();
                    match r.write(1).await {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok((lat, e)) => {
                all.extend(lat);
                errors += e;
            }
            // A client task that died counts as one failed write.
            Err(_) => errors += 1,
        }
    }
    Sample::from_latencies(&mut all, start.elapsed(), errors)
}

/// Starts a cluster, warms it up with `clients` clients, measures `runs`
/// runs, stops it.
async fn measure_clients(
    plan: &Plan,
    clients: usize,
) -> Result<(Vec<Sample>, Vec<String>), String> {
    let cluster = BenchCluster::start().await?;
    let leader_id = cluster.leader().id();
    let mut notes = Vec::new();
    // One write proves the cluster commits before anything is timed.
    if let Err(e) = cluster.leader().write(1).await {
        cluster.shutdown().await;
        return Err(format!("first write failed: {e}"));
    }
    let _ = cluster_run(cluster.leader(), clients, plan.warmup).await;
    let mut samples = Vec::with_capacity(plan.runs);
    for _ in 0..plan.runs {
        samples.push(cluster_run(cluster.leader(), clients, plan.cluster_run).await);
    }
    let metrics = cluster.leader().metrics().borrow().clone();
    if metrics.role != Role::Leader {
        notes.push(format!(
            "{clients} clients: node {leader_id} lost leadership during the runs (now {:?}, \
             term {}); writes were forwarded",
            metrics.role, metrics.term
        ));
    }
    let dropped = cluster.dropped_messages();
    if dropped > 0 {
        notes.push(format!(
            "{clients} clients: the transports dropped {dropped} messages"
        ));
    }
    cluster.shutdown().await;
    Ok((samples, notes))
}

async fn cluster_part(plan: &Plan) -> Result<(), String> {
    let base = std::env::temp_dir();
    let security = if tls_on() { "mutual TLS" } else { "plain TCP" };
    println!("## End to end: 3 nodes, FjallStorage + TcpTransport ({security}) on 127.0.0.1\n");
    println!(
        "One process, one regatta::Node (its own thread) per node, logs under {} on {}; clients write \
         back-to-back through the leader's Raft::write; a fresh cluster per client count, \
         {:?} warm-up, then {} runs of {:?}; medians over runs.\n",
        base.display(),
        file_system_of(&base).unwrap_or_else(|| "an unknown file system".into()),
        plan.warmup,
        plan.runs,
        plan.cluster_run,
    );
    let limits = Limits::measure(plan)?;
    println!(
        "Physical limits, measured just before: loopback round trip p50 {:?}; \
         fsync of one entry p50 {:?}, so one write at a time can reach at most \
         1 / (fsync + round trip) = {:.0} writes/s; a batch of N entries per fsync \
         (group commit) reaches the entries/s in the last column's denominator.\n",
        limits.rtt,
        limits.fsync_one,
        limits.one_at_a_time(),
    );
    println!("| clients | writes/s | p50 latency | p99 latency | failed writes | limit (writes/s) | of limit |");
    println!("|--------:|---------:|------------:|------------:|--------------:|-----------------:|---------:|");
    let mut notes = Vec::new();
    for &clients in &plan.clients {
        let (samples, n) = measure_clients(plan, clients)
            .await
            .map_err(|e| format!("{clients} clients: {e}"))?;
        notes.extend(n);
        let (rate, p50, p99) = medians(&samples);
        let errors: u64 = samples.iter().map(|s| s.errors).sum();
        let limit = limits.for_clients(clients);
        let ratio = median(samples.iter().map(|s| s.per_sec).collect())
            .map_or("-".into(), |r| format!("{:.0}%", 100.0 * r / limit));
        println!(
            "| {clients:>7} | {rate:>8} | {p50:>11} | {p99:>11} | {errors:>13} | {limit:>16.0} | {ratio:>8} |"
        );
    }
    println!();
    for note in notes {
        println!("note: {note}");
    }
    Ok(())
}

/// What the disk and the loopback network allow, measured in the same
/// run as the cluster so the ratios compare like with like.
struct Limits {
    rtt: Duration,
    fsync_one: Duration,
    /// Entries/s of back-to-back batches of this many entries.
    group_commit: Vec<(usize, f64)>,
}

impl Limits {
    fn measure(plan: &Plan) -> Result<Limits, String> {
        let rtt = loopback_rtt(2_000)?;
        let run = plan.raw_run.min(Duration::from_secs(1));
        let warmup = plan.warmup.min(Duration::from_millis(200));
        let mut fsync_one = None;
        let mut group_commit = Vec::new();
        for &clients in &plan.clients {
            let dir = temp_dir("regatta-durable-limit-")?;
            let measured = disk::measure(&dir.path().join("log"), clients, warmup, run)?;
            if clients == 1 {
                fsync_one = measured.quantile(0.5);
            }
            group_commit.push((clients, measured.entries_per_sec()));
        }
        let fsync_one = match fsync_one {
            Some(d) => d,
            None => {
                let dir = temp_dir("regatta-durable-limit-")?;
                disk::measure(&dir.path().join("log"), 1, warmup, run)?
                    .quantile(0.5)
                    .ok_or("no single-entry write measured")?
            }
        };
        Ok(Limits {
            rtt,
            fsync_one,
            group_commit,
        })
    }

    /// One client waits for each write: the leader's fsync overlaps the
    /// follower's round trip and fsync, so a write costs at least one
    /// fsync plus one round trip.
    fn one_at_a_time(&self) -> f64 {
        1.0 / (self.fsync_one + self.rtt).as_secs_f64()
    }

    /// The most `clients` clients can write: one at a time for one, else
    /// every client's write in one group commit.
    fn for_clients(&self, clients: usize) -> f64 {
        if clients == 1 {
            return self.one_at_a_time();
        }
        self.group_commit
            .iter()
            .find(|(n, _)| *n == clients)
            .map_or(f64::NAN, |(_, rate)| *rate)
    }
}

// ---------------------------------------------------------------------------

fn main() {
    let plan = plan_from_args(USAGE, parse_plan);
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .try_init();

    let mut outcome = Ok(());
    for part in &plan.parts {
        outcome = match part {
            Part::Raw => raw_part(&plan),
            Part::Cluster => actix::System::new().block_on(cluster_part(&plan)),
        };
        if outcome.is_err() {
            break;
        }
    }
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
