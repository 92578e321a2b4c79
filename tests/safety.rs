//! Regression tests for the holes a protocol review found (2026-11), each
//! on one real node whose peers the test scripts, so each runs the same
//! way every time. Each failed before its fix.

mod common;

use std::time::Duration;

use common::scripted::{GatedStorage, Harness};
use common::*;
use regatta::storage::snapshot::describe;
use regatta::transport::{Envelope, Message, RemoteError};
use regatta::{Config, Entry, LogId, Membership, Payload, RaftError, Role};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Node 1 never campaigns on its own during these tests.
fn quiet() -> Config {
    Config {
        pre_vote: false,
        election_timeout_min: SECS(20),
        election_timeout_max: SECS(21),
        client_timeout: SECS(10),
        ..test_config()
    }
}

fn vote(term: u64, pre_vote: bool) -> Message {
    Message::RequestVote {
        term,
        last_log_id: LogId::new(1, 1),
        pre_vote,
        force: false,
    }
}

fn append(term: u64, prev: LogId, entries: &[(u64, u64)]) -> Message {
    Message::AppendEntries {
        term,
        prev,
        entries: entries
            .iter()
            .map(|(t, i)| Entry {
                log_id: LogId::new(*t, *i),
                payload: Payload::Blank,
            })
            .collect(),
        leader_commit: 0,
        round: 0,
    }
}

fn is_append_reply(e: &Envelope, want: Result<LogId, ()>) -> bool {
    match &e.message {
        Message::AppendEntriesResponse { result, .. } => match (result, want) {
            (Ok(got), Ok(want)) => *got == want,
            (Err(_), Err(())) => true,
            _ => false,
        },
        _ => false,
    }
}

/// Finding 1: a duplicated RequestVote must not be granted before the
/// vote is durable (a crash would forget it, and the node could vote
/// again in the same term: two leaders).
#[actix_rt::test]
async fn a_repeated_vote_grant_waits_for_the_vote_to_be_durable() {
    init_tracing();
    bounded(SECS(30), async {
        let storage = GatedStorage::default();
        let h = Harness::start_on(quiet(), storage.clone());
        storage.close();
        h.inject(2, vote(2, false));
        h.inject(2, vote(2, false));
        // Answered after both votes were decided: anything they sent at
        // once is captured before it.
        h.inject(3, vote(3, true));
        let (_, before) = h
            .expect_after("pre-vote reply", |e| {
                e.to == 3
                    && matches!(
                        e.message,
                        Message::RequestVoteResponse { pre_vote: true, .. }
                    )
            })
            .await;
        let early_grant = before.iter().find(|e| {
            matches!(
                e.message,
                Message::RequestVoteResponse {
                    granted: true,
                    pre_vote: false,
                    ..
                }
            )
        });
        assert!(
            early_grant.is_none(),
            "a vote was granted before it was durable: {early_grant:?}"
        );
        assert_eq!(h.storage.contents().hard_state.voted_for, None);
        storage.open();
        h.expect("the grant, once durable", |e| {
            e.to == 2
                && matches!(
                    e.message,
                    Message::RequestVoteResponse {
                        granted: true,
                        pre_vote: false,
                        ..
                    }
                )
        })
        .await;
        assert_eq!(h.storage.contents().hard_state.voted_for, Some(2));
    })
    .await;
}

/// Finding 2: an AppendEntries whose entries do not follow `prev` is
/// refused; the node stays healthy and answers the next valid one.
#[actix_rt::test]
async fn an_inconsistent_append_entries_is_refused_and_the_node_lives() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(quiet());
        // Entries must be contiguous from prev + 1.
        h.inject(2, append(2, LogId::new(1, 1), &[(2, 5)]));
        // Terms may not go down, nor exceed the message's term.
        h.inject(2, append(2, LogId::new(1, 1), &[(2, 2), (1, 3)]));
        h.inject(2, append(2, LogId::new(1, 1), &[(3, 2)]));
        h.inject(2, append(2, LogId::new(1, 1), &[(2, 2)]));
        h.expect("the valid append acknowledged", |e| {
            is_append_reply(e, Ok(LogId::new(2, 2)))
        })
        .await;
        let c = h.storage.contents();
        assert_eq!(c.entries.len(), 2, "only the valid entry was stored");
        assert_eq!(h.raft.metrics().borrow().role, Role::Follower);
    })
    .await;
}

