//! [`Host`]: many Raft groups in one process, sharing one transport, one
//! durable log and one writer thread (multi-raft).
//!
//! A service that outgrows one group shards its data over many; each group
//! elects its own leader, so the leaders (and the write load) spread over
//! the machines. A host runs its replicas of any number of groups, each
//! with the whole actor shape of a single node (node, roles, log store,
//! applier, snapshotter, replicators, your state machine), and shares
//! underneath:
//!
//! - **one TCP transport**: one connection per peer host, every message
//!   carrying its group id; the host routes inbound messages to the
//!   group's node and refuses those of a group it does not have;
//! - **one fjall database** for every group's log, hard state and
//!   identity (see `storage/fjall_host.rs` for the layout), with a catalog
//!   of the groups, so a restarted host starts them all again;
//! - **one log writer thread**: what every group queued while the last
//!   round ran is written in one round and made durable by one fsync
//!   (group commit across groups).
//!
//! Group ids and node ids: a group's members are hosts, named by their
//! host ids, so one address book serves all groups.
//!
//! ```no_run
//! # async fn example<SM: regatta::StateMachine + Default + Send>(
//! #     command: SM::Command,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use regatta::Host;
//!
//! // On each of hosts 1, 2 and 3 (host 1 shown):
//! let host = Host::builder(1, |_group| SM::default())
//!     .data_dir("/var/lib/service")
//!     .listen("127.0.0.1:7001".parse()?)
//!     .peer(2, "127.0.0.1:7002")
//!     .peer(3, "127.0.0.1:7003")
//!     .start()
//!     .await?;
//! // Each member host creates the group with the same founders (a
//! // restarted host already has it: the call then returns it as it is).
//! for group in 1..=16 {
//!     host.create_group(group, [1, 2, 3]).await?;
//! }
//! let raft = host.group(7).expect("created above");
//! raft.write(command).await?;
//! host.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod deletion;
mod run;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::config::Config;
use crate::core::types::{GroupId, Membership, NodeId};
use crate::error::StartError;
use crate::log_store::SharedWriter;
use crate::metrics::Role;
use crate::raft::Raft;
use crate::state_machine::StateMachine;
use crate::storage::fjall_host::HostDatabase;
use crate::storage::StorageError;
use crate::switchboard::Switchboard;
use crate::transport::tcp::TcpTransport;

/// How many times [`Host::balance_leaders`] looks again.
const BALANCE_ROUNDS: usize = 3;

/// Makes the state machine of a group: called when a group is created
/// and, on a restart, for every group the host had.
pub type StateMachineFactory<SM> = dyn Fn(GroupId) -> SM + Send + Sync;

/// Why a group operation failed. Each is definite: nothing changed, and
/// the same call may be made again once the cause is fixed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The group exists on this host with other founders.
    #[error("group {group} exists with founders {existing:?}, not {asked:?}: pick another group id, or remove the group first")]
    GroupExists {
        /// The group.
        group: GroupId,
        /// Its founders here.
        existing: Vec<NodeId>,
        /// The founders asked for.
        asked: Vec<NodeId>,
    },
    /// This host has no such group.
    #[error("this host has no group {0}")]
    NoSuchGroup(GroupId),
    /// The founders must name this host.
    #[error("the founders {founders:?} of group {group} do not include this host ({id}): create the group on its member hosts")]
    NotAFounder {
        /// This host.
        id: NodeId,
        /// The group.
        group: GroupId,
        /// The founders asked for.
        founders: Vec<NodeId>,
    },
    /// The group was deleted ([`Host::delete_group`]): its id is not used
    /// again on this host.
    #[error("group {0} was deleted: its id is not used again; pick another group id")]
    GroupDeleted(GroupId),
    /// Group 0 is the single-group node's; groups start at 1.
    #[error("group id 0 is not valid: group ids start at 1")]
    InvalidGroup,
    /// The group's node could not start.
    #[error("group {group} could not start: {source}")]
    Start {
        /// The group.
        group: GroupId,
        /// Why.
        source: StartError,
    },
    /// The host's database failed.
    #[error("the host's database failed: {0}")]
    Storage(#[from] StorageError),
    /// The host has stopped.
    #[error("the host has stopped")]
    Stopped,
}

