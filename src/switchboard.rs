//! A host's groups, by id: where an inbound message finds its group, and
//! the hosts' heartbeat that stands in for the heartbeats of quiet groups.
//!
//! One path for both the real [`crate::Host`] (over TCP, on its thread)
//! and the simulator's hosts (in virtual time): the routing and the
//! liveness rules are the same code under both.
//!
//! - **Routing.** A message goes to the node of the group it names; a
//!   message for a group this host does not have is refused (counted,
//!   logged now and then), like a message of another cluster.
//! - **The hosts' heartbeat.** One `HostHeartbeat` per heartbeat interval
//!   to each peer host, whatever the number of groups. Quiesced groups
//!   send nothing of their own; a quiet follower counts its leader alive
//!   while the leader's host is heard. When a peer host falls silent for
//!   an election timeout, every quiet group here that it leads is woken,
//!   and elects as usual.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;
use crate::core::types::{GroupId, NodeId};
use crate::message::{Envelope, Message};
use crate::raft::Raft;
use crate::role::HostLiveness;
use crate::state_machine::StateMachine;
use crate::transport::Transport;

/// A refusal of messages for unknown groups is logged at most this often.
const UNKNOWN_GROUP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How many heartbeat intervals pass between two looks at the groups'
/// memberships for new peer hosts.
const PEERS_REFRESH_TICKS: u32 = 40;

/// Counts since the switchboard was made.
#[derive(Default)]
pub(crate) struct SwitchboardCounts {
    pub messages_unknown_group: AtomicU64,
    pub heartbeats_sent: AtomicU64,
    pub heartbeats_received: AtomicU64,
}

/// The heartbeat loop's own timing.
struct Beat {
    /// When it last ran.
    last: Option<Instant>,
    /// Silence counts from here at the earliest: this host's start, or
    /// the end of its last stall (a host that did not run did not read
    /// what its peers sent meanwhile).
    counts_from: Instant,
}

/// The groups of one host and the hosts' heartbeat.
pub(crate) struct Switchboard<SM: StateMachine> {
    id: NodeId,
    /// Ordered: the simulator's runs must not depend on a hash seed.
    groups: RwLock<BTreeMap<GroupId, Raft<SM>>>,
    /// The hosts this one sends heartbeats to: the configured peers,
    /// every group's founders and (refreshed now and then) members.
    peer_hosts: Mutex<BTreeSet<NodeId>>,
    /// When each peer host was last heard.
    heard: Mutex<HashMap<NodeId, Instant>>,
    beat: Mutex<Beat>,
    heartbeat_interval: Duration,
    /// A host silent this long is suspected (an election timeout).
    suspect_after: Duration,
    last_refusal_logged: Mutex<Option<Instant>>,
    pub(crate) counts: SwitchboardCounts,
}

impl<SM: StateMachine> Switchboard<SM> {
    /// Host `id`'s switchboard, sending heartbeats to `peers` (and to the
    /// members of every group it is given) at `config`'s heartbeat
    /// interval.
    pub(crate) fn new(
        id: NodeId,
        peers: impl IntoIterator<Item = NodeId>,
        config: &Config,
    ) -> Self {
        Switchboard {
            id,
            groups: RwLock::new(BTreeMap::new()),
            peer_hosts: Mutex::new(peers.into_iter().filter(|p| *p != id).collect()),
            heard: Mutex::new(HashMap::new()),
            beat: Mutex::new(Beat {
                last: None,
                counts_from: Instant::now(),
            }),
            heartbeat_interval: config.heartbeat_interval,
            suspect_after: config.election_timeout_min,
            last_refusal_logged: Mutex::new(None),
            counts: SwitchboardCounts::default(),
        }
    }

    /// Lists `group`'s node, whose members become peer hosts.
    pub(crate) fn insert(
        &self,
        group: GroupId,
        raft: Raft<SM>,
        members: impl IntoIterator<Item = NodeId>,
    ) {
        write(&self.groups).insert(group, raft);
        lock(&self.peer_hosts).extend(members.into_iter().filter(|m| *m != self.id));
    }

