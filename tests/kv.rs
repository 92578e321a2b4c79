//! The key-value example as three processes: clients put unique keys
//! through every node while the leader is SIGKILLed and restarted and a
//! follower frozen; every acknowledged put must be readable on every node.

mod common;

use std::collections::BTreeMap;

use common::process::{classify, http, ProcessCluster, WriteOutcome};
use common::process_faults::{read_all, run_faults, shut_down, Clients, LEADER_WAIT};
use serde_json::json;

#[test]
fn kv_processes_keep_every_acknowledged_put() {
    let mut cluster = ProcessCluster::start("kv", 3);
    cluster.wait_leader(&[1, 2, 3], LEADER_WAIT);
    let clients = Clients::start(&cluster, 4, |client, addr, seq| {
        let key = format!("c{client}-{seq}");
        let path = format!("/kv/{key}");
        let body = format!("{{\"value\":\"v{seq}\"}}");
        let outcome = classify(&path, http(addr, "PUT", &path, Some(&body)));
        let ok = matches!(outcome, WriteOutcome::Acked(_));
        ((key, format!("v{seq}"), outcome), ok)
    });
    run_faults(&mut cluster, &clients);
    let puts = clients.stop();

    // Every node holds every acknowledged put, read in one prefix scan
    // per client.
    let mut held: BTreeMap<String, String> = BTreeMap::new();
    for client in 0..4 {
        let views = read_all(&cluster, &format!("/kv?prefix=c{client}-&limit=10000"));
        let first = &views[&1];
        for (id, view) in &views {
            assert_eq!(view, first, "node {id} disagrees with node 1");
        }
        for item in first["items"].as_array().expect("items") {
            let key = item["key"].as_str().expect("key").to_string();
            held.insert(key, item["value"].as_str().expect("value").to_string());
        }
    }
    let mut acked = 0;
    for (key, value, outcome) in &puts {
        match outcome {
            WriteOutcome::Acked(answer) => {
                acked += 1;
                // Keys are unique: nothing was there before.
                assert_eq!(answer["previous"], json!(null), "{key}");
                assert_eq!(held.get(key), Some(value), "acknowledged put of {key} lost");
            }
            WriteOutcome::NotApplied => assert!(!held.contains_key(key), "{key} applied"),
            WriteOutcome::Maybe => {}
        }
    }
    println!("{acked} acknowledged puts, {} keys held", held.len());
    assert!(acked > 0);

    // Compare-and-swap and delete, through different nodes.
    let cas = |id: u64, body: &str| http(cluster.http(id), "POST", "/kv/flag/cas", Some(body));
    let (status, v) = cas(1, r#"{"expected": null, "new": "a"}"#).expect("cas");
    assert_eq!((status, &v["swapped"]), (200, &json!(true)), "{v}");
    let (status, v) = cas(2, r#"{"expected": "b", "new": "c"}"#).expect("cas");
    assert_eq!(
        (status, &v["swapped"], &v["current"]),
        (200, &json!(false), &json!("a")),
        "{v}"
    );
    let (status, v) = http(cluster.http(3), "DELETE", "/kv/flag", None).expect("delete");
    assert_eq!((status, &v["previous"]), (200, &json!("a")), "{v}");
    let (status, _) = http(cluster.http(1), "GET", "/kv/flag", None).expect("get");
    assert_eq!(status, 404);
    shut_down(&mut cluster);
}
