//! Snapshots of a large replicated state: how long one takes to build, to
//! transfer to a node that lost its disk, to restore, and how much applying
//! slows down while one is built.
//!
//! The state machine is a replicated FIFO queue of the same design as
//! `examples/queue.rs` (`VecDeque<Arc<str>>`; its `Snapshot` handler copies
//! the `Arc`s and returns [`SnapshotData::deferred`], which serializes the
//! copy with rmp-serde off the actor), holding ITEMS items of 100 bytes
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

mod support;
use support::{file_system_of, median, plan_from_args, positive, temp_dir};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use regatta::{
    Apply, Config, InitialCluster, LogId, Node, NodeId, Raft, Restore, Role, Snapshot,
    SnapshotData, StateMachine,
};
use serde::{Deserialize, Serialize};

const CLUSTER_ID: &str = "regatta-snapshot-bench";
const DEFAULT_ITEMS: u64 = 1_000_000;
const MIN_ITEMS: u64 = 1_000;
const DEFAULT_RUNS: usize = 5;
// One: the node is then in sync with the leader, and a second wipe of the
// same node is a lost disk, which Raft does not support (the node would
// have forgotten its vote); a replaced disk joins as a new member.
const DEFAULT_TRANSFERS: usize = 1;
const ITEM_BYTES: usize = 100;
const LOAD_CLIENTS: usize = 256;
const STALL_CLIENTS: usize = 64;
const KEEP_ENTRIES: u64 = 100;
const STALL_WARMUP: Duration = Duration::from_secs(1);
const STALL_BASELINE: Duration = Duration::from_secs(2);
const STALL_RECOVERY: Duration = Duration::from_secs(1);
const WINDOW_MS: usize = 100;
/// Bound on waiting for a restarted node to catch up.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
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

// ---------------------------------------------------------------------------
// The queue state machine (the design of examples/queue.rs), instrumented

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a queue measures about itself; shared with the bench.
#[derive(Default)]
struct Probe {
    /// Each `Snapshot` handler run: the time applying was blocked.
    handler: Mutex<Vec<Duration>>,
    /// Each deferred serialization, on regatta's background thread.
    serialize: Mutex<Vec<Duration>>,
    /// When each deferred serialization finished.
    serialized_at: Mutex<Vec<Instant>>,
    /// Each `Restore` handler run.
    restore: Mutex<Vec<Duration>>,
    /// The bytes of the latest snapshot serialized.
    last_data: Mutex<Option<Bytes>>,
}

struct Queue {
    items: VecDeque<Arc<str>>,
    probe: Arc<Probe>,
}