/// What [`Host::delete_group`] achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDeletion {
    /// The group.
    pub group: GroupId,
    /// Member hosts (besides this one) that deleted their replica.
    pub confirmed: Vec<NodeId>,
    /// Member hosts that did not answer in time (down, or cut off): each
    /// deletes its replica when it is back and its replica first speaks
    /// to a host that deleted the group; or call again.
    pub unanswered: Vec<NodeId>,
}

/// One group as [`Host::groups`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group.
    pub group: GroupId,
    /// This host's role in it.
    pub role: Role,
    /// The group's current term as this host knows it.
    pub term: u64,
    /// The group's leader, if known.
    pub leader: Option<NodeId>,
    /// The group is quiescent here (idle: no heartbeats, no timers).
    pub quiesced: bool,
    /// The highest index known committed here.
    pub commit_index: u64,
    /// The highest index applied to this host's state machine.
    pub last_applied: u64,
}

impl<SM: StateMachine> Shared<SM> {
    fn db(&self) -> Result<HostDatabase, HostError> {
        lock(&self.db).clone().ok_or(HostError::Stopped)
    }
}

/// Host-wide counts since start, for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCounts {
    /// fsyncs of the shared log (one per writer round, whatever the
    /// number of groups in it).
    pub log_syncs: u64,
    /// Group writes made durable (at most one per group per round).
    pub log_group_writes: u64,
    /// Messages refused because this host has no such group.
    pub messages_unknown_group: u64,
    /// Host heartbeats sent (one per peer host per heartbeat interval,
    /// whatever the number of groups).
    pub heartbeats_sent: u64,
    /// Host heartbeats received.
    pub heartbeats_received: u64,
}

/// What the host's thread and its handles share.
struct Shared<SM: StateMachine> {
    id: NodeId,
    /// The groups, the routing of inbound messages and the hosts'
    /// heartbeat.
    switchboard: Arc<Switchboard<SM>>,
    founders: Mutex<BTreeMap<GroupId, Membership>>,
    /// Released when the host stops (the directory is then free).
    db: Mutex<Option<HostDatabase>>,
    factory: Arc<StateMachineFactory<SM>>,
    config: Config,
    cluster_name: String,
    /// Taken at shutdown so the writer thread can end.
    writer: Mutex<Option<SharedWriter>>,
    /// Set when the host stops: its heartbeat ends.
    stopping: std::sync::atomic::AtomicBool,
    /// Groups deleted here (their ids are not used again).
    tombstones: Mutex<BTreeMap<GroupId, crate::storage::fjall_host::Tombstone>>,
    deletions: Mutex<deletion::Deletions>,
    /// Serializes creations and removals: each is a few steps on the
    /// catalog and the map that must not interleave.
    lifecycle: tokio::sync::Mutex<()>,
}

/// Many Raft groups in one process: see the [module documentation](self).
///
/// Dropping the host stops it gracefully in the background (its thread
/// sees the handle gone); prefer [`Host::shutdown`], which waits.
pub struct Host<SM: StateMachine> {
    shared: Arc<Shared<SM>>,
    transport: TcpTransport,
    arbiter: actix_rt::ArbiterHandle,
    end: Mutex<Option<Ending>>,
}

/// How the handle ends the host's thread and waits for it.
struct Ending {
    stop: oneshot::Sender<()>,
    stopped: oneshot::Receiver<()>,
    thread: std::thread::JoinHandle<()>,
}

impl<SM: StateMachine + Send> Host<SM> {
    /// A host with id `id` (its members' name for it in every group);
    /// `factory` makes each group's state machine.
    pub fn builder(
        id: NodeId,
        factory: impl Fn(GroupId) -> SM + Send + Sync + 'static,
    ) -> HostBuilder<SM> {
        HostBuilder {
            id,
            factory: Arc::new(factory),
            cluster_name: "regatta".into(),
            data_dir: None,
            listen: None,
            advertise: None,
            peers: BTreeMap::new(),
            config: Config::default(),
        }
    }

    /// This host's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The address the Raft listener is bound to.
    pub fn raft_addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    /// Learns (or changes) the address of a peer host.
    pub fn set_peer_address(&self, id: NodeId, address: &str) {
        use crate::transport::Transport;
        self.transport.set_address(id, address);
    }

