//! Membership changes by joint consensus on the simulated harness, with
//! clients writing throughout and a monitor checking that no term ever has
//! two leaders. (Leadership transfer and the administrative calls are in
//! `tests/administration.rs`.)

mod common;

use std::time::Duration;

use common::membership::*;
use common::*;
use regatta::testing::Cluster;
use regatta::{MembershipError, RaftError, Role};

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[actix_rt::test]
async fn grow_from_three_to_five_and_shrink_back_under_load() {
    init_tracing();
    let seed = seed("grow_and_shrink");
    bounded(SECS(180), async {
        let mut c = Cluster::new(3, test_config(), seed, |_| Counter::default()).await;
        let handles = Handles::default();
        handles.sync(&c);
        c.wait_leader(SECS(30)).await.expect("leader");
        let monitor = LeaderMonitor::start(&handles);
        let load = Workload::start(&handles, 4, true, seed);

        add_and_catch_up(&mut c, &handles, &[4, 5]).await;
        let m = change(&c, &[1, 2, 3], &[1, 2, 3, 4, 5]).await;
        assert_eq!(m.voters, (1..=5).collect());
        assert!(m.learners.is_empty());
        wait_config(&c, &[1, 2, 3, 4, 5]).await;
        for id in c.running() {
            assert_ne!(c.metrics()[&id].role, Role::Learner);
        }

        // Shrink, removing the current leader among others.
        let leader = leader_among(&c, &[1, 2, 3, 4, 5]).await;
        let mut keep: Vec<u64> = (1..=5).filter(|id| *id != leader).collect();
        keep.truncate(3);
        let m = change(&c, &[1, 2, 3, 4, 5], &keep).await;
        assert_eq!(m.voters, keep.iter().copied().collect());
        wait_config(&c, &keep).await;
        let new_leader = leader_among(&c, &keep).await;
        assert!(
            keep.contains(&new_leader),
            "leader {new_leader} is not a voter"
        );
        for id in (1..=5).filter(|id| !keep.contains(id)) {
            let m = c.metrics()[&id].clone();
            assert_ne!(m.role, Role::Leader, "removed node {id} leads");
        }
        // The removed nodes stop taking part: crash them, the rest goes on.
        for id in (1..=5).filter(|id| !keep.contains(id)) {
            c.crash(id);
        }
        handles.sync(&c);
        load.wait_completed(60, SECS(60)).await;
        check_history(&c, load, monitor, 20, seed).await;
    })
    .await;
}

#[actix_rt::test]
async fn replace_a_node_under_load() {
    init_tracing();
    let seed = seed("replace_a_node");
    bounded(SECS(120), async {
        let mut c = Cluster::new(3, test_config(), seed, |_| Counter::default()).await;
        let handles = Handles::default();
        handles.sync(&c);
        c.wait_leader(SECS(30)).await.expect("leader");
        let monitor = LeaderMonitor::start(&handles);
        let load = Workload::start(&handles, 4, true, seed);
        add_and_catch_up(&mut c, &handles, &[4]).await;
        // Node 3 out, node 4 in, in one joint change.
        let m = change(&c, &[1, 2, 3], &[1, 2, 4]).await;
        assert_eq!(m.voters, [1, 2, 4].into_iter().collect());
        wait_config(&c, &[1, 2, 4]).await;
        c.raft(3)
            .wait_for(SECS(30), |m| m.role == Role::Removed)
            .await
            .expect("node 3 knows it was removed");
        c.crash(3);
        handles.sync(&c);
        load.wait_completed(60, SECS(60)).await;
        check_history(&c, load, monitor, 20, seed).await;
    })
    .await;
}

