//! One simulated run of several groups: the hosts, their crashes and
//! restarts, the fault schedule, each group's clients, and the checks.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::LocalSet;
use tokio::time::Instant;

use super::{command, GroupCounter, HostReport, HostSimulation};
use crate::config::Config;
use crate::core::types::{GroupId, Membership, NodeId};
use crate::io::IoMode;
use crate::metrics::Role;
use crate::probe::Probe;
use crate::raft::{Environment, Raft};
use crate::storage::MemStorage;
use crate::switchboard::Switchboard;
use crate::testing::sim::check::Checker;
use crate::testing::sim::client::{client_loop, Handles, History, Workload};
use crate::testing::sim::counter::check_counter_history;
use crate::testing::sim::net::{mix, Net};
use crate::testing::sim::world::{catch_a_writer, drive, simulated_io, Disks};
use crate::testing::sim::{Failure, Faults};
use crate::transport::Transport;

mod operator;

type Tasks = Rc<RefCell<Option<LocalSet>>>;

/// One group as the run sees it.
struct Group {
    founders: Membership,
    /// Each founder's storage, kept across the host's crashes.
    storages: BTreeMap<NodeId, MemStorage>,
    checker: Arc<Mutex<Checker>>,
    handles: Handles<GroupCounter>,
    history: History<GroupCounter>,
    /// Hosts whose replica refused to found (it lost its founding state
    /// in a crash): it restarts with --join on an empty disk, and the
    /// operator replaces it.
    joiners: BTreeSet<NodeId>,
    replace_asked: Option<Instant>,
}

/// A host's running incarnation: its task set, dropped whole on a crash.
struct Running {
    switchboard: Arc<Switchboard<GroupCounter>>,
    tasks: Tasks,
    io: IoMode,
    transport: Arc<dyn Transport>,
}

pub(super) struct HostWorld<'a> {
    sim: &'a HostSimulation,
    seed: u64,
    config: Config,
    rng: fastrand::Rng,
    net: Net,
    groups: BTreeMap<GroupId, Group>,
    running: BTreeMap<NodeId, Running>,
    disks: Arc<Mutex<Disks>>,
    write_started: Arc<Notify>,
    incarnations: u64,
    crashes: u64,
    epoch: Instant,
}