fn counter_snapshot(value: u64) -> Vec<u8> {
    rmp_serde::to_vec(&(value, Vec::<(u64, u64)>::new())).unwrap()
}

fn install(term: u64, at: LogId, data: Vec<u8>) -> Message {
    let meta = describe(at, Membership::new([1, 2, 3]), &data);
    Message::InstallSnapshot {
        term,
        meta,
        offset: 0,
        data: data.into(),
    }
}

/// Finding 3: a snapshot installed beyond the end of the log, then the
/// leader's next append: storage must see the purge first.
#[actix_rt::test]
async fn a_snapshot_point_reaches_storage_before_the_appends_after_it() {
    init_tracing();
    bounded(SECS(30), async {
        let storage = GatedStorage::default();
        let h = Harness::start_on(quiet(), storage.clone());
        // Keep the writer busy so that what follows queues up together.
        storage.close();
        h.inject(2, append(2, LogId::new(1, 1), &[(2, 2)]));
        h.raft
            .wait_for(SECS(5), |m| m.last_log_index == 2)
            .await
            .unwrap();
        h.inject(2, install(2, LogId::new(2, 10), counter_snapshot(7)));
        h.raft
            .wait_for(SECS(5), |m| m.last_log_index == 10)
            .await
            .unwrap();
        h.inject(2, append(2, LogId::new(2, 10), &[(2, 11)]));
        storage.open();
        h.expect("the append after the snapshot acknowledged", |e| {
            is_append_reply(e, Ok(LogId::new(2, 11)))
        })
        .await;
        let c = h.storage.contents();
        assert_eq!(c.snapshot, LogId::new(2, 10));
        assert_eq!(
            c.entries.iter().map(|e| e.log_id).collect::<Vec<_>>(),
            vec![LogId::new(2, 11)]
        );
        assert_eq!(h.raft.metrics().borrow().role, Role::Follower);
    })
    .await;
}

/// Follows leader 2 in term 2, then has a client write on node 1, which
/// forwards it; returns the pending write.
async fn forwarded_write(h: &Harness) -> actix_rt::task::JoinHandle<Result<u64, RaftError>> {
    h.inject(2, append(2, LogId::new(1, 1), &[]));
    h.raft
        .wait_for(SECS(5), |m| m.leader == Some(2))
        .await
        .unwrap();
    let raft = h.raft.clone();
    let write = actix_rt::spawn(async move { raft.write(Add(5)).await });
    h.expect("the write forwarded to the leader", |e| {
        e.to == 2 && matches!(e.message, Message::ForwardWrite { .. })
    })
    .await;
    write
}

/// Finding 5: a follower that stops while a forwarded write is pending
/// cannot know whether the leader applied it: indeterminate, not "shutting
/// down" (which says nothing was submitted, and invites a retry).
#[actix_rt::test]
async fn a_forwarded_write_cut_short_by_shutdown_is_indeterminate() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(quiet());
        let write = forwarded_write(&h).await;
        h.raft.shutdown().await;
        let result = write.await.unwrap();
        assert_eq!(result, Err(RaftError::Indeterminate));
        assert!(result.unwrap_err().is_indeterminate());
    })
    .await;
}

/// Finding 6: when a new term begins, writes forwarded to the old leader
/// fail at once (indeterminate) instead of waiting out the client timeout.
#[actix_rt::test]
async fn forwarded_writes_fail_at_once_when_the_leader_changes() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(quiet());
        let write = forwarded_write(&h).await;
        let started = std::time::Instant::now();
        h.inject(3, append(3, LogId::new(1, 1), &[]));
        let result = write.await.unwrap();
        assert_eq!(result, Err(RaftError::Indeterminate));
        assert!(
            started.elapsed() < quiet().client_timeout / 2,
            "failed only after {:?}",
            started.elapsed()
        );
    })
    .await;
}

