//! The Raft paper's per-node rules, checked on one real node whose peers are
//! scripted by the test: every message it sends is captured, and the test
//! injects the replies.

mod common;

use std::time::Duration;

use common::scripted::Harness;
use common::*;
use regatta::transport::Message;
use regatta::{Config, Entry, LogId, Payload, Role};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn no_pre_vote() -> Config {
    Config {
        pre_vote: false,
        ..test_config()
    }
}

#[actix_rt::test]
async fn starts_as_follower_then_campaigns_on_timeout() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(no_pre_vote());
        let m = h.raft.metrics().borrow().clone();
        assert_eq!((m.role, m.term), (Role::Follower, 1));
        // On timeout: term + 1, vote for itself, RequestVote to every peer
        // carrying its last log id.
        for peer in [2, 3] {
            let e = h
                .expect("RequestVote to each peer", |e| {
                    e.to == peer && matches!(e.message, Message::RequestVote { .. })
                })
                .await;
            assert_eq!(
                e.message,
                Message::RequestVote {
                    term: 2,
                    last_log_id: LogId::new(1, 1),
                    pre_vote: false,
                    force: false
                }
            );
        }
        let m = h.raft.metrics().borrow().clone();
        assert_eq!((m.role, m.term), (Role::Candidate, 2));
        assert_eq!(
            h.storage.contents().hard_state.voted_for,
            Some(1),
            "own vote persisted"
        );
        // With no answer, a candidate times out and starts a new election.
        h.expect("a second election", |e| {
            matches!(e.message, Message::RequestVote { term: 3, .. })
        })
        .await;
    })
    .await;
}

#[actix_rt::test]
async fn pre_vote_does_not_bump_the_term() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(test_config());
        let e = h
            .expect("pre-vote", |e| {
                matches!(e.message, Message::RequestVote { .. })
            })
            .await;
        assert!(matches!(
            e.message,
            Message::RequestVote {
                term: 2,
                pre_vote: true,
                ..
            }
        ));
        assert_eq!(
            h.raft.metrics().borrow().term,
            1,
            "a pre-vote changes no term"
        );
        assert_eq!(h.storage.contents().hard_state.term, 1);
        // Granted by a majority: now the real election in term 2.
        h.inject(
            2,
            Message::RequestVoteResponse {
                term: 2,
                granted: true,
                pre_vote: true,
            },
        );
        h.expect("vote", |e| {
            matches!(
                e.message,
                Message::RequestVote {
                    term: 2,
                    pre_vote: false,
                    ..
                }
            )
        })
        .await;
        assert_eq!(h.raft.metrics().borrow().term, 2);
    })
    .await;
}

#[actix_rt::test]
async fn higher_term_makes_any_role_follower_and_stale_terms_are_rejected() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(no_pre_vote());
        // Candidate → follower on a higher term.
        h.expect("RequestVote", |e| {
            matches!(e.message, Message::RequestVote { .. })
        })
        .await;
        h.inject(
            3,
            Message::RequestVoteResponse {
                term: 7,
                granted: false,
                pre_vote: false,
            },
        );
        let m = h.raft.wait_for(SECS(5), |m| m.term == 7).await.unwrap();
        assert_eq!(m.role, Role::Follower);

        // Stale AppendEntries and RequestVote are refused with our term.
        h.clear();
        h.inject(
            2,
            Message::AppendEntries {
                term: 3,
                prev: LogId::new(1, 1),
                entries: vec![],
                leader_commit: 1,
                round: 0,
            },
        );
        let e = h.expect("stale AE answered", |e| e.to == 2).await;
        assert!(matches!(
            e.message,
            Message::AppendEntriesResponse {
                term: 7,
                result: Err(_),
                ..
            }
        ));
        h.inject(
            3,
            Message::RequestVote {
                term: 5,
                last_log_id: LogId::new(9, 9),
                pre_vote: false,
                force: false,
            },
        );
        let e = h.expect("stale vote answered", |e| e.to == 3).await;
        assert_eq!(
            e.message,
            Message::RequestVoteResponse {
                term: 7,
                granted: false,
                pre_vote: false
            }
        );
        assert_eq!(h.raft.metrics().borrow().term, 7);
    })
    .await;
}

