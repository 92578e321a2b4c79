//! Catching up by snapshot, membership changes under writes, and replacing
//! every founding member.

use super::*;

#[test]
fn a_stopped_node_catches_up_by_snapshot_and_directories_stay_bounded() {
    const INCREMENTS: u64 = 50_000;
    const CLIENTS: u64 = 16;
    let mut cluster = ProcessCluster::start_with(
        "counter",
        3,
        &["--snapshot-every", "5000", "--snapshot-keep", "500"],
    );
    let leader = cluster.wait_leader(&[1, 2, 3], LEADER_WAIT);
    let stopped = if leader == 3 { 2 } else { 3 };
    assert_eq!(
        cluster.terminate(stopped, Duration::from_secs(30)),
        Some(0),
        "graceful stop"
    );
    let stopped_size = common::process::dir_size(&cluster.data_dir(stopped));

    // Keep-alive clients through the two running nodes.
    let running: Vec<std::net::SocketAddr> = [1, 2, 3]
        .into_iter()
        .filter(|id| *id != stopped)
        .map(|id| cluster.http(id))
        .collect();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let addr = running[client as usize % running.len()];
            std::thread::spawn(move || {
                let mut acked = 0;
                let mut connection = None;
                for _ in 0..INCREMENTS / CLIENTS {
                    let conn = match &mut connection {
                        Some(c) => c,
                        None => connection.insert(
                            common::process::HttpConnection::connect(addr).expect("connect"),
                        ),
                    };
                    let answer = conn.request("POST", "/counter/incr", None);
                    if answer.is_err() {
                        connection = None;
                    }
                    if let WriteOutcome::Acked(_) =
                        common::process::classify("/counter/incr", answer)
                    {
                        acked += 1;
                    }
                }
                acked
            })
        })
        .collect();
    let acked: u64 = threads.into_iter().map(|t| t.join().expect("client")).sum();
    assert_eq!(
        acked, INCREMENTS,
        "every increment acknowledged (no faults)"
    );

    let leader = cluster.wait_leader(
        &[1, 2, 3]
            .into_iter()
            .filter(|id| *id != stopped)
            .collect::<Vec<_>>(),
        LEADER_WAIT,
    );
    let leader_status = cluster.status(leader).expect("status");
    let compacted_past = leader_status["snapshot_index"].as_u64().expect("index");
    assert!(
        compacted_past > 10_000,
        "the leader snapshotted: {leader_status}"
    );

    cluster.spawn(stopped);
    let commit = leader_status["commit_index"].as_u64().expect("commit");
    cluster.wait_applied(&[stopped], commit, Duration::from_secs(120));
    let log = std::fs::read_to_string(cluster.log_path(stopped)).expect("log file");
    assert!(
        log.contains("installing snapshot from the leader"),
        "node {stopped} caught up without a snapshot"
    );
    for (id, view) in read_all(&cluster, "/counter") {
        assert_eq!(view["value"], INCREMENTS, "node {id}");
    }
    // The log behind the snapshots was dropped: each directory holds one
    // snapshot and a log of at most a few thousand entries, whatever the
    // number of commands.
    for id in [1, 2, 3] {
        let dir = cluster.data_dir(id);
        // A node may be writing a newer snapshot right now (a temporary
        // file, then briefly two before the old one is deleted): wait for
        // it to settle on exactly one, data + meta.
        // Each new listing is printed, so that a timeout shows what stayed.
        let mut seen = Vec::new();
        cluster.wait_until(
            &format!("node {id} to hold one snapshot"),
            LEADER_WAIT,
            |_| {
                let mut names: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
                    .map(|entries| {
                        entries
                            .flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                names.sort();
                if names != seen {
                    println!("node {id} snapshots: {names:?}");
                    seen = names;
                }
                seen.len() == 2
            },
        );
        let size = common::process::dir_size(&dir);
        println!("node {id}: data directory {size} bytes (stopped node's before: {stopped_size})");
        assert!(size < 16 << 20, "node {id}: data directory {size} bytes");
    }
    shut_down(&mut cluster);

    // A snapshot that went missing is a start-up error, not an empty state.
    for entry in std::fs::read_dir(cluster.data_dir(1).join("snapshots")).expect("dir") {
        std::fs::remove_file(entry.expect("entry").path()).expect("remove");
    }
    cluster.spawn(1);
    assert_eq!(cluster.wait_exit(1, Duration::from_secs(30)), Some(1));
    let log = std::fs::read_to_string(cluster.log_path(1)).expect("log file");
    assert!(
        log.contains("the snapshot file is missing"),
        "{}",
        &log[log.len().saturating_sub(500)..]
    );
}

#[test]
fn counter_cluster_grows_to_five_and_shrinks_back_under_writes() {
    let mut cluster = ProcessCluster::start("counter", 3);
    cluster.wait_leader(&[1, 2, 3], LEADER_WAIT);
    // The clients write through the founding nodes, which stay.
    let clients = Clients::start(&cluster, 2, |_, addr, _| {
        let outcome = write(addr, "/counter/incr", None);
        let ok = matches!(outcome, WriteOutcome::Acked(_));
        (outcome, ok)
    });
    clients.wait_progress(&cluster, 20);

    for id in [4, 5] {
        cluster.spawn_joiner(id);
        cluster.wait_until("the joining node to answer", LEADER_WAIT, |c| {
            c.status(id).is_some_and(|s| s["role"] == "removed")
        });
        let leader = cluster.wait_leader(&[1, 2, 3], LEADER_WAIT);
        let body = format!(
            "{{\"id\": {id}, \"raft_addr\": \"{}\"}}",
            cluster.nodes[&id].raft
        );
        let (status, v) = http(
            cluster.http(leader),
            "POST",
            "/cluster/members",
            Some(&body),
        )
        .expect("answer");
        assert_eq!(status, 200, "adding node {id}: {v}");
        assert!(v["voters"].as_array().expect("voters").contains(&id.into()));
        clients.wait_progress(&cluster, 10);
    }
    let all = [1, 2, 3, 4, 5];
    let leader = cluster.wait_leader(&all, LEADER_WAIT);
    for id in all {
        cluster.wait_until("every node to see five voters", LEADER_WAIT, |c| {
            c.status(id)
                .is_some_and(|s| s["voters"].as_array().is_some_and(|v| v.len() == 5))
        });
    }
    // Hand leadership to node 4, then carry on through it.
    let (status, v) = http(
        cluster.http(leader),
        "POST",
        "/cluster/transfer-leader",
        Some(&format!("{{\"to\": {}}}", if leader == 4 { 5 } else { 4 })),
    )
    .expect("answer");
    assert_eq!(status, 200, "transfer: {v}");
    let leader = cluster.wait_leader(&all, LEADER_WAIT);
    assert!(leader == 4 || leader == 5, "the target leads: {leader}");
    // A follower takes a change too: the leader carries it out, and the
    // answer names it. The other new node goes first.
    let other = if leader == 4 { 5 } else { 4 };
    let follower = *all
        .iter()
        .find(|id| **id != leader && **id != other)
        .expect("follower");
    let (status, v) = http(
        cluster.http(follower),
        "DELETE",
        &format!("/cluster/members/{other}"),
        None,
    )
    .expect("answer");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["by"], serde_json::json!(leader), "{v}");
    clients.wait_progress(&cluster, 10);

    // Back to three, removing the leader (4 or 5): it steps down after.
    let (status, v) = http(
        cluster.http(leader),
        "DELETE",
        &format!("/cluster/members/{leader}"),
        None,
    )
    .expect("answer");
    assert_eq!(status, 200, "removing node {leader}: {v}");
    clients.wait_progress(&cluster, 10);
    cluster.wait_leader(&[1, 2, 3], LEADER_WAIT);
    clients.wait_progress(&cluster, 20);
    let outcomes = clients.stop();

    let mut values = BTreeSet::new();
    let mut maybe = 0;
    for outcome in &outcomes {
        match outcome {
            WriteOutcome::Acked(v) => {
                assert!(values.insert(v["value"].as_u64().expect("value")));
            }
            WriteOutcome::Maybe => maybe += 1,
            WriteOutcome::NotApplied => {}
        }
    }
    let fin = {
        let mut answer = None;
        cluster.wait_until("a linearizable read", LEADER_WAIT, |c| {
            match http(c.http(1), "GET", "/counter", None) {
                Ok((200, v)) => {
                    answer = v["value"].as_u64();
                    true
                }
                _ => false,
            }
        });
        answer.expect("value")
    };
    let acked = values.len() as u64;
    println!("{acked} acknowledged, {maybe} indeterminate, final value {fin}");
    assert!(
        fin >= acked && fin <= acked + maybe,
        "lost or invented increments"
    );
    for id in [4, 5] {
        cluster.wait_until("the removed node to know it", LEADER_WAIT, |c| {
            c.status(id).is_some_and(|s| s["role"] == "removed")
        });
    }
    shut_down(&mut cluster);
}