#[actix_rt::test]
async fn a_partition_of_the_new_members_holds_the_joint_phase() {
    init_tracing();
    let seed = seed("partition_in_joint_phase");
    bounded(SECS(120), async {
        let mut c = Cluster::new(3, test_config(), seed, |_| Counter::default()).await;
        let handles = Handles::default();
        handles.sync(&c);
        c.wait_leader(SECS(30)).await.expect("leader");
        add_and_catch_up(&mut c, &handles, &[4, 5]).await;
        let leader = leader_among(&c, &[1, 2, 3]).await;
        let keep = (1..=3).find(|id| *id != leader).expect("a follower");
        let target: Vec<u64> = vec![keep, 4, 5];
        // Cut the new members off, then ask for C_new = {keep, 4, 5}: the
        // joint phase needs a majority of C_new, which only 4 and 5 can
        // provide, so nothing can commit until the partition heals.
        c.net().partition(&[&[4, 5]]);
        let raft = c.raft(leader).clone();
        let goal = target.clone();
        let attempt = actix_rt::spawn(async move { raft.change_membership(goal).await });
        c.raft(leader)
            .wait_for(SECS(10), |m| m.membership.is_joint())
            .await
            .expect("the joint configuration is in force at once");
        // One change at a time: another is refused while this one is stuck.
        match c.raft(leader).change_membership([1, 2, 3]).await {
            Err(RaftError::Membership(why)) => {
                assert_eq!(why, MembershipError::ChangeInProgress)
            }
            Err(RaftError::NotLeader(_)) => {} // check-quorum deposed it meanwhile
            other => panic!("second change not refused: {other:?}"),
        }
        let stuck = c.raft(leader).write(Add(1)).await;
        assert!(
            stuck.is_err(),
            "a write committed without a majority of C_new: {stuck:?}"
        );
        c.net().heal();
        // The change completes (the original call may have timed out).
        let _ = attempt.await;
        let monitor = LeaderMonitor::start(&handles);
        wait_config(&c, &target).await;
        let leader = leader_among(&c, &target).await;
        assert!(target.contains(&leader));
        c.write(leader, Add(2)).await.expect("writes resume");
        monitor.check().await;
    })
    .await;
}

#[actix_rt::test]
async fn a_learner_is_not_promoted_before_it_catches_up() {
    init_tracing();
    let seed = seed("learner_catch_up");
    bounded(SECS(120), async {
        let config = regatta::Config {
            learner_max_lag: 5,
            ..test_config()
        };
        let mut c = Cluster::new(3, config, seed, |_| Counter::default()).await;
        let leader = c.wait_leader(SECS(30)).await.expect("leader");
        c.start(4).await;
        c.raft(4)
            .wait_for(SECS(10), |m| m.role == Role::Removed)
            .await
            .expect("a node not yet added reports it");
        c.net().isolate(4);
        c.raft(leader)
            .add_learner(4, "")
            .await
            .expect("add learner");
        for n in 0..20 {
            c.write(leader, Add(n)).await.expect("write");
        }
        match c.raft(leader).change_membership([1, 2, 3, 4]).await {
            Err(RaftError::Membership(MembershipError::LearnerBehind { learner: 4, behind })) => {
                assert!(behind > 0)
            }
            other => panic!("a lagging learner was promoted: {other:?}"),
        }
        // Nothing changed.
        assert_eq!(c.metrics()[&leader].membership.voters, (1..=3).collect());
        // Unknown nodes are refused too.
        assert!(matches!(
            c.raft(leader).change_membership([1, 2, 3, 9]).await,
            Err(RaftError::Membership(_))
        ));

        c.net().rejoin(4);
        let commit = c.metrics()[&leader].commit_index;
        c.wait_applied(&[4], commit, SECS(30))
            .await
            .expect("catch up");
        // The leader learns of the catch-up from node 4's replies, a
        // moment after node 4 has applied: retry while it is "behind".
        let mut promoted = None;
        for _ in 0..100 {
            match c.raft(leader).change_membership([1, 2, 3, 4]).await {
                Ok(m) => {
                    promoted = Some(m);
                    break;
                }
                Err(RaftError::Membership(MembershipError::LearnerBehind { .. })) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("promotion: {e}"),
            }
        }
        let m = promoted.expect("promotion after catching up");
        assert_eq!(m.voters, (1..=4).collect());
        c.raft(4)
            .wait_for(SECS(30), |m| m.membership.voters.len() == 4)
            .await
            .expect("node 4 sees itself as a voter");
        assert_ne!(c.metrics()[&4].role, Role::Learner);
    })
    .await;
}

