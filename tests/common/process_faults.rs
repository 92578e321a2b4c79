//! The fault schedule the process tests share: client threads writing
//! through every node while the leader is SIGKILLed and restarted and a
//! follower is frozen, then reads of what every node holds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::process::{http, ProcessCluster};

pub const LEADER_WAIT: Duration = Duration::from_secs(30);
pub const PROGRESS_WAIT: Duration = Duration::from_secs(60);

/// Client threads writing through every running node in turn.
pub struct Clients<T> {
    stop: Arc<AtomicBool>,
    /// Nodes the clients must not use (dead or frozen).
    avoid: Arc<Mutex<BTreeSet<u64>>>,
    acked: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Vec<T>>>,
}

impl<T: Send + 'static> Clients<T> {
    /// `op(client, node address, sequence number)` performs one request and
    /// returns what to record and whether it was acknowledged.
    pub fn start(
        cluster: &ProcessCluster,
        count: usize,
        op: impl Fn(usize, std::net::SocketAddr, u64) -> (T, bool) + Send + Sync + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let avoid = Arc::new(Mutex::new(BTreeSet::new()));
        let acked = Arc::new(AtomicU64::new(0));
        let nodes: Vec<(u64, std::net::SocketAddr)> =
            cluster.nodes.iter().map(|(id, p)| (*id, p.http)).collect();
        let op = Arc::new(op);
        let threads = (0..count)
            .map(|client| {
                let (stop, avoid, acked, nodes, op) = (
                    stop.clone(),
                    avoid.clone(),
                    acked.clone(),
                    nodes.clone(),
                    op.clone(),
                );
                std::thread::spawn(move || {
                    let mut log = Vec::new();
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let (id, addr) = nodes[(client + seq as usize) % nodes.len()];
                        seq += 1;
                        if avoid.lock().unwrap().contains(&id) {
                            continue;
                        }
                        let (record, ok) = op(client, addr, seq);
                        if ok {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        log.push(record);
                    }
                    log
                })
            })
            .collect();
        Clients {
            stop,
            avoid,
            acked,
            threads,
        }
    }

    pub fn avoid(&self, id: u64, yes: bool) {
        let mut avoid = self.avoid.lock().unwrap();
        if yes {
            avoid.insert(id);
        } else {
            avoid.remove(&id);
        }
    }

    /// Waits until `more` further requests have been acknowledged.
    pub fn wait_progress(&self, cluster: &ProcessCluster, more: u64) {
        let target = self.acked.load(Ordering::Relaxed) + more;
        cluster.wait_until(
            &format!("{target} acknowledged writes"),
            PROGRESS_WAIT,
            |_| self.acked.load(Ordering::Relaxed) >= target,
        );
    }

    pub fn stop(self) -> Vec<T> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().expect("client thread"))
            .collect()
    }
}

/// The fault schedule both services go through, with clients writing all
/// along: SIGKILL the leader, restart it on its directory, SIGSTOP a
/// follower, SIGCONT it.
pub fn run_faults<T: Send + 'static>(cluster: &mut ProcessCluster, clients: &Clients<T>) {
    let all: Vec<u64> = cluster.nodes.keys().copied().collect();
    clients.wait_progress(cluster, 30);

    let leader = cluster.wait_leader(&all, LEADER_WAIT);
    println!("SIGKILL leader {leader}");
    clients.avoid(leader, true);
    cluster.kill(leader);
    let others: Vec<u64> = all.iter().copied().filter(|id| *id != leader).collect();
    let new_leader = cluster.wait_leader(&others, LEADER_WAIT);
    println!("node {new_leader} took over");
    clients.wait_progress(cluster, 30);

    println!("restarting node {leader} on its directory");
    cluster.spawn(leader);
    cluster.wait_until("the restarted node to answer", LEADER_WAIT, |c| {
        c.status(leader).is_some()
    });
    clients.avoid(leader, false);
    let commit = cluster
        .status(new_leader)
        .and_then(|s| s["commit_index"].as_u64())
        .unwrap_or(0);
    cluster.wait_applied(&[leader], commit, PROGRESS_WAIT);
    clients.wait_progress(cluster, 30);

    let leader = cluster.wait_leader(&all, LEADER_WAIT);
    let follower = *all.iter().find(|id| **id != leader).expect("a follower");
    println!("SIGSTOP follower {follower}");
    clients.avoid(follower, true);
    cluster.pause(follower);
    clients.wait_progress(cluster, 30);
    println!("SIGCONT follower {follower}");
    cluster.resume(follower);
    clients.avoid(follower, false);
    clients.wait_progress(cluster, 30);
}

/// A linearizable GET on every node, retried while it answers 503.
pub fn read_all(cluster: &ProcessCluster, path: &str) -> BTreeMap<u64, Value> {
    let mut views = BTreeMap::new();
    for &id in cluster.nodes.keys() {
        let mut answer = None;
        cluster.wait_until(
            &format!("GET {path} on node {id}"),
            LEADER_WAIT,
            |c| match http(c.http(id), "GET", path, None) {
                Ok((200, v)) => {
                    answer = Some(v);
                    true
                }
                _ => false,
            },
        );
        views.insert(id, answer.expect("answered"));
    }
    views
}

pub fn shut_down(cluster: &mut ProcessCluster) {
    let ids: Vec<u64> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|id| cluster.is_running(*id))
        .collect();
    for id in ids {
        let code = cluster.terminate(id, Duration::from_secs(30));
        assert_eq!(code, Some(0), "node {id} exit code after SIGTERM");
    }
}
