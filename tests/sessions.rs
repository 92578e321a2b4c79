//! Client sessions: a write retried with the same sequence number is
//! applied once, on every node, across leader changes and snapshots;
//! expiry and eviction refuse later writes alike on every node.

mod common;

use std::time::Duration;

use common::*;
use regatta::testing::Cluster;
use regatta::{Config, RaftError, Session, SessionError};

const LIMIT: Duration = Duration::from_secs(60);

async fn value(c: &Cluster<Counter>, id: u64) -> u64 {
    c.raft(id).read(Get).await.unwrap()
}

#[actix_rt::test]
async fn a_retried_write_applies_once_through_any_node_and_any_leader() {
    init_tracing();
    bounded(LIMIT, async {
        let c = Cluster::new(3, test_config(), seed("session_retry"), |_| {
            Counter::default()
        })
        .await;
        let leader = c.wait_leader(LIMIT).await.unwrap();
        let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
        let session = c.raft(follower).open_session().await.unwrap();
        assert_eq!(session.write(Add(5)).await.unwrap(), 5);

        // The same sequence number again — as a client retrying after an
        // unknown outcome would — through another node: the first answer,
        // not a second increment.
        let retry = Session::resume(c.raft(leader).clone(), session.id(), 0);
        assert_eq!(retry.write(Add(5)).await.unwrap(), 5);
        assert_eq!(value(&c, leader).await, 5);

        // After a leader change the cache is still there: it is in the log.
        let next = c.ids().into_iter().find(|id| *id != leader).unwrap();
        c.raft(leader).transfer_leadership(next).await.unwrap();
        c.raft(next)
            .wait_for(LIMIT, |m| m.leader == Some(next))
            .await
            .unwrap();
        let retry = Session::resume(c.raft(next).clone(), session.id(), 0);
        assert_eq!(retry.write(Add(5)).await.unwrap(), 5);

        // Once the client has acknowledged sequence 1 (by writing 2), a late
        // copy of 1 is refused, not applied.
        assert_eq!(session.write(Add(1)).await.unwrap(), 6);
        let late = Session::resume(c.raft(next).clone(), session.id(), 0);
        match late.write(Add(5)).await {
            Err(RaftError::Session(SessionError::Stale {
                seq: 1, floor: 1, ..
            })) => {}
            other => panic!("a late duplicate was not refused: {other:?}"),
        }
        for id in c.ids() {
            c.wait_applied(&[id], c.metrics()[&next].commit_index, LIMIT)
                .await
                .unwrap();
            assert_eq!(value(&c, id).await, 6, "node {id}");
            let history = c.raft(id).state_machine().send(History).await.unwrap();
            assert_eq!(
                history.iter().filter(|(_, n)| *n == 5).count(),
                1,
                "node {id}"
            );
        }
    })
    .await
}

#[actix_rt::test]
async fn the_session_table_travels_in_snapshots() {
    init_tracing();
    bounded(LIMIT, async {
        let config = Config {
            snapshot_keep_entries: 0,
            ..test_config()
        };
        let mut c = Cluster::new(3, config, seed("session_snapshot"), |_| Counter::default()).await;
        let leader = c.wait_leader(LIMIT).await.unwrap();
        let session = c.raft(leader).open_session().await.unwrap();
        assert_eq!(session.write(Add(7)).await.unwrap(), 7);
        // Every node snapshots and compacts its log: the table now lives
        // only in the snapshots.
        let commit = c.metrics()[&leader].commit_index;
        c.wait_applied(&c.ids(), commit, LIMIT).await.unwrap();
        for id in c.ids() {
            c.raft(id).snapshot().await.unwrap();
        }
        // A follower restarts from its snapshot and is made leader: the
        // duplicate is answered from the table it restored.
        let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
        c.crash(follower);
        c.restart(follower).await;
        c.raft(follower).wait_applied(commit, LIMIT).await.unwrap();
        c.raft(leader).transfer_leadership(follower).await.unwrap();
        c.raft(follower)
            .wait_for(LIMIT, |m| m.leader == Some(follower))
            .await
            .unwrap();
        let retry = Session::resume(c.raft(follower).clone(), session.id(), 0);
        assert_eq!(retry.write(Add(7)).await.unwrap(), 7);
        assert_eq!(value(&c, follower).await, 7);
    })
    .await
}

