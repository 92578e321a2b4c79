//! The `serve` command line, its data directory check, and bad HTTP requests.

use super::*;

#[test]
fn serve_rejects_bad_flags_with_usage_and_exit_code_2() {
    let binary = common::process::example_binary("counter");
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let good = [
        "serve",
        "--id",
        "1",
        "--data-dir",
        data,
        "--raft-addr",
        "127.0.0.1:7001",
        "--http-addr",
        "127.0.0.1:8001",
        "--initial-cluster",
        "1=127.0.0.1:7001,2=127.0.0.1:7002",
    ];
    let with = |flag: &str, value: &str| -> Vec<String> {
        let mut args: Vec<String> = good.iter().map(|s| s.to_string()).collect();
        let at = args.iter().position(|a| a == flag).expect("known flag");
        args[at + 1] = value.to_string();
        args
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["bogus".into()], "unrecognized subcommand"),
        (vec!["serve".into(), "--id".into(), "1".into()], "required"),
        (with("--id", "0"), "--id"),
        (with("--id", "x"), "--id"),
        (with("--raft-addr", "nowhere"), "--raft-addr"),
        (
            with("--initial-cluster", "1=127.0.0.1:7001,1=127.0.0.1:7002"),
            "listed twice",
        ),
        (
            with("--initial-cluster", "1:127.0.0.1:7001"),
            "ID=HOST:PORT",
        ),
        (
            with("--initial-cluster", "2=127.0.0.1:7002"),
            "does not list this node",
        ),
        (with("--raft-addr", "127.0.0.1:7009"), "make them agree"),
    ];
    for (args, expected) in cases {
        let out = std::process::Command::new(&binary)
            .args(&args)
            .output()
            .expect("run the example");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        // clap's own errors print the usage; flags that disagree (found
        // once the node starts) point to --help.
        assert!(
            stderr.contains("Usage") || stderr.contains("see --help"),
            "{args:?}: {stderr}"
        );
    }
    // A new data directory needs --initial-cluster.
    let out = std::process::Command::new(&binary)
        .args(&good[..9])
        .output()
        .expect("run the example");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs an initial cluster"), "{stderr}");
}

#[test]
fn serve_refuses_another_services_data_directory() {
    // A queue node's directory handed to the counter: the cluster id
    // stamped in it differs, and the node must refuse to start.
    let mut queue = ProcessCluster::start("queue", 1);
    queue.wait_leader(&[1], LEADER_WAIT);
    let dir = queue.data_dir(1);
    assert_eq!(queue.terminate(1, Duration::from_secs(30)), Some(0));
    let port = |_| common::process::free_port().to_string();
    let out = std::process::Command::new(common::process::example_binary("counter"))
        .arg("serve")
        .args(["--id", "1", "--data-dir"])
        .arg(&dir)
        .args(["--raft-addr", &format!("127.0.0.1:{}", port(()))])
        .args(["--http-addr", &format!("127.0.0.1:{}", port(()))])
        .output()
        .expect("run the example");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("belongs to another cluster"), "{stderr}");
}

#[test]
fn http_api_answers_bad_requests_with_json_errors() {
    let cluster = ProcessCluster::start("queue", 1);
    cluster.wait_leader(&[1], LEADER_WAIT);
    let addr = cluster.http(1);
    let big = format!("{{\"item\":\"{}\"}}", "x".repeat(100_000));
    for (path, body) in [
        ("/queue/push", ""),
        ("/queue/push", "{"),
        ("/queue/push", "{\"item\": 5}"),
        ("/queue/push", "{\"itme\": \"a\"}"),
        ("/queue/push", "[\"a\"]"),
        ("/queue/push", big.as_str()),
    ] {
        let (status, v) = http(addr, "POST", path, Some(body)).expect("answer");
        assert_eq!(status, 400, "{path} {body:.40}: {v}");
        assert!(v["error"].is_string(), "{path} {body:.40}: {v}");
    }
    let (status, v) = http(addr, "GET", "/no/such/thing", None).expect("answer");
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].is_string());

    // Nothing above was applied; the well-formed requests work.
    let (_, v) = http(addr, "POST", "/queue/pop", None).expect("answer");
    assert_eq!(v, serde_json::json!({"item": null}));
    let (_, v) = http(addr, "POST", "/queue/push", Some("{\"item\": \"a\"}")).expect("answer");
    assert_eq!(v, serde_json::json!({"len": 1}));
    let (_, v) = http(addr, "GET", "/queue", None).expect("answer");
    assert_eq!(v, serde_json::json!({"len": 1, "head": "a"}));
    let status = cluster.status(1).expect("status");
    for field in [
        "id",
        "role",
        "term",
        "leader",
        "commit_index",
        "last_applied",
        "last_log_index",
        "snapshot_index",
        "voters",
        "learners",
        "joint",
    ] {
        assert!(status.get(field).is_some(), "{field} missing in {status}");
    }
    assert_eq!(status["role"], "leader");
    assert_eq!(status["voters"], serde_json::json!([1]));
    assert_eq!(status["joint"], false);
}