    /// Takes `group` off the list: its messages are refused from now on.
    pub(crate) fn remove(&self, group: GroupId) -> Option<Raft<SM>> {
        write(&self.groups).remove(&group)
    }

    /// Takes every group off the list.
    pub(crate) fn drain(&self) -> Vec<Raft<SM>> {
        std::mem::take(&mut *write(&self.groups))
            .into_values()
            .collect()
    }

    /// `group`'s handle, if this host has it.
    pub(crate) fn get(&self, group: GroupId) -> Option<Raft<SM>> {
        read(&self.groups).get(&group).cloned()
    }

    /// Calls `f` with every group and its handle, under the read lock.
    pub(crate) fn for_each(&self, mut f: impl FnMut(GroupId, &Raft<SM>)) {
        for (group, raft) in read(&self.groups).iter() {
            f(*group, raft);
        }
    }

    /// The transport's delivery: a host heartbeat is noted, a group's
    /// message goes to its node. Returned for the host: its own messages
    /// (group deletion), and a message of a group this host does not have
    /// (refused: counted, logged now and then).
    pub(crate) fn route(&self, envelope: Envelope) -> Option<Envelope> {
        match envelope.message {
            Message::HostHeartbeat => {
                self.counts
                    .heartbeats_received
                    .fetch_add(1, Ordering::Relaxed);
                lock(&self.heard).insert(envelope.from, Instant::now());
                return None;
            }
            Message::DeleteGroup | Message::GroupDeleted => return Some(envelope),
            _ => {}
        }
        // Delivered under the read lock (a non-blocking enqueue): cloning
        // the group's handle for every message would cost a dozen atomic
        // reference counts on the write path.
        if let Some(raft) = read(&self.groups).get(&envelope.group) {
            raft.deliver(envelope);
            return None;
        }
        self.counts
            .messages_unknown_group
            .fetch_add(1, Ordering::Relaxed);
        let mut last = lock(&self.last_refusal_logged);
        if last.is_none_or(|at| at.elapsed() >= UNKNOWN_GROUP_LOG_INTERVAL) {
            *last = Some(Instant::now());
            tracing::warn!(
                host = self.id,
                peer = envelope.from,
                group = envelope.group,
                "refusing a message for a group this host does not have (not created here yet, or deleted)"
            );
        }
        Some(envelope)
    }

    /// What a group asks of the hosts' heartbeat: was this host heard
    /// within an election timeout (this host itself always is).
    pub(crate) fn host_liveness(self: &Arc<Self>) -> HostLiveness {
        let me = self.clone();
        Arc::new(move |host| {
            host == me.id
                || lock(&me.heard)
                    .get(&host)
                    .is_some_and(|at| at.elapsed() < me.suspect_after)
        })
    }

