//! Observability: a client write followed in one tracing span, and (with
//! processes) the dashboard and the operator commands.

#[path = "common/browser.rs"]
mod browser;
mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

use regatta::testing::Cluster;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[actix_rt::test]
async fn a_write_is_traced_from_append_to_apply_in_one_span() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    // Global, because the nodes run on arbiter threads of their own: the
    // only test in this binary that installs a subscriber.
    tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
    bounded(SECS(60), async {
        let c = Cluster::new(3, test_config(), seed("write_span"), |_| Counter::default()).await;
        let leader = c.wait_leader(SECS(10)).await.unwrap();
        let written = c.raft(leader).write_entry(Add(7)).await.unwrap();
        let regatta::LogId { term, index } = written.log_id;
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        // The span carries the node, and the leader filled in the
        // position; its events are the append and the apply.
        let span = format!("write{{node={leader} term={term} index={index}}}");
        for event in ["appended", "applied"] {
            assert!(
                text.lines().any(|l| l.contains(&span) && l.contains(event)),
                "no {event} event in {span}:\n{text}"
            );
        }
    })
    .await;
}

/// A receiver from `Raft::metrics` waits for the next change: it does not
/// report the changes made before it was taken (a loop that takes a fresh
/// receiver per wait would spin).
#[actix_rt::test]
async fn a_new_metrics_receiver_waits_for_the_next_change() {
    bounded(SECS(60), async {
        let c = Cluster::new(3, test_config(), seed("metrics_rx"), |_| Counter::default()).await;
        let leader = c.wait_leader(SECS(10)).await.unwrap();
        c.raft(leader).write(Add(1)).await.unwrap();
        let follower = c.running().into_iter().find(|id| *id != leader).unwrap();
        // Much has changed on this node since it started.
        let mut rx = c.raft(follower).metrics();
        assert!(
            !rx.has_changed().unwrap(),
            "a new receiver reports old news"
        );
        let applied = rx.borrow().last_applied;
        c.raft(leader).write(Add(1)).await.unwrap();
        tokio::time::timeout(SECS(10), async {
            while rx.borrow_and_update().last_applied <= applied {
                rx.changed().await.unwrap();
            }
        })
        .await
        .expect("the follower applied the write");
    })
    .await;
}

/// What the dashboard shows: the leader it names, the members it lists,
/// rows marked leader, rows of members that answer, leader changes logged.
const DASHBOARD_STATE: &str = "
    const s = document.getElementById('summary');
    return {
        leader: s.dataset.leader,
        members: s.dataset.members,
        leaders: document.querySelectorAll('#members tr[data-role=leader]').length,
        up: [...document.querySelectorAll('#members tr[data-up=true]')].map(r => r.dataset.member),
        changes: document.querySelectorAll('#events li').length,
    };";

#[test]
fn the_dashboard_follows_the_cluster_through_a_failover() {
    let Some(browser) = browser::Browser::start() else {
        return;
    };
    let mut cluster = process::ProcessCluster::start("counter", 3);
    let leader = cluster.wait_leader(&[1, 2, 3], SECS(30));
    for _ in 0..20 {
        let answer = process::http(cluster.http(leader), "POST", "/counter/incr", None);
        assert!(matches!(answer, Ok((200, _))), "{answer:?}");
    }
    // Loaded from the leader, which is about to die.
    browser.open(&format!("http://{}/dashboard", cluster.http(leader)));
    browser.wait_for(
        "three members, one leader",
        DASHBOARD_STATE,
        SECS(30),
        |v| {
            v["leader"] == json!(leader.to_string())
                && v["members"] == "3"
                && v["leaders"] == 1
                && v["up"].as_array().is_some_and(|up| up.len() == 3)
        },
    );

    cluster.kill(leader);
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let next = cluster.wait_leader(&others, SECS(30));
    let shown = browser.wait_for(
        "the new leader, the old one down",
        DASHBOARD_STATE,
        SECS(30),
        |v| {
            v["leader"] == json!(next.to_string())
                && v["leaders"] == 1
                && v["up"]
                    .as_array()
                    .is_some_and(|up| up.len() == 2 && !up.contains(&json!(leader.to_string())))
                && v["changes"].as_u64().is_some_and(|n| n >= 2)
        },
    );
    println!("after the failover the dashboard shows {shown}");
    if let Ok(path) = std::env::var("REGATTA_SCREENSHOT") {
        // For the picture in the docs: some load, and charts with points.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let addr = cluster.http(next);
        let load = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = process::http(addr, "POST", "/counter/incr", None);
                }
            })
        };
        browser.wait_for(
            "points on the charts",
            "return series.rate.length",
            SECS(60),
            |v| v.as_u64().is_some_and(|n| n >= 15),
        );
        browser.screenshot(std::path::Path::new(&path));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        load.join().unwrap();
    }
}

/// What the host dashboard shows: how many groups, how many with a
/// leader, and the groups each host leads.
const HOST_DASHBOARD_STATE: &str = "
    const s = document.getElementById('summary');
    const led = {};
    for (const r of document.querySelectorAll('#leaders tr')) led[r.dataset.host] = Number(r.dataset.count);
    return { host: s.dataset.host, groups: Number(s.dataset.groups), led: Number(s.dataset.led), leaders: led };";