impl<'a> HostWorld<'a> {
    pub(super) fn new(sim: &'a HostSimulation, seed: u64) -> Self {
        let mut config = sim.config.clone();
        if sim.faults.snapshots {
            config.snapshot_every = 64;
            config.snapshot_keep_entries = 8;
            config.snapshot_chunk_bytes = 256;
        }
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x0068_6f73_7473);
        let all: Vec<NodeId> = (1..=sim.hosts).collect();
        let groups = (1..=sim.groups)
            .map(|group| {
                let mut hosts = all.clone();
                rng.shuffle(&mut hosts);
                hosts.truncate(3);
                let founders = Membership::new(hosts.iter().copied());
                let storages = hosts.iter().map(|h| (*h, MemStorage::new())).collect();
                let g = Group {
                    founders,
                    storages,
                    checker: Arc::default(),
                    handles: Rc::default(),
                    history: Rc::default(),
                    joiners: BTreeSet::new(),
                    replace_asked: None,
                };
                (group, g)
            })
            .collect();
        HostWorld {
            sim,
            seed,
            config,
            rng,
            net: Net::new(seed, sim.faults.clone()),
            groups,
            running: BTreeMap::new(),
            disks: Arc::new(Mutex::new(Disks::new(seed))),
            write_started: Arc::new(Notify::new()),
            incarnations: 0,
            crashes: 0,
            epoch: Instant::now(),
        }
    }

    fn failure(&self, reason: String) -> Failure {
        self.sim.failure(self.seed, self.epoch.elapsed(), reason)
    }

    /// Every group's invariants so far, and log matching now.
    fn check(&self) -> Result<(), Failure> {
        for (id, group) in &self.groups {
            let mut checker = group.checker.lock().unwrap_or_else(|e| e.into_inner());
            let logs = group
                .storages
                .iter()
                .map(|(host, s)| (*host, s.contents()))
                .collect();
            checker.log_matching(&logs);
            if let Some(v) = checker.violation.clone() {
                return Err(self.failure(format!("group {id}: {v}")));
            }
        }
        Ok(())
    }

    /// Starts host `host` with a replica of every group it founded.
    async fn start(&mut self, host: NodeId) -> Result<(), Failure> {
        self.incarnations += 1;
        let incarnation = self.incarnations;
        let transport = self.net.transport(host, incarnation);
        let switchboard = Arc::new(Switchboard::new(host, 1..=self.sim.hosts, &self.config));
        let clock_percent = if self.sim.faults.clock_skew {
            self.rng.u64(50..=200)
        } else {
            100
        };
        let io = simulated_io(&self.disks, &self.write_started, host, clock_percent);
        let tasks = LocalSet::new();
        tasks.spawn_local(
            switchboard
                .clone()
                .run_heartbeat(transport.clone(), || false),
        );
        let tasks: Tasks = Rc::new(RefCell::new(Some(tasks)));
        tokio::task::spawn_local(drive(tasks.clone()));
        let routing = switchboard.clone();
        self.net.register(
            host,
            incarnation,
            Box::new(move |envelope| {
                // Nothing of the host's own (group deletion) happens here.
                let _ = routing.route(envelope);
            }),
        );
        self.running.insert(
            host,
            Running {
                switchboard,
                tasks,
                io,
                transport,
            },
        );
        tracing::debug!(host, "simulator: host started");
        let groups: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| g.storages.contains_key(&host))
            .map(|(id, _)| *id)
            .collect();
        self.start_replicas(host, &groups).await
    }

    /// Starts the replicas of `groups` on the running host `host`.
    async fn start_replicas(&mut self, host: NodeId, groups: &[GroupId]) -> Result<(), Failure> {
        let Some(running) = self.running.get(&host) else {
            return Ok(());
        };
        // What each group's start needs, prepared outside the task set.
        let mut starts = Vec::new();
        for id in groups {
            let group = &self.groups[id];
            let storage = group.storages[&host].clone();
            let (checker, observed) = (group.checker.clone(), storage.clone());
            let probe: Probe = Some(Arc::new(move |node, event| {
                checker
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .on_event(node, &event, &observed);
            }));
            let mut config = self.config.clone();
            config.cluster_token = format!("{}#group-{id}", config.cluster_token);
            let environment = Environment {
                io: running.io.clone(),
                probe,
                ask_founders: true,
                cluster_name: String::new(),
                group: *id,
                quiesce: Some(running.switchboard.host_liveness()),
                shared_writer: None,
            };
            let sm = GroupCounter {
                group: *id,
                value: 0,
                checker: group.checker.clone(),
            };
            // A replica that lost its founding state joins instead.
            let founders = (!group.joiners.contains(&host)).then(|| group.founders.clone());
            starts.push((*id, config, storage, founders, sm, environment));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let link = running.transport.clone();
        let spawned = running.tasks.borrow().as_ref().map(|tasks| {
            tasks.spawn_local(async move {
                let started: Vec<_> = starts
                    .into_iter()
                    .map(|(id, config, storage, founders, sm, environment)| {
                        let sm = actix::Actor::start(sm);
                        let raft = Raft::start_with(
                            host,
                            config,
                            storage,
                            link.clone(),
                            founders,
                            sm,
                            environment,
                        );
                        (id, raft)
                    })
                    .collect();
                let _ = tx.send(started);
            })
        });
        if spawned.is_none() {
            return Ok(());
        }
        let Ok(started) = rx.await else {
            return Err(self.failure(format!("host {host} start-up did not report")));
        };
        for (id, raft) in started {
            let raft = raft.map_err(|e| {
                self.failure(format!("group {id} failed to start on host {host}: {e}"))
            })?;
            let group = &self.groups[&id];
            self.running[&host]
                .switchboard
                .insert(id, raft.clone(), group.founders.members());
            group.handles.borrow_mut().insert(host, raft);
        }
        Ok(())
    }

    /// Drops every task of host `host` at once: all its groups crash.
    fn crash(&mut self, host: NodeId) {
        self.net.unregister(host);
        for group in self.groups.values() {
            group.handles.borrow_mut().remove(&host);
        }
        if let Some(running) = self.running.remove(&host) {
            self.crashes += 1;
            tracing::debug!(host, "simulator: host crash");
            running.switchboard.drain();
            drop(running.tasks.borrow_mut().take());
        }
    }

    pub(super) async fn run(mut self) -> Result<HostReport, Failure> {
        let net_task = tokio::task::spawn_local(self.net.clone().run());
        for host in 1..=self.sim.hosts {
            self.start(host).await?;
        }
        let stop = Rc::new(std::cell::Cell::new(false));
        let mut clients = Vec::new();
        for (id, group) in &self.groups {
            for c in 0..self.sim.clients_per_group {
                let group_id = *id;
                let client = (group_id - 1) * self.sim.clients_per_group + c;
                clients.push(tokio::task::spawn_local(client_loop(
                    client,
                    Workload {
                        seed: self.seed,
                        handles: group.handles.clone(),
                        history: group.history.clone(),
                        stop: stop.clone(),
                        commands: Arc::new(move |_, client, seq| command(group_id, client, seq)),
                        epoch: self.epoch,
                        sessions: false,
                        idle_gaps: false,
                    },
                )));
            }
        }
        let outcome = self.faults_then_heal().await;
        stop.set(true);
        for c in clients {
            let _ = c.await;
        }
        let outcome = match outcome.and_then(|()| self.check()) {
            Ok(()) => self.wait_until_quiet().await,
            Err(e) => Err(e),
        };
        let hosts: Vec<NodeId> = self.running.keys().copied().collect();
        for host in hosts {
            self.crash(host);
        }
        net_task.abort();
        let (quiet_after, idle_messages) = outcome?;
        self.check()?;
        self.report(quiet_after, idle_messages)
    }

    /// Each group's history checked for linearizability, and the counts.
    fn report(&self, quiet_after: Duration, idle_messages: u64) -> Result<HostReport, Failure> {
        let (messages, mut trace) = self.net.trace();
        let mut acknowledged = Vec::new();
        let mut elections = 0;
        for (id, group) in &self.groups {
            let history = group.history.borrow();
            check_counter_history(&history)
                .map_err(|why| self.failure(format!("group {id}: {why}")))?;
            for w in history.iter() {
                trace = mix(mix(trace, w.call), w.ret.unwrap_or(u64::MAX));
            }
            acknowledged.push(history.iter().filter(|w| w.ret.is_some()).count());
            elections += group
                .checker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elections;
        }
        Ok(HostReport {
            seed: self.seed,
            simulated: self.epoch.elapsed(),
            wall: Duration::ZERO,
            trace,
            messages,
            elections,
            crashes: self.crashes,
            acknowledged,
            quiet_after,
            idle_messages,
        })
    }

    /// Faults for the configured duration, then a calm network with every
    /// host up, until every group commits something new.
    async fn faults_then_heal(&mut self) -> Result<(), Failure> {
        let end = self.epoch + self.sim.duration;
        while Instant::now() < end {
            let pause = Duration::from_millis(self.rng.u64(100..800));
            tokio::time::sleep(pause).await;
            self.check()?;
            self.operator().await?;
            self.inject_fault().await?;
        }
        self.net.heal();
        self.net.set_faults(self.sim.faults.calm());
        self.disks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .slow
            .clear();
        for host in 1..=self.sim.hosts {
            if !self.running.contains_key(&host) {
                self.start(host).await?;
            }
        }
        self.wait_for_progress().await?;
        self.check()
    }

    /// After healing, every group must elect a leader and commit something
    /// new, and every member must apply up to that.
    async fn wait_for_progress(&mut self) -> Result<(), Failure> {
        let commit = |raft: &Raft<GroupCounter>| raft.metrics().borrow().commit_index;
        let healed_at: BTreeMap<GroupId, u64> = self
            .groups
            .iter()
            .map(|(id, g)| {
                let top = g.handles.borrow().values().map(commit).max();
                (*id, top.unwrap_or(0))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut targets: BTreeMap<GroupId, u64> = BTreeMap::new();
        let mut done: BTreeSet<GroupId> = BTreeSet::new();
        while done.len() < self.groups.len() {
            self.operator().await?;
            if Instant::now() >= deadline {
                let stuck: Vec<_> = self
                    .groups
                    .iter()
                    .filter(|(id, _)| !done.contains(id))
                    .map(|(id, g)| (*id, states(&g.handles)))
                    .collect();
                return Err(self.failure(format!(
                    "no progress within 60 s after healing in groups (group, [(host, role, term, commit, applied, quiet, voters/learners)]) = {stuck:?}"
                )));
            }
            for (id, group) in &self.groups {
                if done.contains(id) {
                    continue;
                }
                let handles = group.handles.borrow();
                let leader = handles.values().find_map(|r| {
                    let m = r.metrics().borrow().clone();
                    (m.role == Role::Leader).then_some(m.commit_index)
                });
                if let Some(commit) = leader.filter(|c| *c > healed_at[id]) {
                    targets.entry(*id).or_insert(commit);
                }
                if let Some(target) = targets.get(id) {
                    let applied = handles
                        .values()
                        .all(|r| r.metrics().borrow().last_applied >= *target);
                    if applied {
                        done.insert(*id);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// With the clients stopped, every replica of every group must go
    /// quiet; then, for a second, only the hosts' heartbeats travel.
    /// Returns how long quieting took and the messages of that second.
    async fn wait_until_quiet(&mut self) -> Result<(Duration, u64), Failure> {
        let since = Instant::now();
        let deadline = since + Duration::from_secs(20);
        loop {
            self.operator().await?;
            // A replacement still to come would wake its group again.
            let quiet = self.replacements_done()
                && self.groups.values().all(|g| {
                    g.handles
                        .borrow()
                        .values()
                        .all(|r| r.metrics().borrow().quiesced)
                });
            if quiet {
                break;
            }
            if Instant::now() >= deadline {
                let loud: Vec<_> = self
                    .groups
                    .iter()
                    .map(|(id, g)| (*id, states(&g.handles)))
                    .collect();
                return Err(self.failure(format!(
                    "groups not quiet 20 s after the clients stopped: (group, [(host, role, term, commit, applied, quiet, voters/learners)]) = {loud:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let quiet_after = since.elapsed();
        let (before, _) = self.net.trace();
        let window = Duration::from_secs(1);
        tokio::time::sleep(window).await;
        let (after, _) = self.net.trace();
        let idle = after - before;
        // One heartbeat per interval per direction between every two
        // hosts, give or take a tick at either end of the window.
        let pairs = self.sim.hosts * self.sim.hosts.saturating_sub(1);
        let beats = window.as_millis() as u64 / self.config.heartbeat_interval.as_millis() as u64;
        let bound = pairs * (beats + 2);
        if idle > bound {
            return Err(self.failure(format!(
                "{idle} messages in the idle second after every group went quiet; the hosts' heartbeats alone are at most {bound}"
            )));
        }
        Ok((quiet_after, idle))
    }

    async fn inject_fault(&mut self) -> Result<(), Failure> {
        let f: Faults = self.sim.faults.clone();
        let hosts = self.sim.hosts as usize;
        // Mostly a majority of hosts stays up; sometimes not.
        let may_crash = self.running.len() > hosts / 2 + 1 || self.rng.u32(0..5) == 0;
        match self.rng.u32(0..12) {
            0 if f.crashes && may_crash && self.running.len() > 1 => {
                let up: Vec<NodeId> = self.running.keys().copied().collect();
                let host = up[self.rng.usize(..up.len())];
                self.crash(host);
            }
            1 | 2 if f.crashes => {
                let down: Vec<NodeId> = (1..=self.sim.hosts)
                    .filter(|h| !self.running.contains_key(h))
                    .collect();
                if !down.is_empty() {
                    let host = down[self.rng.usize(..down.len())];
                    self.start(host).await?;
                }
            }
            3 if f.partitions => {
                let mut all: Vec<NodeId> = (1..=self.sim.hosts).collect();
                self.rng.shuffle(&mut all);
                let cut = self.rng.usize(1..all.len().max(2));
                let (a, b) = all.split_at(cut.min(all.len()));
                tracing::debug!(?a, ?b, "simulator: partition of hosts");
                self.net.partition(&[a.to_vec(), b.to_vec()]);
            }
            4 | 5 if f.partitions => self.net.heal(),
            6 if f.slow_storage => {
                let host = self.rng.u64(1..=self.sim.hosts);
                let mut disks = self.disks.lock().unwrap_or_else(|e| e.into_inner());
                let slow = disks.slow.entry(host).or_default();
                *slow = !*slow;
            }
            7 if f.snapshots => {
                if let Some(raft) = self.pick_replica() {
                    tokio::task::spawn_local(async move {
                        let _ = raft.snapshot().await;
                    });
                }
            }
            8 => {
                // An operator moves a group's leader (leader balancing).
                if let Some(raft) = self.pick_replica() {
                    let to = self.rng.u64(1..=self.sim.hosts);
                    tokio::task::spawn_local(async move {
                        let _ = raft.transfer_leadership(to).await;
                    });
                }
            }
            9 if f.crashes && may_crash && self.running.len() > 1 => {
                // A host crashes between "write issued" and "write
                // durable", with every group on it.
                if let Some(host) = catch_a_writer(&self.disks, &self.write_started).await {
                    tracing::debug!(host, "simulator: host crash while a write is in flight");
                    self.crash(host);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A running replica of a random group.
    fn pick_replica(&mut self) -> Option<Raft<GroupCounter>> {
        let group = self.rng.u64(1..=self.sim.groups);
        let handles = self.groups.get(&group)?.handles.borrow();
        let replicas: Vec<&Raft<GroupCounter>> = handles.values().collect();
        (!replicas.is_empty()).then(|| replicas[self.rng.usize(..replicas.len())].clone())
    }
}

/// A running replica as a failure reports it.
type ReplicaState = (NodeId, Role, u64, u64, u64, bool, String);

/// (host, role, term, commit, applied, quiet, voters/learners) of every
/// running replica.
fn states(handles: &Handles<GroupCounter>) -> Vec<ReplicaState> {
    handles
        .borrow()
        .iter()
        .map(|(host, r)| {
            let m = r.metrics().borrow().clone();
            (
                *host,
                m.role,
                m.term,
                m.commit_index,
                m.last_applied,
                m.quiesced,
                format!("{:?}/{:?}", m.membership.voters, m.membership.learners),
            )
        })
        .collect()
}
