//! The three nodes: each a `regatta::Node` running a probed queue, with
//! fjall in a directory of its own and TCP on 127.0.0.1; and a node's
//! crash and restart on an empty directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regatta::{Config, InitialCluster, Node, NodeId, Raft, Role};

use crate::queue::{Queue, QueueCommand, QueueResponse, SnapshotProbe};
use crate::support::{connect, start_node, stop_nodes, temp_dir};
use crate::KEEP_ENTRIES;

pub(crate) const CLUSTER_ID: &str = "regatta-snapshot-bench";

pub(crate) fn cluster_config() -> Config {
    Config {
        snapshot_every: 0,
        snapshot_keep_entries: KEEP_ENTRIES,
        ..Config::default()
    }
}

/// One node (a `regatta::Node`: its own thread, fjall, TCP), its handle
/// and its queue's probe.
pub(crate) struct BenchNode {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft<Queue>,
    node: Node<Queue>,
    pub(crate) probe: Arc<SnapshotProbe>,
}

impl BenchNode {
    /// Its Raft address.
    pub(crate) fn address(&self) -> String {
        self.node.raft_addr().to_string()
    }
}

/// Starts node `id` that joins a running cluster (`--join`), fjall in
/// `dir`, TCP on an ephemeral port of 127.0.0.1.
pub(crate) async fn start_joiner(id: NodeId, dir: PathBuf) -> Result<BenchNode, String> {
    let probe = Arc::new(SnapshotProbe::default());
    let node = Node::builder(id, Queue::with_probe(probe.clone()))
        .cluster_name(CLUSTER_ID)
        .data_dir(dir)
        .listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .join()
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

/// Starts node `id` of `founders` with fjall in `dir` and TCP on an
/// ephemeral port of 127.0.0.1 (peer addresses are set by the caller).
async fn start_bench_node(
    id: NodeId,
    dir: PathBuf,
    founders: &InitialCluster,
) -> Result<BenchNode, String> {
    let probe = Arc::new(SnapshotProbe::default());
    let queue = Queue::with_probe(probe.clone());
    let node = start_node(id, queue, CLUSTER_ID, dir, founders, cluster_config(), None).await?;
    Ok(BenchNode {
        id,
        raft: node.raft().clone(),
        node,
        probe,
    })
}

pub(crate) struct BenchCluster {
    /// The running nodes.
    pub(crate) nodes: Vec<BenchNode>,
    /// The founders, without addresses (ports are picked by the OS).
    founders: InitialCluster,
    /// Fresh data directories handed out so far.
    dirs_used: usize,
    /// Removed after the nodes are stopped.
    dir: tempfile::TempDir,
}

impl BenchCluster {
    pub(crate) async fn start() -> Result<BenchCluster, String> {
        let dir = temp_dir("regatta-snapshot-")?;
        let mut cluster = BenchCluster {
            nodes: Vec::new(),
            founders: (1..=3).fold(InitialCluster::new(), |c, id| c.member(id, "")),
            dirs_used: 0,
            dir,
        };
        for id in 1..=3 {
            let node_dir = cluster.fresh_dir(id);
            match start_bench_node(id, node_dir, &cluster.founders).await {
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

    pub(crate) fn fresh_dir(&mut self, id: NodeId) -> PathBuf {
        self.dirs_used += 1;
        self.dir
            .path()
            .join(format!("node-{id}-dir-{}", self.dirs_used))
    }

    /// Tells every running node every running node's address.
    pub(crate) fn connect(&self) {
        connect(self.nodes.iter().map(|n| &n.node));
    }

    pub(crate) fn node(&self, id: NodeId) -> &BenchNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("a running node")
    }

    /// Waits until some running node is leader and knows it; returns its id.
    pub(crate) async fn wait_leader(&self) -> Result<NodeId, String> {
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
    pub(crate) async fn crash(&mut self, id: NodeId) {
        let at = self
            .nodes
            .iter()
            .position(|n| n.id == id)
            .expect("a running node");
        self.nodes.remove(at).node.abort().await;
    }

    /// Starts node `id` on a fresh, empty data directory, as a node whose
    /// disk was lost comes back (`--join`: its founding flags would be
    /// refused), and exchanges addresses with the running nodes. It
    /// receives the log, but counts toward no quorum until `replace`d.
    pub(crate) async fn restart_fresh(&mut self, id: NodeId) -> Result<(), String> {
        let dir = self.fresh_dir(id);
        let node = start_joiner(id, dir).await?;
        self.nodes.push(node);
        self.connect();
        Ok(())
    }

    pub(crate) fn dropped_messages(&self) -> u64 {
        self.nodes.iter().map(|n| n.node.dropped_messages()).sum()
    }

    /// Stops every node cleanly (queued log writes made durable, threads
    /// joined), then removes the data directories.
    pub(crate) async fn shutdown(self) {
        stop_nodes(self.nodes.into_iter().map(|n| n.node)).await;
        drop(self.dir);
    }
}

pub(crate) async fn write_ok(
    raft: &Raft<Queue>,
    command: QueueCommand,
) -> Result<QueueResponse, String> {
    raft.write(command.clone())
        .await
        .map_err(|e| format!("write {command:?}: {e}"))
}