/// Finding 6, the leader's side: a deposed leader fails the writes it was
/// waiting on at once.
#[actix_rt::test]
async fn a_deposed_leader_fails_its_pending_writes_at_once() {
    init_tracing();
    bounded(SECS(30), async {
        let config = Config {
            election_timeout_min: Duration::from_millis(200),
            election_timeout_max: Duration::from_millis(300),
            ..quiet()
        };
        let h = Harness::start(config.clone());
        h.elect().await;
        let raft = h.raft.clone();
        let write = actix_rt::spawn(async move { raft.write(Add(5)).await });
        h.expect("the write replicated", |e| match &e.message {
            Message::AppendEntries { entries, .. } => entries
                .iter()
                .any(|e| matches!(e.payload, Payload::Command(_))),
            _ => false,
        })
        .await;
        let started = std::time::Instant::now();
        h.inject(2, append(3, LogId::new(1, 1), &[]));
        let result = write.await.unwrap();
        assert_eq!(result, Err(RaftError::Indeterminate));
        assert!(started.elapsed() < config.client_timeout / 2);
    })
    .await;
}

/// Finding 9: when the state machine cannot restore a snapshot, the
/// applier stops; the whole node must stop with it, loudly, instead of
/// acknowledging entries it will never apply.
#[actix_rt::test]
async fn a_node_whose_applier_died_stops() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(quiet());
        h.inject(2, install(2, LogId::new(2, 10), b"not a counter".to_vec()));
        let m = h
            .raft
            .wait_for(SECS(10), |m| m.role == Role::Shutdown)
            .await
            .expect("the node stops");
        let cause = m.stopped_because.expect("the cause is in the metrics");
        assert!(cause.contains("applier"), "{cause}");
        // A watcher of the node's end hears the same cause.
        let told = h.raft.stopped().await.expect("stopped on its own");
        assert_eq!(told, cause);
    })
    .await;
}

/// `Raft::stopped` wakes when the node stops, and says nothing of a cause
/// after a requested shutdown.
#[actix_rt::test]
async fn a_watcher_of_the_node_hears_a_requested_shutdown() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(quiet());
        let raft = h.raft.clone();
        let watcher = actix_rt::spawn(async move { raft.stopped().await });
        // Still running: the watcher waits.
        tokio::task::yield_now().await;
        assert!(!watcher.is_finished());
        h.raft.shutdown().await;
        assert_eq!(watcher.await.unwrap(), None);
    })
    .await;
}

/// Found by the simulator (seed 17174): a write forwarded to the leader of
/// term 3 was proposed; the leader crashed and restarted; a duplicate of
/// the forward reached the restarted node, which answered "not leader";
/// the forwarding node took that as "not submitted", retried, and the
/// write was applied twice. A node answers "not leader" only for a term it
/// could not have led in an earlier run; otherwise the outcome is unknown.
#[actix_rt::test]
async fn a_forward_for_a_term_led_before_a_restart_is_indeterminate() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(quiet());
        // Node 1 starts in term 1 (founding): it may have led term 1 before.
        for (id, term) in [(7, 1), (8, 5)] {
            h.inject(
                2,
                Message::ForwardWrite {
                    id,
                    term,
                    command: regatta::core::types::ClientCommand::Command(
                        rmp_serde::to_vec(&Add(1)).unwrap().into(),
                    ),
                },
            );
            let answer = h
                .expect(
                    "the answer",
                    |e| matches!(e.message, Message::ForwardWriteResponse { id: i, .. } if i == id),
                )
                .await;
            let Message::ForwardWriteResponse { result, .. } = answer.message else {
                unreachable!()
            };
            let expected = if term == 1 {
                Err(RemoteError::Indeterminate)
            } else {
                Err(RemoteError::NotLeader(None))
            };
            assert_eq!(result, expected, "forward for term {term}");
        }
    })
    .await;
}