#[actix_rt::test]
async fn leader_crashes_in_the_middle_of_changes() {
    init_tracing();
    let seed = seed("crash_mid_change");
    bounded(SECS(300), async {
        let mut c = Cluster::new(3, test_config(), seed, |_| Counter::default()).await;
        let handles = Handles::default();
        handles.sync(&c);
        c.wait_leader(SECS(30)).await.expect("leader");
        add_and_catch_up(&mut c, &handles, &[4, 5]).await;
        let monitor = LeaderMonitor::start(&handles);
        let load = Workload::start(&handles, 3, true, seed);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut voters: Vec<u64> = vec![1, 2, 3];
        let (mut finished, mut lost) = (0, 0);
        for iteration in 0..12 {
            let target: Vec<u64> = if voters.len() == 3 {
                (1..=5).collect()
            } else {
                let mut t: Vec<u64> = (1..=5).collect();
                rng.shuffle(&mut t);
                t.truncate(3);
                t.sort();
                t
            };
            let leader = leader_among(&c, &voters).await;
            if voters.len() == 3 {
                // Removed nodes come back as learners first.
                let back: Vec<u64> = (1..=5).filter(|id| !voters.contains(id)).collect();
                for id in back {
                    c.raft(leader)
                        .add_learner(id, "")
                        .await
                        .expect("re-add learner");
                }
                let commit = c.metrics()[&leader].commit_index;
                c.wait_applied(&c.ids(), commit, SECS(30))
                    .await
                    .expect("learners catch up");
            }
            let raft = c.raft(leader).clone();
            let goal = target.clone();
            let attempt = actix_rt::spawn(async move { raft.change_membership(goal).await });
            // Crash the leader somewhere between appending C_old,new and
            // committing C_new (or a little before or after).
            tokio::time::sleep(Duration::from_millis(rng.u64(0..25))).await;
            c.crash(leader);
            handles.sync(&c);
            let _ = attempt.await;
            c.start(leader).await;
            handles.sync(&c);
            // Whatever happened, the cluster settles on one non-joint
            // configuration: the old one, or the target if the joint entry
            // survived (the next leader then finishes the change).
            let mut settled = None;
            for _ in 0..300 {
                // The configuration of the leader of the latest term, once
                // it is no longer joint. (A node removed by it may never
                // hear of it; it cannot disrupt.)
                let metrics = c.metrics();
                let top = metrics.values().map(|m| m.term).max().unwrap_or(0);
                let leader = metrics
                    .values()
                    .find(|m| m.role == Role::Leader && m.term == top);
                if let Some(m) = leader {
                    if !m.membership.is_joint() && m.commit_index >= m.last_log_index {
                        settled = Some(m.membership.voters.clone());
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let settled: Vec<u64> = settled
                .unwrap_or_else(|| panic!("iteration {iteration}: configuration never settled"))
                .into_iter()
                .collect();
            wait_config(&c, &settled).await;
            if settled == target {
                finished += 1;
            } else {
                assert_eq!(
                    settled, voters,
                    "iteration {iteration}: neither old nor new"
                );
                lost += 1;
            }
            voters = settled;
        }
        eprintln!("{finished} changes completed, {lost} lost with their leader");
        assert!(
            finished >= 3,
            "too few changes survived to test finishing them"
        );
        for id in (1..=5).filter(|id| !voters.contains(id)) {
            c.crash(id);
        }
        handles.sync(&c);
        check_history(&c, load, monitor, 10, seed).await;
    })
    .await;
}
