//! A test harness: N nodes in one process on a [`SimNetwork`], each on its
//! own arbiter (thread) with in-memory storage that survives a crash, so
//! you can test your own state machine under partitions, loss and crashes.
//!
//! Must be used inside an actix system (e.g. `#[actix_rt::test]`).

/// A linearizability checker for client histories.
#[cfg(feature = "tcp")]
pub mod fuzz;
pub mod linearizability;
pub mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Config;
use crate::core::types::{Membership, NodeId};
use crate::error::RaftError;
use crate::metrics::{Metrics, Role};
use crate::raft::Raft;
use crate::state_machine::StateMachine;
use crate::storage::MemStorage;
use crate::transport::sim::SimNetwork;

/// Builds a node's state machine (again after every restart).
pub type Factory<SM> = Arc<dyn Fn(NodeId) -> SM + Send + Sync>;

struct Slot<SM: StateMachine> {
    arbiter: Arbiter,
    raft: Raft<SM>,
}

/// An in-process cluster.
pub struct Cluster<SM: StateMachine> {
    net: SimNetwork,
    config: Config,
    members: Membership,
    storages: BTreeMap<NodeId, MemStorage>,
    running: BTreeMap<NodeId, Slot<SM>>,
    factory: Factory<SM>,
    /// Nodes whose storage was wiped: they start empty, as joiners.
    wiped: BTreeSet<NodeId>,
}

impl<SM: StateMachine> Cluster<SM> {
    /// Starts nodes `1..=n` founding one cluster, with network randomness
    /// seeded by `seed`.
    pub async fn new(
        n: u64,
        config: Config,
        seed: u64,
        factory: impl Fn(NodeId) -> SM + Send + Sync + 'static,
    ) -> Self {
        let members = Membership::new(1..=n);
        let mut cluster = Cluster {
            net: SimNetwork::new(seed),
            config,
            members,
            storages: (1..=n).map(|id| (id, MemStorage::new())).collect(),
            running: BTreeMap::new(),
            factory: Arc::new(factory),
            wiped: BTreeSet::new(),
        };
        for id in 1..=n {
            cluster.start(id).await;
        }
        cluster
    }

    /// Starts (or restarts) node `id` on its storage.
    pub async fn start(&mut self, id: NodeId) {
        assert!(
            !self.running.contains_key(&id),
            "node {id} is already running"
        );
        let arbiter = crate::park::arbiter(self.config.idle_spin);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let storage = self.storages.entry(id).or_default().clone();
        let transport = self.net.transport(id);
        let config = self.config.clone();
        // Founders bootstrap the cluster; any other node starts empty and
        // waits to be added.
        let members = (self.members.voters.contains(&id) && !self.wiped.contains(&id))
            .then(|| self.members.clone());
        let factory = self.factory.clone();
        arbiter.spawn_fn(move || {
            let sm = factory(id).start();
            // As a production node: a founder on an empty directory asks
            // the other founders before founding.
            let _ = tx.send(Raft::start_with(
                id,
                config,
                storage,
                transport,
                members,
                sm,
                crate::raft::Environment {
                    ask_founders: true,
                    ..Default::default()
                },
            ));
        });
        let raft = rx
            .await
            .expect("node start-up did not report")
            .expect("node failed to start");
        let r = raft.clone();
        self.net.register(id, Arc::new(move |env| r.deliver(env)));
        self.running.insert(id, Slot { arbiter, raft });
    }

    /// Crashes node `id`: its actors stop at once, mid-flight; its storage
    /// keeps whatever was made durable.
    pub fn crash(&mut self, id: NodeId) {
        self.net.unregister(id);
        if let Some(slot) = self.running.remove(&id) {
            slot.arbiter.stop();
            let _ = slot.arbiter.join();
            slot.raft.join_writer();
        }
    }

    /// Crashes node `id` and throws its storage away, as an operator
    /// wiping its data directory: started again, it is an empty node that
    /// waits to be added (it no longer founds the cluster).
    pub fn wipe(&mut self, id: NodeId) {
        self.crash(id);
        self.storages.insert(id, MemStorage::new());
        self.wiped.insert(id);
    }

    /// Crashes node `id` and gives it an empty storage, as an operator
    /// replacing its disk and starting it with the same command line:
    /// started again, it founds the cluster anew (it is still a founder).
    pub fn replace_disk(&mut self, id: NodeId) {
        self.crash(id);
        self.storages.insert(id, MemStorage::new());
    }

