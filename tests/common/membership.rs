//! Helpers of the membership tests (`tests/membership.rs`,
//! `tests/administration.rs`): a monitor of leaders per term, the history
//! check, and membership changes retried through leader changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use regatta::testing::Cluster;
use regatta::{MembershipError, RaftError, Role};

use super::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Samples every running node's metrics and fails if two nodes ever claim
/// leadership of the same term.
pub struct LeaderMonitor {
    stop: Arc<AtomicBool>,
    task: actix_rt::task::JoinHandle<BTreeMap<u64, BTreeSet<u64>>>,
}

impl LeaderMonitor {
    pub fn start(handles: &Handles) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (handles, flag) = (handles.clone(), stop.clone());
        let task = actix_rt::spawn(async move {
            let mut leaders: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
            while !flag.load(Ordering::Relaxed) {
                for raft in handles.all() {
                    let m = raft.metrics().borrow().clone();
                    if m.role == Role::Leader {
                        leaders.entry(m.term).or_default().insert(m.id);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            leaders
        });
        LeaderMonitor { stop, task }
    }

    pub async fn check(self) {
        self.stop.store(true, Ordering::Relaxed);
        let leaders = self.task.await.expect("monitor");
        for (term, ids) in &leaders {
            assert!(ids.len() <= 1, "term {term} had leaders {ids:?}");
        }
        eprintln!("leaders by term: {leaders:?}");
    }
}

/// The leader agreed on by the voters `among`.
pub async fn leader_among(c: &Cluster<Counter>, among: &[u64]) -> u64 {
    c.wait_leader_among(among, SECS(30)).await.expect("leader")
}

/// Stops the clients and checks everything they saw: one leader per term,
/// a linearizable history of at least `min_completed` operations, and every
/// acknowledged write applied exactly once on every running node.
pub async fn check_history(
    c: &Cluster<Counter>,
    load: Workload,
    monitor: LeaderMonitor,
    min_completed: usize,
    seed: u64,
) {
    let history = load.stop().await;
    monitor.check().await;
    check_linearizable(&history, min_completed, seed);
    check_acknowledged_writes(c, &history).await;
}

pub async fn add_and_catch_up(c: &mut Cluster<Counter>, handles: &Handles, ids: &[u64]) {
    let voters: Vec<u64> = c
        .metrics()
        .values()
        .next()
        .expect("a node")
        .membership
        .voters
        .iter()
        .copied()
        .collect();
    for &id in ids {
        c.start(id).await;
        handles.sync(c);
        let leader = leader_among(c, &voters).await;
        c.raft(leader)
            .add_learner(id, "")
            .await
            .unwrap_or_else(|e| panic!("add learner {id}: {e}"));
        let commit = c.metrics()[&leader].commit_index;
        c.wait_applied(&[id], commit, SECS(30))
            .await
            .expect("learner catches up");
        assert_eq!(c.metrics()[&id].role, Role::Learner);
    }
}

pub async fn change(c: &Cluster<Counter>, from: &[u64], voters: &[u64]) -> regatta::Membership {
    // The leader may change under load; a refused or indeterminate change
    // is retried (a change whose joint entry survives is finished by the
    // next leader, and asking again for the same voters is then a no-op).
    for _ in 0..10 {
        let leader = leader_among(c, from).await;
        match c
            .raft(leader)
            .change_membership(voters.iter().copied())
            .await
        {
            Ok(m) => return m,
            Err(e @ (RaftError::NotLeader(_) | RaftError::Indeterminate | RaftError::Timeout)) => {
                eprintln!("change to {voters:?}: {e}; retrying");
            }
            Err(RaftError::Membership(MembershipError::ChangeInProgress)) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("change to {voters:?}: {e}"),
        }
    }
    panic!("change to {voters:?} never completed");
}

/// Waits until every voter of the new configuration has it. (A removed
/// node may never hear of C_new: it commits without it, and its replicator
/// stops then. It cannot disrupt either way.)
pub async fn wait_config(c: &Cluster<Counter>, voters: &[u64]) {
    let want: BTreeSet<u64> = voters.iter().copied().collect();
    for &id in voters {
        c.raft(id)
            .wait_for(SECS(30), |m| {
                m.membership.voters == want && !m.membership.is_joint()
            })
            .await
            .unwrap_or_else(|e| panic!("node {id} never saw voters {want:?}: {e}"));
    }
}