#[test]
fn the_host_dashboard_shows_the_leaders_per_host_through_a_host_failure() {
    let Some(browser) = browser::Browser::start() else {
        return;
    };
    let mut cluster = process::ProcessCluster::start_with("sharded_kv", 3, &["--groups", "8"]);
    browser.open(&format!("http://{}/dashboard", cluster.http(2)));
    let total = |v: &serde_json::Value| -> u64 {
        v["leaders"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(|n| n.as_u64()).sum())
    };
    browser.wait_for("all 8 groups led", HOST_DASHBOARD_STATE, SECS(60), |v| {
        v["host"] == "2" && v["groups"] == 8 && v["led"] == 8 && total(v) == 8
    });
    cluster.kill(1);
    let shown = browser.wait_for(
        "every group led by host 2 or 3",
        HOST_DASHBOARD_STATE,
        SECS(60),
        |v| v["led"] == 8 && total(v) == 8 && v["leaders"].get("1").is_none_or(|n| n == 0),
    );
    println!("after host 1 died the host dashboard shows {shown}");
}

#[test]
fn operator_commands_work_against_a_running_cluster() {
    let mut cluster = process::ProcessCluster::start("counter", 3);
    let leader = cluster.wait_leader(&[1, 2, 3], SECS(30));
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let endpoints = format!("{},{}", cluster.http(leader), cluster.http(follower));

    // bench: writes through the leader and a follower (forwarded).
    let (code, out) = process::regatta(&[
        "bench",
        "--path",
        "/counter/incr",
        "--endpoints",
        &endpoints,
        "--clients",
        "4",
        "--seconds",
        "1",
    ]);
    assert_eq!(code, Some(0), "{out}");
    let ok: u64 = out
        .lines()
        .find_map(|l| {
            l.split(" writes ok")
                .next()
                .filter(|_| l.contains("writes ok"))
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {out}"));
    assert!(ok > 0, "{out}");
    assert!(out.contains("p99"), "{out}");
    let applied = cluster.status(leader).unwrap()["commit_index"]
        .as_u64()
        .unwrap();
    assert!(applied >= ok, "{applied} < {ok}");

    // GET /metrics on every node parses, names the node, and counts what
    // the bench did: one leader, durable writes everywhere, TCP bytes to
    // both peers, commit latencies on the leader.
    let mut leaders = 0.0;
    for id in [1, 2, 3] {
        let (status, body) = process::HttpConnection::connect(cluster.http(id))
            .unwrap()
            .exchange("GET", "/metrics", None, &[])
            .unwrap();
        assert_eq!(status, 200);
        let text = String::from_utf8(body).unwrap();
        let samples = exposition::parse_exposition(&text);
        let value = |name: &str| -> f64 {
            samples
                .iter()
                .filter(|(n, _, _)| n == name)
                .map(|(_, _, v)| *v)
                .sum()
        };
        assert!(samples
            .iter()
            .all(|(_, labels, _)| labels.contains(&("node".into(), id.to_string()))));
        leaders += value("regatta_is_leader");
        assert!(value("regatta_fsync_latency_seconds_count") > 0.0, "{text}");
        assert!(value("regatta_log_bytes") > 0.0, "{text}");
        assert!(
            value("regatta_write_batch_entries_sum") >= ok as f64,
            "{text}"
        );
        let sent_to = |peer: u64| -> f64 {
            samples
                .iter()
                .filter(|(n, labels, _)| {
                    n == "regatta_peer_sent_bytes_total"
                        && labels.contains(&("peer".into(), peer.to_string()))
                })
                .map(|(_, _, v)| *v)
                .sum()
        };
        // The leader talks to both followers; a follower to the leader (and
        // maybe, briefly, to the other follower: answering its pre-vote
        // when both campaigned at start-up).
        if id == leader {
            for peer in [1, 2, 3].into_iter().filter(|p| *p != id) {
                assert!(sent_to(peer) > 0.0, "{text}");
            }
        } else {
            assert!(sent_to(leader) > 0.0, "{text}");
        }
        if id == leader {
            assert!(
                value("regatta_commit_latency_seconds_count") >= ok as f64,
                "{text}"
            );
            assert!(value("regatta_writes_submitted_total") > 0.0, "{text}");
        }
    }
    assert_eq!(leaders, 1.0);

    // status, from a follower's address: every member, one leader.
    let (code, out) =
        process::regatta(&["status", "--endpoint", &cluster.http(follower).to_string()]);
    assert_eq!(code, Some(0), "{out}");
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| ID"))
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!(
        rows.iter().filter(|r| r.contains("| leader ")).count(),
        1,
        "{out}"
    );
    assert!(out.contains(&format!("leader: node {leader} ")), "{out}");

    // A member down shows as unreachable, the rest still answer.
    cluster.kill(follower);
    let (code, out) =
        process::regatta(&["status", "--endpoint", &cluster.http(leader).to_string()]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.matches("unreachable").count(), 1, "{out}");

    // An address where nothing serves: a clear error, exit 1.
    let nobody = format!("127.0.0.1:{}", process::free_port());
    let (code, _) = process::regatta(&["status", "--endpoint", &nobody]);
    assert_eq!(code, Some(1));

    // check disk: two measurements and a verdict (PASS exits 0, FAIL 3).
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = process::regatta(&[
        "check",
        "disk",
        "--dir",
        dir.path().to_str().unwrap(),
        "--seconds",
        "1",
    ]);
    assert!(matches!(code, Some(0 | 3)), "{out}");
    assert!(out.contains("single-entry durable write: p50"), "{out}");
    assert!(out.contains("256-entry group commit"), "{out}");
    assert_eq!(
        out.matches("PASS").count() + out.matches("FAIL").count(),
        2,
        "{out}"
    );
    assert_eq!(code == Some(0), !out.contains("FAIL"), "{out}");
    // The scratch store is removed.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
