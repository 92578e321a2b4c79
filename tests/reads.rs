//! Reads at each consistency: local (possibly stale), linearizable through
//! a heartbeat round (ReadIndex) and linearizable from the leader's lease;
//! what each answers on a node cut off from the others, and the rules the
//! lease rests on.

mod common;

use std::time::Duration;

use common::scripted::Harness;
use common::*;
use regatta::testing::Cluster;
use regatta::transport::Message;
use regatta::{Config, LogId, RaftError};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn lease_config() -> Config {
    Config {
        lease_reads: true,
        client_timeout: Duration::from_millis(1500),
        ..test_config()
    }
}

#[actix_rt::test]
async fn each_kind_of_read_on_a_partitioned_follower() {
    init_tracing();
    bounded(SECS(60), async {
        let c = Cluster::new(3, lease_config(), 1, |_| Counter::default()).await;
        let leader = c.wait_leader(SECS(10)).await.unwrap();
        let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
        let written = c.raft(leader).write_entry(Add(5)).await.unwrap();
        c.wait_applied(&c.ids(), written.log_id.index, SECS(5))
            .await
            .unwrap();

        // Connected, every kind answers 5.
        let local = c.raft(follower).read_local(Get).await.unwrap();
        assert_eq!(local.value, 5);
        assert!(local.applied >= written.log_id.index, "{local:?}");
        assert_eq!(c.raft(follower).read(Get).await.unwrap(), 5);
        assert_eq!(c.raft(leader).read(Get).await.unwrap(), 5);

        // Cut off, the follower misses a write acknowledged by the others.
        c.net().isolate(follower);
        let later = c.raft(leader).write_entry(Add(1)).await.unwrap();
        assert_eq!(later.response, 6);
        // A local read still answers — the old value, and says how far
        // its state is: behind the acknowledged write.
        let local = c.raft(follower).read_local(Get).await.unwrap();
        assert_eq!(local.value, 5);
        assert!(local.applied < later.log_id.index, "{local:?}");
        // A linearizable read cannot answer without the leader: it fails
        // rather than return the stale 5.
        let read = c.raft(follower).read(Get).await;
        assert!(
            matches!(read, Err(RaftError::Timeout | RaftError::NotLeader(_))),
            "{read:?}"
        );
        // The leader still serves linearizable reads with the other node.
        assert_eq!(c.raft(leader).read(Get).await.unwrap(), 6);

        c.net().heal();
        c.wait_applied(&[follower], later.log_id.index, SECS(5))
            .await
            .unwrap();
        assert_eq!(c.raft(follower).read(Get).await.unwrap(), 6);
    })
    .await;
}

#[actix_rt::test]
async fn a_leader_answers_from_its_lease_and_stops_before_another_is_elected() {
    init_tracing();
    bounded(SECS(60), async {
        // Without check-quorum the cut-off leader never steps down: only
        // its lease running out keeps it from answering.
        let config = Config {
            check_quorum: false,
            ..lease_config()
        };
        let c = Cluster::new(3, config, 2, |_| Counter::default()).await;
        let old = c.wait_leader(SECS(10)).await.unwrap();
        c.raft(old).write(Add(1)).await.unwrap();

        // Reads on the leader and through a follower are answered from the
        // lease, with no heartbeat round.
        let follower = c.ids().into_iter().find(|id| *id != old).unwrap();
        for _ in 0..20 {
            assert_eq!(c.raft(old).read(Get).await.unwrap(), 1);
            assert_eq!(c.raft(follower).read(Get).await.unwrap(), 1);
        }
        let counts = c.raft(old).counts();
        assert!(counts.reads_by_lease >= 20, "{counts:?}");

        // The leader is cut off; the others elect a new one, which
        // acknowledges a write the old one never sees.
        c.net().isolate(old);
        let others: Vec<_> = c.ids().into_iter().filter(|id| *id != old).collect();
        let new = c.wait_leader_among(&others, SECS(10)).await.unwrap();
        assert_eq!(c.raft(new).write(Add(1)).await.unwrap(), 2);
        // The old leader's lease has run out by now: it must not answer
        // the stale 1.
        let stale = c.raft(old).read(Get).await;
        assert!(
            matches!(stale, Err(RaftError::Timeout | RaftError::NotLeader(_))),
            "a deposed leader answered {stale:?}"
        );
    })
    .await;
}

#[actix_rt::test]
async fn without_lease_reads_every_read_takes_a_heartbeat_round() {
    init_tracing();
    bounded(SECS(30), async {
        let c = Cluster::new(3, test_config(), 3, |_| Counter::default()).await;
        let leader = c.wait_leader(SECS(10)).await.unwrap();
        c.raft(leader).write(Add(1)).await.unwrap();
        for _ in 0..5 {
            assert_eq!(c.raft(leader).read(Get).await.unwrap(), 1);
        }
        let counts = c.raft(leader).counts();
        assert_eq!(counts.reads_by_lease, 0, "{counts:?}");
        assert!(counts.reads_by_round >= 5, "{counts:?}");
    })
    .await;
}

#[actix_rt::test]
async fn with_lease_reads_a_node_votes_for_no_one_for_an_election_timeout_after_it_starts() {
    // It may have acknowledged a leader just before it restarted; that
    // leader's lease counts on its refusal until the timeout passes.
    init_tracing();
    bounded(SECS(30), async {
        let config = Config {
            pre_vote: false,
            lease_reads: true,
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: SECS(20),
            ..test_config()
        };
        let h = Harness::start(config);
        let vote = |term| Message::RequestVote {
            term,
            last_log_id: LogId::new(1, 1),
            pre_vote: false,
            force: false,
        };
        h.inject(2, vote(4));
        let e = h.expect("refusal", |e| e.to == 2).await;
        assert_eq!(
            e.message,
            Message::RequestVoteResponse {
                term: 1,
                granted: false,
                pre_vote: false
            }
        );
        // Once the timeout has passed, the same request is granted (even
        // if node 1 has started a campaign of its own meanwhile: its term
        // is lower).
        tokio::time::sleep(Duration::from_millis(600)).await;
        h.inject(2, vote(4));
        let e = h.expect("grant", |e| e.to == 2).await;
        assert_eq!(
            e.message,
            Message::RequestVoteResponse {
                term: 4,
                granted: true,
                pre_vote: false
            }
        );
    })
    .await;
}
