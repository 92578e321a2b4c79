//! [`Node`]: a whole durable, networked node from one builder — fjall log
//! in a data directory, Raft over TCP, your state machine — running on a
//! thread of its own, so it can be started from any async runtime.

mod cluster;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tokio::sync::oneshot;

pub use self::cluster::{InitialCluster, ParseClusterError};
use crate::config::Config;
use crate::core::types::NodeId;
use crate::error::StartError;
use crate::raft::Raft;
use crate::state_machine::StateMachine;
use crate::storage::{FjallStorage, StorageError};
use crate::transport::tcp::{TcpConfig, TcpTransport};
use crate::transport::Transport;

/// The cluster name used when the builder is given none.
const DEFAULT_CLUSTER_NAME: &str = "regatta";

/// A running node: the [`Raft`] handle, the TCP transport and the fjall
/// storage, on a thread of its own (with its own actix system); the state
/// machine runs on another thread, so a slow handler never holds up
/// heartbeats. Stop it with [`Node::shutdown`]; dropping it shuts it down
/// in the background.
///
/// ```no_run
/// # use actix::prelude::*;
/// # use regatta::{Apply, Restore, Snapshot, StateMachine};
/// # #[derive(Default)] struct Counter(u64);
/// # impl Actor for Counter { type Context = Context<Self>; }
/// # impl StateMachine for Counter { type Command = u64; type Response = u64; }
/// # impl Handler<Apply<Counter>> for Counter { type Result = Vec<u64>;
/// #     fn handle(&mut self, b: Apply<Counter>, _: &mut Context<Self>) -> Vec<u64> {
/// #         b.entries.into_iter().map(|(_, n)| { self.0 += n; self.0 }).collect() } }
/// # impl Handler<Snapshot> for Counter { type Result = Result<regatta::SnapshotData, String>;
/// #     fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
/// #         Ok(self.0.to_be_bytes().to_vec().into()) } }
/// # impl Handler<Restore> for Counter { type Result = Result<(), String>;
/// #     fn handle(&mut self, r: Restore, _: &mut Context<Self>) -> Self::Result {
/// #         self.0 = u64::from_be_bytes(r.data[..].try_into().map_err(|_| "bad")?); Ok(()) } }
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use regatta::Node;
///
/// let node = Node::builder(1, Counter::default())
///     .cluster_name("counter")
///     .data_dir("/var/lib/counter")
///     .listen("127.0.0.1:7001".parse()?)
///     .initial_cluster("1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003".parse()?)
///     .start()
///     .await?;
/// let value = node.raft().write(5).await?;
/// node.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Node<SM: StateMachine> {
    raft: Raft<SM>,
    transport: TcpTransport,
    stop: Option<oneshot::Sender<Stop>>,
    stopped: Option<oneshot::Receiver<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How the node's thread should end.
enum Stop {
    /// Fail pending requests, make queued writes durable, stop.
    Graceful,
    /// Stop at once, as a crash would (what was acknowledged is durable).
    Abort,
}

impl<SM: StateMachine + Send> Node<SM> {
    /// A builder for node `id` (≥ 1) running `state_machine`.
    pub fn builder(id: NodeId, state_machine: SM) -> NodeBuilder<SM> {
        NodeBuilder {
            id,
            state_machine,
            cluster_name: DEFAULT_CLUSTER_NAME.into(),
            data_dir: None,
            listen: None,
            advertise: None,
            initial_cluster: None,
            join: false,
            cluster_token: None,
            config: Config::default(),
            restore_from: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl<SM: StateMachine> Node<SM> {
    /// The node's handle: write, read, change membership, watch metrics.
    pub fn raft(&self) -> &Raft<SM> {
        &self.raft
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.raft.id()
    }

    /// The address the Raft transport is bound to (with the port the OS
    /// picked, when listening on port 0).
    pub fn raft_addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    /// Messages the transport dropped since the node started (a peer's
    /// queue full, no address known, too large to send): Raft recovers by
    /// resending, but a growing count means a peer is unreachable or slow.
    pub fn dropped_messages(&self) -> u64 {
        self.transport.dropped_messages()
    }

    /// Tells this node where peer `id` listens. Needed only for clusters
    /// whose ports the OS picked (tests, demos): addresses normally come
    /// from the configuration.
    pub fn set_peer_address(&self, id: NodeId, address: SocketAddr) {
        self.transport.set_address(id, &address.to_string());
    }

    /// Stops the node gracefully: pending requests fail with
    /// [`crate::RaftError::ShuttingDown`], queued log writes are made
    /// durable, the transport closes; returns once the node's thread has
    /// ended and its data directory is free.
    pub async fn shutdown(mut self) {
        self.finish(Stop::Graceful).await;
    }

    /// Stops the node at once, as a crash would: in-flight requests are
    /// lost (every acknowledged write is already durable). For demos and
    /// fault tests.
    pub async fn abort(mut self) {
        self.finish(Stop::Abort).await;
    }

    async fn finish(&mut self, how: Stop) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(how);
        }
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.await;
        }
        if let Some(thread) = self.thread.take() {
            // It has signalled its end: joining does not block for long.
            let _ = thread.join();
        }
    }
}