#[actix_rt::test]
async fn leader_heartbeats_commits_on_majority_and_steps_down_on_higher_term() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(no_pre_vote());
        h.elect().await;
        // The new leader appends its blank entry and replicates it to all.
        let mut blank_prev = None;
        for peer in [2, 3] {
            let e = h
                .expect("blank entry", |e| {
                    e.to == peer && matches!(&e.message, Message::AppendEntries { entries, .. } if !entries.is_empty())
                })
                .await;
            if let Message::AppendEntries { prev, entries, term, .. } = e.message {
                assert_eq!(term, 2);
                assert_eq!(entries[0].log_id, LogId::new(2, 2));
                assert_eq!(entries[0].payload, Payload::Blank);
                blank_prev = Some(prev);
            }
        }
        assert_eq!(blank_prev, Some(LogId::new(1, 1)));
        assert_eq!(h.raft.metrics().borrow().commit_index, 1);
        // One follower stores it: with the leader that is a majority of 3.
        h.inject(2, Message::AppendEntriesResponse { term: 2, result: Ok(LogId::new(2, 2)), prev_index: 1, round: 0 });
        h.raft.wait_for(SECS(5), |m| m.commit_index == 2).await.expect("commit after a majority");
        // Idle: heartbeats keep coming to each follower.
        h.clear();
        for _ in 0..3 {
            h.expect("heartbeat", |e| e.to == 3 && matches!(&e.message, Message::AppendEntries { entries, .. } if entries.is_empty())).await;
        }
        // A reply with a higher term deposes the leader.
        h.inject(3, Message::AppendEntriesResponse { term: 9, result: Ok(LogId::default()), prev_index: 0, round: 0 });
        let m = h.raft.wait_for(SECS(5), |m| m.term == 9).await.unwrap();
        assert_eq!(m.role, Role::Follower);
    })
    .await;
}

#[actix_rt::test]
async fn candidate_yields_to_append_entries_of_its_term_and_follower_commits() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(no_pre_vote());
        h.expect("RequestVote", |e| {
            matches!(e.message, Message::RequestVote { .. })
        })
        .await;
        assert_eq!(h.raft.metrics().borrow().role, Role::Candidate);
        // Node 2 won term 2: its AppendEntries turns us into its follower.
        let entries: Vec<Entry> = (2..=4)
            .map(|i| Entry {
                log_id: LogId::new(2, i),
                payload: Payload::Blank,
            })
            .collect();
        h.inject(
            2,
            Message::AppendEntries {
                term: 2,
                prev: LogId::new(1, 1),
                entries,
                leader_commit: 3,
                round: 1,
            },
        );
        let e = h.expect("AE reply", |e| e.to == 2).await;
        assert_eq!(
            e.message,
            Message::AppendEntriesResponse {
                term: 2,
                result: Ok(LogId::new(2, 4)),
                prev_index: 1,
                round: 1
            }
        );
        let m = h
            .raft
            .wait_for(SECS(5), |m| m.commit_index == 3)
            .await
            .unwrap();
        assert_eq!((m.role, m.leader), (Role::Follower, Some(2)));
        assert_eq!(
            h.storage.contents().entries.len(),
            4,
            "acknowledged entries are durable"
        );
        // The follower commits up to the leader's commit index, never past
        // what it holds.
        h.inject(
            2,
            Message::AppendEntries {
                term: 2,
                prev: LogId::new(2, 4),
                entries: vec![],
                leader_commit: 10,
                round: 2,
            },
        );
        h.raft
            .wait_for(SECS(5), |m| m.commit_index == 4)
            .await
            .unwrap();
        // A mismatching prev is refused with a conflict hint.
        h.inject(
            2,
            Message::AppendEntries {
                term: 2,
                prev: LogId::new(2, 9),
                entries: vec![],
                leader_commit: 4,
                round: 3,
            },
        );
        let e = h
            .expect("refusal", |e| {
                matches!(
                    e.message,
                    Message::AppendEntriesResponse { result: Err(_), .. }
                )
            })
            .await;
        if let Message::AppendEntriesResponse {
            result: Err(hint), ..
        } = e.message
        {
            assert_eq!(hint.first_index, 5);
        }
    })
    .await;
}