    /// Creates this host's replica of `group`, founded by `founders` (host
    /// ids, this one among them), and returns its handle. Every founder
    /// must create the group with the same founders; until enough of them
    /// have, the group cannot elect a leader. A group that already exists
    /// here with the same founders is returned as it is (so a restarted
    /// host may create its groups again).
    pub async fn create_group(
        &self,
        group: GroupId,
        founders: impl IntoIterator<Item = NodeId>,
    ) -> Result<Raft<SM>, HostError> {
        let founders = Membership::new(founders);
        let shared = self.shared.clone();
        self.on_host_thread(move || async move { run::create(&shared, group, founders).await })
            .await
    }

    /// Stops this host's replica of `group` and deletes its log and
    /// snapshots. The group's other members are not told: remove the
    /// host from the group first (a membership change). To delete the
    /// group itself, from every member, use [`Host::delete_group`].
    pub async fn remove_group(&self, group: GroupId) -> Result<(), HostError> {
        let shared = self.shared.clone();
        self.on_host_thread(move || async move { run::remove(&shared, group).await })
            .await
    }

    /// Deletes `group` from every member host: stops this host's replica
    /// and deletes its log and snapshots, leaving a tombstone (the id is
    /// not used again here), then tells each member host to do the same,
    /// waiting up to ten election timeouts for their answers. A member
    /// that does not answer (down, cut off) deletes its replica once it is
    /// back and the replica first speaks to a host that deleted the group.
    /// Calling again for a group deleted here tells the members again.
    /// Writes under way in the group fail as indeterminate; the data is
    /// gone for good.
    pub async fn delete_group(&self, group: GroupId) -> Result<GroupDeletion, HostError> {
        let shared = self.shared.clone();
        let transport: Arc<dyn crate::transport::Transport> = Arc::new(self.transport.clone());
        self.on_host_thread(
            move || async move { deletion::delete(&shared, transport, group).await },
        )
        .await
    }

    /// The handle of `group`, if this host has it.
    pub fn group(&self, group: GroupId) -> Option<Raft<SM>> {
        self.shared.switchboard.get(group)
    }

    /// Every group of this host, in id order, with its role and leader.
    pub fn groups(&self) -> Vec<GroupInfo> {
        let mut list = Vec::new();
        self.shared.switchboard.for_each(|group, raft| {
            let m = raft.metrics();
            let m = m.borrow();
            list.push(GroupInfo {
                group,
                role: m.role,
                term: m.term,
                leader: m.leader,
                quiesced: m.quiesced,
                commit_index: m.commit_index,
                last_applied: m.last_applied,
            });
        });
        list.sort_by_key(|g| g.group);
        list
    }

    /// Spreads the leadership of this host's groups evenly over their
    /// members: while some host leads more than its share of the groups
    /// (as this host sees their leaders), one of its groups is handed to
    /// the member host that leads the fewest. Returns how many transfers
    /// succeeded. Each transfer is an ordinary leadership transfer, so
    /// writes keep their guarantees; a transfer that fails (the target is
    /// behind, or down) is skipped. Call it on any host, e.g. after the
    /// hosts started or one came back.
    pub async fn balance_leaders(&self) -> usize {
        let mut moved = 0;
        // A few rounds: a view taken while an earlier transfer settles,
        // or a transfer that failed, leaves work for the next.
        for _ in 0..BALANCE_ROUNDS {
            let (leaders, members) = self.placement();
            let moves = crate::core::placement::spread(&leaders, &members);
            if moves.is_empty() {
                break;
            }
            let transfers = moves
                .into_iter()
                .filter_map(|(group, to)| Some((group, to, self.group(group)?)))
                .map(|(group, to, raft)| async move {
                    let result = raft.transfer_leadership(to).await;
                    if let Err(e) = &result {
                        tracing::info!(host = self.id(), group, to, error = %e, "leadership transfer for balance skipped");
                    }
                    // The next round must see the new leader here: a
                    // group whose leader this host does not know yet would
                    // be left out of the count, and another moved for it.
                    let settle = self.shared.config.election_timeout_max;
                    let _ = raft.wait_for(settle, |m| m.leader.is_some()).await;
                    result.is_ok()
                });
            moved += futures_util::future::join_all(transfers)
                .await
                .into_iter()
                .filter(|ok| *ok)
                .count();
        }
        moved
    }