impl Queue {
    fn new(probe: Arc<Probe>) -> Self {
        Queue {
            items: VecDeque::new(),
            probe,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum QueueCommand {
    Push(String),
    Pop,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum QueueResponse {
    Len(usize),
    Item(Option<String>),
}

impl Actor for Queue {
    type Context = Context<Self>;
}

impl StateMachine for Queue {
    type Command = QueueCommand;
    type Response = QueueResponse;
}

impl Handler<Apply<Queue>> for Queue {
    type Result = Vec<QueueResponse>;
    fn handle(&mut self, batch: Apply<Queue>, _: &mut Context<Self>) -> Self::Result {
        batch
            .entries
            .into_iter()
            .map(|(_, command)| match command {
                QueueCommand::Push(item) => {
                    self.items.push_back(item.into());
                    QueueResponse::Len(self.items.len())
                }
                QueueCommand::Pop => {
                    QueueResponse::Item(self.items.pop_front().map(|item| item.to_string()))
                }
            })
            .collect()
    }
}

impl Handler<Snapshot> for Queue {
    type Result = Result<SnapshotData, String>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        let started = Instant::now();
        // Applying waits only for this copy of pointers; the serialization
        // runs on a background thread.
        let items = self.items.clone();
        let probe = self.probe.clone();
        let data = SnapshotData::deferred(move || {
            let started = Instant::now();
            let items: Vec<&str> = items.iter().map(|item| &**item).collect();
            let bytes: Bytes = rmp_serde::to_vec(&items).map_err(|e| e.to_string())?.into();
            lock(&probe.serialize).push(started.elapsed());
            lock(&probe.serialized_at).push(Instant::now());
            *lock(&probe.last_data) = Some(bytes.clone());
            Ok(bytes)
        });
        lock(&self.probe.handler).push(started.elapsed());
        Ok(data)
    }
}

impl Handler<Restore> for Queue {
    type Result = Result<(), String>;
    fn handle(&mut self, r: Restore, _: &mut Context<Self>) -> Self::Result {
        let started = Instant::now();
        let items: Vec<String> = rmp_serde::from_slice(&r.data).map_err(|e| e.to_string())?;
        self.items = items.into_iter().map(Arc::from).collect();
        lock(&self.probe.restore).push(started.elapsed());
        Ok(())
    }
}

/// The queue's length; linearizable through `Raft::read`.
#[derive(Message)]
#[rtype(result = "usize")]
struct Len;

impl Handler<Len> for Queue {
    type Result = usize;
    fn handle(&mut self, _: Len, _: &mut Context<Self>) -> usize {
        self.items.len()
    }
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
// Nodes and the cluster

fn cluster_config() -> Config {
    Config {
        snapshot_every: 0,
        snapshot_keep_entries: KEEP_ENTRIES,
        ..Config::default()
    }
}

/// One node (a `regatta::Node`: its own thread, fjall, TCP), its handle
/// and its queue's probe.
struct BenchNode {
    id: NodeId,
    raft: Raft<Queue>,
    node: Node<Queue>,
    probe: Arc<Probe>,
}

/// Starts node `id` of `founders` with fjall in `dir` and TCP on an
/// ephemeral port of 127.0.0.1 (peer addresses are set by the caller).
async fn start_node(
    id: NodeId,
    dir: PathBuf,
    founders: &InitialCluster,
) -> Result<BenchNode, String> {
    let probe = Arc::new(Probe::default());
    let node = Node::builder(id, Queue::new(probe.clone()))
        .cluster_name(CLUSTER_ID)
        .data_dir(dir)
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .initial_cluster(founders.clone())
        .config(cluster_config())
        .start()
        .await
        .map_err(|e| format!("node {id}: {e}"))?;
    Ok(BenchNode {
        id,
        raft: node.raft().clone(),
        node,
        probe,
    })
}

/// Stops every node cleanly (queued log writes made durable, threads
/// joined).
async fn stop_nodes(nodes: Vec<BenchNode>) {
    for n in nodes {
        n.node.shutdown().await;
    }
}

struct BenchCluster {
    /// The running nodes.
    nodes: Vec<BenchNode>,
    /// The founders, without addresses (ports are picked by the OS).
    founders: InitialCluster,
    /// Fresh data directories handed out so far.
    dirs_used: usize,
    /// Removed after the nodes are stopped.
    dir: tempfile::TempDir,
}

impl BenchCluster {
    async fn start() -> Result<BenchCluster, String> {
        let dir = temp_dir("regatta-snapshot-")?;
        let mut cluster = BenchCluster {
            nodes: Vec::new(),
            founders: (1..=3).fold(InitialCluster::new(), |c, id| c.member(id, "")),
            dirs_used: 0,
            dir,
        };
        for id in 1..=3 {
            let node_dir = cluster.fresh_dir(id);
            match start_node(id, node_dir, &cluster.founders).await {
                Ok(node) => cluster.nodes.push(node),
                Err(e) => {
                    cluster.shutdown().await;
                    return Err(e);
                }
            }
        }
        cluster.connect();
        Ok(cluster)
    }

    fn fresh_dir(&mut self, id: NodeId) -> PathBuf {
        self.dirs_used += 1;
        self.dir
            .path()
            .join(format!("node-{id}-dir-{}", self.dirs_used))
    }

    /// Tells every running node every running node's address.
    fn connect(&self) {
        let addrs: Vec<(NodeId, SocketAddr)> = self
            .nodes
            .iter()
            .map(|n| (n.id, n.node.raft_addr()))
            .collect();
        for node in &self.nodes {
            for (id, addr) in &addrs {
                node.node.set_peer_address(*id, *addr);
            }
        }
    }

    fn node(&self, id: NodeId) -> &BenchNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("a running node")
    }

    /// Waits until some running node is leader and knows it; returns its id.
    async fn wait_leader(&self) -> Result<NodeId, String> {
        let timeout = Duration::from_secs(10);
        let deadline = Instant::now() + timeout;
        loop {
            for node in &self.nodes {
                let m = node.raft.metrics().borrow().clone();
                if m.role == Role::Leader {
                    return Ok(node.id);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("no leader elected within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Crashes node `id`: it stops at once, as a crash would (its data
    /// directory is abandoned).
    async fn crash(&mut self, id: NodeId) {
        let at = self
            .nodes
            .iter()
            .position(|n| n.id == id)
            .expect("a running node");
        self.nodes.remove(at).node.abort().await;
    }

    /// Starts node `id` on a fresh, empty data directory with the founding
    /// membership, and exchanges addresses with the running nodes.
    async fn restart_fresh(&mut self, id: NodeId) -> Result<(), String> {
        let dir = self.fresh_dir(id);
        let node = start_node(id, dir, &self.founders).await?;
        self.nodes.push(node);
        self.connect();
        Ok(())
    }

    fn dropped_messages(&self) -> u64 {
        self.nodes.iter().map(|n| n.node.dropped_messages()).sum()
    }

    async fn shutdown(self) {
        stop_nodes(self.nodes).await;
        drop(self.dir);
    }
}

// ---------------------------------------------------------------------------
// Formatting and statistics

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 10_000.0 {
        format!("{:.2} s", ms / 1e3)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), ms)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn rate(r: f64) -> String {
    let n = r.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn opt_rate(r: Option<f64>) -> String {
    r.map_or("-".into(), rate)
}

/// The first duration recorded after `before` were already there.
fn taken(probe: &Mutex<Vec<Duration>>, before: usize) -> Option<Duration> {
    lock(probe).get(before).copied()
}

// ---------------------------------------------------------------------------
// Load

/// Pushes items `0..items` through `raft` from `clients` concurrent tasks.
/// Returns the elapsed time and the number of failed (retried) writes.
async fn load(raft: &Raft<Queue>, items: u64, clients: usize) -> Result<(Duration, u64), String> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let progress = {
        let done = done.clone();
        actix_rt::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let n = done.load(Ordering::Relaxed);
                eprintln!(
                    "  loading: {n}/{items} pushes after {:.0?}",
                    started.elapsed()
                );
            }
        })
    };
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let raft = raft.clone();
            let next = next.clone();
            let done = done.clone();
            actix_rt::spawn(async move {
                let mut failed = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items {
                        return Ok(failed);
                    }
                    let it = item(i);
                    let mut consecutive = 0;
                    loop {
                        match raft.write(QueueCommand::Push(it.clone())).await {
                            Ok(QueueResponse::Len(_)) => break,
                            Ok(other) => return Err(format!("push answered {other:?}")),
                            Err(e) => {
                                failed += 1;
                                consecutive += 1;
                                if consecutive >= MAX_CONSECUTIVE_ERRORS {
                                    return Err(format!(
                                        "{consecutive} consecutive failed pushes, last: {e}"
                                    ));
                                }
                            }
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut failed = 0;
    let mut outcome = Ok(());
    for t in tasks {
        match t.await {
            Ok(Ok(f)) => failed += f,
            Ok(Err(e)) => outcome = Err(e),
            Err(e) => outcome = Err(format!("a load client died: {e}")),
        }
    }
    progress.abort();
    outcome.map(|()| (started.elapsed(), failed))
}

// ---------------------------------------------------------------------------
// Building

struct Build {
    at: LogId,
    total: Duration,
    /// When the serialization finished.
    serialized_at: Option<Instant>,
    blocked: Option<Duration>,
    serialize: Option<Duration>,
    bytes: u64,
}

impl Build {
    /// Everything after the handler and the serialization: checksum, write,
    /// fsync, rename, compaction and the hops between actors.
    fn rest(&self) -> Option<Duration> {
        Some(
            self.total
                .saturating_sub(self.blocked?)
                .saturating_sub(self.serialize?),
        )
    }
}

/// `Raft::snapshot()` on `node`, timed, with what its queue measured.
async fn build_once(node: &BenchNode, previous: LogId) -> Result<Build, String> {
    let handlers = lock(&node.probe.handler).len();
    let serializations = lock(&node.probe.serialize).len();
    let serialized = lock(&node.probe.serialized_at).len();
    let started = Instant::now();
    let at = node
        .raft
        .snapshot()
        .await
        .map_err(|e| format!("Raft::snapshot on node {}: {e}", node.id))?;
    let total = started.elapsed();
    if at.index <= previous.index {
        return Err(format!(
            "Raft::snapshot on node {} returned index {} after a snapshot at {}",
            node.id, at.index, previous.index
        ));
    }
    let bytes = lock(&node.probe.last_data)
        .as_ref()
        .map_or(0, |b| b.len() as u64);
    Ok(Build {
        at,
        total,
        serialized_at: lock(&node.probe.serialized_at).get(serialized).copied(),
        blocked: taken(&node.probe.handler, handlers),
        serialize: taken(&node.probe.serialize, serializations),
        bytes,
    })
}

fn print_build_row(label: &str, b: &Build) {
    println!(
        "| {label} | {} | {} | {} | {} | {} | {} |",
        b.at.index,
        mib(b.bytes),
        ms(b.total),
        opt_ms(b.blocked),
        opt_ms(b.serialize),
        opt_ms(b.rest()),
    );
}

async fn build_part(leader: &BenchNode, plan: &Plan, first: &Build) -> Result<LogId, String> {
    println!("## 1. Building a snapshot: `Raft::snapshot()` on the leader\n");
    println!(
        "Total = the `Raft::snapshot()` call (copy, serialize, checksum, write, fsync, rename, \
         log compaction, actor hops). Blocked = the queue's `Snapshot` handler (copying \
         the `VecDeque<Arc<str>>`), the only time applying waits. Serialize = the deferred \
         rmp-serde closure on regatta's background thread. Rest = total − blocked − \
         serialize. The first row is the snapshot right after the load: its compaction \
         removes the {} loaded log entries; each later run follows one push and one pop, \
         so it compacts a few entries.\n",
        first.at.index.saturating_sub(KEEP_ENTRIES)
    );
    println!("| snapshot | index | size | total | blocked (handler) | serialize | rest |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    print_build_row("first, after the load", first);
    let mut builds = Vec::with_capacity(plan.runs);
    let mut last = first.at;
    for run in 1..=plan.runs {
        write_ok(
            &leader.raft,
            QueueCommand::Push(item(u64::MAX - run as u64)),
        )
        .await?;
        write_ok(&leader.raft, QueueCommand::Pop).await?;
        let b = build_once(leader, last).await?;
        print_build_row(&format!("run {run}"), &b);
        last = b.at;
        builds.push(b);
    }
    println!(
        "| **median of {} runs** | | {} | **{}** | **{}** | **{}** | **{}** |",
        plan.runs,
        median(builds.iter().map(|b| b.bytes).collect()).map_or("-".into(), mib),
        opt_ms(median(builds.iter().map(|b| b.total).collect())),
        opt_ms(median(builds.iter().filter_map(|b| b.blocked).collect())),
        opt_ms(median(builds.iter().filter_map(|b| b.serialize).collect())),
        opt_ms(median(builds.iter().filter_map(Build::rest).collect())),
    );
    println!();
    Ok(last)
}

async fn write_ok(raft: &Raft<Queue>, command: QueueCommand) -> Result<QueueResponse, String> {
    raft.write(command.clone())
        .await
        .map_err(|e| format!("write {command:?}: {e}"))
}

// ---------------------------------------------------------------------------
// Transfer

struct Transfer {
    /// From the restart until caught up.
    elapsed: Duration,
    /// From the restart until the node was started (transport listening,
    /// fjall opened on the empty directory, actors started).
    up: Duration,
    restore: Option<Duration>,
    /// The index of the snapshot the node installed.
    installed: u64,
}

/// Restarts `follower` on an empty directory and times its catching up to
/// `at` by InstallSnapshot.
async fn transfer_once(
    cluster: &mut BenchCluster,
    leader: NodeId,
    follower: NodeId,
    at: LogId,
) -> Result<Transfer, String> {
    let started = Instant::now();
    cluster.restart_fresh(follower).await?;
    let up = started.elapsed();
    let node = cluster.node(follower);
    node.raft
        .wait_for(TRANSFER_TIMEOUT, |m| m.last_applied >= at.index)
        .await
        .map_err(|e| {
            format!(
                "node {follower} did not apply up to the snapshot index {} within {:?}: {e} \
                 (metrics: {:?})",
                at.index,
                TRANSFER_TIMEOUT,
                node.raft.metrics().borrow().clone()
            )
        })?;
    let elapsed = started.elapsed();
    let restores = lock(&node.probe.restore).clone();
    // Checks: it got there by restoring a snapshot, recorded as its latest
    // (the metrics publish that once the log agrees with the snapshot,
    // which may come just after the restore), and it holds the same queue
    // as the leader.
    if restores.is_empty() {
        return Err(format!(
            "node {follower} reached index {} without restoring a snapshot (metrics: {:?})",
            at.index,
            node.raft.metrics().borrow().clone()
        ));
    }
    let compacted = at.index.saturating_sub(KEEP_ENTRIES);
    let settle = Duration::from_secs(10);
    let metrics = node
        .raft
        .wait_for(settle, |m| m.snapshot_index > compacted)
        .await
        .map_err(|e| {
            format!(
                "node {follower} applied up to {} in {elapsed:?} but its snapshot_index stayed \
                 at or below the leader's compaction point {compacted} for {settle:?}: {e} \
                 (metrics: {:?})",
                at.index,
                node.raft.metrics().borrow().clone()
            )
        })?;
    let theirs = node
        .raft
        .read(Len)
        .await
        .map_err(|e| format!("read on node {follower}: {e}"))?;
    let ours = cluster
        .node(leader)
        .raft
        .read(Len)
        .await
        .map_err(|e| format!("read on the leader: {e}"))?;
    if theirs != ours {
        return Err(format!(
            "after the transfer node {follower} holds {theirs} items, the leader {ours}"
        ));
    }
    Ok(Transfer {
        elapsed,
        up,
        restore: restores.first().copied(),
        installed: metrics.snapshot_index,
    })
}

async fn transfer_part(
    cluster: &mut BenchCluster,
    plan: &Plan,
    leader: NodeId,
    follower: NodeId,
    at: LogId,
    bytes: u64,
) -> Result<(), String> {
    println!("## 2. Transfer to a node that lost its disk (InstallSnapshot over TCP)\n");
    println!(
        "Node {follower} (crashed before the load) is restarted on a fresh, empty data \
         directory with the founding membership; the leader's log starts after index {}, so \
         the node needs a snapshot; the latest is at index {} ({}, chunks of {}). Timed \
         from the restart until its metrics show last_applied ≥ {}: node start (transport, \
         fjall on the empty directory, actors; also shown alone), the leader reading the \
         snapshot file, chunks over TCP, the follower writing, checksumming and fsyncing \
         them, the `Restore` handler (also shown alone), and any entries after the \
         snapshot. (A leader's replicator that found the node's entries compacted while the \
         node was down keeps the snapshot it loaded then, so the one installed may be an \
         earlier one of the same size.) After each run the node's queue length is \
         checked against the leader's with linearizable reads; for the next run it is \
         crashed again and given another empty directory. {} run{}.\n",
        at.index.saturating_sub(KEEP_ENTRIES),
        at.index,
        mib(bytes),
        mib(cluster_config().snapshot_chunk_bytes as u64),
        at.index,
        plan.transfers,
        if plan.transfers == 1 { "" } else { "s" },
    );
    println!(
        "| run | snapshot installed | restart → caught up | of which node start | of which \
         `Restore` handler | effective MiB/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut runs = Vec::with_capacity(plan.transfers);
    for run in 1..=plan.transfers {
        if run > 1 {
            cluster.crash(follower).await;
        }
        let t = transfer_once(cluster, leader, follower, at).await?;
        let speed = bytes as f64 / (1024.0 * 1024.0) / t.elapsed.as_secs_f64();
        println!(
            "| {run} | {} | {} | {} | {} | {speed:.1} |",
            t.installed,
            ms(t.elapsed),
            ms(t.up),
            opt_ms(t.restore)
        );
        runs.push(t);
    }
    let elapsed = median(runs.iter().map(|t| t.elapsed).collect());
    println!(
        "| **median of {}** | | **{}** | **{}** | **{}** | **{}** |",
        plan.transfers,
        opt_ms(elapsed),
        opt_ms(median(runs.iter().map(|t| t.up).collect())),
        opt_ms(median(runs.iter().filter_map(|t| t.restore).collect())),
        elapsed.map_or("-".into(), |e| format!(
            "{:.1}",
            bytes as f64 / (1024.0 * 1024.0) / e.as_secs_f64()
        )),
    );
    println!();
    Ok(())
}

// ---------------------------------------------------------------------------
// Restore

async fn restore_part(data: Bytes, items: u64, plan: &Plan) -> Result<(), String> {
    println!("## 3. Restoring: the `Restore` handler of a fresh queue actor\n");
    println!(
        "The snapshot's {} ({} bytes) given to a fresh queue actor (on the bench's own \
         arbiter; the cluster idles meanwhile): rmp-serde into `Vec<String>`, then into \
         `VecDeque<Arc<str>>`, as in examples/queue.rs. Handler = timed inside it; \
         send → reply = `Addr::send(Restore)` until the answer.\n",
        mib(data.len() as u64),
        data.len()
    );
    println!("| run | handler | send → reply |");
    println!("|---|---:|---:|");
    let mut handler = Vec::new();
    let mut round_trip = Vec::new();
    for run in 1..=plan.runs {
        let probe = Arc::new(Probe::default());
        let queue = Queue::new(probe.clone()).start();
        let started = Instant::now();
        queue
            .send(Restore {
                data: data.clone(),
                last_included: regatta::LogId::default(),
            })
            .await
            .map_err(|e| format!("restore: the queue actor stopped: {e}"))?
            .map_err(|e| format!("restore refused: {e}"))?;
        let rt = started.elapsed();
        let len = queue
            .send(Len)
            .await
            .map_err(|e| format!("restore: the queue actor stopped: {e}"))?;
        if len as u64 != items {
            return Err(format!("restored {len} items, expected {items}"));
        }
        let h = lock(&probe.restore).first().copied();
        println!("| {run} | {} | {} |", opt_ms(h), ms(rt));
        handler.extend(h);
        round_trip.push(rt);
        drop(queue);
        // Let the actor (and its million items) go before the next run.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "| **median of {}** | **{}** | **{}** |",
        plan.runs,
        opt_ms(median(handler)),
        opt_ms(median(round_trip))
    );
    println!();
    Ok(())
}

// ---------------------------------------------------------------------------
// Applying while a snapshot is built

struct StallRun {
    baseline_rate: f64,
    during_rate: f64,
    worst_during: f64,
    /// Start of the worst window, in ms from the `Raft::snapshot()` call.
    worst_at: i64,
    worst_baseline: f64,
    snapshot: Duration,
    blocked: Option<Duration>,
    /// When the serialization finished, from the `Raft::snapshot()` call.
    serialized_by: Option<Duration>,
}

/// Completed writes per millisecond since `epoch`, with prefix sums.
struct Timeline {
    /// `prefix[i]` = writes completed in milliseconds `0..i`.
    prefix: Vec<u64>,
}

impl Timeline {
    fn new(completions: &[Vec<u32>]) -> Timeline {
        let len = completions
            .iter()
            .flat_map(|c| c.iter().copied())
            .max()
            .map_or(0, |m| m as usize + 1);
        let mut counts = vec![0u64; len];
        for c in completions {
            for &t in c {
                counts[t as usize] += 1;
            }
        }
        let mut prefix = Vec::with_capacity(len + 1);
        prefix.push(0);
        let mut sum = 0;
        for c in counts {
            sum += c;
            prefix.push(sum);
        }
        Timeline { prefix }
    }

    /// Writes completed in milliseconds `from..to`.
    fn count(&self, from: usize, to: usize) -> u64 {
        let at = |i: usize| self.prefix[i.min(self.prefix.len() - 1)];
        at(to.max(from)) - at(from)
    }

    /// Writes per second over milliseconds `from..to`.
    fn rate(&self, from: usize, to: usize) -> f64 {
        if to <= from {
            return 0.0;
        }
        self.count(from, to) as f64 * 1e3 / (to - from) as f64
    }

    /// The lowest rate of a `WINDOW_MS` window starting in `first..=last`,
    /// and the first window start with that rate.
    fn worst_window(&self, first: usize, last: usize) -> (f64, usize) {
        (first..=last)
            .map(|s| (self.count(s, s + WINDOW_MS), s))
            .min()
            .map_or((0.0, first), |(c, s)| {
                (c as f64 * 1e3 / WINDOW_MS as f64, s)
            })
    }
}

async fn stall_part(leader: &BenchNode, plan: &Plan) -> Result<(), String> {
    println!("## 4. Applying while a snapshot is built\n");
    println!(
        "{STALL_CLIENTS} clients write back-to-back through the leader, each alternating a push \
         and a pop (the queue stays at ~{} items); all three nodes up. Per run: {:?} \
         without a snapshot (baseline), then `Raft::snapshot()` on the leader, then {:?} not \
         counted; {:?} warm-up before the first run. Rates are completed writes per second; \
         windows are {WINDOW_MS} ms, sliding in 1 ms steps: the worst one overlapping the \
         snapshot, and for comparison the worst one inside the baseline. \"Serialized by\" \
         and \"worst window starts at\" are offsets from the `Raft::snapshot()` call: a \
         worst window after the serialization falls in the write, fsync or compaction.\n",
        plan.items, STALL_BASELINE, STALL_RECOVERY, STALL_WARMUP
    );
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..STALL_CLIENTS)
        .map(|c| {
            let raft = leader.raft.clone();
            let stop = stop.clone();
            actix_rt::spawn(async move {
                let mut completions: Vec<u32> = Vec::new();
                let mut failed = 0u64;
                let mut consecutive = 0;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let command = if i.is_multiple_of(2) {
                        QueueCommand::Push(item(u64::MAX / 2 + c as u64 * (1 << 32) + i))
                    } else {
                        QueueCommand::Pop
                    };
                    match raft.write(command).await {
                        Ok(_) => {
                            completions.push(epoch.elapsed().as_millis() as u32);
                            consecutive = 0;
                            i += 1;
                        }
                        Err(e) => {
                            failed += 1;
                            consecutive += 1;
                            if consecutive >= MAX_CONSECUTIVE_ERRORS {
                                return Err(format!(
                                    "{consecutive} consecutive failed writes, last: {e}"
                                ));
                            }
                        }
                    }
                }
                Ok((completions, failed))
            })
        })
        .collect();

    tokio::time::sleep(STALL_WARMUP).await;
    // (baseline start, snapshot start, snapshot end) per run, and the result.
    let mut marks = Vec::new();
    let mut outcome = Ok(());
    let mut last = LogId::default();
    for _ in 0..plan.runs {
        let base = epoch.elapsed();
        tokio::time::sleep(STALL_BASELINE).await;
        let from = epoch.elapsed();
        let at = build_once(leader, last).await;
        let to = epoch.elapsed();
        match at {
            Ok(b) => {
                last = b.at;
                let serialized_by = b
                    .serialized_at
                    .map(|t| t.saturating_duration_since(epoch).saturating_sub(from));
                marks.push((base, from, to, b.blocked, serialized_by));
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
        tokio::time::sleep(STALL_RECOVERY).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut completions = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Ok((c, f))) => {
                completions.push(c);
                failed += f;
            }
            Ok(Err(e)) => outcome = outcome.and(Err(e)),
            Err(e) => outcome = outcome.and(Err(format!("a client died: {e}"))),
        }
    }
    outcome?;

    let timeline = Timeline::new(&completions);
    let ms_of = |d: Duration| d.as_millis() as usize;
    let runs: Vec<StallRun> = marks
        .iter()
        .map(|&(base, from, to, blocked, serialized_by)| {
            let (b, f, t) = (ms_of(base), ms_of(from), ms_of(to).max(ms_of(from) + 1));
            let (worst_during, worst_at) =
                timeline.worst_window((f + 1).saturating_sub(WINDOW_MS), t - 1);
            StallRun {
                baseline_rate: timeline.rate(b, f),
                during_rate: timeline.rate(f, t),
                worst_during,
                worst_at: worst_at as i64 - f as i64,
                worst_baseline: timeline
                    .worst_window(b, f.saturating_sub(WINDOW_MS).max(b))
                    .0,
                snapshot: to - from,
                blocked,
                serialized_by,
            }
        })
        .collect();

    println!(
        "| run | baseline writes/s | during snapshot writes/s | during / baseline | worst 100 ms \
         during snapshot (writes/s) | worst 100 ms in baseline (writes/s) | snapshot took | \
         blocked (handler) | serialized by | worst window starts at |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in runs.iter().enumerate() {
        println!(
            "| {} | {} | {} | {:.0}% | {} | {} | {} | {} | {} | {:+} ms |",
            i + 1,
            rate(r.baseline_rate),
            rate(r.during_rate),
            100.0 * r.during_rate / r.baseline_rate.max(1.0),
            rate(r.worst_during),
            rate(r.worst_baseline),
            ms(r.snapshot),
            opt_ms(r.blocked),
            r.serialized_by
                .map_or("-".into(), |d| format!("+{}", ms(d))),
            r.worst_at,
        );
    }
    let base = median(runs.iter().map(|r| r.baseline_rate).collect());
    let during = median(runs.iter().map(|r| r.during_rate).collect());
    println!(
        "| **median of {}** | **{}** | **{}** | **{}** | **{}** | **{}** | **{}** | **{}** | | |",
        runs.len(),
        opt_rate(base),
        opt_rate(during),
        match (base, during) {
            (Some(b), Some(d)) => format!("{:.0}%", 100.0 * d / b.max(1.0)),
            _ => "-".into(),
        },
        opt_rate(median(runs.iter().map(|r| r.worst_during).collect())),
        opt_rate(median(runs.iter().map(|r| r.worst_baseline).collect())),
        opt_ms(median(runs.iter().map(|r| r.snapshot).collect())),
        opt_ms(median(runs.iter().filter_map(|r| r.blocked).collect())),
    );
    println!();
    if failed > 0 {
        println!("note: {failed} writes failed during part 4 (retried with the next command)\n");
    }
    Ok(())
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
    let data = lock(&leader_node.probe.last_data)
        .clone()
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
