//! Backup and restore, as an operator runs them: the kv example as three
//! processes, a backup taken from a follower with `regatta backup`, the
//! cluster destroyed, and a new one founded from the file with `serve
//! --restore-from`.

use super::*;
use common::process::{regatta, HttpConnection};
use serde_json::{json, Value};

const KEYS: u64 = 10_000;

fn key(i: u64) -> String {
    format!("k{i:05}")
}

/// Writes keys 0..`keys` through `ids` from 8 keep-alive connections;
/// every one must be acknowledged (no faults).
fn write_keys(cluster: &ProcessCluster, ids: &[u64], keys: u64) {
    let addrs: Vec<_> = ids.iter().map(|id| cluster.http(*id)).collect();
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let addr = addrs[w as usize % addrs.len()];
            std::thread::spawn(move || {
                let mut conn = HttpConnection::connect(addr).expect("connect");
                for i in (w..keys).step_by(8) {
                    let body = format!(r#"{{"value":"v{i}"}}"#);
                    let (status, answer) = conn
                        .request("PUT", &format!("/kv/{}", key(i)), Some(&body))
                        .expect("an answer");
                    assert_eq!(status, 200, "{answer}");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
}

/// Node `id` answers a linearizable scan with keys 0..`keys`, each with
/// its value.
fn assert_holds_keys(cluster: &ProcessCluster, id: u64, keys: u64) {
    let (status, scan) =
        http(cluster.http(id), "GET", "/kv?prefix=k&limit=10000", None).expect("a scan");
    assert_eq!(status, 200, "{scan}");
    let items = scan["items"].as_array().expect("items");
    assert_eq!(items.len() as u64, keys, "node {id}");
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["key"], json!(key(i as u64)));
        assert_eq!(item["value"], json!(format!("v{i}")));
    }
}

fn session_put(
    addr: std::net::SocketAddr,
    session: u64,
    seq: u64,
    received: u64,
    value: &str,
) -> (u16, Value) {
    let headers = [
        ("Regatta-Session", session.to_string()),
        ("Regatta-Sequence", seq.to_string()),
        ("Regatta-Received", received.to_string()),
    ];
    let headers: Vec<(&str, String)> = headers.to_vec();
    HttpConnection::connect(addr)
        .expect("connect")
        .request_with(
            "PUT",
            "/kv/s",
            Some(&format!(r#"{{"value":"{value}"}}"#)),
            &headers,
        )
        .expect("an answer")
}

#[test]
fn a_backup_from_a_follower_founds_a_new_cluster_with_every_key_and_session() {
    let kept = tempfile::tempdir().expect("a directory for the backup");
    let file = kept.path().join("kv.backup");
    let (old_id, session) = {
        let cluster = ProcessCluster::start("kv", 3);
        let leader = cluster.wait_leader(&[1, 2, 3], LEADER_WAIT);
        write_keys(&cluster, &[1, 2, 3], KEYS);
        let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
        let at = cluster.http(follower);
        let (_, opened) = http(at, "POST", "/cluster/session", None).expect("open a session");
        let session = opened["session"].as_u64().expect("a session id");
        assert_eq!(session_put(at, session, 1, 0, "a").0, 200);
        assert_eq!(session_put(at, session, 2, 1, "b").0, 200);

        let (code, out) = regatta(&[
            "backup",
            "--endpoint",
            &at.to_string(),
            "--out",
            file.to_str().unwrap(),
        ]);
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("backup of cluster"), "{out}");
        let old_id = cluster.status(leader).unwrap()["cluster_id"].clone();
        (old_id, session)
        // The cluster is destroyed here: processes killed, directories gone.
    };

    // A damaged copy is refused before anything is written.
    let damaged = kept.path().join("damaged.backup");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&damaged, &bytes[..bytes.len() / 2]).unwrap();
    let dir = kept.path().join("refused");
    let out = std::process::Command::new(common::process::example_binary("kv"))
        .args(["serve", "--id", "1", "--data-dir", dir.to_str().unwrap()])
        .args(["--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:1"])
        .args(["--initial-cluster", "1=127.0.0.1:1"])
        .args(["--restore-from", damaged.to_str().unwrap()])
        .output()
        .expect("run the kv example");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(!dir.join("log").exists(), "nothing written");

    // Three new processes, founded from the file.
    let restored = ProcessCluster::start_with("kv", 3, &["--restore-from", file.to_str().unwrap()]);
    let leader = restored.wait_leader(&[1, 2, 3], LEADER_WAIT);
    let new_id = restored.status(leader).unwrap()["cluster_id"].clone();
    assert_ne!(new_id, old_id, "a restored cluster is a new cluster");
    for id in [1, 2, 3] {
        assert_holds_keys(&restored, id, KEYS);
    }
    // The session lives on: a copy of its last write answers the original
    // answer and is not applied; one it acknowledged is refused.
    let at = restored.http(leader);
    let (status, answer) = session_put(at, session, 2, 1, "c");
    assert_eq!((status, &answer), (200, &json!({"previous": "a"})));
    assert_eq!(session_put(at, session, 1, 0, "d").0, 409);
    let (_, read) = http(at, "GET", "/kv/s", None).expect("a read");
    assert_eq!(read, json!({"value": "b"}));
    // And the new cluster takes writes.
    let (status, _) = http(at, "PUT", "/kv/after", Some(r#"{"value":"x"}"#)).expect("a write");
    assert_eq!(status, 200);
}

#[test]
fn a_cluster_that_lost_three_of_five_voters_recovers_on_a_survivor_and_grows_back() {
    const WRITTEN: u64 = 2_000;
    let mut cluster = ProcessCluster::start("kv", 5);
    let all = [1, 2, 3, 4, 5];
    let leader = cluster.wait_leader(&all, LEADER_WAIT);
    write_keys(&cluster, &all, WRITTEN);
    let commit = cluster.status(leader).unwrap()["commit_index"]
        .as_u64()
        .unwrap();
    cluster.wait_applied(&all, commit, Duration::from_secs(30));

    // The leader and two more are lost for good.
    let lost: Vec<u64> = std::iter::once(leader)
        .chain(all.into_iter().filter(|id| *id != leader).take(2))
        .collect();
    let survivors: Vec<u64> = all.into_iter().filter(|id| !lost.contains(id)).collect();
    for id in &lost {
        cluster.kill(*id);
        std::fs::remove_dir_all(cluster.data_dir(*id)).unwrap();
    }
    let (a, b) = (survivors[0], survivors[1]);
    for id in &survivors {
        assert_eq!(cluster.terminate(*id, Duration::from_secs(30)), Some(0));
    }

    // Recovery refuses a running node's directory, then works offline.
    let dir = cluster.data_dir(a);
    let (dir, id) = (dir.to_str().unwrap(), a.to_string());
    let recover = |extra: &[&str]| {
        let mut args = vec![
            "recover",
            "--data-dir",
            dir,
            "--id",
            &id,
            "--cluster-name",
            "kv",
        ];
        args.extend_from_slice(extra);
        regatta(&args)
    };
    let (code, out) = recover(&["--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("would make node"), "{out}");
    cluster.spawn(a);
    cluster.wait_until("node serving", LEADER_WAIT, |c| c.status(a).is_some());
    let (code, _) = recover(&[]);
    assert_eq!(code, Some(1), "a directory in use is refused");
    assert_eq!(cluster.terminate(a, Duration::from_secs(30)), Some(0));
    let (code, out) = recover(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("is now the only voter"), "{out}");

    // Started as before, it leads alone and holds every write.
    cluster.spawn(a);
    assert_eq!(cluster.wait_leader(&[a], LEADER_WAIT), a);
    assert_holds_keys(&cluster, a, WRITTEN);

    // Grown back to three: the other survivor and a lost node, each on a
    // new directory.
    let at = cluster.http(a).to_string();
    for id in [b, lost[0]] {
        cluster.replace_disk_and_join(id);
        let (raft, api) = (cluster.raft(id).to_string(), cluster.http(id).to_string());
        let (code, out) = regatta(&[
            "add",
            "--endpoint",
            &at,
            "--id",
            &id.to_string(),
            "--raft-addr",
            &raft,
            "--api",
            &api,
        ]);
        assert_eq!(code, Some(0), "{out}");
    }
    let members = [a, b, lost[0]];
    let leader = cluster.wait_leader(&members, LEADER_WAIT);
    let (status, _) = http(
        cluster.http(leader),
        "PUT",
        "/kv/after",
        Some(r#"{"value":"x"}"#),
    )
    .expect("a write");
    assert_eq!(status, 200);
    for id in members {
        let (status, scan) =
            http(cluster.http(id), "GET", "/kv?prefix=k&limit=10000", None).expect("a scan");
        assert_eq!(status, 200, "{scan}");
        assert_eq!(
            scan["items"].as_array().unwrap().len() as u64,
            WRITTEN,
            "node {id}"
        );
    }
}