    /// Crashes then restarts node `id`.
    pub async fn restart(&mut self, id: NodeId) {
        self.crash(id);
        self.start(id).await;
    }

    /// The simulated network.
    pub fn net(&self) -> &SimNetwork {
        &self.net
    }

    /// The handle of running node `id`.
    pub fn raft(&self, id: NodeId) -> &Raft<SM> {
        &self
            .running
            .get(&id)
            .unwrap_or_else(|| panic!("node {id} is not running"))
            .raft
    }

    /// Ids of the running nodes.
    pub fn running(&self) -> Vec<NodeId> {
        self.running.keys().copied().collect()
    }

    /// Ids of all nodes, running or not.
    pub fn ids(&self) -> Vec<NodeId> {
        self.storages.keys().copied().collect()
    }

    /// The storage of node `id`.
    pub fn storage(&self, id: NodeId) -> &MemStorage {
        &self.storages[&id]
    }

    /// Current metrics of every running node.
    pub fn metrics(&self) -> BTreeMap<NodeId, Metrics> {
        self.running
            .iter()
            .map(|(id, s)| (*id, s.raft.metrics().borrow().clone()))
            .collect()
    }

    /// Running nodes that believe they lead, with their terms.
    pub fn leaders(&self) -> Vec<(NodeId, u64)> {
        self.metrics()
            .values()
            .filter(|m| m.role == Role::Leader)
            .map(|m| (m.id, m.term))
            .collect()
    }

    /// Waits until exactly one of `among` leads and every one of them
    /// follows it in its term; returns the leader.
    pub async fn wait_leader_among(
        &self,
        among: &[NodeId],
        timeout: Duration,
    ) -> Result<NodeId, String> {
        let deadline = Instant::now() + timeout;
        loop {
            // Taken before looking: a change made while we look wakes the
            // wait below instead of being missed.
            let watchers = self.watch_all();
            let metrics = self.metrics();
            let ms: Vec<&Metrics> = among.iter().filter_map(|id| metrics.get(id)).collect();
            let leaders: Vec<&&Metrics> = ms.iter().filter(|m| m.role == Role::Leader).collect();
            if let [l] = leaders.as_slice() {
                if ms
                    .iter()
                    .all(|m| m.term == l.term && m.leader == Some(l.id))
                {
                    return Ok(l.id);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no agreed leader among {among:?} within {timeout:?}: {:?}",
                    ms.iter()
                        .map(|m| (m.id, m.role, m.term, m.leader))
                        .collect::<Vec<_>>()
                ));
            }
            any_change(watchers, Duration::from_millis(20)).await;
        }
    }

    /// Waits until exactly one running node leads and all running nodes
    /// follow it.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<NodeId, String> {
        let running = self.running();
        self.wait_leader_among(&running, timeout).await
    }

    /// Waits until every node in `among` has applied at least `index`.
    pub async fn wait_applied(
        &self,
        among: &[NodeId],
        index: u64,
        timeout: Duration,
    ) -> Result<(), RaftError> {
        for id in among {
            self.raft(*id).wait_applied(index, timeout).await?;
        }
        Ok(())
    }

    /// A metrics receiver of every running node, each marked as having
    /// seen the current metrics.
    fn watch_all(&self) -> Vec<watch::Receiver<Metrics>> {
        self.running.values().map(|s| s.raft.metrics()).collect()
    }

    /// Writes through node `via`.
    pub async fn write(
        &self,
        via: NodeId,
        command: SM::Command,
    ) -> Result<SM::Response, RaftError> {
        self.raft(via).write(command).await
    }

    /// Stops every node.
    pub fn crash_all(&mut self) {
        for id in self.running() {
            self.crash(id);
        }
    }

    /// Members of the founding configuration.
    pub fn founders(&self) -> BTreeSet<NodeId> {
        self.members.voters.clone()
    }
}

impl<SM: StateMachine> Drop for Cluster<SM> {
    fn drop(&mut self) {
        self.crash_all();
    }
}

/// Waits until any of `watchers` sees a change, at most `max`.
async fn any_change(watchers: Vec<watch::Receiver<Metrics>>, max: Duration) {
    if watchers.is_empty() {
        tokio::time::sleep(max).await;
        return;
    }
    let changes = watchers.into_iter().map(|mut rx| {
        Box::pin(async move {
            let _ = rx.changed().await;
        })
    });
    let _ = tokio::time::timeout(max, futures_util::future::select_all(changes)).await;
}
