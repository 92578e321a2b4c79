//! Start-up: load what storage holds, found a cluster on empty storage,
//! check the directory belongs to this cluster, and start the writer.

use super::*;

impl LogStore {
    /// Starts the store on the current arbiter with the state loaded from
    /// `storage`; returns the actor, the loaded state and the writer thread.
    /// With `shared`, the storage goes to that writer (a host's) instead
    /// of one of its own.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        node_id: NodeId,
        mut storage: Box<dyn LogStorage>,
        bootstrap: Option<Membership>,
        config: &crate::config::Config,
        io: &IoMode,
        shared: Option<&super::SharedWriter>,
        counters: Arc<Counters>,
        ask_founders: bool,
        span: &tracing::Span,
    ) -> Result<(Addr<LogStore>, WriterThread, Loaded), StartError> {
        let mut state: InitialState = storage.load()?;
        if let Some(founders) = bootstrap.as_ref().filter(|_| state.is_empty()) {
            // Checked before anything is written: a node founded outside
            // its own configuration would start as removed, for good.
            if founders.voters.is_empty() {
                return Err(StartError::EmptyInitialCluster);
            }
            if !founders.voters.contains(&node_id) {
                return Err(StartError::NotInInitialCluster { id: node_id });
            }
        }
        let mut initial_batch = None;
        let mut founded = false;
        // A directory written before identities existed gets one now; a
        // new directory gets a fresh incarnation, and a founder the
        // founding cluster id.
        let founding = bootstrap
            .as_ref()
            .filter(|_| state.is_empty())
            .map(|m| founding_cluster_id(m, &config.cluster_token));
        let mut new_identity = state.identity.is_none().then(|| NodeIdentity {
            cluster_id: founding.or(config.join_cluster_id).unwrap_or(0),
            incarnation: fastrand::u64(1..),
            founder: founding.is_some(),
        });
        // A joining node told its cluster's id takes it at once (rather
        // than from the first self-declared leader).
        if let (Some(id), Some(known)) = (config.join_cluster_id, state.identity) {
            if known.cluster_id != 0 && known.cluster_id != id {
                return Err(StartError::WrongCluster {
                    expected: id,
                    found: known.cluster_id,
                });
            }
            if known.cluster_id == 0 {
                new_identity = Some(NodeIdentity {
                    cluster_id: id,
                    ..known
                });
            }
        }
        let identity = new_identity.or(state.identity).unwrap_or_default();
        // An empty directory founds only once the other founders have said
        // the cluster does not exist yet (the node asks them: see
        // core::founding); until then it holds its identity and nothing
        // else. Without `ask_founders` (Raft::start: the caller knows the
        // cluster is new) it founds at once.
        let mut pending_founding = bootstrap.filter(|_| state.is_empty());
        if !ask_founders {
            if let Some(m) = pending_founding.take() {
                // Every founding member writes the same first entry (term 1,
                // index 1), so their logs agree on it without an election.
                let entry = Entry {
                    log_id: LogId::new(1, 1),
                    payload: Payload::Membership(Box::new(m)),
                };
                let hs = HardState {
                    term: 1,
                    voted_for: None,
                };
                state.entries.push(entry.clone());
                state.hard_state = hs;
                initial_batch = Some(WriteBatch {
                    truncate_from: None,
                    entries: vec![entry],
                    hard_state: Some(hs),
                    identity: new_identity,
                    founders: None,
                });
                founded = true;
            }
        }
        if initial_batch.is_none() && new_identity.is_some() {
            initial_batch = Some(WriteBatch {
                identity: new_identity,
                ..WriteBatch::default()
            });
        }
        if let Some(batch) = initial_batch {
            storage.write(batch)?;
        }
        let snapshot = reconcile_with_snapshot(&mut *storage, &mut state)?;
        let mut configs = ConfigLog::new(state.snapshot_membership.clone().unwrap_or_default());
        for e in &state.entries {
            configs.appended(e);
        }
        let log = RaftLog::new(state.snapshot, state.entries);
        let loaded = Loaded {
            hard_state: state.hard_state,
            last_log_id: log.last_log_id(),
            membership: configs.latest().clone(),
            // A snapshot holds only committed entries, and a founding
            // configuration at index 1 is committed by construction;
            // beyond that the commit index is learned anew.
            commit_index: snapshot
                .as_ref()
                .map_or(founded as u64, |(m, _)| m.last_included.index),
            snapshot,
            identity,
            pending_founding,
            founders: state.founders,
        };
        let ctx = Context::<LogStore>::new();
        let (writer, thread) = match shared {
            Some(shared) => {
                let stats = super::writer::WriterStats::new(node_id, counters);
                let slot = shared.register(storage, ctx.address(), stats)?;
                // The slot goes with the writer: dropping it releases the
                // storage at the shared writer.
                let hand: Box<dyn Fn(super::writer::Job) -> bool + Send> =
                    Box::new(move |job| slot.hand(job));
                (Writer::Shared(hand), WriterThread::default())
            }
            None => Writer::start(node_id, storage, io, ctx.address(), counters)?,
        };
        let store = LogStore {
            node_id,
            log,
            configs,
            writer: Some(writer),
            writer_busy: false,
            queue: WriteQueue::default(),
            queued_waiters: Vec::new(),
            listener: None,
            told_membership: None,
            on_failure: None,
            failed: false,
        };
        Ok((crate::spawn::run_in(ctx, store, span), thread, loaded))
    }
}
