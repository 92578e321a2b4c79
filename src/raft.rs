//! [`Raft`]: the cloneable handle through which an application starts a
//! node, writes, reads and watches it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;
use tracing::Instrument;

use crate::applier::Applier;
use crate::config::Config;
use crate::core::types::{ClientCommand, LogId, Membership, NodeId};
use crate::error::RaftError;
use crate::error::StartError;
use crate::identity::{IdentityCell, Outbox};
use crate::io::Environment;
use crate::log_store::{LogStore, Subscribe, WriterThread};
use crate::message::Envelope;
use crate::metrics::{Counters, Counts, Histograms, Metrics, Role, Traffic};
use crate::node::{
    ClientMembership, ClientPropose, ClientRead, ClientTransfer, ClientWrite, Inbound,
    MembershipRequest, Node, Shutdown,
};
use crate::role::{RoleContext, SnapshotPorts};
use crate::sequence::ForwardingSession;
use crate::snapshotter::{Snapshotter, TakeSnapshot};
use crate::state_machine::StateMachine;
use crate::storage::LogStorage;
use crate::transport::Transport;

/// A committed and applied write: where it sits in the log and what the
/// state machine answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written<R> {
    /// The entry's position.
    pub log_id: LogId,
    /// The state machine's response.
    pub response: R,
}

impl<R: serde::de::DeserializeOwned> Written<R> {
    /// The entry's position with its encoded response, decoded.
    pub(crate) fn decode((log_id, response): (LogId, bytes::Bytes)) -> Result<Self, RaftError> {
        let response =
            rmp_serde::from_slice(&response).map_err(|e| RaftError::Codec(e.to_string()))?;
        Ok(Written { log_id, response })
    }
}

pub(crate) fn encode<T: serde::Serialize>(command: &T) -> Result<bytes::Bytes, RaftError> {
    let bytes = rmp_serde::to_vec(command).map_err(|e| RaftError::Codec(e.to_string()))?;
    Ok(bytes.into())
}

/// A handle to a running node. Cheap to clone and usable from any thread.
pub struct Raft<SM: StateMachine> {
    id: NodeId,
    node: Addr<Node>,
    sm: Addr<SM>,
    metrics: watch::Receiver<Metrics>,
    /// Woken on every metrics change, in the order waiters came.
    changed: Arc<Notify>,
    config: Arc<Config>,
    writer: WriterThread,
    snapshotter: Addr<Snapshotter>,
    /// Tags the plain writes this node forwards.
    forwarding: Arc<ForwardingSession>,
    counters: Arc<Counters>,
    transport: Arc<dyn Transport>,
}

impl<SM: StateMachine> Clone for Raft<SM> {
    fn clone(&self) -> Self {
        Raft {
            id: self.id,
            node: self.node.clone(),
            sm: self.sm.clone(),
            metrics: self.metrics.clone(),
            changed: self.changed.clone(),
            config: self.config.clone(),
            writer: self.writer.clone(),
            snapshotter: self.snapshotter.clone(),
            forwarding: self.forwarding.clone(),
            counters: self.counters.clone(),
            transport: self.transport.clone(),
        }
    }
}

impl<SM: StateMachine> Raft<SM> {
    /// Starts node `id` on the current actix arbiter: loads `storage`,
    /// replays the committed log into the state machine `sm` as the commit
    /// index is learned, and begins as a follower.
    ///
    /// `initial_members` founds a new cluster: it is used only when the
    /// storage is empty, must list this node as a voter (else
    /// [`StartError::NotInInitialCluster`], and nothing is written), and
    /// every founding member must pass the same configuration. A node
    /// started on empty storage with `None` waits to be added by a leader.
    ///
    /// Must run inside an actix system or a tokio `LocalSet` (the node's
    /// actors are spawned on the current thread). [`crate::Node`] does all
    /// of this on a thread of its own, from any runtime.
    pub fn start(
        id: NodeId,
        config: Config,
        storage: impl LogStorage,
        transport: Arc<dyn Transport>,
        initial_members: Option<Membership>,
        sm: Addr<SM>,
    ) -> Result<Self, StartError> {
        Self::start_with(
            id,
            config,
            storage,
            transport,
            initial_members,
            sm,
            Environment::default(),
        )
    }

