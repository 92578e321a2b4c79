//! Part 1: building a snapshot on the leader, timed from the caller and,
//! through the queue's probe, inside the state machine.

use std::time::{Duration, Instant};

use regatta::LogId;

use crate::cluster::{write_ok, BenchNode};
use crate::queue::QueueCommand;
use crate::report::{mib, ms, opt_ms};
use crate::support::median;
use crate::{item, Plan, KEEP_ENTRIES};

pub(crate) struct Build {
    pub(crate) at: LogId,
    total: Duration,
    /// When the serialization finished.
    pub(crate) serialized_at: Option<Instant>,
    pub(crate) blocked: Option<Duration>,
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
pub(crate) async fn build_once(node: &BenchNode, previous: LogId) -> Result<Build, String> {
    let handlers = node.probe.handler().len();
    let serializations = node.probe.serialize().len();
    let serialized = node.probe.serialized_at().len();
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
    let bytes = node.probe.last_data().map_or(0, |b| b.len() as u64);
    Ok(Build {
        at,
        total,
        // The first of each recorded after the counts taken above.
        serialized_at: node.probe.serialized_at().get(serialized).copied(),
        blocked: node.probe.handler().get(handlers).copied(),
        serialize: node.probe.serialize().get(serializations).copied(),
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

pub(crate) async fn build_part(
    leader: &BenchNode,
    plan: &Plan,
    first: &Build,
) -> Result<LogId, String> {
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
