//! Starting a node: load storage, build the actors, wire them together.

use super::*;

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
    /// This low-level start founds at once on empty storage: use it only
    /// where the cluster is known to be new (tests, tools). [`crate::Node`]
    /// first asks the other founders whether the cluster exists, and
    /// refuses to found if it does (a voter whose disk was replaced must
    /// come back as a new member, not found again).
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
        Environment {
            io,
            probe,
            ask_founders,
            cluster_name,
            group,
            quiesce,
            shared_writer,
        }: Environment,
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
        let backup_store = snapshots.clone();
        let counters = Arc::new(Counters::default());
        let span = crate::spawn::group_span(group);
        let (log, writer, loaded) = LogStore::start(
            id,
            Box::new(storage),
            initial_members,
            &config,
            &io,
            shared_writer.as_ref(),
            counters.clone(),
            ask_founders,
            &span,
        )?;
        let identity = IdentityCell::new(loaded.identity, group);
        let raw_transport = transport.clone();
        let transport: Arc<dyn Transport> = Outbox::new(transport, identity.clone());
        let snapshot_id = loaded
            .snapshot
            .as_ref()
            .map_or(LogId::default(), |(m, _)| m.last_included);
        let (metrics_tx, metrics_rx) = watch::channel(Metrics {
            id,
            cluster_id: identity.get().cluster_id,
            incarnation: identity.get().incarnation,
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
            quiesced: false,
        });
        let snapshot_data = loaded.snapshot.map(|(m, data)| (m.last_included, data));
        let sm_for_node = sm.clone();
        let notices = Arc::new(Notices::default());
        let notices_for_node = notices.clone();
        let counters_for_node = counters.clone();
        let applied_log_time = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let snapshotter;
        let mut node_ctx = Context::<Node>::new();
        let node_actor = {
            let ctx = &mut node_ctx;
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
                applied_log_time.clone(),
            );
            let applier = crate::spawn::start_in(applier, &span);
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
            );
            let snapshotter_addr = crate::spawn::start_in(snapshotter_addr, &span);
            snapshotter = snapshotter_addr.clone();
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
                applied_log_time,
                quiescence: quiesce,
                span: span.clone(),
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
                notices_for_node,
                applier.clone().recipient(),
            )
            .founding(loaded.pending_founding, loaded.founders)
        };
        let node = crate::spawn::run_in(node_ctx, node_actor, &span);
        Ok(Raft {
            id,
            node,
            sm,
            metrics: metrics_rx,
            notices,
            config,
            writer,
            snapshotter,
            log,
            snapshots: backup_store,
            cluster_name: cluster_name.into(),
            forwarding: Arc::new(ForwardingSession::new()),
            counters,
            transport: raw_transport,
        })
    }
}
