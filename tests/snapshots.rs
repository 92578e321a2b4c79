//! Snapshots and log compaction on the simulated harness: followers (and
//! deposed leaders) that fall behind the compaction point catch up by
//! InstallSnapshot; the persisted log stays bounded; restarts replay only
//! what follows the latest snapshot.

mod common;

use std::time::Duration;

use common::*;
use regatta::testing::Cluster;
use regatta::transport::sim::LinkConfig;
use regatta::Config;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Snapshot every 10 entries and keep almost nothing behind it, so a node
/// cut off for a few commits needs a snapshot.
fn snapshot_config() -> Config {
    Config {
        snapshot_every: 10,
        snapshot_keep_entries: 2,
        snapshot_chunk_bytes: 256,
        // A lost chunk is resent after this; the default (10 s) suits
        // large snapshots on slow links, not a lossy test network.
        snapshot_chunk_timeout: Duration::from_millis(500),
        ..test_config()
    }
}

/// Entries kept in memory storage can never exceed this: the entries since
/// the last snapshot (< 10 plus whatever was appended while one was being
/// taken), the trailing window, one iteration's commands, a blank entry per
/// election. It does not grow with the number of commands.
const LOG_BOUND: usize = 80;

fn check_bounded(c: &Cluster<Counter>) {
    for id in c.ids() {
        let stored = c.storage(id).contents().entries.len();
        assert!(
            stored <= LOG_BOUND,
            "node {id} keeps {stored} log entries (bound {LOG_BOUND})"
        );
    }
}

