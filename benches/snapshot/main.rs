//! Snapshots of a large replicated state: how long one takes to build, to
//! transfer to a node that lost its disk, to restore, and how much applying
//! slows down while one is built.
//!
//! The state machine is the replicated FIFO queue of `examples/queue.rs`,
//! shared through `examples/state/queue.rs` (`VecDeque<Arc<str>>`; its
//! `Snapshot` handler copies the `Arc`s and returns
//! `SnapshotData::deferred`, which serializes the copy with rmp-serde off
//! the actor), built with a `SnapshotProbe` that records the handler,
//! serialization and restore times. It holds ITEMS items of 100 bytes
//! (default 1,000,000). Three `regatta::Node`s run in one process, each on
//! a thread of its own with its own fjall log and TCP transport on
//! 127.0.0.1, with `snapshot_every = 0` (snapshots only on request) and
//! `snapshot_keep_entries = 100`.
//!
//! First, **load**: one follower is crashed (`Node::abort`) and ITEMS pushes go through the leader from 256 concurrent
//! clients. Then, in this order:
//!
//! 1. **Build**: `Raft::snapshot()` on the leader — copy, serialize, write,
//!    fsync, compaction — timed from the caller; inside the queue the
//!    `Snapshot` handler (the time applying is blocked) and the deferred
//!    serialization are timed too. First the snapshot right after the load
//!    (its compaction removes the whole loaded log), then RUNS more, each
//!    after one push and one pop (so the queue keeps ITEMS items and the
//!    compaction removes a few entries).
//! 2. **Transfer**: the crashed follower is restarted on a fresh, empty data
//!    directory with the same founding membership (a node that lost its
//!    disk); the leader's log is compacted far past index 1, so the node
//!    must receive a snapshot by InstallSnapshot. Timed from its restart
//!    until its metrics show `last_applied >=` the latest snapshot's index
//!    (node start, transfer, verification, fsync and restore); then its
//!    queue is checked against the leader's. Repeated TRANSFERS times,
//!    crashing the node again and giving it another empty directory each
//!    time; a node that does not catch up within 120 s fails the bench.
//! 3. **Restore**: the `Restore` handler of a fresh queue actor given the
//!    snapshot's bytes, RUNS times (handler time and send→reply time).
//! 4. **Applying during a snapshot**: 64 clients write continuously through
//!    the leader (each alternating a push and a pop, so the queue stays at
//!    ITEMS items); per run, 2 s without a snapshot, then `Raft::snapshot()`
//!    on the leader, then 1 s of recovery (not counted). Completed writes are
//!    counted per millisecond; the tables give the write rate without and
//!    during the snapshot, and the worst 100 ms window (sliding in 1 ms
//!    steps) overlapping the snapshot, next to the worst one of the
//!    baseline. RUNS runs.
//!
//! Tables give medians over the repetitions (each column separately; the
//! upper median for an even count). The cluster is shut down cleanly at the
//! end, also after an error.
//!
//! ```text
//! cargo bench --bench snapshot                      # 1,000,000 items, 5 runs, 1 transfer
//! cargo bench --bench snapshot -- 10000 2 1         # smoke test: 10,000 items, 2 runs, 1 transfer
//! SNAPSHOT_BENCH_ITEMS=10000 cargo bench --bench snapshot   # same item count via the environment
//! ```
//!
//! Arguments: `[ITEMS [RUNS [TRANSFERS]]]` (positive integers, ITEMS at
//! least 1000); `SNAPSHOT_BENCH_ITEMS` sets the default ITEMS. Wrong
//! arguments print the usage and exit with code 2. The data directories are
//! created under `$TMPDIR` (else `/tmp`); fsync times mean something only on
//! the disk under test, so its file system is printed with the results.
//! Tables go to stdout, progress and warnings to stderr; `REGATTA_LOG=1`
//! (or `trace`) shows regatta's debug (trace) logs.
//!
//! 5. **Backup and restore**: the follower takes a snapshot and 10,000
//!    writes follow it; then `Raft::backup` from that follower (its
//!    snapshot and the entries after it) streamed to a file (time, MB/s,
//!    the peak memory it adds); `backup::restore` into one directory (time,
//!    peak memory); then three new nodes founded from the file
//!    (`restore_from`), timed until each answers a linearizable read with
//!    the whole queue.
//! 6. **`add_voter` under writes**: 64 clients write through the leader
//!    while a new node joins and is added with `Raft::add_voter` (it needs
//!    the whole state by snapshot, then the stabilization time): the time
//!    and the failed writes.
//!
//! Modules: `cluster` (the nodes, crash and restart on an empty
//! directory), `load`, one per part (`build`, `transfer`, `restore`,
//! `stall`, `backup`), `report` (how the tables write numbers).

