//! The operator command line (`regatta`, feature `cli`) against three
//! `serve` processes of the kv example: every membership call sent to a
//! follower, which points the client at the leader.

use super::*;
use common::process::regatta;

fn rows(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| ID"))
        .collect()
}

#[test]
fn the_operator_command_line_runs_every_membership_call_through_any_member() {
    let mut cluster = ProcessCluster::start("kv", 3);
    let leader = cluster.wait_leader(&[1, 2, 3], LEADER_WAIT);
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let at = cluster.http(follower).to_string();
    let (code, _) = regatta(&["members", "--endpoint", &at]);
    assert_eq!(code, Some(0));

    // A fourth node joins, added through the follower.
    cluster.spawn_joiner(4);
    // Without --api: the node publishes its HTTP address itself once it
    // is a member.
    let (raft, api) = (cluster.raft(4).to_string(), cluster.http(4).to_string());
    let (code, out) = regatta(&["add", "--endpoint", &at, "--id", "4", "--raft-addr", &raft]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("node 4 added as a voter"), "{out}");
    cluster.wait_until("node 4's published API address", LEADER_WAIT, |c| {
        c.status(follower)
            .is_some_and(|s| s["membership"]["metadata"]["4"]["api"] == api.as_str())
    });
    // And an operator can change it through the log.
    let (code, out) = regatta(&[
        "set-metadata",
        "--endpoint",
        &at,
        "--id",
        "4",
        "--key",
        "zone",
        "--value",
        "b",
    ]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = regatta(&["members", "--endpoint", &at]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        rows(&out).iter().filter(|r| r.contains("| voter ")).count(),
        4,
        "{out}"
    );

    // Leadership moves to it.
    let (code, out) = regatta(&["transfer-leader", "--endpoint", &at, "--to", "4"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(cluster.wait_leader(&[1, 2, 3, 4], LEADER_WAIT), 4);

    // A snapshot of one member.
    let (code, out) = regatta(&["snapshot", "--endpoint", &at]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("snapshot at index"), "{out}");

    // The first leader's disk is replaced: it comes back with --join and
    // is re-admitted as a new incarnation.
    cluster.replace_disk_and_join(leader);
    let (code, out) = regatta(&["replace", "--endpoint", &at, "--id", &leader.to_string()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("votes again, as incarnation"), "{out}");

    // And then removed.
    let (code, out) = regatta(&["remove", "--endpoint", &at, "--id", &leader.to_string()]);
    assert_eq!(code, Some(0), "{out}");
    let (_, out) = regatta(&["members", "--endpoint", &at]);
    assert_eq!(rows(&out).len(), 3, "{out}");
    assert!(
        !rows(&out)
            .iter()
            .any(|r| r.starts_with(&format!("| {leader} "))),
        "{out}"
    );

    // Writes still work, and the status table shows the three members.
    let (code, out) = regatta(&[
        "bench",
        "--endpoints",
        &at,
        "--method",
        "PUT",
        "--path",
        "/kv/k",
        "--body",
        r#"{"value":"v"}"#,
        "--clients",
        "2",
        "--seconds",
        "1",
        "--session",
    ]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = regatta(&["status", "--endpoint", &at]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(rows(&out).len(), 3, "{out}");
    assert!(out.contains("leader: node 4 "), "{out}");

    // A refusal is an error with the service's reason, exit code 1.
    let (code, out) = regatta(&["transfer-leader", "--endpoint", &at, "--to", "99"]);
    assert_eq!(code, Some(1), "{out}");
}

#[test]
fn a_client_session_applies_every_write_once_through_leader_kills() {
    use regatta::client::Client;
    use serde_json::{json, Value};
    const WRITES: u64 = 1_000;
    let mut cluster = ProcessCluster::start("counter", 3);
    cluster.wait_leader(&[1, 2, 3], LEADER_WAIT);
    let endpoints: Vec<String> = [1, 2, 3].map(|id| cluster.http(id).to_string()).to_vec();
    actix_rt::System::new().block_on(async move {
        let client = Client::new(&endpoints)
            .unwrap()
            .timeout(Duration::from_secs(30));
        let session = client.session().await.expect("open a session");
        // Writes run back to back while the leader is killed twice.
        let writer = actix_rt::spawn(async move {
            let mut last = 0;
            for _ in 0..WRITES {
                let answer: Value = session
                    .post("/counter/incr", &json!({"by": 1}))
                    .await
                    .expect("a session write ends definite within the timeout");
                last = answer["value"].as_u64().expect("a value");
            }
            last
        });
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let leader = cluster.wait_leader(&[1, 2, 3], LEADER_WAIT);
            assert!(!writer.is_finished(), "the kill must land among the writes");
            cluster.kill(leader);
            tokio::time::sleep(Duration::from_millis(200)).await;
            cluster.spawn(leader);
        }
        let last = writer.await.expect("the writer");
        // Each increment applied exactly once: the last answer and every
        // node's value are the number of writes, resends included.
        assert_eq!(last, WRITES);
        let read: Value = client.get("/counter").await.expect("a read");
        assert_eq!(read["value"], json!(WRITES));
    });
}
