//! Membership changes by joint consensus on the simulated harness, with
//! clients writing throughout and a monitor checking that no term ever has
//! two leaders.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use regatta::testing::Cluster;
use regatta::{MembershipError, RaftError, Role};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Samples every running node's metrics and fails if two nodes ever claim
/// leadership of the same term.
struct LeaderMonitor {
    stop: Arc<AtomicBool>,
    task: actix_rt::task::JoinHandle<BTreeMap<u64, BTreeSet<u64>>>,
}

impl LeaderMonitor {
    fn start(handles: &Handles) -> Self {
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

    async fn check(self) {
        self.stop.store(true, Ordering::Relaxed);
        let leaders = self.task.await.expect("monitor");
        for (term, ids) in &leaders {
            assert!(ids.len() <= 1, "term {term} had leaders {ids:?}");
        }
        eprintln!("leaders by term: {leaders:?}");
    }
}

/// The leader agreed on by the voters `among`.
async fn leader_among(c: &Cluster<Counter>, among: &[u64]) -> u64 {
    c.wait_leader_among(among, SECS(30)).await.expect("leader")
}

/// Stops the clients and checks everything they saw: one leader per term,
/// a linearizable history of at least `min_completed` operations, and every
/// acknowledged write applied exactly once on every running node.
async fn check_history(
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

async fn add_and_catch_up(c: &mut Cluster<Counter>, handles: &Handles, ids: &[u64]) {
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

async fn change(c: &Cluster<Counter>, from: &[u64], voters: &[u64]) -> regatta::Membership {
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
async fn wait_config(c: &Cluster<Counter>, voters: &[u64]) {
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

#[actix_rt::test]
async fn leadership_transfer_under_load_and_to_a_lagging_target() {
    init_tracing();
    let seed = seed("leadership_transfer");
    bounded(SECS(180), async {
        let c = Cluster::new(3, test_config(), seed, |_| Counter::default()).await;
        let handles = Handles::default();
        handles.sync(&c);
        let monitor = LeaderMonitor::start(&handles);
        let load = Workload::start(&handles, 4, true, seed);
        for round in 0..4 {
            let leader = c.wait_leader(SECS(30)).await.expect("leader");
            let to = c
                .ids()
                .into_iter()
                .find(|id| *id != leader)
                .expect("target");
            c.raft(leader)
                .transfer_leadership(to)
                .await
                .unwrap_or_else(|e| panic!("round {round}: transfer {leader} → {to}: {e}"));
            let now = c
                .raft(to)
                .wait_for(test_config().election_timeout_max * 2, |m| {
                    m.role == Role::Leader
                })
                .await
                .unwrap_or_else(|e| panic!("round {round}: {to} did not take over: {e}"));
            assert!(now.term > 0);
        }

        // A target cut off from the leader cannot catch up: the transfer is
        // given up and the old leader carries on.
        let leader = c.wait_leader(SECS(30)).await.expect("leader");
        let to = c
            .ids()
            .into_iter()
            .find(|id| *id != leader)
            .expect("target");
        c.net().isolate(to);
        // The clients' writes (recorded, for the linearizability check)
        // put the target behind.
        load.wait_completed(load.completed() + 10, SECS(60)).await;
        match c.raft(leader).transfer_leadership(to).await {
            Err(RaftError::Transfer(why)) => eprintln!("transfer refused: {why}"),
            other => panic!("transfer to an unreachable node: {other:?}"),
        }
        assert_eq!(
            c.metrics()[&leader].role,
            Role::Leader,
            "the leader carries on"
        );
        load.wait_completed(load.completed() + 10, SECS(60)).await;
        c.net().rejoin(to);
        c.raft(leader)
            .transfer_leadership(to)
            .await
            .expect("transfer after rejoining");
        load.wait_completed(load.completed() + 10, SECS(60)).await;

        check_history(&c, load, monitor, 10, seed).await;
    })
    .await;
}

#[actix_rt::test]
async fn every_administrative_call_works_from_a_follower() {
    // Membership changes, metadata, replacement checks and leadership
    // transfer, each asked of a follower, which forwards it to the leader.
    init_tracing();
    bounded(SECS(60), async {
        let mut c = Cluster::new(3, test_config(), 11, |_| Counter::default()).await;
        let leader = c.wait_leader(SECS(10)).await.unwrap();
        let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
        c.start(4).await;
        let f = c.raft(follower).clone();
        let m = f.add_learner(4, "").await.unwrap();
        assert!(m.learners.contains(&4), "{m:?}");
        let m = f
            .update_member_metadata(4, "api", Some("127.0.0.1:8004".into()))
            .await
            .unwrap();
        assert_eq!(m.metadata[&4]["api"], "127.0.0.1:8004");
        let commit = c.metrics()[&leader].commit_index;
        c.wait_applied(&[4], commit, SECS(10)).await.unwrap();
        let m = f.change_membership([1, 2, 3, 4]).await.unwrap();
        assert!(m.voters.contains(&4), "{m:?}");
        // A refusal comes back as such, definite.
        assert_eq!(
            f.replace(4).await,
            Err(RaftError::Membership(MembershipError::NotReplaced(4)))
        );
        assert_eq!(
            f.update_member_metadata(9, "api", None).await,
            Err(RaftError::Membership(MembershipError::NotAMember(9)))
        );
        let target = [1, 2, 3, 4]
            .into_iter()
            .find(|id| *id != leader && *id != follower)
            .unwrap();
        f.transfer_leadership(target).await.unwrap();
        assert_eq!(c.wait_leader(SECS(10)).await.unwrap(), target);
        let m = c.raft(leader).change_membership([1, 2, 3]).await.unwrap();
        assert!(
            !m.voters.contains(&4),
            "the old leader, now a follower, removes 4"
        );
    })
    .await;
}

#[actix_rt::test]
async fn add_voter_promotes_only_a_member_that_stayed_caught_up_for_the_stabilization_time() {
    init_tracing();
    bounded(SECS(60), async {
        let config = regatta::Config {
            voter_stabilization: Duration::from_millis(1_500),
            voter_catch_up_timeout: SECS(4),
            ..test_config()
        };
        let mut c = Cluster::new(3, config, 13, |_| Counter::default()).await;
        let leader = c.wait_leader(SECS(10)).await.unwrap();
        let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
        let f = c.raft(follower).clone();

        // A node that never answers is never caught up: it stays a learner.
        let e = f.add_voter(5, "", BTreeMap::new()).await.unwrap_err();
        assert!(
            matches!(
                e,
                RaftError::Membership(MembershipError::LearnerBehind { learner: 5, .. })
            ),
            "{e:?}"
        );
        assert!(c.metrics()[&leader].membership.learners.contains(&5));
        c.raft(leader).remove_learner(5).await.unwrap();

        // A node whose link keeps failing is caught up at times, never for
        // the whole stabilization time.
        c.start(4).await;
        let flapping = {
            let net = c.net().clone();
            actix_rt::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    net.isolate(4);
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    net.rejoin(4);
                }
            })
        };
        let e = f.add_voter(4, "", BTreeMap::new()).await.unwrap_err();
        flapping.abort();
        c.net().heal();
        assert!(
            matches!(
                e,
                RaftError::Membership(MembershipError::NotStable { learner: 4, .. })
            ),
            "{e:?}"
        );

        // On a steady link it is promoted, after the stabilization time.
        let started = std::time::Instant::now();
        let m = f.add_voter(4, "", BTreeMap::new()).await.unwrap();
        assert!(m.voters.contains(&4), "{m:?}");
        assert!(started.elapsed() >= Duration::from_millis(1_500));
        // Asked again, it already votes: nothing to do.
        assert_eq!(
            f.add_voter(4, "", BTreeMap::new()).await.unwrap().voters,
            m.voters
        );
    })
    .await;
}

#[actix_rt::test]
async fn dead_voter_cleanup_removes_unreachable_voters_down_to_the_minimum() {
    init_tracing();
    bounded(SECS(60), async {
        let config = regatta::Config {
            dead_voter_cleanup: Some(SECS(1)),
            min_voters: 3,
            ..test_config()
        };
        let mut c = Cluster::new(5, config, 17, |_| Counter::default()).await;
        let leader = c.wait_leader(SECS(10)).await.unwrap();
        let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != leader).collect();
        let voters_now = |c: &Cluster<Counter>| c.metrics()[&leader].membership.voters.len();
        c.crash(others[0]);
        c.raft(leader)
            .wait_for(SECS(10), |m| {
                m.membership.voters.len() == 4 && !m.membership.is_joint()
            })
            .await
            .unwrap();
        assert!(!c.metrics()[&leader].membership.voters.contains(&others[0]));
        c.crash(others[1]);
        c.raft(leader)
            .wait_for(SECS(10), |m| {
                m.membership.voters.len() == 3 && !m.membership.is_joint()
            })
            .await
            .unwrap();
        // At the minimum: a third silent voter stays (and the two left
        // still commit).
        c.crash(others[2]);
        let dropped = c
            .raft(leader)
            .wait_for(SECS(3), |m| m.membership.voters.len() < 3)
            .await;
        assert!(dropped.is_err(), "three silent seconds, still three voters");
        assert_eq!(voters_now(&c), 3);
        c.raft(leader).write(Add(1)).await.unwrap();
        assert_eq!(c.raft(leader).counts().dead_voters_removed, 2);
    })
    .await;
}

#[actix_rt::test]
async fn a_change_asked_during_another_waits_for_it_instead_of_failing() {
    // Found by CI: a node publishing its API address (a metadata change)
    // made an operator's simultaneous membership call fail with
    // "another change is in progress".
    init_tracing();
    bounded(SECS(30), async {
        let mut c = Cluster::new(3, test_config(), 19, |_| Counter::default()).await;
        let leader = c.wait_leader(SECS(10)).await.unwrap();
        c.start(4).await;
        let raft = c.raft(leader).clone();
        let publish = {
            let raft = raft.clone();
            actix_rt::spawn(async move {
                raft.update_member_metadata(leader, "api", Some("127.0.0.1:8001".into()))
                    .await
            })
        };
        // Asked while the metadata change is still being committed.
        let added = raft.add_learner(4, "").await;
        assert!(added.is_ok(), "{added:?}");
        assert!(publish.await.unwrap().is_ok());
    })
    .await;
}