/// Found by the simulator (seed 104799): node 1 forwarded a write to
/// leader 2, which proposed it; a network duplicate of the forward was
/// answered "not leader" after leader 2 stepped down, and that answer
/// reached node 1 first, so its client retried. By then node 1 led
/// itself and proposed the retry locally — with its implicit session tag
/// stripped, so the applier could not tell it from the copy leader 2 had
/// proposed, and applied the write twice. A retry keeps the tag.
#[actix_rt::test]
async fn a_retried_write_proposed_by_the_node_that_forwarded_it_keeps_its_tag() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(quiet());
        // From node 2 as a running process (incarnation 7): its "not
        // leader" then speaks for what it did.
        let from_2 = |message: Message| {
            let mut e = Envelope::new(2, 1, message);
            e.incarnation = 7;
            h.raft.deliver(e);
        };
        from_2(append(2, LogId::new(1, 1), &[]));
        h.raft
            .wait_for(SECS(5), |m| m.leader == Some(2))
            .await
            .expect("node 1 follows node 2");
        let raft = h.raft.clone();
        let write = actix_rt::spawn(async move { raft.write(Add(5)).await });
        let forward = h
            .expect("the forwarded write", |e| {
                matches!(e.message, Message::ForwardWrite { .. })
            })
            .await;
        let Message::ForwardWrite { id, command, .. } = forward.message else {
            unreachable!()
        };
        let regatta::core::types::ClientCommand::Tagged(forwarded_tag, _) = command else {
            panic!("a forwarded write carries its node's tag: {command:?}")
        };
        // Node 2 proposed it (unseen here); a duplicate's "not leader"
        // comes back first. Then node 2 hands leadership to node 1.
        from_2(Message::ForwardWriteResponse {
            id,
            result: Err(RemoteError::NotLeader(None)),
        });
        from_2(Message::TimeoutNow { term: 2 });
        h.expect("RequestVote", |e| {
            matches!(e.message, Message::RequestVote { .. })
        })
        .await;
        from_2(Message::RequestVoteResponse {
            term: 3,
            granted: true,
            pre_vote: false,
        });
        // The retry, proposed by node 1 as leader of term 3: in its log
        // (its followers answer nothing here, so it is not replicated).
        let deadline = tokio::time::Instant::now() + SECS(5);
        let payload = loop {
            let found = h.storage.contents().entries.into_iter().find(|e| {
                e.log_id.term == 3
                    && matches!(e.payload, Payload::Command(_) | Payload::Tagged { .. })
            });
            if let Some(e) = found {
                break e.payload;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the retry was never proposed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        match payload {
            Payload::Tagged { tag, .. } => assert_eq!(
                (tag.session, tag.seq),
                (forwarded_tag.session, forwarded_tag.seq),
                "the retry carries the forwarded copy's tag"
            ),
            other => panic!("the retry lost its tag: {other:?}"),
        }
        write.abort();
    })
    .await;
}

/// A snapshot transfer the leader gave up (it replicated the entries
/// instead, and they are committed) must not keep its partial file on
/// the follower: it stayed, a snapshot's size on disk, until the node
/// stopped following.
#[actix_rt::test]
async fn an_abandoned_snapshot_transfer_leaves_no_file_behind() {
    init_tracing();
    bounded(SECS(30), async {
        let dir = tempfile::tempdir().unwrap();
        let files = || std::fs::read_dir(dir.path()).unwrap().count();
        let snapshots = regatta::storage::FileSnapshotStore::open(dir.path()).unwrap();
        let h = Harness::start_on(quiet(), GatedStorage::with_snapshots(snapshots));
        // The first half of a snapshot at index 5.
        let data = counter_snapshot(7);
        let meta = describe(LogId::new(2, 5), Membership::new([1, 2, 3]), &data);
        h.inject(
            2,
            Message::InstallSnapshot {
                term: 2,
                meta,
                offset: 0,
                data: data[..data.len() / 2].to_vec().into(),
            },
        );
        h.expect("the first chunk acknowledged", |e| {
            matches!(e.message, Message::InstallSnapshotResponse { done: false, received, .. } if received > 0)
        })
        .await;
        assert_eq!(files(), 1, "the partial snapshot is being written");
        // The leader sends the entries instead, and commits them.
        let entries: Vec<(u64, u64)> = (2..=6).map(|i| (2, i)).collect();
        let mut catch_up = append(2, LogId::new(1, 1), &entries);
        if let Message::AppendEntries { leader_commit, .. } = &mut catch_up {
            *leader_commit = 6;
        }
        h.inject(2, catch_up);
        h.raft
            .wait_for(SECS(5), |m| m.commit_index >= 6)
            .await
            .unwrap();
        // Its next heartbeat finds the node past the snapshot.
        h.inject(2, append(2, LogId::new(2, 6), &[]));
        let deadline = tokio::time::Instant::now() + SECS(5);
        while files() != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the abandoned transfer's file stayed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