    /// Sends the hosts' heartbeat through `transport` every heartbeat
    /// interval, and wakes quiet groups led from silent hosts, until
    /// `stopping` says so (or the task is dropped).
    pub(crate) async fn run_heartbeat(
        self: Arc<Self>,
        transport: Arc<dyn Transport>,
        stopping: impl Fn() -> bool,
    ) {
        let mut ticker = tokio::time::interval(self.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        loop {
            ticker.tick().await;
            if stopping() {
                return;
            }
            if ticks.is_multiple_of(PEERS_REFRESH_TICKS) {
                self.refresh_peer_hosts();
            }
            ticks = ticks.wrapping_add(1);
            self.heartbeat(transport.as_ref());
        }
    }

    /// One beat: a heartbeat to every peer host, then a look for silent
    /// ones, whose quiet groups here are woken; returns those.
    fn heartbeat(&self, transport: &dyn Transport) -> BTreeSet<NodeId> {
        self.note_stall();
        let peers = lock(&self.peer_hosts).clone();
        for peer in &peers {
            let mut envelope = Envelope::new(self.id, *peer, Message::HostHeartbeat);
            envelope.group = 0;
            transport.send(envelope);
            self.counts.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
        }
        let silent = self.silent(&peers);
        if silent.is_empty() {
            return silent;
        }
        // Quiet groups led from a silent host wake and elect if need be.
        for (group, raft) in read(&self.groups).iter() {
            let (quiet, leader) = {
                let metrics = raft.metrics();
                let m = metrics.borrow();
                (m.quiesced, m.leader)
            };
            if quiet && leader.is_some_and(|l| silent.contains(&l)) {
                tracing::info!(
                    host = self.id,
                    group,
                    leader,
                    "the leader's host is silent: waking the group"
                );
                raft.wake_group();
            }
        }
        silent
    }

    /// A beat more than half an election timeout after the last one
    /// means this host stalled: silence counts afresh from now.
    fn note_stall(&self) {
        let now = Instant::now();
        let mut beat = lock(&self.beat);
        if let Some(last) = beat.last {
            let gap = now - last;
            if gap > self.suspect_after / 2 {
                tracing::info!(
                    host = self.id,
                    stalled_ms = gap.as_millis() as u64,
                    "this host stalled: its peers get a full election timeout before they are suspected"
                );
                beat.counts_from = now;
            }
        }
        beat.last = Some(now);
    }

    /// Which of `peers` have been silent for an election timeout, counted
    /// from this host's start or last stall at the earliest.
    fn silent(&self, peers: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
        let counts_from = lock(&self.beat).counts_from;
        let heard = lock(&self.heard);
        peers
            .iter()
            .copied()
            .filter(|peer| {
                let last = heard
                    .get(peer)
                    .map_or(counts_from, |at| (*at).max(counts_from));
                last.elapsed() >= self.suspect_after
            })
            .collect()
    }

    /// Adds every group's current members (membership changes bring new
    /// hosts) to the hosts this one sends heartbeats to.
    fn refresh_peer_hosts(&self) {
        let mut members = BTreeSet::new();
        for raft in read(&self.groups).values() {
            members.extend(raft.metrics().borrow().membership.members());
        }
        let mut peers = lock(&self.peer_hosts);
        peers.extend(members);
        peers.remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::testing::sim::Counter;

    /// Sends nothing anywhere.
    struct Nowhere;
    impl Transport for Nowhere {
        fn send(&self, _: Envelope) {}
    }

    fn beat_from(host: NodeId) -> Envelope {
        Envelope::new(host, 1, Message::HostHeartbeat)
    }

    /// A host whose own thread stalled (a long pause, a suspended VM)
    /// has not read what its peers sent meanwhile: it gives them a full
    /// election timeout before it suspects them, instead of waking every
    /// quiet group they lead at once. A peer that stays silent after that
    /// is suspected as before.
    #[tokio::test(start_paused = true)]
    async fn a_host_that_stalled_gives_its_peers_a_full_timeout() {
        let config = Config::default();
        let board = Switchboard::<Counter>::new(1, [2], &config);
        assert!(board.heartbeat(&Nowhere).is_empty());
        board.route(beat_from(2));
        tokio::time::advance(config.heartbeat_interval).await;
        assert!(board.heartbeat(&Nowhere).is_empty());
        // The host stalls for a second: no beat, nothing read.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            board.heartbeat(&Nowhere).is_empty(),
            "suspected a peer this host could not have heard"
        );
        // Host 2 stays silent: suspected one election timeout later.
        let mut waited = Duration::ZERO;
        loop {
            tokio::time::advance(config.heartbeat_interval).await;
            waited += config.heartbeat_interval;
            if !board.heartbeat(&Nowhere).is_empty() {
                break;
            }
            assert!(waited <= config.election_timeout_min, "never suspected");
        }
        assert!(
            waited >= config.election_timeout_min,
            "suspected after {waited:?}"
        );
    }
}
