//! Multi-raft: many groups on hosts that share one transport, one
//! database and one writer thread.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use regatta::{GroupId, Host, HostError, NodeId, Raft};

const SECS: fn(u64) -> Duration = Duration::from_secs;

async fn start_host(id: NodeId, dir: &Path) -> Host<Counter> {
    Host::builder(id, |_group| Counter::default())
        .data_dir(dir.join(format!("host-{id}")))
        .listen("127.0.0.1:0".parse().unwrap())
        .config(test_config())
        .start()
        .await
        .expect("host starts")
}

/// Three hosts that know each other's addresses.
async fn three_hosts(dir: &Path) -> Vec<Host<Counter>> {
    let mut hosts = Vec::new();
    for id in 1..=3 {
        hosts.push(start_host(id, dir).await);
    }
    introduce(&hosts);
    hosts
}

fn introduce(hosts: &[Host<Counter>]) {
    for a in hosts {
        for b in hosts {
            if a.id() != b.id() {
                a.set_peer_address(b.id(), &b.raft_addr().to_string());
            }
        }
    }
}

async fn wait_leader(raft: &Raft<Counter>) -> NodeId {
    raft.wait_for(SECS(20), |m| m.leader.is_some())
        .await
        .expect("the group elects a leader")
        .leader
        .unwrap()
}

async fn value(raft: &Raft<Counter>) -> u64 {
    raft.read(Get).await.expect("linearizable read")
}

#[actix_rt::test]
async fn groups_on_three_hosts_elect_and_keep_their_writes_apart_through_a_restart() {
    init_tracing();
    bounded(SECS(120), async {
        let dir = tempfile::tempdir().unwrap();
        let mut hosts = three_hosts(dir.path()).await;
        let groups: Vec<GroupId> = (1..=8).collect();
        for host in &hosts {
            for &g in &groups {
                host.create_group(g, [1, 2, 3]).await.unwrap();
            }
        }
        // Group g gets g writes of g: its value is g * g, and no other
        // group's write may show up in it.
        for &g in &groups {
            let raft = hosts[(g as usize) % 3].group(g).unwrap();
            wait_leader(&raft).await;
            for _ in 0..g {
                raft.write(Add(g)).await.unwrap();
            }
        }
        for &g in &groups {
            assert_eq!(value(&hosts[0].group(g).unwrap()).await, g * g);
        }
        let counts = hosts[0].counts();
        assert!(counts.log_syncs > 0, "{counts:?}");
        assert_eq!(counts.messages_unknown_group, 0, "{counts:?}");

        // Host 1 restarts: its groups come back from its database.
        let first = hosts.remove(0);
        first.shutdown().await;
        let again = start_host(1, dir.path()).await;
        hosts.insert(0, again);
        introduce(&hosts);
        let listed: Vec<GroupId> = hosts[0].groups().iter().map(|g| g.group).collect();
        assert_eq!(listed, groups);
        // Creating them again (as a service's start-up does) is a no-op.
        for &g in &groups {
            hosts[0].create_group(g, [1, 2, 3]).await.unwrap();
        }
        for &g in &groups {
            let raft = hosts[0].group(g).unwrap();
            raft.write(Add(1)).await.unwrap();
            assert_eq!(value(&raft).await, g * g + 1);
        }
        for host in hosts {
            host.shutdown().await;
        }
    })
    .await;
}

/// A host refuses messages for a group it does not have (counted), and
/// the group forms once its members create it.
#[actix_rt::test]
async fn a_message_for_a_group_the_host_does_not_have_is_refused() {
    init_tracing();
    bounded(SECS(60), async {
        let dir = tempfile::tempdir().unwrap();
        let hosts = three_hosts(dir.path()).await;
        let early = hosts[0].create_group(5, [1, 2]).await.unwrap();
        // Host 1 asks host 2 whether the group exists; host 2 refuses.
        let deadline = tokio::time::Instant::now() + SECS(20);
        while hosts[1].counts().messages_unknown_group == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no refusal counted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(hosts[1].group(5).is_none());
        hosts[1].create_group(5, [1, 2]).await.unwrap();
        wait_leader(&early).await;
        early.write(Add(3)).await.unwrap();
        // A host not among the founders cannot create the group, and
        // other founders for an existing group are refused.
        assert!(matches!(
            hosts[2].create_group(5, [1, 2]).await,
            Err(HostError::NotAFounder {
                id: 3,
                group: 5,
                ..
            })
        ));
        assert!(matches!(
            hosts[0].create_group(5, [1, 2, 3]).await,
            Err(HostError::GroupExists { group: 5, .. })
        ));
        assert!(matches!(
            hosts[0].create_group(0, [1]).await,
            Err(HostError::InvalidGroup)
        ));
        for host in hosts {
            host.shutdown().await;
        }
    })
    .await;
}

