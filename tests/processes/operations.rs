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

/// Writes the keys from 8 keep-alive connections; every one must be
/// acknowledged (no faults).
fn write_keys(cluster: &ProcessCluster) {
    let addrs: Vec<_> = [1, 2, 3].map(|id| cluster.http(id)).to_vec();
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let addr = addrs[w as usize % addrs.len()];
            std::thread::spawn(move || {
                let mut conn = HttpConnection::connect(addr).expect("connect");
                for i in (w..KEYS).step_by(8) {
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
        write_keys(&cluster);
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
        let (status, scan) =
            http(restored.http(id), "GET", "/kv?prefix=k&limit=10000", None).expect("a scan");
        assert_eq!(status, 200, "{scan}");
        let items = scan["items"].as_array().expect("items");
        assert_eq!(items.len() as u64, KEYS, "node {id}");
        for (i, item) in items.iter().enumerate() {
            assert_eq!(item["key"], json!(key(i as u64)));
            assert_eq!(item["value"], json!(format!("v{i}")));
        }
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
