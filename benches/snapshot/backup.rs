//! Parts 5 and 6: a backup of the loaded queue and its restore into a new
//! three-node cluster; then `add_voter` of a node that must receive the
//! whole state by snapshot, while clients write.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regatta::{InitialCluster, Node, NodeId};

use crate::cluster::{cluster_config, start_joiner, BenchCluster, CLUSTER_ID};
use crate::item;
use crate::queue::{Len, Queue, QueueCommand};
use crate::report::ms;

/// Resident and peak resident memory of this process, in bytes (Linux).
fn memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Resets the peak resident memory to the current one (Linux).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Writes the backup ships after the follower's snapshot (as many as
/// `Config::snapshot_every`'s default leaves at most).
const WRITES_AFTER_SNAPSHOT: u64 = 10_000;

pub(crate) async fn backup_part(
    cluster: &mut BenchCluster,
    follower: NodeId,
    leader: NodeId,
) -> Result<(), String> {
    let file = cluster.fresh_dir(0).with_extension("backup");
    // The bench snapshots on request only: give the follower a snapshot,
    // as `snapshot_every` would, then writes after it.
    cluster
        .node(follower)
        .raft
        .snapshot()
        .await
        .map_err(|e| format!("snapshot on the follower: {e}"))?;
    let raft = cluster.node(leader).raft.clone();
    let writes = (0..64u64).map(|c| {
        let raft = raft.clone();
        async move {
            for i in (c..WRITES_AFTER_SNAPSHOT).step_by(64) {
                let command = if i.is_multiple_of(2) {
                    QueueCommand::Push(item(i))
                } else {
                    QueueCommand::Pop
                };
                raft.write(command)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
            }
            Ok::<(), String>(())
        }
    });
    for written in futures_util::future::join_all(writes).await {
        written?;
    }
    // Nothing writes meanwhile: the backup must hold exactly this.
    let expected = cluster
        .node(follower)
        .raft
        .read(Len)
        .await
        .map_err(|e| format!("read: {e}"))?;
    reset_peak();
    let before = memory().map_or(0, |(rss, _)| rss);
    let started = Instant::now();
    let backup = cluster
        .node(follower)
        .raft
        .backup()
        .await
        .map_err(|e| format!("backup: {e}"))?;
    let taken = started.elapsed();
    let size = backup.file_size();
    let path = file.clone();
    let streamed = Instant::now();
    let mut reader = backup.reader;
    let written = tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        let n = std::io::copy(&mut reader, &mut out)?;
        std::io::Write::flush(&mut out)?;
        out.get_ref().sync_all()?;
        Ok::<u64, std::io::Error>(n)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("writing the backup: {e}"))?;
    let stream_time = streamed.elapsed();
    let peak = memory().map_or(0, |(_, hwm)| hwm);
    if written != size {
        return Err(format!("backup of {size} bytes, {written} written"));
    }
    let total = started.elapsed();

    // The restore itself (check the file, write one data directory), on
    // its own: its memory does not grow with the state.
    let founders = (11..=13).fold(InitialCluster::new(), |c, id| c.member(id, ""));
    reset_peak();
    let before_restore = memory().map_or(0, |(rss, _)| rss);
    let scratch = cluster.fresh_dir(10);
    let membership = regatta::Membership::new(11..=13);
    let restore_into_dir = Instant::now();
    let (path, dir) = (file.clone(), scratch.clone());
    tokio::task::spawn_blocking(move || {
        regatta::backup::restore(&path, &dir, CLUSTER_ID, &membership, "")
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("restore into a directory: {e}"))?;
    let restore_into_dir = restore_into_dir.elapsed();
    let restore_peak = memory().map_or(0, |(_, hwm)| hwm);
    let _ = std::fs::remove_dir_all(&scratch);

    // Three new nodes, founded from the file.
    let restore_started = Instant::now();
    let mut nodes: Vec<Node<Queue>> = Vec::new();
    for id in 11..=13 {
        let node = Node::builder(id, Queue::default())
            .cluster_name(CLUSTER_ID)
            .data_dir(cluster.fresh_dir(id))
            .listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .initial_cluster(founders.clone())
            .restore_from(&file)
            .config(cluster_config())
            .start()
            .await
            .map_err(|e| format!("restored node {id}: {e}"))?;
        nodes.push(node);
    }
    crate::support::connect(&nodes);
    let mut serving = Vec::new();
    for node in &nodes {
        let len = node
            .raft()
            .read(Len)
            .await
            .map_err(|e| format!("read on restored node {}: {e}", node.id()))?;
        serving.push(len);
    }
    let restore_time = restore_started.elapsed();
    crate::support::stop_nodes(nodes).await;
    let _ = std::fs::remove_file(&file);
    if serving.iter().any(|n| *n != expected) {
        return Err(format!(
            "restored nodes hold {serving:?} items, not {expected}"
        ));
    }
    println!("## Backup and restore\n");
    println!(
        "| backup bytes | barrier + open | streaming to a file | total | MB/s (total) | peak memory added | restore into one directory (memory added) | restore: 3 nodes serving a linearizable read |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {size} | {} | {} | {} | {:.0} | {} | {} ({}) | {} |\n",
        ms(taken),
        ms(stream_time),
        ms(total),
        size as f64 / 1e6 / total.as_secs_f64(),
        mib(peak.saturating_sub(before)),
        ms(restore_into_dir),
        mib(restore_peak.saturating_sub(before_restore)),
        ms(restore_time),
    );
    Ok(())
}

pub(crate) async fn add_voter_part(
    cluster: &mut BenchCluster,
    leader: NodeId,
) -> Result<(), String> {
    let raft = cluster.node(leader).raft.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writers: Vec<_> = (0..64u64)
        .map(|c| {
            let (raft, stop, done, failed) =
                (raft.clone(), stop.clone(), done.clone(), failed.clone());
            actix_rt::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let command = if i.is_multiple_of(2) {
                        QueueCommand::Push(item(c * 1_000_000 + i))
                    } else {
                        QueueCommand::Pop
                    };
                    match raft.write(command).await {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    i += 1;
                }
            })
        })
        .collect();
    let id = 4;
    let dir = cluster.fresh_dir(id);
    let node = start_joiner(id, dir).await?;
    cluster.nodes.push(node);
    cluster.connect();
    let started = Instant::now();
    let added = raft
        .add_voter(id, cluster.node(id).address(), Default::default())
        .await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let m = added.map_err(|e| format!("add_voter: {e}"))?;
    println!("## add_voter of a node that needs the whole state, under writes\n");
    println!(
        "| voters after | time to voter (incl. {:?} stabilization) | writes ok | writes failed |",
        cluster_config().voter_stabilization
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| {:?} | {} | {} | {} |\n",
        m.voters,
        ms(took),
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