/// A removed group's data is gone: after a restart the host does not
/// have it, and a new group under the same id starts from nothing.
#[actix_rt::test]
async fn a_removed_group_is_gone_and_its_id_starts_afresh() {
    init_tracing();
    bounded(SECS(90), async {
        let dir = tempfile::tempdir().unwrap();
        let mut hosts = three_hosts(dir.path()).await;
        for host in &hosts {
            host.create_group(1, [1, 2, 3]).await.unwrap();
            host.create_group(2, [1, 2, 3]).await.unwrap();
        }
        let one = hosts[0].group(1).unwrap();
        wait_leader(&one).await;
        one.write(Add(10)).await.unwrap();
        let two = hosts[0].group(2).unwrap();
        wait_leader(&two).await;
        two.write(Add(20)).await.unwrap();
        for host in &hosts {
            host.remove_group(1).await.unwrap();
        }
        assert!(matches!(
            hosts[0].remove_group(1).await,
            Err(HostError::NoSuchGroup(1))
        ));
        let first = hosts.remove(0);
        first.shutdown().await;
        hosts.insert(0, start_host(1, dir.path()).await);
        introduce(&hosts);
        let listed: Vec<GroupId> = hosts[0].groups().iter().map(|g| g.group).collect();
        assert_eq!(listed, vec![2]);
        assert_eq!(value(&hosts[0].group(2).unwrap()).await, 20);
        for host in &hosts {
            host.create_group(1, [1, 2, 3]).await.unwrap();
        }
        let fresh = hosts[0].group(1).unwrap();
        wait_leader(&fresh).await;
        assert_eq!(value(&fresh).await, 0);
        let info = hosts[0].groups();
        assert_eq!(info.iter().map(|g| g.group).collect::<Vec<_>>(), [1, 2]);
        assert!(info.iter().all(|g| g.term > 0), "{info:?}");
        for host in hosts {
            host.shutdown().await;
        }
    })
    .await;
}

/// A deleted group goes from every member: at once from those up, and
/// from a host that was down as soon as it is back; its id is not used
/// again; the other groups are untouched.
#[actix_rt::test]
async fn a_deleted_group_goes_from_every_host_even_one_that_was_down() {
    init_tracing();
    bounded(SECS(120), async {
        let dir = tempfile::tempdir().unwrap();
        let mut hosts = three_hosts(dir.path()).await;
        for host in &hosts {
            host.create_group(1, [1, 2, 3]).await.unwrap();
            host.create_group(2, [1, 2, 3]).await.unwrap();
        }
        for g in [1, 2] {
            let raft = hosts[0].group(g).unwrap();
            wait_leader(&raft).await;
            raft.write(Add(g * 10)).await.unwrap();
            // Every member holds the group before host 3 goes down.
            for host in &hosts {
                let replica = host.group(g).unwrap();
                replica
                    .wait_for(SECS(20), |m| m.last_applied >= 2)
                    .await
                    .expect("replica catches up");
            }
        }
        let third = hosts.pop().unwrap();
        third.shutdown().await;
        // A second call while the first still waits for host 3 ends on its
        // own deadline, after the first (it once panicked the host's
        // thread there).
        let (deletion, again) = futures_util::future::join(hosts[1].delete_group(1), async {
            tokio::time::sleep(SECS(1)).await;
            hosts[1].delete_group(1).await
        })
        .await;
        let deletion = deletion.unwrap();
        assert_eq!(
            (deletion.confirmed, deletion.unanswered),
            (vec![1], vec![3])
        );
        let again = again.expect("a concurrent deletion of the same group answers");
        assert_eq!((again.confirmed, again.unanswered), (vec![1], vec![3]));
        for host in &hosts {
            assert!(host.group(1).is_none());
            assert!(matches!(
                host.create_group(1, [1, 2, 3]).await,
                Err(HostError::GroupDeleted(1))
            ));
        }
        // Host 3 comes back with its replica of group 1, which speaks to
        // hosts that deleted the group, and is told to go.
        hosts.push(start_host(3, dir.path()).await);
        introduce(&hosts);
        let deadline = tokio::time::Instant::now() + SECS(30);
        while hosts[2].group(1).is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "host 3 kept the deleted group"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(matches!(
            hosts[2].create_group(1, [1, 2, 3]).await,
            Err(HostError::GroupDeleted(1))
        ));
        // The tombstone is durable; the other group lives on.
        let first = hosts.remove(0);
        first.shutdown().await;
        hosts.insert(0, start_host(1, dir.path()).await);
        introduce(&hosts);
        let listed: Vec<GroupId> = hosts[0].groups().iter().map(|g| g.group).collect();
        assert_eq!(listed, vec![2]);
        assert!(matches!(
            hosts[0].create_group(1, [1, 2, 3]).await,
            Err(HostError::GroupDeleted(1))
        ));
        let two = hosts[0].group(2).unwrap();
        wait_leader(&two).await;
        assert_eq!(value(&two).await, 20);
        // Deleting again tells the members again: all answer now.
        let again = hosts[0].delete_group(1).await.unwrap();
        assert_eq!((again.confirmed, again.unanswered), (vec![2, 3], vec![]));
        assert!(matches!(
            hosts[0].delete_group(9).await,
            Err(HostError::NoSuchGroup(9))
        ));
        // Only a replica of the deleted group goes: hosts 1 and 2 have a
        // group 3 of their own (founders 1 and 2, another cluster id) and
        // ignore host 3's deletion of its group 3.
        for host in &hosts[..2] {
            host.create_group(3, [1, 2]).await.unwrap();
        }
        hosts[2].create_group(3, [1, 2, 3]).await.unwrap();
        let other = hosts[2].delete_group(3).await.unwrap();
        assert_eq!((other.confirmed, other.unanswered), (vec![], vec![1, 2]));
        let three = hosts[0].group(3).expect("hosts 1 and 2 keep their group 3");
        wait_leader(&three).await;
        three.write(Add(3)).await.unwrap();
        for host in hosts {
            host.shutdown().await;
        }
    })
    .await;
}