#[path = "../../examples/state/queue.rs"]
mod queue;
#[path = "../support/mod.rs"]
mod support;

mod backup;
mod build;
mod cluster;
mod load;
mod report;
mod restore;
mod stall;
mod transfer;

use std::time::Instant;

use regatta::{LogId, Role};

use backup::{add_voter_part, backup_part};
use build::{build_once, build_part};
use cluster::{write_ok, BenchCluster};
use load::load;
use queue::{Len, QueueCommand};
use report::{ms, rate};
use restore::restore_part;
use stall::stall_part;
use support::{file_system_of, plan_from_args, positive};
use transfer::transfer_part;

const DEFAULT_ITEMS: u64 = 1_000_000;
const MIN_ITEMS: u64 = 1_000;
const DEFAULT_RUNS: usize = 5;
// One: the node is then in sync with the leader, and a second wipe of the
// same node is a lost disk, which Raft does not support (the node would
// have forgotten its vote); a replaced disk joins as a new member.
const DEFAULT_TRANSFERS: usize = 1;
const ITEM_BYTES: usize = 100;
const LOAD_CLIENTS: usize = 256;
const KEEP_ENTRIES: u64 = 100;
/// A client gives up after this many consecutive failed writes.
const MAX_CONSECUTIVE_ERRORS: u32 = 20;

const USAGE: &str = "\
usage: cargo bench --bench snapshot -- [ITEMS [RUNS [TRANSFERS]]]

  ITEMS      items of 100 bytes in the queue (default 1000000, or
             $SNAPSHOT_BENCH_ITEMS); at least 1000
  RUNS       repetitions of building, restoring, and of the
             applying-during-a-snapshot run (default 5)
  TRANSFERS  transfers to a node that lost its disk (default 1)

All are positive integers. A smoke test:
  cargo bench --bench snapshot -- 10000 2 1";

// ---------------------------------------------------------------------------
// Command line

struct Plan {
    items: u64,
    runs: usize,
    transfers: usize,
}

fn parse_plan(args: &[String]) -> Result<Plan, String> {
    if args.len() > 3 {
        return Err(format!("too many arguments: {args:?}"));
    }
    let mut items = match std::env::var("SNAPSHOT_BENCH_ITEMS") {
        Ok(v) => positive(&v, "SNAPSHOT_BENCH_ITEMS")?,
        Err(std::env::VarError::NotPresent) => DEFAULT_ITEMS,
        Err(e) => return Err(format!("SNAPSHOT_BENCH_ITEMS: {e}")),
    };
    if let Some(arg) = args.first() {
        items = positive(arg, "ITEMS")?;
    }
    if items < MIN_ITEMS {
        return Err(format!(
            "ITEMS must be at least {MIN_ITEMS} (the log must be compacted past index 1), got {items}"
        ));
    }
    let count = |i: usize, what: &str, default: usize| -> Result<usize, String> {
        match args.get(i) {
            None => Ok(default),
            Some(arg) => positive::<usize>(arg, what),
        }
    };
    Ok(Plan {
        items,
        runs: count(1, "RUNS", DEFAULT_RUNS)?,
        transfers: count(2, "TRANSFERS", DEFAULT_TRANSFERS)?,
    })
}

/// Item `i`: distinct, exactly `ITEM_BYTES` ASCII bytes.
fn item(i: u64) -> String {
    let mut s = format!("item-{i:012}-");
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while s.len() < ITEM_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(char::from(b'a' + (x % 26) as u8));
    }
    s
}

// ---------------------------------------------------------------------------

