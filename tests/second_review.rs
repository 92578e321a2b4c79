//! Regression tests for the holes the second protocol review found
//! (2026-12): writes reported as definitely not applied after a copy had
//! left the node, unvalidated responses, acknowledgements after a failed
//! write, retired incarnations. Each runs one real node whose peers the
//! test scripts, and each failed before its fix.

mod common;

use std::time::Duration;

use common::scripted::Harness;
use common::*;
use regatta::transport::{Envelope, Message, RemoteError};
use regatta::{Config, LogId, RaftError, Session};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Node 1 never campaigns on its own; clients give up after a second.
fn quiet() -> Config {
    Config {
        pre_vote: false,
        election_timeout_min: SECS(20),
        election_timeout_max: SECS(21),
        client_timeout: SECS(1),
        ..test_config()
    }
}

fn heartbeat(term: u64) -> Message {
    Message::AppendEntries {
        term,
        prev: LogId::new(1, 1),
        entries: Vec::new(),
        leader_commit: 0,
        round: 0,
    }
}

/// Node 1 follows node 2 (a running process: incarnation 7) in term 2.
async fn following_2() -> Harness {
    following_2_with(quiet()).await
}

/// [`following_2`] with `config`.
async fn following_2_with(config: Config) -> Harness {
    let h = Harness::start(config);
    from(&h, 2, heartbeat(2));
    h.raft
        .wait_for(SECS(5), |m| m.leader == Some(2))
        .await
        .expect("node 1 follows node 2");
    h
}

/// Node 1 leads term 2 (with node 2's vote) and may campaign again.
async fn leading() -> Harness {
    let h = Harness::start(Config {
        election_timeout_min: SECS(1),
        election_timeout_max: SECS(2),
        ..quiet()
    });
    h.elect().await;
    h
}

fn from(h: &Harness, peer: u64, message: Message) {
    let mut e = Envelope::new(peer, 1, message);
    e.incarnation = 7;
    h.raft.deliver(e);
}

/// Answers the next write node 1 forwards to node 2 with `result`.
async fn answer_forward(h: &Harness, result: Result<(LogId, bytes::Bytes), RemoteError>) {
    let id = forwarded(h).await;
    from(h, 2, Message::ForwardWriteResponse { id, result });
}

async fn forwarded(h: &Harness) -> u64 {
    let forward = h
        .expect("the forwarded write", |e| {
            matches!(e.message, Message::ForwardWrite { .. })
        })
        .await;
    let Message::ForwardWrite { id, .. } = forward.message else {
        unreachable!()
    };
    id
}

/// Finding 4a (and simulator seed 410): node 1 forwarded a write to
/// leader 2, which may have proposed it; a network duplicate's "not
/// leader" came back first, the client retried, and node 1 then stopped
/// (in seed 410 it crashed, and the write had been applied). The final
/// answer must be indeterminate, not a definite "shutting down" (nor a
/// "not leader" at the deadline).
#[actix_rt::test]
async fn a_write_that_was_forwarded_never_fails_definitely() {
    init_tracing();
    bounded(SECS(30), async {
        let h = following_2().await;
        let raft = h.raft.clone();
        let write = actix_rt::spawn(async move { raft.write(Add(5)).await });
        answer_forward(&h, Err(RemoteError::NotLeader(None))).await;
        h.raft.shutdown().await;
        let result = write.await.expect("the write task");
        assert_eq!(result, Err(RaftError::Indeterminate));
    })
    .await;
}

/// Finding 4b: a session write whose first attempt has an unknown
/// outcome, and whose retry is refused because the session is gone, may
/// have been applied by the first: indeterminate, not "unknown session".
#[actix_rt::test]
async fn a_session_retry_refused_after_an_unknown_attempt_is_indeterminate() {
    init_tracing();
    bounded(SECS(30), async {
        let h = following_2().await;
        let session = Session::resume(h.raft.clone(), 9, 0).retry_for(SECS(10));
        let write = actix_rt::spawn(async move { session.write(Add(5)).await });
        answer_forward(&h, Err(RemoteError::Indeterminate)).await;
        answer_forward(
            &h,
            Err(RemoteError::Session(regatta::SessionError::Unknown(9))),
        )
        .await;
        let result = write.await.expect("the write task");
        assert_eq!(result, Err(RaftError::Indeterminate));
    })
    .await;
}