impl<SM: StateMachine> Drop for Node<SM> {
    fn drop(&mut self) {
        // The thread sees the closed channel and shuts down gracefully.
        self.stop.take();
    }
}

/// Builds a [`Node`]; see [`Node::builder`]. Required: a data directory,
/// a listen address, and (for a new data directory) either an initial
/// cluster or [`NodeBuilder::join`].
pub struct NodeBuilder<SM: StateMachine> {
    id: NodeId,
    state_machine: SM,
    cluster_name: String,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    initial_cluster: Option<InitialCluster>,
    join: bool,
    cluster_token: Option<String>,
    config: Config,
    restore_from: Option<PathBuf>,
    #[cfg(feature = "tls")]
    tls: Option<crate::transport::tls::TlsConfig>,
}

impl<SM: StateMachine + Send> NodeBuilder<SM> {
    /// Founds a new cluster whose state starts from the backup at `file`
    /// (`Raft::backup`, `GET /cluster/backup`), with the initial cluster
    /// as its founders: when the data directory holds no state, the
    /// backup is checked whole and restored into it first (see
    /// [`crate::backup::restore`]); when it does (a restart), this is
    /// ignored. Every founder restores the same file. Needs
    /// [`NodeBuilder::initial_cluster`].
    pub fn restore_from(mut self, file: impl AsRef<Path>) -> Self {
        self.restore_from = Some(file.as_ref().to_path_buf());
        self
    }