    /// [`Raft::start`] with a choice of where blocking work runs (the
    /// simulator runs it inline, in virtual time).
    pub(crate) fn start_with(
        id: NodeId,
        config: Config,
        storage: impl LogStorage,
        transport: Arc<dyn Transport>,
        initial_members: Option<Membership>,
        sm: Addr<SM>,
        Environment { io, probe }: Environment,
    ) -> Result<Self, StartError> {
        if actix_rt::System::try_current().is_none() {
            // Starting actors here would panic inside tokio.
            return Err(StartError::Runtime(
                "Raft::start runs the node's actors on the current thread: call it inside an \
                 actix system (#[actix_rt::main], #[actix_web::main], System::new().block_on); \
                 from any other runtime (#[tokio::main], axum, tonic) use regatta::Node, which \
                 runs the node on a thread of its own"
                    .into(),
            ));
        }
        config.validate().map_err(StartError::Config)?;
        let config = Arc::new(config);
        let snapshots = storage.snapshots();
        let counters = Arc::new(Counters::default());
        let (log, writer, loaded) = LogStore::start(
            id,
            Box::new(storage),
            initial_members,
            &config.cluster_token,
            &io,
            counters.clone(),
        )?;
        let identity = IdentityCell::new(loaded.identity);
        let raw_transport = transport.clone();
        let transport: Arc<dyn Transport> = Outbox::new(transport, identity.clone());
        let snapshot_id = loaded
            .snapshot
            .as_ref()
            .map_or(LogId::default(), |(m, _)| m.last_included);
        let (metrics_tx, metrics_rx) = watch::channel(Metrics {
            id,
            cluster_id: identity.get().cluster_id,
            role: Role::Follower,
            term: loaded.hard_state.term,
            leader: None,
            last_log_index: loaded.last_log_id.index,
            commit_index: loaded.commit_index,
            last_applied: 0,
            snapshot_index: snapshot_id.index,
            membership: loaded.membership.clone(),
            stopped_because: None,
            replication: Default::default(),
        });
        let snapshot_data = loaded.snapshot.map(|(m, data)| (m.last_included, data));
        let sm_for_node = sm.clone();
        let changed = Arc::new(Notify::new());
        let changed_for_node = changed.clone();
        let counters_for_node = counters.clone();
        let mut snapshotter = None;
        let node = Node::create(|ctx| {
            let node_addr = ctx.address();
            let applier = Applier::new(
                id,
                sm_for_node,
                log.clone(),
                node_addr.clone().recipient(),
                node_addr.clone().recipient(),
                snapshot_data,
                config.max_apply_batch,
                config.session_limits(),
                probe.clone(),
                counters_for_node.clone(),
            )
            .start();
            let snapshotter_addr = Snapshotter::new(
                id,
                config.clone(),
                snapshots.clone(),
                log.clone(),
                applier.clone().recipient(),
                node_addr.clone().recipient(),
                metrics_rx.clone(),
                snapshot_id,
                io.clone(),
                counters_for_node.clone(),
            )
            .start();
            snapshotter = Some(snapshotter_addr.clone());
            log.do_send(Subscribe {
                changes: node_addr.clone().recipient(),
                failures: node_addr.clone().recipient(),
            });
            if loaded.commit_index > 0 {
                applier.do_send(crate::applier::Committed(loaded.commit_index));
            }
            let cx = RoleContext {
                id,
                config: config.clone(),
                node: node_addr.recipient(),
                log: log.clone(),
                transport,
                snapshots: SnapshotPorts {
                    store: snapshots,
                    restore: applier.clone().recipient(),
                    installed: snapshotter_addr.recipient(),
                },
                io,
                probe,
                identity,
                counters: counters_for_node,
            };
            Node::new(
                cx,
                loaded.hard_state,
                loaded.membership,
                loaded.last_log_id,
                loaded.commit_index,
                snapshot_id.index,
                applier.clone().recipient(),
                applier.clone().recipient(),
                metrics_tx,
                changed_for_node,
                applier.clone().recipient(),
            )
        });
        Ok(Raft {
            id,
            node,
            sm,
            metrics: metrics_rx,
            changed,
            config,
            writer,
            snapshotter: snapshotter.expect("created with the node"),
            forwarding: Arc::new(ForwardingSession::new()),
            counters,
            transport: raw_transport,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Hands a message received from the network to this node. Transports
    /// call this for every inbound message.
    pub fn deliver(&self, envelope: Envelope) {
        self.node.do_send(Inbound(envelope));
    }

    /// The address of the user's state machine actor.
    pub fn state_machine(&self) -> &Addr<SM> {
        &self.sm
    }

    /// Proposes `command` and returns the state machine's response once it
    /// is committed and applied. Any node accepts writes: a follower
    /// forwards them to the leader. While no leader is known the call waits
    /// (up to the client timeout) for one.
    ///
    /// On [`RaftError::Timeout`] or [`RaftError::Indeterminate`] the command
    /// may or may not have been applied.
    pub async fn write(&self, command: SM::Command) -> Result<SM::Response, RaftError> {
        Ok(self.write_entry(command).await?.response)
    }

    /// [`Raft::write`], also returning where the command sits in the log:
    /// for read-your-writes tokens (wait until a node has applied
    /// `log_id.index`), idempotency records and tests.
    pub async fn write_entry(
        &self,
        command: SM::Command,
    ) -> Result<Written<SM::Response>, RaftError> {
        let bytes = encode(&command)?;
        let seq = self.forwarding.begin();
        let deadline = Instant::now() + self.config.client_timeout;
        let span = write_span(self.id);
        let submitted = self
            .retry_until_leader(deadline, |reply| ClientWrite {
                command: ClientCommand::Tagged(self.forwarding.tag(seq), bytes.clone()),
                reply,
                span: span.clone(),
            })
            .instrument(span.clone())
            .await;
        self.forwarding.end(seq);
        let submitted = submitted.map_err(|e| match e {
            // Only copies of a write already answered (or given up) are
            // stale: this one may have been applied.
            RaftError::Session(_) => RaftError::Indeterminate,
            e => e,
        });
        Written::decode(self.counted(submitted)?)
    }

    /// Commits an empty entry through the log (through the leader, from
    /// any node, like a write) and returns its position once this node's
    /// state machine has reached it: proof that the cluster can commit
    /// right now. Harmless to retry: an empty entry changes nothing.
    pub async fn commit_empty_entry(&self) -> Result<LogId, RaftError> {
        let deadline = Instant::now() + self.config.client_timeout;
        let (log_id, _) = self.submit(ClientCommand::Empty).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.wait_applied(log_id.index, remaining)
            .await
            .map_err(|_| RaftError::Timeout)?;
        Ok(log_id)
    }

    pub(crate) async fn submit(
        &self,
        command: ClientCommand,
    ) -> Result<(LogId, bytes::Bytes), RaftError> {
        let deadline = Instant::now() + self.config.client_timeout;
        let span = write_span(self.id);
        let submitted = self
            .retry_until_leader(deadline, |reply| ClientWrite {
                command: command.clone(),
                reply,
                span: span.clone(),
            })
            .instrument(span.clone())
            .await;
        self.counted(submitted)
    }

    /// Counts a client write and, if it failed, how.
    fn counted<T>(&self, result: Result<T, RaftError>) -> Result<T, RaftError> {
        Counters::bump(&self.counters.writes_submitted);
        if let Err(e) = &result {
            self.counters.write_failed(e);
        }
        result
    }

    /// Appends `command` if this node leads and returns its position as
    /// soon as it is in the leader's log, without waiting for the commit;
    /// never forwarded or retried. Fails with [`RaftError::NotLeader`]
    /// (definite: nothing was appended) on any other node. The entry may
    /// still be lost if leadership is lost before it commits: watch
    /// [`Metrics::last_applied`] and the applied entries to learn its
    /// fate. For callers that route requests themselves, and test
    /// harnesses.
    pub async fn propose(&self, command: SM::Command) -> Result<LogId, RaftError> {
        let command = encode(&command)?;
        let (appended, rx) = oneshot::channel();
        self.node
            .send(ClientPropose { command, appended })
            .await
            .map_err(|_| RaftError::ShuttingDown)?;
        rx.await.map_err(|_| RaftError::ShuttingDown)?
    }

    /// Waits until this node's state machine reflects every write committed
    /// before the call (ReadIndex: the leader confirms its leadership with
    /// one heartbeat round, then this node waits to apply up to the leader's
    /// commit index). Returns that index.
    pub async fn read_barrier(&self) -> Result<u64, RaftError> {
        let deadline = Instant::now() + self.config.client_timeout;
        let index = self
            .retry_until_leader(deadline, |reply| ClientRead { reply })
            .await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.wait_for(remaining, |m| m.last_applied >= index)
            .await
            .map_err(|_| RaftError::Timeout)?;
        Ok(index)
    }

    /// A linearizable read: passes the [`Raft::read_barrier`], then sends
    /// `query` to the local state machine. Works on any node.
    pub async fn read<M>(&self, query: M) -> Result<M::Result, RaftError>
    where
        SM: Handler<M>,
        M: actix::Message + Send + 'static,
        M::Result: Send,
    {
        self.read_barrier().await?;
        self.sm
            .send(query)
            .await
            .map_err(|_| RaftError::ShuttingDown)
    }

    async fn retry_until_leader<T, M>(
        &self,
        deadline: Instant,
        make: impl Fn(oneshot::Sender<Result<T, RaftError>>) -> M,
    ) -> Result<T, RaftError>
    where
        M: actix::Message<Result = ()> + Send + 'static,
        Node: Handler<M>,
    {
        loop {
            // Registered before asking, so news of a leader that arrives
            // meanwhile is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (tx, rx) = oneshot::channel();
            self.node
                .send(make(tx))
                .await
                .map_err(|_| RaftError::ShuttingDown)?;
            let outcome = match tokio::time::timeout_at(deadline, rx).await {
                Err(_) => return Err(RaftError::Timeout),
                // The node dropped the request: it stopped.
                Ok(Err(_)) => return Err(RaftError::Indeterminate),
                Ok(Ok(r)) => r,
            };
            match outcome {
                Err(RaftError::NotLeader(hint)) => {
                    // Nothing was submitted: wait for news of a leader and
                    // try again, until the deadline.
                    let pause =
                        (self.config.election_timeout_min / 4).max(Duration::from_millis(5));
                    let wait_until = (Instant::now() + pause).min(deadline);
                    if Instant::now() >= deadline {
                        return Err(RaftError::NotLeader(hint));
                    }
                    let _ = tokio::time::timeout_at(wait_until, changed).await;
                }
                other => return other,
            }
        }
    }

    /// Adds node `id`, listening at `address` (as the transport expects
    /// it; may be empty for transports that route by id), as a learner: it
    /// receives the log but does not vote. Returns once the configuration
    /// with the learner has committed. Must be called on the leader (or
    /// fails with [`RaftError::NotLeader`] carrying a hint).
    pub async fn add_learner(
        &self,
        id: NodeId,
        address: impl Into<String>,
    ) -> Result<Membership, RaftError> {
        self.add_learner_with_metadata(id, address, BTreeMap::new())
            .await
    }

    /// [`Raft::add_learner`], also recording the node's metadata in the
    /// configuration (its API address under [`crate::API_ADDRESS`], say).
    /// Adding a learner again replaces its address and metadata.
    pub async fn add_learner_with_metadata(
        &self,
        id: NodeId,
        address: impl Into<String>,
        metadata: BTreeMap<String, String>,
    ) -> Result<Membership, RaftError> {
        let request = MembershipRequest::AddLearner {
            id,
            address: address.into(),
            metadata,
        };
        self.membership_request(request).await
    }

    /// Removes learner `id` from the configuration; returns once that has
    /// committed (the leader then stops replicating to it). Voters are
    /// removed with [`Raft::change_membership`]. Must be called on the
    /// leader.
    pub async fn remove_learner(&self, id: NodeId) -> Result<Membership, RaftError> {
        self.membership_request(MembershipRequest::RemoveLearner { id })
            .await
    }

    /// Makes `voters` the voting members, by joint consensus (C_old →
    /// C_old,new → C_new, each a log entry). Returns the new configuration
    /// once C_new has committed. Every new voter must already be a learner;
    /// the leader waits up to an election timeout for each to be at most
    /// [`Config::learner_max_lag`] entries behind (and to have acknowledged
    /// something), then refuses. A refusal, or another change in progress,
    /// gives [`RaftError::Membership`] and nothing changes. A leader that is not
    /// in `voters` manages the change, then steps down.
    ///
    /// [`RaftError::Indeterminate`] means the leader was lost mid-change:
    /// the next leader finishes a change whose joint entry it has.
    pub async fn change_membership(
        &self,
        voters: impl IntoIterator<Item = NodeId>,
    ) -> Result<Membership, RaftError> {
        let request = MembershipRequest::Change {
            voters: voters.into_iter().collect(),
        };
        self.membership_request(request).await
    }

    /// Hands leadership to voter `to` (dissertation §3.10): the leader
    /// stops accepting writes (clients get [`RaftError::NotLeader`] naming
    /// `to` and retry), brings `to` up to date, and sends it TimeoutNow; `to`
    /// campaigns at once and wins. Returns once this node has stepped down.
    /// If `to` does not take over within an election timeout the transfer
    /// fails with [`RaftError::Transfer`] and this leader carries on. Must
    /// be called on the leader.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), RaftError> {
        let deadline = Instant::now() + self.config.client_timeout;
        self.retry_until_leader(deadline, |reply| ClientTransfer { to, reply })
            .await
    }

    async fn membership_request(
        &self,
        request: MembershipRequest,
    ) -> Result<Membership, RaftError> {
        let deadline = Instant::now() + self.config.client_timeout;
        self.retry_until_leader(deadline, |reply| ClientMembership {
            request: request.clone(),
            reply,
        })
        .await
    }

    /// Takes a snapshot of the state machine now (besides the automatic
    /// ones every [`Config::snapshot_every`] applied entries), makes it
    /// durable and compacts the log behind it. Returns the last entry the
    /// snapshot covers; if a snapshot is already being taken, its result.
    pub async fn snapshot(&self) -> Result<LogId, RaftError> {
        let (tx, rx) = oneshot::channel();
        self.snapshotter
            .send(TakeSnapshot(tx))
            .await
            .map_err(|_| RaftError::ShuttingDown)?;
        rx.await.map_err(|_| RaftError::ShuttingDown)?
    }

    /// How often things happened on this node since it started.
    pub fn counts(&self) -> Counts {
        self.counters.read()
    }

    /// Latencies and batch sizes this node recorded since it started.
    pub fn histograms(&self) -> Histograms {
        self.counters.histograms.read()
    }

    /// Bytes the transport moved to and from each peer (empty for
    /// transports that do not count).
    pub fn traffic(&self) -> BTreeMap<NodeId, Traffic> {
        self.transport.traffic()
    }

    /// The node's metrics, updated on every change.
    pub fn metrics(&self) -> watch::Receiver<Metrics> {
        self.metrics.clone()
    }

    /// Waits until the metrics satisfy `condition`, up to `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        condition: impl Fn(&Metrics) -> bool,
    ) -> Result<Metrics, RaftError> {
        let result = tokio::time::timeout(timeout, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                {
                    let m = self.metrics.borrow();
                    if condition(&m) {
                        return Ok(m.clone());
                    }
                }
                if self.metrics.has_changed().is_err() {
                    return Err(RaftError::ShuttingDown);
                }
                changed.await;
            }
        })
        .await;
        result.map_err(|_| RaftError::Timeout)?
    }

    /// Waits until this node knows a leader; returns its id.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<NodeId, RaftError> {
        let m = self.wait_for(timeout, |m| m.leader.is_some()).await?;
        m.leader.ok_or(RaftError::Timeout)
    }

    /// Waits until this node has applied at least `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<Metrics, RaftError> {
        self.wait_for(timeout, |m| m.last_applied >= index).await
    }

    /// Stops the node gracefully: pending client calls fail with
    /// [`RaftError::ShuttingDown`], queued log writes are made durable,
    /// then every actor of the node stops.
    pub async fn shutdown(&self) {
        let _ = self.node.send(Shutdown).await;
        self.join_writer();
    }

    /// Blocks until the log writer thread has exited (after the node's
    /// actors are gone), so the storage can be reopened.
    pub(crate) fn join_writer(&self) {
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// The span of one client write on the node that took it: its term and
/// index are filled in by the leader when the write is appended there, and
/// the leader's `appended` and the applier's `applied` events are its
/// children. At debug level only, so it costs nothing by default.
fn write_span(node: NodeId) -> tracing::Span {
    tracing::debug_span!(
        "write",
        node,
        term = tracing::field::Empty,
        index = tracing::field::Empty
    )
}
