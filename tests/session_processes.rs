//! Exactly-once over HTTP: three counter processes, clients in sessions
//! retrying every write whose outcome is unknown — through whichever node
//! answers — with the same sequence number until the answer is definite,
//! while the leader is SIGKILLed and restarted and a follower frozen. The
//! final value is exactly the number of increments: none lost, none twice.

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
    headers: &[(&str, String)],
) -> Result<(u16, Value), HttpError> {
    HttpConnection::connect(addr)?.request_with("POST", path, None, headers)
}

/// Sends `path` to the nodes in turn, starting at `first`, until one
/// answers 200; panics on an answer no retry can fix.
fn until_definite(
    nodes: &[SocketAddr],
    first: usize,
    path: &str,
    headers: &[(&str, String)],
) -> Value {
    let started = Instant::now();
    let mut at = first;
    loop {
        assert!(
            started.elapsed() < DEFINITE_WITHIN,
            "{path} {headers:?}: no definite answer within {DEFINITE_WITHIN:?}"
        );
        match request(nodes[at % nodes.len()], path, headers) {
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
        let session = {
            let mut sessions = sessions.lock().unwrap();
            sessions
                .entry(client)
                .or_insert_with(|| {
                    let v = until_definite(&nodes, first, "/cluster/session", &[]);
                    v["session"].as_u64().expect("session id").to_string()
                })
                .clone()
        };
        let headers = [
            ("Regatta-Session", session.clone()),
            ("Regatta-Sequence", seq.to_string()),
        ];
        let v = until_definite(&nodes, first, "/counter/incr", &headers);
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
