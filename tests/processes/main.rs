//! Process-level tests: three `serve` processes of the counter and queue
//! examples on loopback, driven over HTTP while nodes are SIGKILLed,
//! restarted on their data directories, and frozen with SIGSTOP.
//!
//! This file: no acknowledged write lost under faults. Modules: `cli`
//! (flags, data directories, bad HTTP requests), `membership` (catching
//! up by snapshot, growing and shrinking, replacing every founder),
//! `operations` (backup and restore), `operator` (the `regatta` command
//! line against the kv example),
//! `security` (admin token, HTTPS, connection floods), `sharded` (the
//! sharded kv example: many groups on three hosts, one host killed).

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::process::{http, write, ProcessCluster, WriteOutcome};
use common::process_faults::{read_all, run_faults, shut_down, Clients, LEADER_WAIT};

mod cli;
mod membership;
mod operations;
mod operator;
mod security;
mod sharded;

#[test]
fn counter_processes_lose_no_acknowledged_increment() {
    lose_no_acknowledged_increment(ProcessCluster::start("counter", 3));
}

/// The same kill/restart run with Raft traffic over mutual TLS.
#[test]
fn counter_processes_over_mutual_tls_lose_no_acknowledged_increment() {
    let cluster = ProcessCluster::start_tls("counter", 3, &[]);
    cluster.wait_leader(&[1, 2, 3], LEADER_WAIT);
    for id in 1..=3 {
        let log = std::fs::read_to_string(cluster.log_path(id)).expect("log");
        assert!(log.contains("security=\"mutual TLS\""), "node {id}:\n{log}");
    }
    lose_no_acknowledged_increment(cluster);
}

fn lose_no_acknowledged_increment(mut cluster: ProcessCluster) {
    cluster.wait_leader(&[1, 2, 3], LEADER_WAIT);
    // Every increment is by 1, so the values answered are all different and
    // the final value counts the increments that took effect.
    let clients = Clients::start(&cluster, 4, |_, addr, _| {
        let outcome = write(addr, "/counter/incr", None);
        let ok = matches!(outcome, WriteOutcome::Acked(_));
        (outcome, ok)
    });
    run_faults(&mut cluster, &clients);
    let outcomes = clients.stop();

    let mut values = BTreeSet::new();
    let mut maybe = 0;
    for outcome in &outcomes {
        match outcome {
            WriteOutcome::Acked(v) => {
                let value = v["value"].as_u64().expect("value in the answer");
                assert!(values.insert(value), "two increments answered {value}");
            }
            WriteOutcome::Maybe => maybe += 1,
            WriteOutcome::NotApplied => {}
        }
    }
    let views = read_all(&cluster, "/counter");
    let finals: BTreeSet<u64> = views
        .values()
        .map(|v| v["value"].as_u64().expect("value"))
        .collect();
    assert_eq!(finals.len(), 1, "nodes disagree: {views:?}");
    let fin = *finals.first().expect("one value");
    let acked = values.len() as u64;
    println!("{acked} acknowledged, {maybe} indeterminate, final value {fin}");
    assert!(
        fin >= acked,
        "lost increments: {acked} acknowledged, value {fin}"
    );
    assert!(
        fin <= acked + maybe,
        "more increments than requests: {fin} > {acked} + {maybe}"
    );
    assert!(
        values.last().is_some_and(|max| *max <= fin),
        "an answered value exceeds the final value"
    );
    shut_down(&mut cluster);
}

/// What a queue client did.
#[derive(Debug)]
enum QueueOp {
    Push(String, WriteOutcome),
    Pop(WriteOutcome),
}

#[test]
fn queue_processes_lose_no_push_and_pop_nothing_twice() {
    let mut cluster = ProcessCluster::start("queue", 3);
    cluster.wait_leader(&[1, 2, 3], LEADER_WAIT);
    // Clients 0 and 1 push unique items, 2 and 3 pop.
    let clients = Clients::start(&cluster, 4, |client, addr, seq| {
        if client < 2 {
            let item = format!("c{client}-{seq}");
            let outcome = write(
                addr,
                "/queue/push",
                Some(&format!("{{\"item\":\"{item}\"}}")),
            );
            let ok = matches!(outcome, WriteOutcome::Acked(_));
            (QueueOp::Push(item, outcome), ok)
        } else {
            let outcome = write(addr, "/queue/pop", None);
            let ok = matches!(outcome, WriteOutcome::Acked(_));
            (QueueOp::Pop(outcome), ok)
        }
    });
    run_faults(&mut cluster, &clients);
    let mut ops = clients.stop();

    // Drain what is left, so every item that took effect is accounted for.
    let addr = cluster.http(1);
    for _ in 0..100_000 {
        let outcome = write(addr, "/queue/pop", None);
        let empty = matches!(&outcome, WriteOutcome::Acked(v) if v["item"].is_null());
        ops.push(QueueOp::Pop(outcome));
        if empty {
            break;
        }
    }

    let mut pushed = BTreeSet::new();
    let mut maybe_pushed = BTreeSet::new();
    for op in &ops {
        match op {
            QueueOp::Push(item, WriteOutcome::Acked(_)) => pushed.insert(item.clone()),
            QueueOp::Push(item, WriteOutcome::Maybe) => maybe_pushed.insert(item.clone()),
            _ => false,
        };
    }
    let mut popped = BTreeSet::new();
    let mut maybe_pops = 0;
    for op in &ops {
        match op {
            QueueOp::Pop(WriteOutcome::Acked(v)) => {
                if let Some(item) = v["item"].as_str() {
                    assert!(popped.insert(item.to_string()), "{item} popped twice");
                    assert!(
                        pushed.contains(item) || maybe_pushed.contains(item),
                        "{item} popped but never pushed"
                    );
                }
            }
            QueueOp::Pop(WriteOutcome::Maybe) => maybe_pops += 1,
            _ => {}
        }
    }
    // An indeterminate pop may have taken an item nobody saw; nothing else
    // may go missing.
    let missing: Vec<&String> = pushed.difference(&popped).collect();
    println!(
        "{} pushes acknowledged, {} popped, {maybe_pops} indeterminate pops, {} missing",
        pushed.len(),
        popped.len(),
        missing.len()
    );
    assert!(
        missing.len() <= maybe_pops,
        "acknowledged pushes lost: {missing:?} (only {maybe_pops} indeterminate pops)"
    );
    for (id, view) in read_all(&cluster, "/queue") {
        assert_eq!(view["len"], 0, "node {id} after draining: {view}");
    }
    shut_down(&mut cluster);
}