/// Sessions under pressure (simulator, sessions mode, seed 156): a
/// session write was forwarded, a network duplicate's "not leader" came
/// back first, the node retried on its own, and the retry was refused
/// because the session had been evicted since — after the first copy was
/// applied. The refusal was passed on as a definite "unknown session";
/// once an attempt was forwarded it is indeterminate.
#[actix_rt::test]
async fn a_session_refusal_after_a_forward_is_indeterminate() {
    init_tracing();
    bounded(SECS(30), async {
        // The node retries a "not leader" within the client timeout.
        let h = following_2_with(Config {
            election_timeout_min: SECS(1),
            election_timeout_max: SECS(2),
            client_timeout: SECS(5),
            ..quiet()
        })
        .await;
        let session = Session::resume(h.raft.clone(), 9, 0).retry_for(SECS(10));
        let write = actix_rt::spawn(async move { session.write(Add(5)).await });
        answer_forward(&h, Err(RemoteError::NotLeader(Some(2)))).await;
        answer_forward(
            &h,
            Err(RemoteError::Session(regatta::SessionError::Unknown(9))),
        )
        .await;
        let result = write.await.expect("the write task");
        assert_eq!(result, Err(RaftError::Indeterminate));
    })
    .await;
}

/// Simulator, seed 156: a forward delivered twice was proposed twice;
/// the second copy, refused because the session had been evicted since
/// the first was applied, answered first, and the client heard a definite
/// "unknown session" for an applied write. The leader proposes a forward
/// once and drops its copies.
#[actix_rt::test]
async fn a_forward_delivered_twice_is_proposed_once() {
    init_tracing();
    bounded(SECS(30), async {
        let h = leading().await;
        let before = h.raft.metrics().borrow().last_log_index;
        let proposed = h.raft.counts().entries_proposed;
        let forward = |id: u64, n: u64| Message::ForwardWrite {
            id,
            term: 2,
            command: regatta::core::types::ClientCommand::Command(
                rmp_serde::to_vec(&Add(n)).unwrap().into(),
            ),
        };
        from(&h, 2, forward(5, 1));
        from(&h, 2, forward(5, 1));
        from(&h, 2, forward(6, 2));
        h.raft
            .wait_for(SECS(5), |m| m.last_log_index >= before + 2)
            .await
            .expect("the forwards are appended");
        // The copy was handled before request 6: had it been proposed, it
        // would sit between them.
        assert_eq!(h.raft.metrics().borrow().last_log_index, before + 2);
        assert_eq!(h.raft.counts().entries_proposed, proposed + 2);
    })
    .await;
}

/// Finding 5: responses are network input too. A refusal naming
/// `prev_index = u64::MAX` overflowed the leader's progress arithmetic (a
/// panic in its replicator, which stops the node); it is refused with a
/// warning, and the leader goes on counting its follower's real answers.
#[actix_rt::test]
async fn an_absurd_append_entries_answer_is_refused_and_the_leader_carries_on() {
    init_tracing();
    bounded(SECS(30), async {
        let h = leading().await;
        from(
            &h,
            2,
            Message::AppendEntriesResponse {
                term: 2,
                result: Err(regatta::core::log::ConflictHint {
                    conflict_term: None,
                    first_index: 1,
                }),
                prev_index: u64::MAX,
                round: 0,
            },
        );
        // Node 2 stores the new leader's blank entry (index 2): committed.
        from(
            &h,
            2,
            Message::AppendEntriesResponse {
                term: 2,
                result: Ok(LogId::new(2, 2)),
                prev_index: 1,
                round: 0,
            },
        );
        h.raft
            .wait_for(SECS(5), |m| m.commit_index >= 2)
            .await
            .expect("the leader commits with its follower's real answer");
        assert_eq!(h.raft.metrics().borrow().stopped_because, None);
        assert_eq!(h.raft.counts().messages_invalid, 1, "refused as invalid");
    })
    .await;
}