    /// The application's name for its clusters (default `"regatta"`):
    /// stamped on the data directory and checked in every TCP handshake,
    /// so a node of another application is refused.
    pub fn cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster_name = name.into();
        self
    }

    /// Where the node keeps its durable state (created if missing): the
    /// fjall log under `log/`, snapshots under `snapshots/`.
    pub fn data_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.data_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Where the Raft transport listens (port 0: the OS picks one).
    pub fn listen(mut self, address: SocketAddr) -> Self {
        self.listen = Some(address);
        self
    }

    /// The address peers reach this node at, when it differs from the
    /// listen address (NAT, containers, listening on 0.0.0.0).
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.advertise = Some(address.into());
        self
    }

    /// Founds a cluster of these members, if the data directory holds no
    /// state (as etcd's `--initial-cluster`); ignored when it does, so a
    /// restarted node resumes from its directory.
    pub fn initial_cluster(mut self, cluster: InitialCluster) -> Self {
        self.initial_cluster = Some(cluster);
        self
    }

    /// Starts with no configuration and waits to be added to a running
    /// cluster by its leader (a new data directory that is not a founder).
    pub fn join(mut self) -> Self {
        self.join = true;
        self
    }

    /// Mixed into the cluster id generated when the cluster is founded (as
    /// etcd's `--initial-cluster-token`); see [`Config::cluster_token`].
    pub fn cluster_token(mut self, token: impl Into<String>) -> Self {
        self.cluster_token = Some(token.into());
        self
    }

    /// Timing, batching and snapshot settings.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Mutual TLS between nodes (feature `tls`): every connection is
    /// encrypted, and each side proves with a certificate of the cluster's
    /// CA that it is the node it claims (see [`crate::transport::tls`]).
    /// Without it, Raft traffic is plain TCP — the node logs a warning
    /// when it listens beyond loopback.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::transport::tls::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Checks the inputs, opens the data directory, listens and starts the
    /// node on a thread of its own. Works from any async runtime (actix,
    /// `#[tokio::main]`, ...): the node's actors never run on the caller's.
    pub async fn start(self) -> Result<Node<SM>, StartError> {
        let plan = self.check()?;
        let (started_tx, started_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("regatta-node-{}", plan.id))
            .spawn(move || {
                let system = crate::park::system(plan.config.idle_spin);
                let (ran, state_machine_thread) = system.block_on(run(plan, started_tx, stop_rx));
                // Dropping the system drops every actor of the node; the
                // log writer thread then ends and releases the directory.
                drop(system);
                state_machine_thread.stop();
                let _ = state_machine_thread.join();
                if let Some(raft) = ran {
                    raft.join_writer();
                }
                let _ = stopped_tx.send(());
            })
            .map_err(|e| StartError::Runtime(e.to_string()))?;
        match started_rx.await {
            Ok(Ok((raft, transport))) => Ok(Node {
                raft,
                transport,
                stop: Some(stop_tx),
                stopped: Some(stopped_rx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(StartError::Runtime(
                    "the node's thread ended during start-up".into(),
                ))
            }
        }
    }

    /// Validates what can be checked before touching the directory.
    fn check(self) -> Result<Plan<SM>, StartError> {
        let id = self.id;
        if id == 0 {
            return Err(StartError::InvalidId);
        }
        let dir = self.data_dir.ok_or(StartError::Missing("data_dir"))?;
        let listen = self.listen.ok_or(StartError::Missing("listen"))?;
        let mut config = self.config;
        if let Some(token) = self.cluster_token {
            config.cluster_token = token;
        }
        config.validate().map_err(StartError::Config)?;
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            crate::transport::tls::TlsContext::load(id, tls.clone())
                .map_err(|e| StartError::Tls(e.to_string()))?;
        }
        if self.join && self.initial_cluster.is_some() {
            return Err(StartError::InitialClusterAndJoin);
        }
        if let Some(cluster) = &self.initial_cluster {
            if cluster.ids().next().is_none() {
                return Err(StartError::EmptyInitialCluster);
            }
            if !cluster.contains(id) {
                return Err(StartError::NotInInitialCluster { id });
            }
            let ours = self.advertise.clone().unwrap_or_else(|| listen.to_string());
            // Port 0 (on either side) is picked at start: nothing to compare.
            if let Some(listed) = cluster.address(id) {
                if listed != ours && listen.port() != 0 && !listed.ends_with(":0") {
                    return Err(StartError::AddressMismatch {
                        id,
                        ours,
                        listed: listed.to_string(),
                    });
                }
            }
        }
        if self.restore_from.is_some() && self.initial_cluster.is_none() {
            return Err(StartError::Missing(
                "an initial cluster (the founders of the cluster a backup is restored into)",
            ));
        }
        if self.initial_cluster.is_none() && !self.join && !crate::storage::fjall::holds_state(&dir)
        {
            return Err(StartError::NoInitialState {
                dir: dir.display().to_string(),
            });
        }
        Ok(Plan {
            id,
            restore_from: self.restore_from,
            state_machine: self.state_machine,
            cluster_name: self.cluster_name,
            dir,
            listen,
            advertise: self.advertise,
            founders: self.initial_cluster,
            config,
            #[cfg(feature = "tls")]
            tls: self.tls,
        })
    }
}

/// Checked builder inputs, moved to the node's thread.
struct Plan<SM> {
    id: NodeId,
    restore_from: Option<PathBuf>,
    state_machine: SM,
    cluster_name: String,
    dir: PathBuf,
    listen: SocketAddr,
    advertise: Option<String>,
    founders: Option<InitialCluster>,
    config: Config,
    #[cfg(feature = "tls")]
    tls: Option<crate::transport::tls::TlsConfig>,
}

type Started<SM> = Result<(Raft<SM>, TcpTransport), StartError>;

