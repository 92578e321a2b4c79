//! Identities: the cluster id generated at founding, the incarnation of
//! each data directory, and addresses learned from whoever connects.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use common::scripted::Harness;
use common::*;
use regatta::storage::MemStorage;
use regatta::testing::Cluster;
use regatta::transport::tcp::{TcpConfig, TcpTransport};
use regatta::transport::Transport;
use regatta::transport::{Envelope, Message};
use regatta::{Config, LogId, Membership, NodeId, Raft, Role};

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[actix_rt::test]
async fn founders_share_a_cluster_id_and_every_directory_has_its_own_incarnation() {
    init_tracing();
    bounded(SECS(60), async {
        let c = Cluster::new(3, test_config(), 1, |_| Counter::default()).await;
        let ids: Vec<_> = c
            .ids()
            .iter()
            .map(|id| c.storage(*id).contents().identity.expect("identity stored"))
            .collect();
        assert!(ids[0].cluster_id != 0);
        assert!(ids.iter().all(|i| i.cluster_id == ids[0].cluster_id));
        let incarnations: std::collections::BTreeSet<u64> =
            ids.iter().map(|i| i.incarnation).collect();
        assert_eq!(incarnations.len(), 3, "{ids:?}");
        // Another founding configuration, or the same one under another
        // token, is another cluster.
        let m = Membership::new([1, 2, 3]);
        let a = regatta::core::types::founding_cluster_id(&m, "");
        assert_ne!(a, regatta::core::types::founding_cluster_id(&m, "other"));
        assert_ne!(
            a,
            regatta::core::types::founding_cluster_id(&Membership::new([1, 2]), "")
        );
        assert_eq!(a, ids[0].cluster_id);
    })
    .await;
}

/// Finding 8: a node of another cluster (same node ids, same name) is
/// refused, and told why; the node's state does not move.
#[actix_rt::test]
async fn a_message_from_another_cluster_is_refused() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(Config {
            election_timeout_min: SECS(20),
            election_timeout_max: SECS(21),
            ..test_config()
        });
        let ours = h.storage.contents().identity.unwrap().cluster_id;
        h.raft.deliver(Envelope {
            cluster_id: ours ^ 0x5555,
            incarnation: 77,
            ..Envelope::new(
                2,
                1,
                Message::AppendEntries {
                    term: 9,
                    prev: LogId::new(1, 1),
                    entries: vec![],
                    leader_commit: 0,
                    round: 0,
                },
            )
        });
        let (refusal, before) = h
            .expect_after("a refusal", |e| {
                matches!(e.message, Message::Refused { .. })
            })
            .await;
        assert_eq!(refusal.to, 2);
        assert!(before
            .iter()
            .all(|e| !matches!(e.message, Message::AppendEntriesResponse { .. })));
        let m = h.raft.metrics().borrow().clone();
        assert_eq!((m.term, m.leader), (1, None), "nothing was adopted");
    })
    .await;
}

/// A host routes messages to its groups by the group id on the envelope;
/// a node that gets one of another group (misrouted, or forged) refuses
/// it like a message of another cluster, even with its own cluster id.
#[actix_rt::test]
async fn a_message_of_another_group_is_refused() {
    init_tracing();
    bounded(SECS(30), async {
        let h = Harness::start(Config {
            election_timeout_min: SECS(20),
            election_timeout_max: SECS(21),
            ..test_config()
        });
        let ours = h.storage.contents().identity.unwrap().cluster_id;
        let append = |cluster_id, group| Envelope {
            cluster_id,
            incarnation: 77,
            group,
            ..Envelope::new(
                2,
                1,
                Message::AppendEntries {
                    term: 9,
                    prev: LogId::new(1, 1),
                    entries: vec![],
                    leader_commit: 0,
                    round: 0,
                },
            )
        };
        h.raft.deliver(append(ours, 7));
        // A message of another cluster is answered: its refusal orders
        // after the first message's handling.
        h.raft.deliver(append(ours ^ 0x5555, 0));
        let (_, before) = h
            .expect_after("a refusal", |e| {
                matches!(e.message, Message::Refused { .. })
            })
            .await;
        assert!(before
            .iter()
            .all(|e| !matches!(e.message, Message::AppendEntriesResponse { .. })));
        assert_eq!(h.raft.counts().messages_other_cluster, 2);
        let m = h.raft.metrics().borrow().clone();
        assert_eq!((m.term, m.leader), (1, None), "nothing was adopted");
    })
    .await;
}

