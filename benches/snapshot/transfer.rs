//! Part 2: a node that lost its disk catches up by InstallSnapshot.

use std::time::{Duration, Instant};

use regatta::{LogId, NodeId};

use crate::cluster::{cluster_config, BenchCluster};
use crate::queue::Len;
use crate::report::{mib, ms, opt_ms};
use crate::support::median;
use crate::{Plan, KEEP_ENTRIES};

/// Bound on waiting for a restarted node to catch up.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);

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
    let restores = node.probe.restore();
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
    // Re-admitted as the new incarnation, so it votes and counts again.
    cluster
        .node(leader)
        .raft
        .replace(follower)
        .await
        .map_err(|e| format!("replacing node {follower}: {e}"))?;
    Ok(Transfer {
        elapsed,
        up,
        restore: restores.first().copied(),
        installed: metrics.snapshot_index,
    })
}

pub(crate) async fn transfer_part(
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
