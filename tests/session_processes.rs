//! Exactly-once over HTTP: three processes of the counter (and of the
//! queue), clients in sessions retrying every write whose outcome is
//! unknown — through whichever node answers — with the same sequence
//! number until the answer is definite, while the leader is SIGKILLed and
//! restarted and a follower frozen. The counter ends at exactly the number
//! of increments; every pushed item is popped or left exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::process::{HttpConnection, HttpError, ProcessCluster};
use common::process_faults::{read_all, run_faults, shut_down, Clients, LEADER_WAIT};
use serde_json::Value;

/// How long one write may take to get a definite answer.
const DEFINITE_WITHIN: Duration = Duration::from_secs(90);

/// One request on a fresh connection, with headers.
fn request(
    addr: SocketAddr,
    path: &str,
    body: &str,
    headers: &[(&str, String)],
) -> Result<(u16, Value), HttpError> {
    HttpConnection::connect(addr)?.request_with("POST", path, Some(body), headers)
}

/// Sends `path` to the nodes in turn, starting at `first`, until one
/// answers 200; panics on an answer no retry can fix.
fn until_definite(
    nodes: &[SocketAddr],
    first: usize,
    path: &str,
    headers: &[(&str, String)],
) -> Value {
    until_definite_with_body(nodes, first, path, "", headers)
}

/// [`until_definite`] with a request body.
fn until_definite_with_body(
    nodes: &[SocketAddr],
    first: usize,
    path: &str,
    body: &str,
    headers: &[(&str, String)],
) -> Value {
    let started = Instant::now();
    let mut at = first;
    loop {
        assert!(
            started.elapsed() < DEFINITE_WITHIN,
            "{path} {headers:?}: no definite answer within {DEFINITE_WITHIN:?}"
        );
        match request(nodes[at % nodes.len()], path, body, headers) {
            Ok((200, v)) => return v,
            // No leader, or unknown outcome: the same request again (the
            // session makes that safe), on the next node.
            Ok((503, _)) | Err(_) => {
                at += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok((status, v)) => panic!("{path} {headers:?}: {status} {v}"),
        }
    }
}

/// The session of client `client`, opened on first use.
fn session_of(
    sessions: &Mutex<BTreeMap<usize, String>>,
    client: usize,
    nodes: &[SocketAddr],
    first: usize,
) -> String {
    let mut sessions = sessions.lock().unwrap();
    sessions
        .entry(client)
        .or_insert_with(|| {
            let v = until_definite(nodes, first, "/cluster/session", &[]);
            v["session"].as_u64().expect("session id").to_string()
        })
        .clone()
}

/// Each client has one write in flight: it has the answers below `seq`.
fn tagged(session: &str, seq: u64) -> [(&'static str, String); 3] {
    [
        ("Regatta-Session", session.to_string()),
        ("Regatta-Sequence", seq.to_string()),
        ("Regatta-Received", (seq - 1).to_string()),
    ]
}

#[test]
fn retried_increments_apply_exactly_once_through_kills_and_pauses() {
    let mut cluster = ProcessCluster::start("counter", 3);
    cluster.wait_leader(&[1, 2, 3], LEADER_WAIT);
    let nodes: Vec<SocketAddr> = cluster.nodes.values().map(|n| n.http).collect();
    let sessions: Mutex<BTreeMap<usize, String>> = Mutex::new(BTreeMap::new());
    // The first attempt goes where the harness says (it avoids dead and
    // frozen nodes); retries go round the others.
    let clients = Clients::start(&cluster, 4, move |client, addr, seq| {
        let first = nodes.iter().position(|n| *n == addr).unwrap_or(client);
        let session = session_of(&sessions, client, &nodes, first);
        let v = until_definite(&nodes, first, "/counter/incr", &tagged(&session, seq));
        let value = v["value"].as_u64().expect("value");
        ((session, seq, value), true)
    });
    run_faults(&mut cluster, &clients);
    let writes = clients.stop();

    let views = read_all(&cluster, "/counter");
    let finals: BTreeSet<u64> = views
        .values()
        .map(|v| v["value"].as_u64().expect("value"))
        .collect();
    assert_eq!(finals.len(), 1, "nodes disagree: {views:?}");
    let fin = *finals.first().expect("a value");
    // Every write was retried until it succeeded: each counted once.
    let values: BTreeSet<u64> = writes.iter().map(|(_, _, v)| *v).collect();
    println!("{} writes, final value {fin}", writes.len());
    assert_eq!(
        values.len(),
        writes.len(),
        "two writes were answered the same value"
    );
    assert_eq!(fin, writes.len() as u64, "increments lost or applied twice");
    shut_down(&mut cluster);
}

#[test]
fn retried_pushes_and_pops_apply_exactly_once_through_kills_and_pauses() {
    let mut cluster = ProcessCluster::start("queue", 3);
    cluster.wait_leader(&[1, 2, 3], LEADER_WAIT);
    let nodes: Vec<SocketAddr> = cluster.nodes.values().map(|n| n.http).collect();
    let sessions: Mutex<BTreeMap<usize, String>> = Mutex::new(BTreeMap::new());
    let driver = nodes.clone();
    // Clients 0 and 1 push unique items, 2 and 3 pop.
    let clients = Clients::start(&cluster, 4, move |client, addr, seq| {
        let first = driver.iter().position(|n| *n == addr).unwrap_or(client);
        let session = session_of(&sessions, client, &driver, first);
        let headers = tagged(&session, seq);
        if client < 2 {
            let item = format!("c{client}-{seq}");
            let path = "/queue/push";
            let body = format!("{{\"item\":\"{item}\"}}");
            until_definite_with_body(&driver, first, path, &body, &headers);
            ((Some(item), None), true)
        } else {
            let v = until_definite(&driver, first, "/queue/pop", &headers);
            let popped = v["item"].as_str().map(str::to_string);
            ((None, popped), true)
        }
    });
    run_faults(&mut cluster, &clients);
    let ops = clients.stop();

    let pushed: BTreeSet<String> = ops.iter().filter_map(|(p, _)| p.clone()).collect();
    let mut taken: Vec<String> = ops.iter().filter_map(|(_, p)| p.clone()).collect();
    // Drain what is left, in a session of its own.
    let drain = until_definite(&nodes, 0, "/cluster/session", &[]);
    let drain = drain["session"].as_u64().expect("session").to_string();
    for seq in 1.. {
        let v = until_definite(&nodes, seq as usize, "/queue/pop", &tagged(&drain, seq));
        match v["item"].as_str() {
            Some(item) => taken.push(item.to_string()),
            None => break,
        }
    }
    let unique: BTreeSet<String> = taken.iter().cloned().collect();
    println!("{} pushed, {} taken", pushed.len(), taken.len());
    assert_eq!(unique.len(), taken.len(), "an item was popped twice");
    assert_eq!(unique, pushed, "items lost or pushed twice");
    shut_down(&mut cluster);
}
