//! One table row: a fresh cluster, a warm-up, the runs, and notes on what
//! went wrong.

use std::net::SocketAddr;
use std::path::Path;

use crate::client::status;
use crate::cluster::Cluster;
use crate::load::{run_clients, Tally};
use crate::support::progress;
use crate::support::Sample;
use crate::Plan;

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Target {
    /// Every client on the leader.
    Leader,
    /// Client `i` on node `i mod 3`, followers first.
    Spread,
    /// Every client on one follower (which forwards every write).
    Follower,
}

impl Target {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Target::Leader => "leader",
            Target::Spread => "spread",
            Target::Follower => "follower",
        }
    }
}

/// One table row.
pub(crate) struct Row {
    pub(crate) samples: Vec<Sample>,
    pub(crate) non_200: u64,
    pub(crate) io_errors: u64,
    /// Clients talking to a follower.
    pub(crate) on_followers: usize,
    pub(crate) notes: Vec<String>,
}

fn describe_failures(what: &str, tally: &Tally, notes: &mut Vec<String>) {
    for (status, (n, body)) in &tally.non_200 {
        notes.push(format!("{what}: {n} × {status}, e.g. {body}"));
    }
    if tally.io_errors > 0 {
        notes.push(format!(
            "{what}: {} I/O errors, the first: {}",
            tally.io_errors,
            tally.first_io_error.as_deref().unwrap_or("?")
        ));
    }
}

/// A fresh cluster, a warm-up, `plan.runs` runs.
pub(crate) fn measure_row(
    plan: &Plan,
    binary: &Path,
    target: Target,
    clients: usize,
) -> Result<Row, String> {
    let (mut cluster, leader) = Cluster::start(binary)?;
    let result = measure_on(&cluster, leader, plan, target, clients);
    match result {
        Ok(mut row) => {
            row.notes.extend(cluster.stop());
            Ok(row)
        }
        Err(e) => {
            cluster.keep();
            Err(e)
        }
    }
}

fn measure_on(
    cluster: &Cluster,
    leader: u64,
    plan: &Plan,
    target: Target,
    clients: usize,
) -> Result<Row, String> {
    let leader_addr = cluster.node(leader).http;
    let term = status(leader_addr).and_then(|s| s["term"].as_u64());
    let mut order: Vec<SocketAddr> = cluster
        .nodes
        .iter()
        .filter(|n| n.id != leader)
        .map(|n| n.http)
        .collect();
    order.push(leader_addr);
    let targets: Vec<SocketAddr> = match target {
        Target::Leader => vec![leader_addr; clients],
        Target::Spread => (0..clients).map(|i| order[i % order.len()]).collect(),
        Target::Follower => vec![order[0]; clients],
    };
    let on_followers = targets.iter().filter(|a| **a != leader_addr).count();
    let what = format!("{clients} clients → {}", target.name());
    progress(&format!(
        "[http] {what}: leader node {leader}, warming up ({})",
        cluster.root().display()
    ));

    let marks = cluster.log_marks();
    let mut notes = Vec::new();
    let (warm, _) = run_clients(&targets, plan.warmup)?;
    describe_failures(&format!("{what}, warm-up"), &warm, &mut notes);

    let mut samples = Vec::with_capacity(plan.runs);
    let mut all = Tally::default();
    for i in 1..=plan.runs {
        progress(&format!("[http] {what}: run {i}/{}", plan.runs));
        let (mut tally, elapsed) = run_clients(&targets, plan.run)?;
        samples.push(Sample::from_latencies(&mut tally.latencies, elapsed, 0));
        tally.latencies = Vec::new();
        all.merge(tally);
    }
    progress("");
    describe_failures(&what, &all, &mut notes);

    match status(leader_addr) {
        Some(s) if s["role"] == "leader" && s["term"].as_u64() == term => {}
        Some(s) => notes.push(format!(
            "{what}: node {leader} lost leadership during the runs (now {}, term {}, \
             leader {}); writes were forwarded",
            s["role"], s["term"], s["leader"]
        )),
        None => notes.push(format!(
            "{what}: node {leader} no longer answers GET /cluster/status"
        )),
    }
    for (node, count, quoted) in cluster.problems_since(&marks) {
        notes.push(format!(
            "{what}: node {node} logged {count} WARN/ERROR lines after start-up, \
             the first:\n    {}",
            quoted.join("\n    ")
        ));
    }
    Ok(Row {
        samples,
        non_200: all.non_200_count(),
        io_errors: all.io_errors,
        on_followers,
        notes,
    })
}
