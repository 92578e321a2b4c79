//! The deterministic simulator in the test suite: seeds of 3- and 5-node
//! clusters under every fault, checked for Raft's invariants and for a
//! linearizable client history; and determinism itself.

use std::time::Duration;

use regatta::testing::sim::{
    counter, counter_with, run_counter, Counter, Faults, HostSimulation, Simulation,
};

/// First seed of this run: `REGATTA_SIM_SEED` replays from another one.
fn first_seed() -> u64 {
    std::env::var("REGATTA_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn run_seeds(nodes: u64, faults: Faults, seeds: u64) {
    run_sim_seeds(&counter(nodes, faults), nodes, seeds);
}

fn run_sim_seeds(sim: &Simulation<Counter>, nodes: u64, seeds: u64) {
    let first = first_seed();
    let started = std::time::Instant::now();
    let mut simulated = Duration::ZERO;
    let mut acked = 0;
    for seed in first..first + seeds {
        let report = run_counter(sim, seed).unwrap_or_else(|f| panic!("{f}"));
        eprintln!(
            "seed {seed}: {} of {} writes acknowledged, {} elections, {} crashes, trace {:#x}",
            report.acknowledged(),
            report.history.len(),
            report.elections,
            report.crashes,
            report.trace
        );
        simulated += report.simulated;
        acked += report.acknowledged();
    }
    let wall = started.elapsed();
    eprintln!(
        "{seeds} seeds, {nodes} nodes: {acked} acknowledged writes, {simulated:?} simulated in {wall:?} ({:.0}x)",
        simulated.as_secs_f64() / wall.as_secs_f64()
    );
}

#[test]
fn three_nodes_every_fault() {
    run_seeds(3, Faults::all(), 300);
}

/// A state machine that answers each batch a few milliseconds late (as
/// one on a busy thread of its own), with clients in exactly-once
/// sessions: commits pile up behind it, and batches grow.
#[test]
fn three_nodes_slow_state_machine_sessions() {
    let sim = counter_with(3, Faults::all(), true).sessions(true);
    run_sim_seeds(&sim, 3, 150);
}

#[test]
fn five_nodes_every_fault() {
    run_seeds(5, Faults::all(), 100);
}

#[test]
fn three_nodes_lossy_network_only() {
    let faults = Faults {
        crashes: false,
        membership: false,
        ..Faults::all()
    };
    run_seeds(3, faults, 40);
}

/// Several groups on shared hosts (multi-raft): host crashes take every
/// group on the host down at once, quiet groups wait on the hosts'
/// heartbeat, and each group is checked on its own (invariants,
/// linearizability, progress) and against the others (no write applied by
/// another group; once idle, only host heartbeats travel).
fn run_host_seeds(hosts: u64, groups: u64, seeds: u64) {
    let sim = HostSimulation::new(hosts, groups).faults(Faults::all());
    let first = first_seed();
    let started = std::time::Instant::now();
    let mut acked = 0;
    for seed in first..first + seeds {
        let report = sim.run(seed).unwrap_or_else(|f| panic!("{f}"));
        eprintln!(
            "seed {seed}: {:?} writes acknowledged per group, {} elections, {} host crashes, quiet {:?} after the clients stopped, {} messages in the idle second, trace {:#x}",
            report.acknowledged,
            report.elections,
            report.crashes,
            report.quiet_after,
            report.idle_messages,
            report.trace
        );
        acked += report.acknowledged.iter().sum::<usize>();
    }
    eprintln!(
        "{seeds} seeds, {groups} groups on {hosts} hosts: {acked} acknowledged writes in {:?}",
        started.elapsed()
    );
}

#[test]
fn four_groups_on_three_hosts_every_fault() {
    run_host_seeds(3, 4, 150);
}

#[test]
fn eight_groups_on_five_hosts_every_fault() {
    run_host_seeds(5, 8, 60);
}

#[test]
fn many_groups_same_seed_same_run() {
    let sim = HostSimulation::new(4, 6).faults(Faults::all());
    let a = sim.run(42).unwrap_or_else(|f| panic!("{f}"));
    let b = sim.run(42).unwrap_or_else(|f| panic!("{f}"));
    assert!(a.messages > 100, "the run did something");
    assert_eq!(
        (a.trace, a.messages, &a.acknowledged),
        (b.trace, b.messages, &b.acknowledged),
        "seed 42 ran differently twice"
    );
}

/// Seeds that once found a bug, kept as regression tests.
#[test]
fn seeds_that_found_bugs() {
    // A duplicated forward answered "not leader" by the restarted leader
    // that had proposed the original: the write was retried and applied
    // twice (tests/safety.rs has the targeted test).
    let sim = counter(3, Faults::all());
    run_counter(&sim, 17174).unwrap_or_else(|f| panic!("{f}"));
    // A forwarded write was proposed (tagged) by the leader, a network
    // duplicate of the forward was answered "not leader" after that
    // leader stepped down, and the forwarding node, leader itself by the
    // time it retried, proposed the retry with its tag stripped: applied
    // twice (tests/safety.rs has the targeted test).
    run_counter(&sim, 104_799).unwrap_or_else(|f| panic!("{f}"));
    // A forwarded write was applied, a duplicate's "not leader" reached
    // the forwarding node first, and that node crashed before its client's
    // retry: the client was told "shutting down" (definite: not applied).
    // Once an attempt was forwarded, no failure is definite
    // (tests/second_review.rs has the targeted test).
    run_counter(&sim, 410).unwrap_or_else(|f| panic!("{f}"));
    // Disk replacement (issue 23): a member removed from the configuration
    // had its incarnations forgotten, so a late message from its older
    // incarnation passed for a new one, and the leader ignored the
    // member's real incarnation once it was added back.
    run_counter(&sim, 1371).unwrap_or_else(|f| panic!("{f}"));
    run_counter(&counter(5, Faults::all()), 572).unwrap_or_else(|f| panic!("{f}"));
    // A founder restarted before its founding entry was durable had
    // received the cluster's log from the leader, then founded anyway and
    // took the founding configuration for its own: it was elected by a
    // stale majority without a committed entry (leader completeness).
    run_counter(&sim, 11_381).unwrap_or_else(|f| panic!("{f}"));
    // A waiting founder kept an old "pending" answer of a founder that
    // had founded since, and waited for a founder whose disk was lost.
    run_counter(&sim, 7084).unwrap_or_else(|f| panic!("{f}"));
    // Founders wrote their incarnations into the founding entry, and two
    // founders that had heard different incarnations of a third wrote
    // different first entries (state machine safety).
    run_counter(&sim, 49_267).unwrap_or_else(|f| panic!("{f}"));
    // A voter's disk was replaced and the node started with --join: on
    // its new disk it voted as soon as it held a configuration naming it,
    // and a node missing a committed entry was elected with its vote.
    // Votes now come only from the incarnation a configuration pins (or
    // an unpinned founder's). (Seed 81,100 found the same before the
    // simulator's operator learned `replace`.)
    run_counter(&sim, 14_423).unwrap_or_else(|f| panic!("{f}"));
    // A founder crashed after founding, before any election, and forgot
    // whom it founded with: it answered "the cluster exists" to the other
    // two, which then refused to found — no leader, ever.
    run_counter(&sim, 3811).unwrap_or_else(|f| panic!("{f}"));
    // A founder restarted with its old flags on a replaced disk received
    // the log from a stale leader (term 3) before its founding check
    // refused it, and acknowledged it: that leader committed entries with
    // a disk that had forgotten it moved to term 4, where another leader
    // was already elected (a committed entry to be overwritten). A
    // leader no longer counts an unpinned voter's replacement incarnation,
    // and a node becomes a founder only once the founding check passes.
    run_counter(&sim, 3898).unwrap_or_else(|f| panic!("{f}"));
    // A founder heard the leader of term 2 while it waited to found, and
    // stored term 2; founding then stored term 1 over it. It acknowledged
    // that leader's entries (term 2 in memory, so nothing more to store),
    // crashed, came back in term 1 with term-2 entries, and won term 2 a
    // second time (election safety).
    run_counter(&sim, 100_455).unwrap_or_else(|f| panic!("{f}"));
    // Sessions under pressure (evicted while copies are in flight). Seed
    // 152: a write and its duplicate in one batch, then a session opened
    // that evicted theirs: the duplicate was answered "does not decode", a
    // definite error for an applied write. Seed 156: a forwarded session
    // write, retried by its node after a duplicate's "not leader", was
    // refused by its evicted session: passed on as definite, though the
    // first copy was applied (tests/second_review.rs and the applier's
    // unit test have the targeted tests).
    let sessions = counter(3, Faults::all()).sessions(true);
    run_counter(&sessions, 152).unwrap_or_else(|f| panic!("{f}"));
    run_counter(&sessions, 156).unwrap_or_else(|f| panic!("{f}"));
    // A leader restarted after a voter's disk was replaced heard the new
    // incarnation first, then a late message of the old (pinned) one, and
    // took the old one for the news: the real node was ignored for good
    // and could never be replaced. Pinned incarnations now seed the table.
    run_counter(&sessions, 11_732).unwrap_or_else(|f| panic!("{f}"));
    // A voter being replaced was dropped from its group: the leader that
    // proposed the demotion's joint entry lost its term, and its successor
    // finished the change from the entry, which did not name the voter a
    // learner (core/confchange.rs has the targeted test).
    let hosts = HostSimulation::new(4, 6).faults(Faults::all());
    hosts.run(5695).unwrap_or_else(|f| panic!("{f}"));
    // Two founders founded with a third that was cut off; one of the two
    // restarted and forgot whom it had founded with (kept in memory
    // only), answered the third "the cluster exists", and the third, which
    // held the cluster's log already, refused to go on; the other founder's
    // disk was then replaced: no quorum, ever. Founders now keep the
    // incarnations they founded with on disk.
    let slow_sessions = counter_with(3, Faults::all(), true).sessions(true);
    run_counter(&slow_sessions, 3_002_595).unwrap_or_else(|f| panic!("{f}"));
    // A founder lost its unsynced founding entry; a founder on a replaced
    // disk, waiting to be added back, answered it "exists" before the one
    // that had founded with it answered: it refused at once and stopped
    // for good, and with the replaced one no quorum was left. An "exists"
    // now waits for the other answers, and "founded with you" wins
    // (core/founding.rs has the targeted test).
    run_counter(&sim, 7_032_672).unwrap_or_else(|f| panic!("{f}"));
    // A founder followed the log a leader had sent it while it waited to
    // found; its election timer had fired meanwhile (it could not vote
    // yet) and was never armed again, so once that leader's disk was
    // replaced it never campaigned, and the other survivor, behind it,
    // could not win its vote.
    run_counter(&sim, 8_038_541).unwrap_or_else(|f| panic!("{f}"));
}

#[test]
fn same_seed_same_run() {
    let sim = counter(3, Faults::all());
    let a = sim.run(42).unwrap_or_else(|f| panic!("{f}"));
    let b = sim.run(42).unwrap_or_else(|f| panic!("{f}"));
    assert!(a.messages > 100, "the run did something");
    assert_eq!(
        (a.trace, a.messages, a.history.len()),
        (b.trace, b.messages, b.history.len()),
        "seed 42 ran differently twice"
    );
}

/// Clients in sessions retry every unknown outcome until it is definite:
/// the linearizability check then sees nearly every write's answer, and a
/// write applied twice would show as a counter value no history explains.
#[test]
fn three_nodes_every_fault_clients_in_sessions() {
    let first = first_seed();
    let sim = counter(3, Faults::all()).sessions(true);
    let (mut acked, mut unknown) = (0, 0);
    for seed in first..first + 60 {
        let report = run_counter(&sim, seed).unwrap_or_else(|f| panic!("{f}"));
        acked += report.acknowledged();
        unknown += report.history.len() - report.acknowledged();
    }
    eprintln!("60 seeds with sessions: {acked} writes acknowledged, {unknown} left unknown");
}