#[actix_rt::test]
async fn one_vote_per_term_persisted_before_the_reply() {
    init_tracing();
    bounded(SECS(30), async {
        let mut config = no_pre_vote();
        // Keep node 1 from campaigning during the test.
        config.election_timeout_min = SECS(20);
        config.election_timeout_max = SECS(21);
        let h = Harness::start(config);
        h.inject(
            2,
            Message::RequestVote {
                term: 4,
                last_log_id: LogId::new(1, 1),
                pre_vote: false,
                force: false,
            },
        );
        let e = h.expect("vote reply", |e| e.to == 2).await;
        assert_eq!(
            e.message,
            Message::RequestVoteResponse {
                term: 4,
                granted: true,
                pre_vote: false
            }
        );
        let hs = h.storage.contents().hard_state;
        assert_eq!(
            (hs.term, hs.voted_for),
            (4, Some(2)),
            "vote durable before the reply"
        );
        h.inject(
            3,
            Message::RequestVote {
                term: 4,
                last_log_id: LogId::new(1, 1),
                pre_vote: false,
                force: false,
            },
        );
        let e = h.expect("second candidate", |e| e.to == 3).await;
        assert_eq!(
            e.message,
            Message::RequestVoteResponse {
                term: 4,
                granted: false,
                pre_vote: false
            }
        );
        // A less up-to-date candidate in a newer term is refused too.
        h.inject(
            3,
            Message::RequestVote {
                term: 5,
                last_log_id: LogId::new(0, 0),
                pre_vote: false,
                force: false,
            },
        );
        let e = h.expect("stale log", |e| e.to == 3).await;
        assert_eq!(
            e.message,
            Message::RequestVoteResponse {
                term: 5,
                granted: false,
                pre_vote: false
            }
        );
    })
    .await;
}

/// Found by the kv backup bench: a follower stalled past its election
/// timeout (a large snapshot on a busy machine) started a pre-vote and
/// answered every write it had forwarded "outcome unknown", although the
/// leader was alive and answered them moments later — 43 of 500,000
/// plain writes failed with no fault at all. A pre-vote changes no term:
/// the leader's answers still count, so the writes wait for them.
#[actix_rt::test]
async fn a_forwarded_write_waits_for_the_leader_through_the_forwarders_pre_vote() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(test_config());
        // Node 2 leads term 2.
        h.inject(
            2,
            Message::AppendEntries {
                term: 2,
                prev: LogId::new(1, 1),
                entries: vec![],
                leader_commit: 1,
                round: 0,
            },
        );
        h.raft
            .wait_for(SECS(5), |m| m.leader == Some(2))
            .await
            .expect("node 2 is known as leader");
        let raft = h.raft.clone();
        let write = actix_rt::spawn(async move { raft.write(Add(5)).await });
        let forwarded = h
            .expect("the write forwarded to node 2", |e| {
                e.to == 2 && matches!(e.message, Message::ForwardWrite { .. })
            })
            .await;
        let Message::ForwardWrite { id, .. } = forwarded.message else {
            unreachable!("matched above")
        };
        // No heartbeat comes: node 1's election timer fires.
        h.expect("a pre-vote", |e| {
            matches!(e.message, Message::RequestVote { pre_vote: true, .. })
        })
        .await;
        // The leader was alive all along, and answers.
        let response = rmp_serde::to_vec(&5u64).unwrap();
        h.inject(
            2,
            Message::ForwardWriteResponse {
                id,
                result: Ok((LogId::new(2, 2), response.into())),
            },
        );
        assert_eq!(write.await.unwrap(), Ok(5));
    })
    .await
}

/// Quiescence is for groups on a host, whose heartbeat between hosts
/// watches the leader: a single-group node answers a `Quiesce` as a
/// heartbeat and keeps its election timer, so it still notices a leader
/// that went silent.
#[actix_rt::test]
async fn a_single_group_node_answers_quiesce_but_keeps_its_election_timer() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(test_config());
        h.inject(
            2,
            Message::Quiesce {
                term: 1,
                last: LogId::new(1, 1),
                leader_commit: 1,
            },
        );
        let answer = h
            .expect("the quiesce answered", |e| {
                matches!(e.message, Message::AppendEntriesResponse { .. })
            })
            .await;
        assert!(matches!(
            answer.message,
            Message::AppendEntriesResponse { result: Ok(_), .. }
        ));
        assert!(!h.raft.metrics().borrow().quiesced);
        // The silent leader is noticed: a pre-vote goes out.
        h.expect("a pre-vote after the election timeout", |e| {
            matches!(e.message, Message::RequestVote { pre_vote: true, .. })
        })
        .await;
    })
    .await;
}