async fn catch_up_by_snapshot(link: LinkConfig, name: &str) {
    init_tracing();
    let seed = seed(name);
    bounded(SECS(300), async {
        let mut c = Cluster::new(3, snapshot_config(), seed, |_| Counter::default()).await;
        c.net().set_link(link);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut next = 0;
        let mut history = Vec::new();
        let mut by_snapshot = 0;
        for iteration in 0..30 {
            let leader = c.wait_leader(SECS(30)).await.expect("leader");
            let victim = if iteration % 3 == 2 {
                leader
            } else {
                let followers: Vec<u64> = c.ids().into_iter().filter(|id| *id != leader).collect();
                followers[rng.usize(..followers.len())]
            };
            let crash = rng.bool();
            let behind = c.metrics()[&victim].last_log_index;
            if crash {
                c.crash(victim);
            } else {
                c.net().isolate(victim);
            }
            let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != victim).collect();
            let leader = c
                .wait_leader_among(&others, SECS(30))
                .await
                .expect("a leader among the others");
            for _ in 0..rng.u64(5..15) {
                next += 1;
                // Retry writes that were not submitted; record the rest.
                let value = loop {
                    match c.raft(leader).write(Add(next)).await {
                        Ok(v) => break Some(v),
                        Err(e) if e.is_indeterminate() => break None,
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
                history.push(Op {
                    client: 0,
                    add: Some(next),
                    call: 0,
                    ret: value.map(|_| 0),
                    output: value,
                });
            }
            let compacted = c.storage(leader).contents().snapshot.index;
            if compacted > behind {
                by_snapshot += 1;
            }
            if crash {
                c.start(victim).await;
            } else {
                c.net().rejoin(victim);
            }
            let target = c.metrics()[&leader].commit_index;
            c.wait_applied(&c.ids(), target, SECS(60))
                .await
                .unwrap_or_else(|e| panic!("iteration {iteration}: node {victim} did not catch up: {e}"));
            check_bounded(&c);
            eprintln!("iteration {iteration}: node {victim} caught up to {target}");
        }
        eprintln!("{by_snapshot} of 30 returning nodes were behind the compaction point");
        assert!(
            by_snapshot >= 10,
            "too few nodes needed a snapshot ({by_snapshot}): the test does not test InstallSnapshot"
        );
        c.net().set_link(LinkConfig::reliable());
        check_acknowledged_writes(&c, &history).await;
        check_bounded(&c);
        for id in c.ids() {
            assert!(
                c.metrics()[&id].snapshot_index > 0,
                "node {id} never snapshotted"
            );
        }
    })
    .await;
}

#[actix_rt::test]
async fn lagging_nodes_catch_up_by_snapshot_on_a_reliable_network() {
    catch_up_by_snapshot(LinkConfig::reliable(), "snapshot_reliable").await;
}

#[actix_rt::test]
async fn lagging_nodes_catch_up_by_snapshot_on_an_unreliable_network() {
    catch_up_by_snapshot(LinkConfig::unreliable(), "snapshot_unreliable").await;
}

#[actix_rt::test]
async fn whole_cluster_restarts_from_snapshots() {
    init_tracing();
    let seed = seed("restart_from_snapshots");
    bounded(SECS(180), async {
        let mut c = Cluster::new(3, snapshot_config(), seed, |_| Counter::default()).await;
        let mut expected = 0;
        let mut last_commit = 0;
        for round in 0..5 {
            let leader = c.wait_leader(SECS(30)).await.expect("leader");
            for _ in 0..23 {
                expected += 1;
                c.write(leader, Add(1)).await.expect("write");
            }
            let commit = c.metrics()[&leader].commit_index;
            assert!(
                commit >= last_commit,
                "round {round}: commit index went back"
            );
            last_commit = commit;
            c.wait_applied(&c.ids(), commit, SECS(30))
                .await
                .expect("applied");
            c.crash_all();
            for id in c.ids() {
                let stored = c.storage(id).contents();
                assert!(stored.snapshot.index > 0, "node {id} has not compacted");
                assert!(stored.entries.len() <= LOG_BOUND);
                c.start(id).await;
                // Restored from the snapshot before anything is applied.
                let m = c.metrics()[&id].clone();
                assert!(m.commit_index >= stored.snapshot.index);
                assert!(m.snapshot_index >= stored.snapshot.index);
            }
            let leader = c.wait_leader(SECS(30)).await.expect("leader after restart");
            let value = c.raft(leader).read(Get).await.expect("read");
            assert_eq!(value, expected, "round {round}: state after restart");
            let commit = c.metrics()[&leader].commit_index;
            assert!(
                commit >= last_commit,
                "round {round}: commit index went back after restart"
            );
        }
    })
    .await;
}

#[actix_rt::test]
async fn a_node_restarted_right_after_a_snapshot_serves_the_right_state() {
    init_tracing();
    let seed = seed("restart_after_snapshot");
    bounded(SECS(120), async {
        let config = Config {
            snapshot_every: 0, // only on request
            snapshot_keep_entries: 0,
            ..test_config()
        };
        let mut c = Cluster::new(3, config, seed, |_| Counter::default()).await;
        let leader = c.wait_leader(SECS(30)).await.expect("leader");
        for n in 1..=7 {
            c.write(leader, Add(n)).await.expect("write");
        }
        let follower = c
            .ids()
            .into_iter()
            .find(|id| *id != leader)
            .expect("follower");
        let commit = c.metrics()[&leader].commit_index;
        c.wait_applied(&[follower], commit, SECS(30))
            .await
            .expect("applied");
        let at = c.raft(follower).snapshot().await.expect("snapshot");
        assert_eq!(at.index, commit);
        let stored = c.storage(follower).contents();
        assert_eq!(
            stored.snapshot.index, commit,
            "log compacted up to the snapshot"
        );
        assert!(stored.entries.is_empty());

        c.restart(follower).await;
        // No new write: the value must come from the snapshot alone.
        let value = c.raft(follower).read(Get).await.expect("read");
        assert_eq!(value, 28);
        let history = c
            .raft(follower)
            .state_machine()
            .send(History)
            .await
            .unwrap();
        assert_eq!(history.len(), 7, "every command exactly once after restore");
    })
    .await;
}

/// A lost InstallSnapshot chunk (or its acknowledgement) is resent after an
/// RPC-scale timeout, not after `snapshot_chunk_timeout` (10 s by default,
/// meant for slow links): on a network losing 10% of messages each way, a
/// node behind the compaction point catches up by a snapshot of many
/// chunks well within the MIT tests' 10 s agreement bound.
#[actix_rt::test]
async fn a_lost_snapshot_chunk_is_resent_within_an_rpc_timeout() {
    init_tracing();
    let seed = seed("lost_snapshot_chunk");
    bounded(SECS(120), async {
        let config = Config {
            snapshot_every: 10,
            snapshot_keep_entries: 2,
            // About ten chunks (the snapshot is ~150 bytes), each of which
            // the network may lose.
            snapshot_chunk_bytes: 16,
            ..test_config()
        };
        assert_eq!(config.snapshot_chunk_timeout, SECS(10), "the default");
        let c = Cluster::new(3, config, seed, |_| Counter::default()).await;
        let leader = c.wait_leader(SECS(30)).await.expect("leader");
        let victim = c.ids().into_iter().find(|id| *id != leader).unwrap();
        c.net().isolate(victim);
        for n in 1..=40 {
            c.write(leader, Add(n)).await.expect("write");
        }
        // Snapshots are taken in the background after the writes apply:
        // wait for one past index 10 rather than race it.
        let leader_metrics = c
            .raft(leader)
            .wait_for(SECS(10), |m| m.snapshot_index > 10)
            .await
            .expect("the leader compacted");
        let target = leader_metrics.commit_index;
        c.net().set_link(LinkConfig::unreliable());
        c.net().rejoin(victim);
        let started = std::time::Instant::now();
        c.wait_applied(&[victim], target, SECS(10))
            .await
            .unwrap_or_else(|e| panic!("node {victim} did not catch up by snapshot: {e}"));
        let caught_up = c.metrics()[&victim].clone();
        assert!(
            caught_up.snapshot_index >= leader_metrics.snapshot_index,
            "node {victim} caught up without a snapshot"
        );
        eprintln!(
            "node {victim} caught up to {target} in {:?}",
            started.elapsed()
        );
    })
    .await;
}
