//! Leader election on the simulated network.

mod common;

use std::time::Duration;

use common::*;
use regatta::testing::Cluster;
use regatta::Role;

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[actix_rt::test]
async fn initial_election() {
    init_tracing();
    bounded(SECS(30), async {
        let c = Cluster::new(3, test_config(), seed("initial_election"), |_| {
            Counter::default()
        })
        .await;
        let leader = c.wait_leader(SECS(5)).await.expect("a leader within 5 s");
        let term = c.metrics()[&leader].term;
        let terms: Vec<u64> = c.metrics().values().map(|m| m.term).collect();
        assert!(
            terms.iter().all(|t| *t == term),
            "all nodes agree on the term: {terms:?}"
        );
        // Without faults the term stays put.
        tokio::time::sleep(SECS(2)).await;
        let after = c.metrics();
        assert!(
            after.values().all(|m| m.term == term),
            "term changed without faults: {after:?}"
        );
        assert_eq!(c.leaders(), vec![(leader, term)]);
    })
    .await;
}

#[actix_rt::test]
async fn reelection_after_leader_isolated_and_old_leader_steps_down() {
    init_tracing();
    bounded(SECS(60), async {
        let c = Cluster::new(3, test_config(), seed("reelection"), |_| Counter::default()).await;
        let l1 = c.wait_leader(SECS(5)).await.unwrap();
        c.net().isolate(l1);
        let rest: Vec<u64> = c.ids().into_iter().filter(|id| *id != l1).collect();
        let l2 = c
            .wait_leader_among(&rest, SECS(10))
            .await
            .expect("new leader");
        assert_ne!(l1, l2);
        // The isolated old leader hears no quorum and steps down.
        c.raft(l1)
            .wait_for(SECS(10), |m| m.role != Role::Leader)
            .await
            .expect("isolated leader steps down");
        let term2 = c.metrics()[&l2].term;
        // It rejoins: pre-vote keeps it from disturbing the new leader.
        c.net().heal();
        let l = c.wait_leader(SECS(10)).await.unwrap();
        assert_eq!(
            l, l2,
            "the rejoining node must not depose the healthy leader"
        );
        assert_eq!(
            c.metrics()[&l2].term,
            term2,
            "the rejoin did not bump the term"
        );

        // No leader when a majority is gone.
        let follower = rest.into_iter().find(|id| *id != l2).unwrap();
        c.net().partition(&[&[l2], &[follower], &[l1]]);
        for id in c.ids() {
            c.raft(id)
                .wait_for(SECS(10), |m| m.role != Role::Leader)
                .await
                .expect("no node may lead without a majority");
        }
        // Recovery once the majority returns.
        c.net().heal();
        c.wait_leader(SECS(10))
            .await
            .expect("leader after recovery");
    })
    .await;
}

#[actix_rt::test]
async fn many_elections_seven_nodes() {
    init_tracing();
    let seed = seed("many_elections");
    bounded(SECS(120), async {
        let c = Cluster::new(7, test_config(), seed, |_| Counter::default()).await;
        c.wait_leader(SECS(5)).await.unwrap();
        let mut rng = fastrand::Rng::with_seed(seed);
        for round in 0..10 {
            let mut cut = Vec::new();
            for _ in 0..3 {
                let id = rng.u64(1..=7);
                if !cut.contains(&id) {
                    cut.push(id);
                }
            }
            c.net().heal();
            for id in &cut {
                c.net().isolate(*id);
            }
            let rest: Vec<u64> = (1..=7).filter(|id| !cut.contains(id)).collect();
            c.wait_leader_among(&rest, SECS(10))
                .await
                .unwrap_or_else(|e| panic!("round {round}, cut {cut:?}: {e}"));
        }
        c.net().heal();
        c.wait_leader(SECS(10)).await.unwrap();
    })
    .await;
}
