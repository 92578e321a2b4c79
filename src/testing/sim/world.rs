//! One simulated run: the nodes, their crashes and restarts, the fault
//! schedule, the clients, and the checks after healing.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::LocalSet;
use tokio::time::Instant;

mod operator;

use super::check::Checker;
use super::client::{client_loop, Handles, History, Workload};
use super::net::{mix, Net};
use super::{Failure, Report, Simulation};
use crate::config::Config;
use crate::core::types::{Membership, NodeId};
use crate::io::IoMode;
use crate::metrics::Role;
use crate::probe::Probe;
use crate::raft::Environment;
use crate::raft::Raft;
use crate::state_machine::StateMachine;
use crate::storage::MemStorage;

/// A node's running incarnation: its task set, dropped whole on a crash.
struct Running<SM: StateMachine> {
    raft: Raft<SM>,
    tasks: Rc<RefCell<Option<LocalSet>>>,
}

/// Per-node storage latency, drawn from the seed.
pub(super) struct Disks {
    rng: fastrand::Rng,
    pub(super) slow: BTreeMap<NodeId, bool>,
    /// Catch the next node that starts a write: it is crashed before the
    /// write is durable.
    pub(super) armed: bool,
    pub(super) victim: Option<NodeId>,
}

impl Disks {
    pub(super) fn new(seed: u64) -> Disks {
        Disks {
            rng: fastrand::Rng::with_seed(seed ^ 0x6469_736b),
            slow: BTreeMap::new(),
            armed: false,
            victim: None,
        }
    }

    /// The next write's latency on `id`'s disk.
    pub(super) fn latency(&mut self, id: NodeId) -> Duration {
        let us = if self.slow.get(&id).copied().unwrap_or(false) {
            self.rng.u64(2_000..30_000)
        } else {
            self.rng.u64(50..800)
        };
        Duration::from_micros(us)
    }
}

pub(super) struct World<'a, SM: StateMachine> {
    sim: &'a Simulation<SM>,
    seed: u64,
    config: Config,
    rng: fastrand::Rng,
    net: Net,
    founders: Membership,
    storages: BTreeMap<NodeId, MemStorage>,
    running: BTreeMap<NodeId, Running<SM>>,
    handles: Handles<SM>,
    checker: Arc<Mutex<Checker>>,
    disks: Arc<Mutex<Disks>>,
    /// Woken when an armed disk sees a write start.
    write_started: Arc<Notify>,
    incarnations: u64,
    crashes: u64,
    epoch: Instant,
    /// Founders whose disk was replaced: they come back with --join.
    joiners: BTreeSet<NodeId>,
    /// Replaced nodes kept down until the operator's removal commits;
    /// then started with --join and added back.
    awaiting_removal: BTreeSet<NodeId>,
    /// A replaced node, until it votes again and has caught up (one disk
    /// is replaced at a time, as an operator would).
    readding: Option<NodeId>,
    /// A membership change the simulated operator started is under way:
    /// no disk is replaced meanwhile (a leader that loses its disk before
    /// C_new commits can leave the only copy of C_new on a removed node,
    /// which does not campaign: see BENCHMARKS.md, seed 65015).
    changing: Rc<std::cell::Cell<bool>>,
    /// When the operator last asked for a one-call replacement.
    replace_asked: Option<Instant>,
}