/// Finding 3: incarnation 7 of node 2 stored entry 3 and its answer was
/// delayed and duplicated; node 2 came back on an empty disk as
/// incarnation 8 and answered first. The late copies from 7 flipped the
/// leader's idea of node 2 back to 7, and the second one was counted:
/// entry 3 committed with only the leader holding it. Once replaced, an
/// incarnation never counts again.
#[actix_rt::test]
async fn answers_of_a_replaced_incarnation_never_count_again() {
    init_tracing();
    bounded(SECS(30), async {
        let h = leading().await;
        let answer = |incarnation: u64, matched: LogId, prev_index: u64| {
            let mut e = Envelope::new(
                2,
                1,
                Message::AppendEntriesResponse {
                    term: 2,
                    result: Ok(matched),
                    prev_index,
                    round: 0,
                },
            );
            e.incarnation = incarnation;
            h.raft.deliver(e);
        };
        // Incarnation 7 stores the leader's blank entry: committed.
        answer(7, LogId::new(2, 2), 1);
        h.raft
            .wait_for(SECS(5), |m| m.commit_index >= 2)
            .await
            .expect("the blank entry commits with node 2");
        let raft = h.raft.clone();
        let write = actix_rt::spawn(async move { raft.write(Add(5)).await });
        h.raft
            .wait_for(SECS(5), |m| m.last_log_index >= 3)
            .await
            .expect("the write is appended at index 3");
        // Incarnation 8, empty, answers first: it matches nothing.
        answer(8, LogId::default(), 0);
        // The late copies of incarnation 7's acknowledgement of entry 3.
        answer(7, LogId::new(2, 3), 2);
        answer(7, LogId::new(2, 3), 2);
        // Incarnation 8 stores entry 1: handled after the copies above.
        answer(8, LogId::new(1, 1), 0);
        h.raft
            .wait_for(SECS(5), |m| {
                m.replication.get(&2).is_some_and(|p| p.matched >= 1)
            })
            .await
            .expect("incarnation 8's progress is counted");
        let m = h.raft.metrics().borrow().clone();
        assert_eq!(m.commit_index, 2, "entry 3 is held by the leader alone");
        assert_eq!(m.replication.get(&2).map(|p| p.matched), Some(1));
        write.abort();
    })
    .await;
}

/// Finding 7: envelopes without a cluster id were accepted from anyone,
/// which let a stranger around the cluster check (here: depose the
/// leader with a higher term). Only members may send without one.
#[actix_rt::test]
async fn a_stranger_without_a_cluster_id_is_refused() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(quiet());
        assert_ne!(h.raft.metrics().borrow().cluster_id, 0);
        // Node 9 is no member and names no cluster.
        h.inject(
            9,
            Message::RequestVote {
                term: 5,
                last_log_id: LogId::new(9, 99),
                pre_vote: false,
                force: false,
            },
        );
        // Member 2 (also without a cluster id) leads term 2: followed only
        // if node 9's term 5 was not adopted.
        from(&h, 2, heartbeat(2));
        h.raft
            .wait_for(SECS(5), |m| m.leader == Some(2))
            .await
            .expect("node 1 follows member 2 in term 2");
        assert_eq!(h.raft.metrics().borrow().term, 2);
        assert_eq!(h.raft.counts().messages_other_cluster, 1);
    })
    .await;
}

