//! The `Snapshotter` actor: decides when to snapshot, has the applier take
//! the state machine's snapshot between two batches, writes it durably on a
//! background thread, and only then lets the log store compact the log.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::{oneshot, watch};

use crate::applier::BuildSnapshot;
use crate::config::Config;
use crate::core::types::{LogId, NodeId};
use crate::error::RaftError;
use crate::io::IoMode;
use crate::log_store::{Compact, LogStore, MembershipAt};
use crate::metrics::Counters;
use crate::metrics::Metrics;
use crate::storage::snapshot::{self, SnapshotStore};

/// A snapshot became durable and the log was compacted up to it.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub(crate) struct SnapshotTaken(pub LogId);

/// Where a requested snapshot's position goes.
type TakeReply = oneshot::Sender<Result<LogId, RaftError>>;

/// Takes a snapshot now; answers the last entry it covers.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TakeSnapshot(pub TakeReply);

/// The applied index moved (fed from the node's metrics).
#[derive(Message)]
#[rtype(result = "()")]
struct AppliedTo(u64);

pub(crate) struct Snapshotter {
    node_id: NodeId,
    config: Arc<Config>,
    store: Arc<dyn SnapshotStore>,
    log: Addr<LogStore>,
    applier: Recipient<BuildSnapshot>,
    taken: Recipient<SnapshotTaken>,
    metrics: watch::Receiver<Metrics>,
    /// The latest durable snapshot.
    last: LogId,
    applied: u64,
    building: bool,
    /// Callers waiting for the snapshot being built (or the next one).
    waiting: Vec<TakeReply>,
    io: IoMode,
    counters: Arc<Counters>,
}

impl Snapshotter {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        node_id: NodeId,
        config: Arc<Config>,
        store: Arc<dyn SnapshotStore>,
        log: Addr<LogStore>,
        applier: Recipient<BuildSnapshot>,
        taken: Recipient<SnapshotTaken>,
        metrics: watch::Receiver<Metrics>,
        last: LogId,
        io: IoMode,
        counters: Arc<Counters>,
    ) -> Self {
        Snapshotter {
            node_id,
            config,
            store,
            log,
            applier,
            taken,
            metrics,
            last,
            applied: last.index,
            building: false,
            waiting: Vec::new(),
            io,
            counters,
        }
    }

    fn due(&self) -> bool {
        let every = self.config.snapshot_every;
        every > 0 && self.applied >= self.last.index + every
    }

    fn build(&mut self, ctx: &mut Context<Self>) {
        if self.building {
            return;
        }
        self.building = true;
        let started = std::time::Instant::now();
        let (tx, rx) = oneshot::channel();
        self.applier.do_send(BuildSnapshot(tx));
        let log = self.log.clone();
        let store = self.store.clone();
        let last = self.last;
        let keep = self.config.snapshot_keep_entries;
        let io = self.io.clone();
        let work = async move {
            let (at, data) = rx.await.map_err(|_| "the applier stopped".to_string())??;
            if at.index <= last.index {
                return Ok(last);
            }
            let membership = log
                .send(MembershipAt(at.index))
                .await
                .map_err(|_| "the log store stopped".to_string())?;
            // Serializing a large state and fsyncing it must not hold up
            // this node's actors.
            io.blocking(move || {
                let bytes = data.produce()?;
                let meta = snapshot::describe(at, membership, &bytes);
                snapshot::save(&*store, meta, &bytes).map_err(|e| e.to_string())
            })
            .await??;
            // Only now that the snapshot is durable may the log shrink.
            let (durable, compacted) = oneshot::channel();
            log.do_send(Compact {
                snapshot: at,
                keep,
                durable,
            });
            compacted
                .await
                .map_err(|_| "the log store stopped before compacting".to_string())?;
            Ok(at)
        };
        ctx.spawn(work.into_actor(self).map(move |result, act, ctx| {
            act.building = false;
            let result = match result {
                Ok(at) => {
                    if at.index > act.last.index {
                        let elapsed = started.elapsed();
                        Counters::bump(&act.counters.snapshots_built);
                        act.counters
                            .histograms
                            .snapshot_build_us
                            .record_duration(elapsed);
                        tracing::info!(
                            node = act.node_id,
                            index = at.index,
                            term = at.term,
                            elapsed_ms = elapsed.as_millis() as u64,
                            "snapshot taken"
                        );
                        act.last = at;
                        act.taken.do_send(SnapshotTaken(at));
                    }
                    Ok(at)
                }
                Err(e) => {
                    tracing::error!(node = act.node_id, error = %e, "snapshot failed");
                    Err(RaftError::Snapshot(e))
                }
            };
            for reply in act.waiting.drain(..) {
                let _ = reply.send(result.clone());
            }
            if act.due() {
                act.build(ctx);
            }
        }));
    }
}

impl Actor for Snapshotter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let mut metrics = self.metrics.clone();
        let me = ctx.address();
        ctx.spawn(
            async move {
                while metrics.changed().await.is_ok() {
                    let applied = metrics.borrow_and_update().last_applied;
                    if me.try_send(AppliedTo(applied)).is_err() {
                        break;
                    }
                }
            }
            .into_actor(self)
            // The node is gone: so is the reason to snapshot.
            .map(|_, _, ctx| ctx.stop()),
        );
    }
}

impl Handler<AppliedTo> for Snapshotter {
    type Result = ();
    fn handle(&mut self, msg: AppliedTo, ctx: &mut Context<Self>) {
        self.applied = self.applied.max(msg.0);
        if self.due() {
            self.build(ctx);
        }
    }
}

impl Handler<TakeSnapshot> for Snapshotter {
    type Result = ();
    fn handle(&mut self, msg: TakeSnapshot, ctx: &mut Context<Self>) {
        self.waiting.push(msg.0);
        self.build(ctx);
    }
}

/// A snapshot received from the leader is now the latest.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SnapshotInstalled(pub LogId);

impl Handler<SnapshotInstalled> for Snapshotter {
    type Result = ();
    fn handle(&mut self, msg: SnapshotInstalled, _ctx: &mut Context<Self>) {
        if msg.0.index > self.last.index {
            self.last = msg.0;
            self.applied = self.applied.max(msg.0.index);
        }
    }
}