/// Runs parts 1 to 4 on a started cluster.
async fn run_parts(cluster: &mut BenchCluster, plan: &Plan) -> Result<(), String> {
    let leader = cluster.wait_leader().await?;
    // One write proves the cluster commits before anything is timed.
    write_ok(&cluster.node(leader).raft, QueueCommand::Pop).await?;
    let follower = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|&id| id != leader)
        .expect("three nodes");
    cluster.crash(follower).await;

    eprintln!(
        "loading {} items through node {leader} from {LOAD_CLIENTS} clients (node {follower} \
         crashed)...",
        plan.items
    );
    let term_before = cluster.node(leader).raft.metrics().borrow().term;
    let (elapsed, failed) = load(&cluster.node(leader).raft, plan.items, LOAD_CLIENTS).await?;
    let now_leader = cluster.wait_leader().await?;
    let term_after = cluster.node(now_leader).raft.metrics().borrow().term;
    if now_leader != leader {
        return Err(format!(
            "leadership moved from node {leader} to node {now_leader} during the load"
        ));
    }
    let len = cluster
        .node(leader)
        .raft
        .read(Len)
        .await
        .map_err(|e| format!("read: {e}"))?;
    println!("## Load\n");
    println!(
        "| items pushed | clients | time | pushes/s | failed (retried) pushes | queue length |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {LOAD_CLIENTS} | {} | {} | {failed} | {len} |",
        plan.items,
        ms(elapsed),
        rate(plan.items as f64 / elapsed.as_secs_f64()),
    );
    println!();
    if term_after != term_before {
        println!(
            "note: an election happened during the load (term {term_before} → {term_after}; node \
             {leader} leads again); writes waiting for a leader were retried by `Raft::write`\n"
        );
    }
    if len as u64 != plan.items {
        return Err(format!(
            "the queue holds {len} items after pushing {} (failed pushes: {failed})",
            plan.items
        ));
    }

    eprintln!("building snapshots...");
    let leader_node = cluster.node(leader);
    let first = build_once(leader_node, LogId::default()).await?;
    let at = build_part(leader_node, plan, &first).await?;
    let data = leader_node
        .probe
        .last_data()
        .ok_or("no snapshot data recorded")?;

    eprintln!("transferring...");
    transfer_part(cluster, plan, leader, follower, at, data.len() as u64).await?;

    eprintln!("restoring...");
    restore_part(data, plan.items, plan).await?;

    eprintln!("applying during snapshots...");
    let term_before = cluster.node(leader).raft.metrics().borrow().term;
    stall_part(cluster.node(leader), plan).await?;
    let m = cluster.node(leader).raft.metrics().borrow().clone();
    if m.role != Role::Leader || m.term != term_before {
        println!(
            "note: an election happened during part 4 (term {term_before} → {}; node {leader} \
             is now {:?})",
            m.term, m.role
        );
    }
    eprintln!("backing up and restoring...");
    let other = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|&id| id != leader && id != follower)
        .expect("a follower that was never crashed");
    backup_part(cluster, other, leader).await?;
    eprintln!("adding a voter under writes...");
    add_voter_part(cluster, leader).await?;

    // Every node ends with the same queue.
    let mut lens = Vec::new();
    for node in &cluster.nodes {
        let n = node
            .raft
            .read(Len)
            .await
            .map_err(|e| format!("final read on node {}: {e}", node.id))?;
        lens.push((node.id, n));
    }
    if lens.windows(2).any(|w| w[0].1 != w[1].1) {
        return Err(format!("the nodes disagree on the queue length: {lens:?}"));
    }
    let dropped = cluster.dropped_messages();
    if dropped > 0 {
        println!("note: the running transports dropped {dropped} messages");
    }
    Ok(())
}

async fn run(plan: Plan) -> Result<(), String> {
    let base = std::env::temp_dir();
    println!(
        "# Snapshots of a replicated queue: {} items of {ITEM_BYTES} bytes\n",
        plan.items
    );
    println!(
        "3 nodes in one process (one regatta::Node, on its own thread, each), fjall under {} on {}, \
         TcpTransport on 127.0.0.1; snapshot_every = 0, snapshot_keep_entries = \
         {KEEP_ENTRIES}, other settings default. {} CPUs.\n",
        base.display(),
        file_system_of(&base).unwrap_or_else(|| "an unknown file system".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let mut cluster = BenchCluster::start().await?;
    let outcome = run_parts(&mut cluster, &plan).await;
    cluster.shutdown().await;
    outcome
}

fn main() {
    let plan = plan_from_args(USAGE, parse_plan);
    let level = match std::env::var("REGATTA_LOG").as_deref() {
        Ok("trace") => tracing::Level::TRACE,
        Ok(_) => tracing::Level::DEBUG,
        Err(_) => tracing::Level::WARN,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    let started = Instant::now();
    if let Err(e) = actix::System::new().block_on(run(plan)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    eprintln!("done in {:.0?}", started.elapsed());
}
