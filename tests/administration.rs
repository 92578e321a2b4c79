//! Leadership transfer and the membership administration on the simulated
//! harness: transfers under load, every administrative call through a
//! follower, `add_voter`'s stabilization, dead-voter cleanup, and a change
//! asked while another runs.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::membership::*;
use common::*;
use regatta::testing::Cluster;
use regatta::{MembershipError, RaftError, Role};

const SECS: fn(u64) -> Duration = Duration::from_secs;

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