    /// Who leads each group (where known) and each group's voters, as
    /// this host sees them.
    fn placement(&self) -> (BTreeMap<GroupId, NodeId>, BTreeMap<GroupId, Vec<NodeId>>) {
        let mut leaders = BTreeMap::new();
        let mut members = BTreeMap::new();
        self.shared.switchboard.for_each(|group, raft| {
            let m = raft.metrics();
            let m = m.borrow();
            if let Some(leader) = m.leader {
                leaders.insert(group, leader);
            }
            members.insert(group, m.membership.voters.iter().copied().collect());
        });
        (leaders, members)
    }

    /// Host-wide counts since start.
    pub fn counts(&self) -> HostCounts {
        let writer = lock(&self.shared.writer);
        let (log_syncs, log_group_writes) = writer.as_ref().map_or((0, 0), |w| {
            let c = w.counts();
            (
                c.syncs.load(Ordering::Relaxed),
                c.jobs.load(Ordering::Relaxed),
            )
        });
        let counts = &self.shared.switchboard.counts;
        HostCounts {
            log_syncs,
            log_group_writes,
            messages_unknown_group: counts.messages_unknown_group.load(Ordering::Relaxed),
            heartbeats_sent: counts.heartbeats_sent.load(Ordering::Relaxed),
            heartbeats_received: counts.heartbeats_received.load(Ordering::Relaxed),
        }
    }

    /// Stops every group gracefully (what is queued becomes durable),
    /// closes the transport and waits until the database is released.
    /// Takes `&self`, so a host shared with request handlers can be
    /// stopped; later calls, and group operations after it, find the
    /// host stopped.
    pub async fn shutdown(&self) {
        let end = lock(&self.end).take();
        if let Some(Ending {
            stop,
            stopped,
            thread,
        }) = end
        {
            let _ = stop.send(());
            let _ = stopped.await;
            // It has signalled its end: joining does not block for long.
            let _ = thread.join();
        }
    }

    /// Runs `work` on the host's thread (where the groups' actors live)
    /// and waits for its answer.
    async fn on_host_thread<T, F, W>(&self, work: W) -> Result<T, HostError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, HostError>> + 'static,
        W: FnOnce() -> F + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let spawned = self.arbiter.spawn_fn(move || {
            actix_rt::spawn(async move {
                let _ = tx.send(work().await);
            });
        });
        if !spawned {
            return Err(HostError::Stopped);
        }
        rx.await.map_err(|_| HostError::Stopped)?
    }
}

/// Builds a [`Host`]: [`Host::builder`], then the settings, then
/// [`HostBuilder::start`].
pub struct HostBuilder<SM: StateMachine> {
    id: NodeId,
    factory: Arc<StateMachineFactory<SM>>,
    cluster_name: String,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    peers: BTreeMap<NodeId, String>,
    config: Config,
}

impl<SM: StateMachine + Send> HostBuilder<SM> {
    /// The directory of the host's database and snapshots (required).
    pub fn data_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.data_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The address the Raft listener binds (required; port 0 picks one).
    pub fn listen(mut self, address: SocketAddr) -> Self {
        self.listen = Some(address);
        self
    }

    /// The address other hosts reach this one at (default: the bound
    /// listen address).
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.advertise = Some(address.into());
        self
    }

    /// The address of peer host `id`.
    pub fn peer(mut self, id: NodeId, address: impl Into<String>) -> Self {
        self.peers.insert(id, address.into());
        self
    }

    /// The name shared by the hosts (default `regatta`): connections and
    /// data directories of another name are refused.
    pub fn cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster_name = name.into();
        self
    }

    /// Timeouts and limits, the same for every group.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Opens the database, binds the listener, starts every group the
    /// host had, and returns once they run (on a thread of the host's own,
    /// so any async runtime may call this).
    pub async fn start(self) -> Result<Host<SM>, StartError> {
        if self.id == 0 {
            return Err(StartError::InvalidId);
        }
        self.config.validate().map_err(StartError::Config)?;
        let plan = run::Plan {
            id: self.id,
            dir: self.data_dir.ok_or(StartError::Missing("data_dir"))?,
            listen: self.listen.ok_or(StartError::Missing("listen"))?,
            advertise: self.advertise,
            peers: self.peers,
            cluster_name: self.cluster_name,
            config: self.config,
            factory: self.factory,
        };
        run::start(plan).await
    }
}

/// A poisoned lock still holds consistent data here (every critical
/// section is one insert, remove, take or clone), so a panic elsewhere
/// does not take the host down with it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