impl<'a, SM: StateMachine> World<'a, SM>
where
    SM::Command: Clone,
{
    pub(super) fn new(sim: &'a Simulation<SM>, seed: u64) -> Self {
        let mut config = sim.config.clone();
        if sim.faults.snapshots {
            config.snapshot_every = 64;
            config.snapshot_keep_entries = 8;
            config.snapshot_chunk_bytes = 256;
        }
        if sim.faults.session_pressure {
            config.session_timeout = Duration::from_millis(1500);
            config.max_sessions = 2;
        }
        let spares = if sim.faults.membership { 2 } else { 0 };
        World {
            sim,
            seed,
            config,
            rng: fastrand::Rng::with_seed(seed ^ 0x7369_6d75_6c61_7465),
            net: Net::new(seed, sim.faults.clone()),
            founders: Membership::new(1..=sim.nodes),
            storages: (1..=sim.nodes + spares)
                .map(|id| (id, MemStorage::new()))
                .collect(),
            running: BTreeMap::new(),
            handles: Rc::new(RefCell::new(BTreeMap::new())),
            checker: Arc::new(Mutex::new(Checker::default())),
            disks: Arc::new(Mutex::new(Disks::new(seed))),
            write_started: Arc::new(Notify::new()),
            incarnations: 0,
            crashes: 0,
            epoch: Instant::now(),
            joiners: BTreeSet::new(),
            awaiting_removal: BTreeSet::new(),
            readding: None,
            changing: Rc::default(),
            replace_asked: None,
        }
    }

    fn failure(&self, reason: String) -> Failure {
        Failure {
            seed: self.seed,
            nodes: self.sim.nodes,
            groups: 1,
            at: self.epoch.elapsed(),
            reason,
        }
    }

    fn check(&self) -> Result<(), Failure> {
        let mut checker = self.checker.lock().unwrap_or_else(|e| e.into_inner());
        let logs = self
            .storages
            .iter()
            .map(|(id, s)| (*id, s.contents()))
            .collect();
        checker.log_matching(&logs);
        match checker.violation.clone() {
            Some(v) => Err(self.failure(v)),
            None => Ok(()),
        }
    }

    /// Starts node `id` on its storage, founding members bootstrapping.
    async fn start(&mut self, id: NodeId) -> Result<(), Failure> {
        self.incarnations += 1;
        let incarnation = self.incarnations;
        let storage = self.storages[&id].clone();
        let transport = self.net.transport(id, incarnation);
        let clock_percent = if self.sim.faults.clock_skew {
            self.rng.u64(50..=200)
        } else {
            100
        };
        let io = simulated_io(&self.disks, &self.write_started, id, clock_percent);
        let checker = self.checker.clone();
        let observed = storage.clone();
        let probe: Probe = Some(Arc::new(move |node, event| {
            checker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .on_event(node, &event, &observed);
        }));
        let members = (self.founders.voters.contains(&id) && !self.joiners.contains(&id))
            .then(|| self.founders.clone());
        let (config, factory) = (self.config.clone(), self.sim.factory.clone());
        let tasks = LocalSet::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tasks.spawn_local(async move {
            let sm = factory(id).start();
            let _ = tx.send(Raft::start_with(
                id,
                config,
                storage,
                transport,
                members,
                sm,
                Environment {
                    io,
                    probe,
                    ask_founders: true,
                    cluster_name: String::new(),
                    group: 0,
                    quiesce: None,
                    shared_writer: None,
                },
            ));
        });
        let tasks = Rc::new(RefCell::new(Some(tasks)));
        tokio::task::spawn_local(drive(tasks.clone()));
        let raft = match rx.await {
            Ok(Ok(raft)) => raft,
            Ok(Err(e)) => return Err(self.failure(format!("node {id} failed to start: {e}"))),
            Err(_) => return Err(self.failure(format!("node {id} start-up did not report"))),
        };
        let deliver = raft.clone();
        self.net
            .register(id, incarnation, Box::new(move |env| deliver.deliver(env)));
        self.handles.borrow_mut().insert(id, raft.clone());
        self.running.insert(id, Running { raft, tasks });
        Ok(())
    }

    /// Drops every task of node `id` at once.
    fn crash(&mut self, id: NodeId) {
        self.net.unregister(id);
        self.handles.borrow_mut().remove(&id);
        if let Some(node) = self.running.remove(&id) {
            self.crashes += 1;
            tracing::debug!(node = id, "simulator: crash");
            drop(node.tasks.borrow_mut().take());
        }
    }

    pub(super) async fn run(mut self) -> Result<Report<SM>, Failure> {
        let net = self.net.clone();
        let net_task = tokio::task::spawn_local(net.run());
        for id in 1..=self.sim.nodes {
            self.start(id).await?;
        }
        let history: History<SM> = Rc::new(RefCell::new(Vec::new()));
        let stop = Rc::new(std::cell::Cell::new(false));
        let clients: Vec<_> = (0..self.sim.clients)
            .map(|client| {
                tokio::task::spawn_local(client_loop(
                    client,
                    Workload {
                        seed: self.seed,
                        handles: self.handles.clone(),
                        history: history.clone(),
                        stop: stop.clone(),
                        commands: self.sim.commands.clone(),
                        epoch: self.epoch,
                        sessions: self.sim.sessions,
                        idle_gaps: self.sim.faults.session_pressure,
                    },
                ))
            })
            .collect();

        let outcome = self.faults_then_heal().await;
        stop.set(true);
        for c in clients {
            let _ = c.await;
        }
        let outcome = outcome.and_then(|()| self.check());
        let ids: Vec<NodeId> = self.running.keys().copied().collect();
        for id in ids {
            self.crash(id);
        }
        net_task.abort();
        outcome?;

        let history = std::mem::take(&mut *history.borrow_mut());
        let (messages, mut trace) = self.net.trace();
        for w in &history {
            trace = mix(mix(trace, w.call), w.ret.unwrap_or(u64::MAX));
        }
        let elections = self
            .checker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elections;
        Ok(Report {
            seed: self.seed,
            simulated: self.epoch.elapsed(),
            wall: Duration::ZERO,
            trace,
            messages,
            elections,
            crashes: self.crashes,
            history,
        })
    }

    /// Faults for the configured duration, then a calm network with every
    /// node up, until a write commits.
    async fn faults_then_heal(&mut self) -> Result<(), Failure> {
        let end = self.epoch + self.sim.duration;
        while Instant::now() < end {
            let pause = Duration::from_millis(self.rng.u64(100..800));
            tokio::time::sleep(pause).await;
            self.check()?;
            self.inject_fault().await?;
        }
        self.net.heal();
        self.net.set_faults(self.sim.faults.calm());
        self.disks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .slow
            .clear();
        let stopped: Vec<NodeId> = self
            .storages
            .keys()
            .copied()
            .filter(|id| !self.running.contains_key(id) && self.ever_member(*id))
            .collect();
        for id in stopped {
            self.start(id).await?;
        }
        self.wait_for_progress().await?;
        self.check()
    }

    /// Whether `id` has been given any state (founder, or added later),
    /// and is not kept down for the operator's procedure.
    fn ever_member(&self, id: NodeId) -> bool {
        !self.awaiting_removal.contains(&id)
            && (self.founders.voters.contains(&id) || !self.storages[&id].contents().is_empty())
    }

    /// After healing, a leader must emerge and commit something new, and
    /// every running member must apply up to that.
    async fn wait_for_progress(&mut self) -> Result<(), Failure> {
        let metrics = |r: &Running<SM>| r.raft.metrics().borrow().clone();
        let healed_at = self
            .running
            .values()
            .map(|r| metrics(r).commit_index)
            .max()
            .unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut target = None;
        loop {
            // The operator keeps at it: a replaced disk counts for nothing
            // until its procedure is done.
            self.replacement_procedure().await?;
            if Instant::now() >= deadline {
                let states: Vec<_> = self
                    .running
                    .values()
                    .map(|r| {
                        let m = metrics(r);
                        (m.id, m.role, m.term, m.commit_index, m.last_applied)
                    })
                    .collect();
                return Err(self.failure(format!(
                    "no progress within 60 s after healing (commit index {healed_at} then; target {target:?}): (id, role, term, commit, applied) = {states:?}"
                )));
            }
            let leader = self
                .running
                .values()
                .map(metrics)
                .find(|m| m.role == Role::Leader);
            if let Some(m) = leader {
                if target.is_none() && m.commit_index > healed_at {
                    target = Some((m.commit_index, m.membership.members()));
                }
            }
            if let Some((index, members)) = &target {
                let caught_up = self
                    .running
                    .values()
                    .map(metrics)
                    .all(|n| !members.contains(&n.id) || n.last_applied >= *index);
                if caught_up {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn inject_fault(&mut self) -> Result<(), Failure> {
        self.replacement_procedure().await?;
        let f = self.sim.faults.clone();
        // Mostly a majority stays up (the cluster makes progress and the
        // interesting interleavings happen); sometimes not.
        let majority = self.sim.nodes as usize / 2 + 1;
        let may_crash = self.running.len() > majority || self.rng.u32(0..5) == 0;
        match self.rng.u32(0..14) {
            0 if f.crashes && may_crash && self.running.len() > 1 => {
                let ids: Vec<NodeId> = self.running.keys().copied().collect();
                let id = ids[self.rng.usize(..ids.len())];
                self.crash(id);
            }
            1 | 2 if f.crashes => {
                let down: Vec<NodeId> = self
                    .storages
                    .keys()
                    .copied()
                    .filter(|id| !self.running.contains_key(id) && self.ever_member(*id))
                    .collect();
                if !down.is_empty() {
                    let id = down[self.rng.usize(..down.len())];
                    tracing::debug!(node = id, "simulator: restart");
                    self.start(id).await?;
                }
            }
            3 if f.partitions => {
                let mut ids: Vec<NodeId> = self.storages.keys().copied().collect();
                self.rng.shuffle(&mut ids);
                let cut = self.rng.usize(1..ids.len());
                let (a, b) = ids.split_at(cut);
                tracing::debug!(?a, ?b, "simulator: partition");
                self.net.partition(&[a.to_vec(), b.to_vec()]);
            }
            4 | 5 if f.partitions => self.net.heal(),
            6 if f.slow_storage => {
                let ids: Vec<NodeId> = self.storages.keys().copied().collect();
                let id = ids[self.rng.usize(..ids.len())];
                let mut disks = self.disks.lock().unwrap_or_else(|e| e.into_inner());
                let slow = disks.slow.entry(id).or_default();
                *slow = !*slow;
            }
            7 if f.snapshots => {
                if let Some(r) = self.pick_running() {
                    tokio::task::spawn_local(async move {
                        let _ = r.snapshot().await;
                    });
                }
            }
            8 if f.membership => self.change_membership().await?,
            10 if f.disk_replacement => self.replace_disk().await?,
            9 if f.crashes && may_crash && self.running.len() > 1 => {
                // A crash between "write issued" and "write durable".
                if let Some(id) = catch_a_writer(&self.disks, &self.write_started).await {
                    tracing::debug!(node = id, "simulator: crash while a write is in flight");
                    self.crash(id);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn pick_running(&mut self) -> Option<Raft<SM>> {
        let ids: Vec<NodeId> = self.running.keys().copied().collect();
        (!ids.is_empty()).then(|| self.running[&ids[self.rng.usize(..ids.len())]].raft.clone())
    }

    /// Replaces one voter by a node outside the configuration: as a
    /// learner first, then by joint consensus. Runs in the background;
    /// refusals (no leader, a change in progress, a lagging learner) are
    /// part of the game.
    async fn change_membership(&mut self) -> Result<(), Failure> {
        if self.readding.is_some() || !self.awaiting_removal.is_empty() || self.changing.get() {
            return Ok(());
        }
        let leader = self.running.values().find_map(|r| {
            let m = r.raft.metrics().borrow().clone();
            (m.role == Role::Leader).then(|| (r.raft.clone(), m.membership))
        });
        let Some((raft, membership)) = leader else {
            return Ok(());
        };
        if membership.is_joint() {
            return Ok(());
        }
        let outside: Vec<NodeId> = self
            .storages
            .keys()
            .copied()
            .filter(|id| !membership.voters.contains(id) && !self.awaiting_removal.contains(id))
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        let newcomer = outside[self.rng.usize(..outside.len())];
        let voters: Vec<NodeId> = membership.voters.iter().copied().collect();
        let leaving = voters[self.rng.usize(..voters.len())];
        if !self.running.contains_key(&newcomer) {
            self.start(newcomer).await?;
        }
        let mut next: std::collections::BTreeSet<NodeId> = membership.voters.clone();
        next.remove(&leaving);
        next.insert(newcomer);
        tracing::debug!(newcomer, leaving, "simulator: membership change");
        let changing = self.changing.clone();
        changing.set(true);
        tokio::task::spawn_local(async move {
            if raft.add_learner(newcomer, "").await.is_ok() {
                let _ = raft.change_membership(next).await;
            }
            changing.set(false);
        });
        Ok(())
    }
}

/// The I/O of node (or host) `id` under the simulator: its disk's
/// latency, and the first write after the disks are armed reported as
/// the victim of a crash.
pub(super) fn simulated_io(
    disks: &Arc<Mutex<Disks>>,
    started: &Arc<Notify>,
    id: NodeId,
    clock_percent: u64,
) -> IoMode {
    let (disks, started) = (disks.clone(), started.clone());
    IoMode::Simulated {
        clock_percent,
        write_latency: Arc::new(move || {
            let mut disks = disks.lock().unwrap_or_else(|e| e.into_inner());
            if disks.armed {
                disks.armed = false;
                disks.victim = Some(id);
                started.notify_one();
            }
            disks.latency(id)
        }),
    }
}

/// Arms the disks and waits (up to 300 ms) for a write to start: returns
/// whose it was, to crash before that write is durable.
pub(super) async fn catch_a_writer(disks: &Mutex<Disks>, started: &Notify) -> Option<NodeId> {
    disks.lock().unwrap_or_else(|e| e.into_inner()).armed = true;
    let caught = tokio::time::timeout(Duration::from_millis(300), started.notified())
        .await
        .is_ok();
    let mut disks = disks.lock().unwrap_or_else(|e| e.into_inner());
    disks.armed = false;
    disks.victim.take().filter(|_| caught)
}

/// Polls a node's task set until it is dropped (crash) or done.
pub(super) fn drive(tasks: Rc<RefCell<Option<LocalSet>>>) -> impl Future<Output = ()> {
    std::future::poll_fn(move |cx| {
        let mut slot = tasks.borrow_mut();
        match slot.as_mut() {
            None => Poll::Ready(()),
            Some(set) => match Pin::new(set).poll(cx) {
                Poll::Ready(()) => Poll::Ready(()),
                Poll::Pending => Poll::Pending,
            },
        }
    })
}