/// Review finding 10: replace every founding member one by one, then add
/// one more node. A joining node used to learn peer addresses only from the
/// configuration entries it had received; the leader's own entry lies
/// beyond the first batch it gets (more than 256 entries in), so it could
/// not answer the leader, never caught up, and the stuck addition blocked
/// every later change.
#[test]
fn after_every_founder_is_replaced_a_new_node_still_joins() {
    let mut cluster = ProcessCluster::start("counter", 3);
    let mut voters: Vec<u64> = vec![1, 2, 3];
    let mut acked = 0u64;
    let mut maybe = 0u64;
    let mut writes = |c: &ProcessCluster, voters: &[u64], n: usize| {
        for _ in 0..n {
            let leader = c.wait_leader(voters, LEADER_WAIT);
            match write(c.http(leader), "/counter/incr", None) {
                WriteOutcome::Acked(_) => acked += 1,
                WriteOutcome::Maybe => maybe += 1,
                WriteOutcome::NotApplied => {}
            }
        }
    };
    let change =
        |c: &ProcessCluster, voters: &[u64], method: &str, path: &str, body: Option<String>| {
            let leader = c.wait_leader(voters, LEADER_WAIT);
            let (status, v) = http(c.http(leader), method, path, body.as_deref()).expect("answer");
            assert_eq!(status, 200, "{method} {path}: {v}");
        };
    // Past the first AppendEntries batch a newcomer receives.
    writes(&cluster, &voters, 300);
    for (new, old) in [(4, 1), (5, 2), (6, 3)] {
        cluster.spawn_joiner(new);
        let body = format!(
            "{{\"id\": {new}, \"raft_addr\": \"{}\"}}",
            cluster.nodes[&new].raft
        );
        change(&cluster, &voters, "POST", "/cluster/members", Some(body));
        voters.push(new);
        change(
            &cluster,
            &voters,
            "DELETE",
            &format!("/cluster/members/{old}"),
            None,
        );
        voters.retain(|id| *id != old);
        cluster.terminate(old, Duration::from_secs(10));
        writes(&cluster, &voters, 10);
    }
    // No founder is left: the newcomer must still be able to answer.
    cluster.spawn_joiner(10);
    let body = format!(
        "{{\"id\": 10, \"raft_addr\": \"{}\"}}",
        cluster.nodes[&10].raft
    );
    change(&cluster, &voters, "POST", "/cluster/members", Some(body));
    voters.push(10);
    // And the change slot is free for the next change.
    change(&cluster, &voters, "DELETE", "/cluster/members/10", None);
    voters.retain(|id| *id != 10);
    writes(&cluster, &voters, 10);
    let leader = cluster.wait_leader(&voters, LEADER_WAIT);
    let (status, v) = http(cluster.http(leader), "GET", "/counter", None).expect("answer");
    assert_eq!(status, 200);
    let value = v["value"].as_u64().expect("value");
    assert!(
        value >= acked && value <= acked + maybe,
        "{value} after {acked} acknowledged and {maybe} indeterminate increments"
    );
    shut_down(&mut cluster);
}
