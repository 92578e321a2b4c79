//! Many Raft groups on shared simulated hosts (multi-raft under faults).
//!
//! A simulated host is what a [`crate::Host`] is, in virtual time: every
//! group replica it runs shares its fate (a crash drops all of them at
//! once, with their unsynced writes), its disk (slow for all of them, a
//! crash while any of them writes), its place in the network (partitions
//! cut hosts apart) and its clock. Inbound messages find their group
//! through the same switchboard as a real host's, and the groups quiesce
//! under the same hosts' heartbeat, so every fault also hits quiet groups
//! whose followers wait on another host's heartbeat.
//!
//! Checked per group: Raft's invariants as in the single-group simulator
//! (election safety, leader completeness, state machine safety, log
//! matching), a linearizable client history, progress after healing; and
//! across groups: a write of one group is never applied by another (every
//! command names its group), and once the clients stop every group goes
//! quiet, after which the hosts exchange heartbeats only.
//!
//! Left to the single-group simulator: membership changes, disk
//! replacement and client sessions (a group on a host runs the same code
//! as a single node there).
//!
//! ```
//! use regatta::testing::sim::{Faults, HostSimulation};
//!
//! // Call from a plain thread (not inside an actix or tokio runtime).
//! let sim = HostSimulation::new(3, 4).faults(Faults::all());
//! let report = sim.run(7).unwrap_or_else(|failure| panic!("{failure}"));
//! assert_eq!(report.acknowledged.len(), 4);
//! ```

mod world;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;

use super::check::Checker;
use super::{Failure, Faults};
use crate::config::Config;
use crate::core::types::GroupId;
use crate::state_machine::{Apply, Restore, Snapshot, SnapshotData, StateMachine};

/// Several groups on shared hosts, and their workload; [`HostSimulation::run`]
/// runs one seed.
pub struct HostSimulation {
    hosts: u64,
    groups: u64,
    faults: Faults,
    config: Config,
    duration: Duration,
    clients_per_group: u64,
}

impl HostSimulation {
    /// `groups` groups over `hosts` hosts: each group is founded by three
    /// hosts drawn from the seed (all of them when there are three or
    /// fewer). No faults until [`HostSimulation::faults`] says so.
    pub fn new(hosts: u64, groups: u64) -> Self {
        HostSimulation {
            hosts: hosts.max(1),
            groups: groups.max(1),
            faults: Faults::none(),
            config: Config {
                client_timeout: Duration::from_secs(2),
                ..Config::default()
            },
            duration: Duration::from_secs(5),
            clients_per_group: 2,
        }
    }

    /// The faults to inject ([`Faults::membership`],
    /// [`Faults::disk_replacement`] and [`Faults::session_pressure`] are
    /// left to the single-group simulator).
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Virtual time under faults, before the healing phase (default 5 s).
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// Concurrent clients per group (default 2).
    pub fn clients_per_group(mut self, clients: u64) -> Self {
        self.clients_per_group = clients;
        self
    }

    /// Runs the seed `seed` to the end, including each group's
    /// linearizability check. Must be called outside any actix or tokio
    /// runtime: it builds its own, with a paused clock.
    pub fn run(&self, seed: u64) -> Result<HostReport, Failure> {
        fastrand::seed(seed);
        let wall = std::time::Instant::now();
        let system = super::paused_system();
        // Made inside the runtime: its clock (paused, virtual) is the one
        // every instant of the run is measured on.
        let report = system.block_on(async { world::HostWorld::new(self, seed).run().await })?;
        Ok(HostReport {
            wall: wall.elapsed(),
            ..report
        })
    }

    fn failure(&self, seed: u64, at: Duration, reason: String) -> Failure {
        Failure {
            seed,
            nodes: self.hosts,
            groups: self.groups,
            at,
            reason,
        }
    }
}

/// What a run of several groups did.
#[derive(Debug)]
pub struct HostReport {
    /// The seed of the run.
    pub seed: u64,
    /// Virtual time the run covered.
    pub simulated: Duration,
    /// Wall-clock time it took.
    pub wall: Duration,
    /// Digest of every message delivery and client outcome with its
    /// virtual time: equal for two runs of one seed.
    pub trace: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Leaders elected, over all groups.
    pub elections: u64,
    /// Hosts crashed.
    pub crashes: u64,
    /// Writes acknowledged, per group (index 0 is group 1).
    pub acknowledged: Vec<usize>,
    /// Virtual time from the clients' stop until every replica of every
    /// group was quiet.
    pub quiet_after: Duration,
    /// Messages delivered in the second after every group went quiet:
    /// host heartbeats only.
    pub idle_messages: u64,
}

/// The amount of a write carries its group above this many bits.
const GROUP_SHIFT: u32 = 40;

/// The command a client of `group` sends: an amount no other write adds,
/// naming its group.
fn command(group: GroupId, client: u64, seq: u64) -> u64 {
    (group << GROUP_SHIFT) + (client + 1) * 1_000_000 + seq
}

/// A counter that knows its group, and reports a command of another
/// group to the run's checker of its own.
pub(super) struct GroupCounter {
    group: GroupId,
    value: u64,
    checker: Arc<Mutex<Checker>>,
}

impl Actor for GroupCounter {
    type Context = Context<Self>;
}

impl StateMachine for GroupCounter {
    type Command = u64;
    type Response = u64;
}

impl Handler<Apply<GroupCounter>> for GroupCounter {
    type Result = Vec<u64>;
    fn handle(&mut self, batch: Apply<GroupCounter>, _: &mut Context<Self>) -> Vec<u64> {
        batch
            .entries
            .into_iter()
            .map(|(log_id, n)| {
                let from = n >> GROUP_SHIFT;
                if from != self.group {
                    self.checker
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .fail(format!(
                            "group {} applied a write of group {from} at {log_id:?}",
                            self.group
                        ));
                }
                self.value = self.value.wrapping_add(n);
                self.value
            })
            .collect()
    }
}

impl Handler<Snapshot> for GroupCounter {
    type Result = Result<SnapshotData, String>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        Ok(self.value.to_be_bytes().to_vec().into())
    }
}

impl Handler<Restore> for GroupCounter {
    type Result = Result<(), String>;
    fn handle(&mut self, r: Restore, _: &mut Context<Self>) -> Self::Result {
        let bytes: [u8; 8] = r.data[..].try_into().map_err(|_| "bad counter snapshot")?;
        self.value = u64::from_be_bytes(bytes);
        Ok(())
    }
}
