//! The sharded kv example as three processes (hosts) with 64 groups: a
//! host SIGKILLed under load, every group elects again, and nothing
//! acknowledged is lost.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::process::{classify, http, ProcessCluster, WriteOutcome};
use crate::common::process_faults::{Clients, LEADER_WAIT};

const GROUPS: u64 = 64;

/// Host `from`'s view of the groups: group → leader.
fn leaders(cluster: &ProcessCluster, from: u64) -> BTreeMap<u64, Option<u64>> {
    match http(cluster.http(from), "GET", "/groups", None) {
        Ok((200, body)) => body["groups"]
            .as_array()
            .expect("a list of groups")
            .iter()
            .map(|g| (g["group"].as_u64().unwrap(), g["leader"].as_u64()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Waits until host `from` sees a leader among `among` for every group.
fn wait_all_led(cluster: &ProcessCluster, from: u64, among: &[u64], limit: Duration) {
    cluster.wait_until(
        &format!("a leader among {among:?} for all {GROUPS} groups, seen from host {from}"),
        limit,
        |c| {
            let seen = leaders(c, from);
            seen.len() as u64 == GROUPS
                && seen.values().all(|l| l.is_some_and(|l| among.contains(&l)))
        },
    );
}

#[test]
fn sharded_kv_hosts_lose_no_acknowledged_write_when_one_is_killed() {
    let mut cluster =
        ProcessCluster::start_with("sharded_kv", 3, &["--groups", &GROUPS.to_string()]);
    wait_all_led(&cluster, 2, &[1, 2, 3], LEADER_WAIT);
    // Host 1 spreads the leaders once all are elected: wait until it
    // leads its share, so the kill below takes a third of the leaders.
    cluster.wait_until("host 1 leading a share of the groups", LEADER_WAIT, |c| {
        leaders(c, 1).values().filter(|l| **l == Some(1)).count() >= 16
    });

    let clients = Clients::start(&cluster, 4, |client, addr, seq| {
        let key = format!("k{client}-{seq}");
        let path = format!("/kv/{key}");
        let body = format!(r#"{{"value": "v{seq}"}}"#);
        let outcome = classify(&path, http(addr, "PUT", &path, Some(&body)));
        let acked = matches!(outcome, WriteOutcome::Acked(_));
        ((key, format!("v{seq}"), outcome), acked)
    });
    clients.wait_progress(&cluster, 200);
    cluster.kill(1);
    clients.avoid(1, true);
    let killed = Instant::now();
    // Every group led by host 1 elects again on the survivors.
    wait_all_led(&cluster, 2, &[2, 3], LEADER_WAIT);
    println!(
        "all {GROUPS} groups led again {:?} after the kill",
        killed.elapsed()
    );
    clients.wait_progress(&cluster, 200);
    let log = clients.stop();
    let acked: Vec<(String, String)> = log
        .iter()
        .filter(|(_, _, outcome)| matches!(outcome, WriteOutcome::Acked(_)))
        .map(|(key, value, _)| (key.clone(), value.clone()))
        .collect();
    // Writes in flight when host 1 died may or may not have been applied.
    let maybe: std::collections::BTreeSet<&str> = log
        .iter()
        .filter(|(_, _, outcome)| *outcome == WriteOutcome::Maybe)
        .map(|(key, _, _)| key.as_str())
        .collect();
    assert!(acked.len() >= 400, "{} writes acknowledged", acked.len());

    let read = |cluster: &ProcessCluster, host: u64, key: &str| -> Option<Value> {
        match http(cluster.http(host), "GET", &format!("/kv/{key}"), None) {
            Ok((200, body)) => Some(body["value"].clone()),
            _ => None,
        }
    };
    for (key, value) in &acked {
        assert_eq!(
            read(&cluster, 2, key),
            Some(Value::String(value.clone())),
            "acknowledged write of {key} lost"
        );
    }
    // Host 1 comes back on its database: every group again, every key.
    cluster.spawn(1);
    let restarted = Instant::now();
    wait_all_led(&cluster, 1, &[1, 2, 3], LEADER_WAIT);
    println!(
        "host 1 knows every group's leader {:?} after its restart",
        restarted.elapsed()
    );
    for (key, value) in acked.iter().step_by(7) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = read(&cluster, 1, key);
            if got == Some(Value::String(value.clone())) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "host 1 after its restart: {key} is {got:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // A scan across all groups finds every acknowledged key of client 0,
    // and nothing it did not try (or was told was not applied).
    let (status, body) =
        http(cluster.http(3), "GET", "/kv?prefix=k0-&limit=10000", None).expect("scan answers");
    assert_eq!(status, 200, "{body}");
    let found: std::collections::BTreeSet<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["key"].as_str().unwrap())
        .collect();
    for (key, _) in acked.iter().filter(|(k, _)| k.starts_with("k0-")) {
        assert!(found.contains(key.as_str()), "the scan misses {key}");
    }
    for key in &found {
        assert!(
            acked.iter().any(|(k, _)| k == key) || maybe.contains(key),
            "the scan finds {key}, which was never acknowledged nor in doubt"
        );
    }
}