/// Finding 7: a node removed while down, wiped, and added back under its
/// old id must be replicated from scratch, not trusted with what its
/// previous incarnation had acknowledged.
#[actix_rt::test]
async fn a_node_wiped_and_added_back_under_its_old_id_starts_over() {
    init_tracing();
    bounded(SECS(120), async {
        let mut c = Cluster::new(3, test_config(), 7, |_| Counter::default()).await;
        let leader = c.wait_leader(SECS(20)).await.unwrap();
        for n in 0..30 {
            c.write(leader, Add(n)).await.unwrap();
        }
        let victim = c.ids().into_iter().find(|id| *id != leader).unwrap();
        let target = c.metrics()[&leader].commit_index;
        c.wait_applied(&[victim], target, SECS(20)).await.unwrap();
        c.crash(victim);
        let rest: Vec<NodeId> = c.ids().into_iter().filter(|id| *id != victim).collect();
        c.raft(leader)
            .change_membership(rest.clone())
            .await
            .unwrap();
        c.wipe(victim);
        c.start(victim).await;
        c.raft(leader).add_learner(victim, "").await.unwrap();
        let mut all = rest.clone();
        all.push(victim);
        // Promotion waits for the new incarnation to catch up.
        let mut promoted = false;
        for _ in 0..20 {
            match c.raft(leader).change_membership(all.clone()).await {
                Ok(_) => {
                    promoted = true;
                    break;
                }
                Err(e) => {
                    eprintln!("not yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        assert!(promoted, "the re-added node never caught up");
        c.write(leader, Add(1000)).await.unwrap();
        let target = c.metrics()[&leader].commit_index;
        c.wait_applied(&[victim], target, SECS(20))
            .await
            .expect("the re-added node holds the whole log again");
        let applied = c.raft(victim).state_machine().send(History).await.unwrap();
        assert_eq!(applied.len(), 31, "every command, once");
    })
    .await;
}

type Node = (Raft<Counter>, TcpTransport, Arbiter);

/// A node over real TCP on 127.0.0.1, in memory, on its own arbiter.
async fn tcp_node(id: NodeId, founders: Option<Membership>) -> Node {
    let arbiter = Arbiter::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    arbiter.spawn(async move {
        let cell: Arc<OnceLock<Raft<Counter>>> = Arc::default();
        let inbound = cell.clone();
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let transport = TcpTransport::start(
            TcpConfig::new(id, "finding-10", listen),
            Arc::new(move |env| {
                if let Some(raft) = inbound.get() {
                    raft.deliver(env);
                }
            }),
        )
        .await
        .unwrap();
        let raft = Raft::start(
            id,
            test_config(),
            MemStorage::new(),
            Arc::new(transport.clone()),
            founders,
            Counter::default().start(),
        )
        .unwrap();
        let _ = cell.set(raft.clone());
        let _ = tx.send((raft, transport));
    });
    let (raft, transport) = rx.await.unwrap();
    (raft, transport, arbiter)
}

/// Finding 10: a joining node learns addresses only from the
/// configuration entries it has received; the leader's may not be among
/// them. It must still answer the leader (the address comes with the
/// connection's handshake), or it never catches up and every later change
/// is stuck behind it.
#[actix_rt::test]
async fn a_joining_node_answers_a_leader_whose_address_it_was_never_told() {
    init_tracing();
    bounded(SECS(60), async {
        // Founded without addresses in the configuration: the founders
        // know each other from their transports only.
        let founders = Membership::new([1, 2, 3]);
        let mut nodes: BTreeMap<NodeId, Node> = BTreeMap::new();
        for id in 1..=3 {
            nodes.insert(id, tcp_node(id, Some(founders.clone())).await);
        }
        for (a, (_, ta, _)) in &nodes {
            for (b, (_, tb, _)) in &nodes {
                if a != b {
                    ta.set_address(*b, &tb.local_addr().to_string());
                }
            }
        }
        let leader = nodes[&1].0.wait_leader(SECS(20)).await.unwrap();
        let raft = nodes[&leader].0.clone();
        raft.write(Add(5)).await.unwrap();
        let (joiner, joiner_transport, joiner_arbiter) = tcp_node(4, None).await;
        raft.add_learner(4, joiner_transport.local_addr().to_string())
            .await
            .unwrap();
        let target = raft.metrics().borrow().commit_index;
        joiner
            .wait_applied(target, SECS(20))
            .await
            .expect("the joiner caught up: it could answer the leader");
        let m = raft.change_membership([1, 2, 3, 4]).await.unwrap();
        assert!(m.voters.contains(&4));
        joiner
            .wait_for(SECS(20), |m| m.role == Role::Follower)
            .await
            .expect("the joiner learns it votes");
        for (_, (raft, transport, arbiter)) in nodes {
            raft.shutdown().await;
            transport.shutdown();
            arbiter.stop();
        }
        joiner.shutdown().await;
        joiner_transport.shutdown();
        joiner_arbiter.stop();
    })
    .await;
}

/// Snapshots only on request, and nothing kept behind them: a node that
/// lost its log can catch up only by snapshot.
fn compacting() -> regatta::Config {
    regatta::Config {
        snapshot_every: 0,
        snapshot_keep_entries: 0,
        ..test_config()
    }
}

/// A member that comes back with an empty directory (waiting to be added)
/// while the cluster is idle is repaired by the leader on its own — from a
/// snapshot, the log being compacted — not heartbeated forever at the
/// match point its previous incarnation had.
#[actix_rt::test]
async fn a_member_back_with_an_empty_directory_catches_up_while_the_cluster_is_idle() {
    init_tracing();
    bounded(SECS(60), async {
        let mut c = Cluster::new(3, compacting(), seed("empty_directory_idle"), |_| {
            Counter::default()
        })
        .await;
        let leader = c.wait_leader(SECS(20)).await.unwrap();
        for n in 0..20 {
            c.write(leader, Add(n)).await.unwrap();
        }
        let victim = c.ids().into_iter().find(|id| *id != leader).unwrap();
        let target = c.metrics()[&leader].commit_index;
        c.wait_applied(&[victim], target, SECS(20)).await.unwrap();
        c.raft(leader).snapshot().await.unwrap();
        c.wipe(victim);
        c.start(victim).await;
        // No write from here on: only the leader can notice and repair.
        c.wait_applied(&[victim], target, SECS(20))
            .await
            .expect("the member on an empty directory catches up while idle");
        let applied = c.raft(victim).state_machine().send(History).await.unwrap();
        let expected = c.raft(leader).state_machine().send(History).await.unwrap();
        assert_eq!(
            applied.last(),
            expected.last(),
            "the same state after the snapshot"
        );
    })
    .await;
}

/// Issue 23, finding 1: a founder whose disk was replaced, started again
/// with the same initial cluster, used to found the cluster anew on its
/// empty directory — a voter that had forgotten its votes and the entries
/// it acknowledged (this test expected it to catch up). It now asks the
/// other founders first, learns that the cluster exists, and stops with
/// an error that says what to do; the cluster carries on without it.
#[actix_rt::test]
async fn a_founder_restarted_on_an_empty_directory_refuses_to_found_again() {
    init_tracing();
    bounded(SECS(60), async {
        let mut c = Cluster::new(3, compacting(), seed("refounded"), |_| Counter::default()).await;
        let leader = c.wait_leader(SECS(20)).await.unwrap();
        let victim = c.ids().into_iter().find(|id| *id != leader).unwrap();
        c.crash(victim);
        for n in 0..20 {
            c.write(leader, Add(n)).await.unwrap();
        }
        c.replace_disk(victim);
        c.start(victim).await;
        let stopped = c.raft(victim).stopped().await;
        let cause = stopped.expect("the node stops with a cause");
        assert!(
            cause.contains("refusing to found") && cause.contains("--join"),
            "{cause}"
        );
        c.write(leader, Add(99))
            .await
            .expect("the cluster carries on");
    })
    .await;
}

/// Issue 23, finding 1: cluster {1, 2, 3} with node 3 cut off; a write is
/// acknowledged with copies on the leader and node 2 only; node 2's disk
/// is replaced and it comes back waiting to be added; the leader crashes
/// and the network heals. Node 2 had forgotten its votes and its copy,
/// and its vote could make node 3 leader: the acknowledged write lost. A
/// node without a configuration grants no vote (and one that has not
/// learned the cluster id refuses the candidate outright), so no leader
/// is elected until the old leader is back, with the write.
#[actix_rt::test]
async fn a_voter_back_on_an_empty_disk_cannot_elect_a_leader_that_lacks_an_acknowledged_write() {
    init_tracing();
    bounded(SECS(60), async {
        let mut c = Cluster::new(3, test_config(), seed("replaced_disk_vote"), |_| {
            Counter::default()
        })
        .await;
        let leader = c.wait_leader(SECS(20)).await.unwrap();
        let others: Vec<NodeId> = c.ids().into_iter().filter(|id| *id != leader).collect();
        let (replaced, cut_off) = (others[0], others[1]);
        c.net().isolate(cut_off);
        c.write(leader, Add(42))
            .await
            .expect("acknowledged by two of three");
        c.wipe(replaced);
        c.start(replaced).await;
        c.crash(leader);
        c.net().rejoin(cut_off);
        // Several election timeouts: the node missing the write must not
        // win with the replaced node's vote.
        let won = c
            .raft(cut_off)
            .wait_for(SECS(4), |m| m.role == Role::Leader)
            .await;
        assert!(
            won.is_err(),
            "node {cut_off} led without the acknowledged write"
        );
        c.start(leader).await;
        let now = c.wait_leader(SECS(20)).await.unwrap();
        c.write(now, Add(0)).await.unwrap();
        let history = c.raft(now).state_machine().send(History).await.unwrap();
        assert!(
            history.iter().any(|(_, n)| *n == 42),
            "the acknowledged write is lost: {history:?}"
        );
    })
    .await;
}

/// Issue 23, finding 1 (defence in depth): once a configuration pins the
/// voters' incarnations, a voter back on a new disk — started with --join,
/// caught up — counts toward no quorum: with the third voter down, nothing
/// commits (before, its acknowledgements made a majority with the
/// leader's). `Raft::replace` re-admits it in one call, pinned to its new
/// incarnation, and from then on it counts.
#[actix_rt::test]
async fn a_voter_on_a_new_disk_counts_for_nothing_until_it_is_replaced() {
    init_tracing();
    bounded(SECS(120), async {
        let mut c = Cluster::new(3, test_config(), seed("pinned_incarnations"), |_| {
            Counter::default()
        })
        .await;
        let leader = c.wait_leader(SECS(20)).await.unwrap();
        c.write(leader, Add(1)).await.unwrap();
        let commit = c.metrics()[&leader].commit_index;
        c.wait_applied(&c.ids(), commit, SECS(20)).await.unwrap();
        // Any configuration change pins the founders that are caught up.
        let raft = c.raft(leader).clone();
        raft.add_learner(4, "").await.unwrap();
        let pinned = raft.remove_learner(4).await.unwrap();
        for (id, m) in c.metrics() {
            assert_eq!(
                pinned.incarnations.get(&id),
                Some(&m.incarnation),
                "node {id}"
            );
        }

        let others: Vec<NodeId> = c.ids().into_iter().filter(|id| *id != leader).collect();
        let (replaced, other) = (others[0], others[1]);
        c.wipe(replaced);
        c.start(replaced).await;
        let commit = c.metrics()[&leader].commit_index;
        c.wait_applied(&[replaced], commit, SECS(20))
            .await
            .expect("the node on its new disk catches up");
        let new = c.metrics()[&replaced].incarnation;
        assert_ne!(pinned.incarnations.get(&replaced), Some(&new));

        c.crash(other);
        let write = tokio::time::timeout(SECS(2), c.write(leader, Add(2))).await;
        assert!(
            !matches!(write, Ok(Ok(_))),
            "committed with the acknowledgement of a voter that lost its disk"
        );

        c.start(other).await;
        let deadline = tokio::time::Instant::now() + SECS(30);
        let replaced_config = loop {
            // The leader may not have heard the new incarnation yet (or
            // may have changed).
            let leader = c.wait_leader(SECS(20)).await.unwrap();
            match c.raft(leader).replace(replaced).await {
                Ok(m) => break m,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::info!(%e, "replace refused; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("replace failed: {e}"),
            }
        };
        assert_eq!(replaced_config.incarnations.get(&replaced), Some(&new));
        assert!(replaced_config.voters.contains(&replaced));

        let leader = c.wait_leader(SECS(20)).await.unwrap();
        let down = c
            .ids()
            .into_iter()
            .find(|id| *id != leader && *id != replaced)
            .unwrap();
        c.crash(down);
        let leader = c
            .wait_leader_among(&[leader, replaced], SECS(20))
            .await
            .unwrap();
        c.write(leader, Add(3))
            .await
            .expect("the replaced voter counts again");
    })
    .await;
}