/// Finding 1 (the path through `--join`): a voter whose disk was replaced
/// comes back empty and waits to be added. Once a leader's heartbeat has
/// told it the cluster id, but before it has any entry or configuration,
/// it granted a candidate's vote (it had forgotten its vote and its
/// copies). A node without a configuration grants nothing.
#[actix_rt::test]
async fn a_node_waiting_to_be_added_grants_no_vote() {
    init_tracing();
    bounded(SECS(30), async {
        let sent = std::sync::Arc::new(common::scripted::Capture::default());
        let storage = regatta::storage::MemStorage::new();
        let raft = regatta::Raft::start(
            2,
            quiet(),
            storage.clone(),
            sent.clone(),
            None,
            actix::Actor::start(Counter::default()),
        )
        .unwrap();
        let h = Harness {
            raft,
            sent,
            storage,
        };
        let cluster = |mut e: Envelope| {
            e.cluster_id = 0xc1;
            e.incarnation = 7;
            e
        };
        // Leader 1's heartbeat: the node learns the cluster id.
        h.raft.deliver(cluster(Envelope::new(
            1,
            2,
            Message::AppendEntries {
                term: 5,
                prev: LogId::default(),
                entries: Vec::new(),
                leader_commit: 0,
                round: 0,
            },
        )));
        h.raft
            .wait_for(SECS(5), |m| m.cluster_id == 0xc1)
            .await
            .expect("the node learns its cluster id");
        h.raft.deliver(cluster(Envelope::new(
            3,
            2,
            Message::RequestVote {
                term: 6,
                last_log_id: LogId::new(4, 9),
                pre_vote: false,
                // Past the leader stickiness (as after a leadership
                // transfer, or once the heartbeat is old).
                force: true,
            },
        )));
        let reply = h
            .expect("the vote reply", |e| {
                matches!(e.message, Message::RequestVoteResponse { .. })
            })
            .await;
        assert!(
            matches!(
                reply.message,
                Message::RequestVoteResponse { granted: false, .. }
            ),
            "{reply:?}"
        );
    })
    .await;
}

/// Finding 7: a joining node took the cluster id of the first
/// self-declared leader that sent it entries. Told its cluster's id
/// (`Config::join_cluster_id`, `--cluster-id`), it refuses any other
/// cluster's leader from the start, and its directory, once it belongs to
/// that cluster, refuses to start for another.
#[actix_rt::test]
async fn a_joiner_told_its_cluster_id_refuses_another_clusters_leader() {
    init_tracing();
    bounded(SECS(30), async {
        let config = Config {
            join_cluster_id: Some(0xc1),
            ..quiet()
        };
        let storage = regatta::storage::MemStorage::new();
        let start = |config: Config| {
            regatta::Raft::start(
                2,
                config,
                storage.clone(),
                std::sync::Arc::new(common::scripted::Capture::default()),
                None,
                actix::Actor::start(Counter::default()),
            )
        };
        let raft = start(config.clone()).unwrap();
        assert_eq!(raft.metrics().borrow().cluster_id, 0xc1);
        let heartbeat_of = |leader: u64, cluster_id: u64, term: u64| {
            let mut e = Envelope::new(leader, 2, heartbeat(term));
            e.cluster_id = cluster_id;
            e.incarnation = leader;
            e
        };
        // A stranger claiming leadership of another cluster, first.
        raft.deliver(heartbeat_of(7, 0xbad, 9));
        // Then the real leader, in a lower term.
        raft.deliver(heartbeat_of(1, 0xc1, 2));
        raft.wait_for(SECS(5), |m| m.leader == Some(1))
            .await
            .expect("the node follows its own cluster's leader");
        let m = raft.metrics().borrow().clone();
        assert_eq!(
            (m.cluster_id, m.term),
            (0xc1, 2),
            "the stranger's term was not adopted"
        );
        assert_eq!(raft.counts().messages_other_cluster, 1);
        raft.shutdown().await;

        let other = Config {
            join_cluster_id: Some(0xbad),
            ..quiet()
        };
        match start(other) {
            Err(regatta::StartError::WrongCluster { expected, found }) => {
                assert_eq!((expected, found), (0xbad, 0xc1))
            }
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("a directory of cluster 0xc1 started for cluster 0xbad"),
        }
    })
    .await;
}