/// The node's thread: start, report, run until told to stop. Returns the
/// handle of a node that started.
/// Runs the node until it is asked to stop; returns its handle (if it
/// started) and the thread of its state machine, to stop once the node's
/// actors are gone.
async fn run<SM: StateMachine + Send>(
    plan: Plan<SM>,
    started: oneshot::Sender<Started<SM>>,
    stop: oneshot::Receiver<Stop>,
) -> (Option<Raft<SM>>, actix_rt::Arbiter) {
    // The user's state machine runs on a thread of its own: a long
    // handler (a large batch, copying the state for a snapshot) must not
    // hold up heartbeats and elections, or a busy node looks dead.
    let state_machine_thread = crate::park::arbiter(plan.config.idle_spin);
    let (raft, transport) = match start_here(plan, &state_machine_thread.handle()).await {
        Ok(parts) => parts,
        Err(e) => {
            let _ = started.send(Err(e));
            return (None, state_machine_thread);
        }
    };
    let how = if started.send(Ok((raft.clone(), transport.clone()))).is_err() {
        // The caller gave up waiting: nobody will ever stop this node.
        Stop::Graceful
    } else {
        stop.await.unwrap_or(Stop::Graceful)
    };
    transport.shutdown();
    if let Stop::Graceful = how {
        raft.shutdown().await;
    }
    (Some(raft), state_machine_thread)
}

/// Opens storage, listens, starts the Raft node on this thread's system
/// and the state machine on `state_machine_thread`.
async fn start_here<SM: StateMachine + Send>(
    plan: Plan<SM>,
    state_machine_thread: &actix_rt::ArbiterHandle,
) -> Started<SM> {
    let Plan {
        id,
        restore_from,
        state_machine,
        cluster_name,
        dir,
        listen,
        advertise,
        founders,
        config,
        #[cfg(feature = "tls")]
        tls,
    } = plan;
    // Restored before anything else touches the directory: a bad file is
    // refused with nothing written.
    if let (Some(file), Some(founders)) = (&restore_from, &founders) {
        if !crate::storage::fjall::holds_state(&dir) {
            crate::backup::restore(
                file,
                &dir,
                &cluster_name,
                &founders.membership(),
                &config.cluster_token,
            )
            .map_err(|e| StartError::Restore(e.to_string()))?;
        }
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| storage_error(&dir, StorageError::Io(e.to_string())))?;
    // Opened first: a directory in use or of another cluster is refused
    // before the node takes a port.
    let storage = FjallStorage::open(&dir, &cluster_name).map_err(|e| storage_error(&dir, e))?;
    // The transport delivers into the node, and the node sends through the
    // transport: the node's handle is filled in once it exists. Until then
    // (microseconds, on this same thread) nothing can be delivered.
    let handle: Arc<OnceLock<Raft<SM>>> = Arc::new(OnceLock::new());
    let inbound = handle.clone();
    let mut tcp = TcpConfig::new(id, cluster_name.clone(), listen);
    tcp.advertise = advertise;
    #[cfg(feature = "tls")]
    {
        tcp.tls = tls;
    }
    let transport = TcpTransport::start(
        tcp,
        Arc::new(move |envelope| {
            if let Some(raft) = inbound.get() {
                raft.deliver(envelope)
            }
        }),
    )
    .await
    .map_err(|source| StartError::Listen {
        addr: listen.to_string(),
        source,
    })?;
    // A founder on an empty directory asks the other founders first.
    let started = Raft::start_with(
        id,
        config,
        storage,
        Arc::new(transport.clone()),
        founders.map(|c| c.membership()),
        SM::start_in_arbiter(state_machine_thread, move |_| state_machine),
        crate::raft::Environment {
            ask_founders: true,
            cluster_name: cluster_name.clone(),
            ..Default::default()
        },
    );
    let raft = match started {
        Ok(raft) => raft,
        Err(e) => {
            transport.shutdown();
            return Err(match e {
                StartError::Storage { source, .. } => storage_error(&dir, source),
                e => e,
            });
        }
    };
    let _ = handle.set(raft.clone());
    Ok((raft, transport))
}

/// A storage failure on `dir`, classified.
pub(crate) fn storage_error(dir: &Path, source: StorageError) -> StartError {
    let dir = dir.display().to_string();
    match source {
        StorageError::Locked => StartError::DirectoryInUse { dir },
        StorageError::Incompatible(detail) => StartError::OtherCluster { dir, detail },
        source => StartError::Storage { dir, source },
    }
}
