//! The hosts' heartbeat: one message per heartbeat interval to each peer
//! host, whatever the number of groups. Quiesced groups send nothing of
//! their own; this is what tells a host that the leaders its quiet
//! followers wait on are still there. When a peer host falls silent for
//! an election timeout, the host wakes every quiet group here that it
//! leads, and those elect as usual.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Shared;
use crate::core::types::NodeId;
use crate::message::{Envelope, Message};
use crate::state_machine::StateMachine;
use crate::transport::Transport;

/// When each peer host was last heard, and since when this host runs.
pub(super) struct Liveness {
    heard: Mutex<HashMap<NodeId, Instant>>,
    started: Instant,
}

impl Liveness {
    pub(super) fn new() -> Self {
        Liveness {
            heard: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    /// A heartbeat of host `from` arrived.
    pub(super) fn heard(&self, from: NodeId) {
        self.heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(from, Instant::now());
    }

    /// Whether `host` (this one counts as heard) was heard within `within`.
    pub(super) fn heard_within(&self, host: NodeId, within: std::time::Duration) -> bool {
        self.heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&host)
            .is_some_and(|at| at.elapsed() < within)
    }

    /// Which of `peers` have been silent for `after` (one never heard
    /// counts from this host's start).
    fn silent(&self, peers: &BTreeSet<NodeId>, after: std::time::Duration) -> BTreeSet<NodeId> {
        let heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        peers
            .iter()
            .copied()
            .filter(|peer| {
                let last = heard.get(peer).copied().unwrap_or(self.started);
                last.elapsed() >= after
            })
            .collect()
    }
}

/// Adds every group's current members (membership changes bring new
/// hosts) to the hosts this one sends heartbeats to.
fn refresh_peer_hosts<SM: StateMachine>(shared: &Shared<SM>) {
    let mut members = BTreeSet::new();
    for raft in shared
        .groups
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .values()
    {
        members.extend(raft.metrics().borrow().membership.members());
    }
    let mut peers = shared.peer_hosts.lock().unwrap_or_else(|e| e.into_inner());
    peers.extend(members);
    peers.remove(&shared.id);
}

/// How many heartbeat intervals pass between two looks at the groups'
/// memberships for new peer hosts.
const PEERS_REFRESH_TICKS: u32 = 40;

/// Runs on the host's thread until the host stops.
pub(super) async fn run<SM: StateMachine>(shared: Arc<Shared<SM>>, transport: Arc<dyn Transport>) {
    let interval = shared.config.heartbeat_interval;
    let suspect_after = shared.config.election_timeout_min;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    loop {
        ticker.tick().await;
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        if ticks.is_multiple_of(PEERS_REFRESH_TICKS) {
            refresh_peer_hosts(&shared);
        }
        ticks = ticks.wrapping_add(1);
        let peers = shared
            .peer_hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for peer in &peers {
            let mut envelope = Envelope::new(shared.id, *peer, Message::HostHeartbeat);
            envelope.group = 0;
            transport.send(envelope);
            shared.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
        }
        let silent = shared.liveness.silent(&peers, suspect_after);
        if silent.is_empty() {
            continue;
        }
        // Quiet groups led from a silent host wake and elect if need be.
        let groups = shared.groups.read().unwrap_or_else(|e| e.into_inner());
        for (group, raft) in groups.iter() {
            let (quiet, leader) = {
                let metrics = raft.metrics();
                let m = metrics.borrow();
                (m.quiesced, m.leader)
            };
            if quiet && leader.is_some_and(|l| silent.contains(&l)) {
                tracing::info!(
                    host = shared.id,
                    group,
                    leader,
                    "the leader's host is silent: waking the group"
                );
                raft.wake_group();
            }
        }
    }
}