/// Leaders of many groups end up spread over the hosts: within one of
/// each other after a balance, whatever the elections did.
#[actix_rt::test]
async fn balancing_spreads_group_leaders_evenly_over_the_hosts() {
    init_tracing();
    bounded(SECS(90), async {
        let dir = tempfile::tempdir().unwrap();
        let hosts = three_hosts(dir.path()).await;
        let groups: Vec<GroupId> = (1..=12).collect();
        for host in &hosts {
            for &g in &groups {
                host.create_group(g, [1, 2, 3]).await.unwrap();
            }
        }
        for &g in &groups {
            wait_leader(&hosts[0].group(g).unwrap()).await;
        }
        // Leaders per host once every host agrees on every group's leader.
        let agreed_load = || async {
            let deadline = tokio::time::Instant::now() + SECS(20);
            loop {
                let views: Vec<Vec<Option<NodeId>>> = hosts
                    .iter()
                    .map(|h| {
                        groups
                            .iter()
                            .map(|g| h.group(*g).unwrap().metrics().borrow().leader)
                            .collect()
                    })
                    .collect();
                if views.iter().all(|v| *v == views[0]) && views[0].iter().all(Option::is_some) {
                    let mut load = std::collections::BTreeMap::<NodeId, usize>::new();
                    for leader in views[0].iter().flatten() {
                        *load.entry(*leader).or_default() += 1;
                    }
                    return load;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "hosts disagree: {views:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let spread = |load: &std::collections::BTreeMap<NodeId, usize>| {
            let max = load.values().max().copied().unwrap_or(0);
            let min = if load.len() == 3 {
                load.values().min().copied().unwrap_or(0)
            } else {
                0
            };
            max - min
        };
        hosts[1].balance_leaders().await;
        let load = agreed_load().await;
        assert!(
            spread(&load) <= 1,
            "leaders per host after balancing: {load:?}"
        );
        for host in hosts {
            host.shutdown().await;
        }
    })
    .await;
}

/// Idle groups go quiet: in a quiet second not one AppendEntries crosses
/// between the hosts, only the hosts' own heartbeat (one per interval per
/// peer, whatever the number of groups). A write wakes its group, and the
/// groups a killed host led elect again on the others.
#[actix_rt::test]
async fn idle_groups_go_quiet_and_a_dead_host_is_still_noticed() {
    init_tracing();
    bounded(SECS(120), async {
        let dir = tempfile::tempdir().unwrap();
        let mut hosts = three_hosts(dir.path()).await;
        let groups: Vec<GroupId> = (1..=24).collect();
        for host in &hosts {
            for &g in &groups {
                host.create_group(g, [1, 2, 3]).await.unwrap();
            }
        }
        for &g in &groups {
            wait_leader(&hosts[0].group(g).unwrap()).await;
        }
        hosts[0].balance_leaders().await;
        let all_quiet = |hosts: &[Host<Counter>]| {
            hosts.iter().all(|h| {
                groups
                    .iter()
                    .all(|g| h.group(*g).unwrap().metrics().borrow().quiesced)
            })
        };
        let deadline = tokio::time::Instant::now() + SECS(30);
        while !all_quiet(&hosts) {
            if tokio::time::Instant::now() >= deadline {
                let report: Vec<String> = hosts
                    .iter()
                    .map(|h| {
                        let loud: Vec<String> = groups
                            .iter()
                            .filter_map(|g| {
                                let m = h.group(*g).unwrap().metrics().borrow().clone();
                                (!m.quiesced).then(|| format!("{g}:{:?}/{:?}", m.role, m.leader))
                            })
                            .collect();
                        format!("host {}: {}", h.id(), loud.join(" "))
                    })
                    .collect();
                panic!("the groups never all went quiet; awake: {report:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let appends = |hosts: &[Host<Counter>]| -> u64 {
            hosts
                .iter()
                .flat_map(|h| {
                    groups
                        .iter()
                        .map(|g| h.group(*g).unwrap().counts().append_entries_sent)
                })
                .sum()
        };
        let (appends_before, beats_before) = (appends(&hosts), hosts[0].counts().heartbeats_sent);
        // A window to count messages in (the counts are what is checked).
        let window = SECS(1);
        tokio::time::sleep(window).await;
        assert!(all_quiet(&hosts), "a group woke up by itself");
        assert_eq!(appends(&hosts), appends_before, "AppendEntries while quiet");
        let beats = hosts[0].counts().heartbeats_sent - beats_before;
        let per_peer_interval =
            window.as_millis() as u64 / test_config().heartbeat_interval.as_millis() as u64;
        assert!(
            beats > 0 && beats <= 2 * (per_peer_interval + 2),
            "{beats} host heartbeats to 2 peers in {window:?}"
        );

        // A write wakes its group, wherever it is sent.
        let raft = hosts[1].group(5).unwrap();
        raft.write(Add(5)).await.unwrap();
        assert_eq!(value(&raft).await, 5);

        // Host 1 leads some groups; it dies, and they elect again.
        let led_by_1 = groups
            .iter()
            .filter(|g| hosts[1].group(**g).unwrap().metrics().borrow().leader == Some(1))
            .count();
        assert!(led_by_1 > 0, "balancing gave host 1 no group");
        let first = hosts.remove(0);
        first.shutdown().await;
        let deadline = tokio::time::Instant::now() + SECS(20);
        loop {
            let led = groups
                .iter()
                .filter(|g| {
                    let leader = hosts[0].group(**g).unwrap().metrics().borrow().leader;
                    leader.is_some_and(|l| l != 1)
                })
                .count();
            if led == groups.len() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{led} of {} groups have a live leader after host 1 died",
                groups.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for &g in &groups {
            hosts[0].group(g).unwrap().write(Add(1)).await.unwrap();
        }
        for host in hosts {
            host.shutdown().await;
        }
    })
    .await;
}

/// A quiet follower still shields its leader's term: while the leader's
/// host is heard, a vote request of a newer term is refused, exactly as
/// by a follower that just had a heartbeat (the request wakes the group,
/// but does not depose a live leader).
#[actix_rt::test]
async fn a_quiet_follower_refuses_votes_while_the_leaders_host_is_heard() {
    use regatta::transport::{Envelope, Message};
    init_tracing();
    bounded(SECS(60), async {
        let dir = tempfile::tempdir().unwrap();
        let hosts = three_hosts(dir.path()).await;
        for host in &hosts {
            host.create_group(1, [1, 2, 3]).await.unwrap();
        }
        let leader = wait_leader(&hosts[0].group(1).unwrap()).await;
        let (follower, candidate) = match leader {
            1 => (2, 3),
            2 => (3, 1),
            _ => (1, 2),
        };
        let replica = hosts[follower as usize - 1].group(1).unwrap();
        replica
            .wait_for(SECS(20), |m| m.quiesced)
            .await
            .expect("the follower goes quiet");
        let before = replica.metrics().borrow().clone();
        // Well past any heartbeat the follower had before going quiet.
        tokio::time::sleep(test_config().election_timeout_max).await;
        let theirs = hosts[candidate as usize - 1].group(1).unwrap();
        let m = theirs.metrics().borrow().clone();
        replica.deliver(Envelope {
            cluster_id: m.cluster_id,
            incarnation: m.incarnation,
            group: 1,
            ..Envelope::new(
                candidate,
                follower,
                Message::RequestVote {
                    term: before.term + 1,
                    last_log_id: regatta::LogId::new(before.term + 1, 1_000),
                    pre_vote: false,
                    force: false,
                },
            )
        });
        // The leader keeps its term: the request changed nothing.
        let leader_raft = hosts[leader as usize - 1].group(1).unwrap();
        leader_raft.write(Add(1)).await.unwrap();
        let after = replica.metrics().borrow().clone();
        assert_eq!(after.term, before.term, "the vote request moved the term");
        assert_eq!(after.leader, Some(leader));
        for host in hosts {
            host.shutdown().await;
        }
    })
    .await;
}

/// The host's web scope: every group's admin endpoints under
/// `/groups/{group}/cluster/...`, the groups at `GET /groups`, the host's
/// totals at `GET /metrics`; a group the host lacks is a JSON 404.
#[actix_rt::test]
async fn a_hosts_web_scope_serves_every_group() {
    use actix_web::{test, App};
    init_tracing();
    bounded(SECS(60), async {
        let dir = tempfile::tempdir().unwrap();
        let mut hosts = three_hosts(dir.path()).await;
        for host in &hosts {
            host.create_group(1, [1, 2, 3]).await.unwrap();
            host.create_group(2, [1, 2, 3]).await.unwrap();
        }
        let leader = wait_leader(&hosts[0].group(2).unwrap()).await;
        let host = std::sync::Arc::new(hosts.remove(0));
        let app = test::init_service(App::new().configure(regatta::web::configure_host(
            host.clone(),
            regatta::web::Access::open(),
        )))
        .await;
        let get = |path: &str| test::TestRequest::get().uri(path).to_request();

        let body: serde_json::Value = test::call_and_read_body_json(&app, get("/groups")).await;
        assert_eq!(body["host"], 1);
        assert_eq!(body["groups"].as_array().unwrap().len(), 2, "{body}");

        let response = test::call_service(&app, get("/groups/2/cluster/status")).await;
        assert_eq!(response.status(), 200);
        let status: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(status["id"], 1, "{status}");
        assert_eq!(status["leader"], leader, "{status}");

        let response = test::call_service(&app, get("/groups/9/cluster/status")).await;
        assert_eq!(response.status(), 404);
        let error: serde_json::Value = test::read_body_json(response).await;
        assert!(
            error["error"].as_str().unwrap().contains("no group"),
            "{error}"
        );

        // An admin call through one group's scope acts on that group only.
        let response = test::call_service(
            &app,
            test::TestRequest::post()
                .uri("/groups/1/cluster/snapshot")
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), 200);
        host.group(1)
            .unwrap()
            .wait_for(SECS(5), |m| m.snapshot_index > 0)
            .await
            .expect("group 1 snapshotted");
        assert_eq!(host.group(2).unwrap().metrics().borrow().snapshot_index, 0);

        let text = String::from_utf8(
            test::call_and_read_body(&app, get("/metrics"))
                .await
                .to_vec(),
        )
        .unwrap();
        assert!(text.contains("regatta_host_groups{host=\"1\"} 2"), "{text}");
        assert!(
            !text.contains("regatta_group_"),
            "per-group series only when asked"
        );
        let text = String::from_utf8(
            test::call_and_read_body(&app, get("/metrics?groups=true"))
                .await
                .to_vec(),
        )
        .unwrap();
        assert!(
            text.contains(&format!(
                "regatta_group_leader{{host=\"1\",group=\"2\"}} {leader}"
            )),
            "{text}"
        );

        // Deleting a group through the scope: every member confirms.
        let delete = |path: &str| test::TestRequest::delete().uri(path).to_request();
        let body: serde_json::Value =
            test::call_and_read_body_json(&app, delete("/groups/1")).await;
        assert_eq!(body["confirmed"], serde_json::json!([2, 3]), "{body}");
        let response = test::call_service(&app, get("/groups/1/cluster/status")).await;
        assert_eq!(response.status(), 404);
        let response = test::call_service(&app, delete("/groups/one")).await;
        assert_eq!(response.status(), 400);
        let response = test::call_service(&app, delete("/groups/7")).await;
        assert_eq!(response.status(), 404);
        host.shutdown().await;
        for host in hosts {
            host.shutdown().await;
        }
    })
    .await;
}