#[actix_rt::test]
async fn expired_and_evicted_sessions_are_refused_on_every_node() {
    init_tracing();
    bounded(LIMIT, async {
        let config = Config {
            session_timeout: Duration::from_millis(1_500),
            max_sessions: 2,
            ..test_config()
        };
        let c = Cluster::new(3, config, seed("session_expiry"), |_| Counter::default()).await;
        let leader = c.wait_leader(LIMIT).await.unwrap();
        let idle = c.raft(leader).open_session().await.unwrap();
        let busy = c.raft(leader).open_session().await.unwrap();
        // The busy session keeps writing for over the timeout (log time
        // moves with its entries); the idle one expires.
        let until = tokio::time::Instant::now() + Duration::from_millis(3_500);
        while tokio::time::Instant::now() < until {
            busy.write(Add(1)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for id in c.ids() {
            let on_node = Session::resume(c.raft(id).clone(), idle.id(), 1);
            match on_node.write(Add(100)).await {
                Err(RaftError::Session(SessionError::Unknown(s))) => assert_eq!(s, idle.id()),
                other => panic!("node {id}: an expired session wrote: {other:?}"),
            }
        }
        // Two sessions at most: a third evicts the least recently used.
        let third = c.raft(leader).open_session().await.unwrap();
        let fourth = c.raft(leader).open_session().await.unwrap();
        match busy.write(Add(1)).await {
            Err(RaftError::Session(SessionError::Unknown(_))) => {}
            other => panic!("the evicted session wrote: {other:?}"),
        }
        assert!(third.write(Add(1)).await.is_ok() || fourth.write(Add(1)).await.is_ok());
        // Nothing refused was applied, on any node.
        let commit = c.metrics()[&leader].commit_index;
        c.wait_applied(&c.ids(), commit, LIMIT).await.unwrap();
        for id in c.ids() {
            let history = c.raft(id).state_machine().send(History).await.unwrap();
            assert!(history.iter().all(|(_, n)| *n != 100), "node {id}");
        }
    })
    .await
}

/// Forwarded writes on a network that delivers every other message twice
/// (and reorders them): the forwarding node's own session makes each copy
/// of a forward apply once — no in-memory set of seen forwards involved.
#[actix_rt::test]
async fn duplicated_forwards_apply_once() {
    init_tracing();
    bounded(LIMIT, async {
        let c = Cluster::new(3, test_config(), seed("duplicated_forwards"), |_| {
            Counter::default()
        })
        .await;
        let leader = c.wait_leader(LIMIT).await.unwrap();
        c.net().set_link(regatta::transport::sim::LinkConfig {
            duplicate: 0.5,
            delay: (Duration::from_millis(1), Duration::from_millis(20)),
            ..regatta::transport::sim::LinkConfig::reliable()
        });
        let followers: Vec<u64> = c.ids().into_iter().filter(|id| *id != leader).collect();
        let mut answers = std::collections::BTreeSet::new();
        for i in 0..60u64 {
            let via = followers[i as usize % followers.len()];
            // Definite failures are fine (nothing applied); unknown ones
            // would blur the count: there should be none on this network.
            let value = c.raft(via).write(Add(1)).await.expect("write");
            assert!(answers.insert(value), "two writes answered {value}");
        }
        let commit = c.metrics()[&leader].commit_index;
        c.wait_applied(&c.ids(), commit, LIMIT).await.unwrap();
        for id in c.ids() {
            assert_eq!(value(&c, id).await, 60, "node {id} applied a copy twice");
        }
    })
    .await
}
