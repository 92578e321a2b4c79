//! Receiving a snapshot from the leader, chunk by chunk, then verifying,
//! storing and installing it; which chunk is taken is decided by
//! `core::snapshot_transfer::receive_chunk`.

use actix::prelude::*;
use tokio::sync::oneshot;

use super::Follower;
use crate::applier::RestoreSnapshot;
use crate::core::snapshot_transfer::{chunk_is_next, receive_chunk, ChunkStep};
use crate::core::types::NodeId;
use crate::log_store::InstallSnapshotLog;
use crate::message::{Envelope, Message};
use crate::metrics::Counters;
use crate::role::CommitTo;
use crate::snapshotter::{SnapshotInstalled, SnapshotTaken};
use crate::storage::snapshot::{SnapshotMeta, SnapshotSink};

/// A chunk of an InstallSnapshot of this follower's term.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SnapshotChunk {
    pub from: NodeId,
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub data: bytes::Bytes,
    /// The node's commit index: a snapshot it does not go beyond is stale.
    pub commit_index: u64,
}

impl Follower {
    /// Drops a snapshot transfer under way that the node has committed
    /// past: the leader sent the entries instead and will not finish it,
    /// and its partial file would stay until this node stopped following.
    pub(super) fn drop_transfer_behind(&mut self, commit_index: u64) {
        if self
            .receiving
            .as_ref()
            .is_some_and(|(meta, _)| meta.last_included.index <= commit_index)
        {
            self.receiving = None;
        }
    }

    fn snapshot_reply(&self, to: NodeId, meta: &SnapshotMeta, received: u64, done: bool) {
        self.cx.transport.send(Envelope::new(
            self.cx.id,
            to,
            Message::InstallSnapshotResponse {
                term: self.term,
                last_included: meta.last_included,
                received,
                done,
            },
        ));
    }

    /// Verifies the complete snapshot, makes it durable, then restores it
    /// and makes the log agree with it; acknowledges only after all that.
    fn install(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        sink: Box<dyn SnapshotSink>,
        ctx: &mut Context<Self>,
    ) {
        self.installing = true;
        let verify = self.cx.io.blocking(move || sink.finish());
        ctx.spawn(verify.into_actor(self).then(move |res, act, _| {
            let (durable, durable_rx) = oneshot::channel();
            let data = match res {
                Ok(Ok(data)) => Some(data),
                Ok(Err(e)) => {
                    tracing::warn!(node = act.cx.id, term = act.term, index = meta.last_included.index, error = %e, "received snapshot rejected; the leader will resend");
                    None
                }
                Err(e) => {
                    tracing::error!(node = act.cx.id, error = %e, "snapshot verification thread failed");
                    None
                }
            };
            if let Some(data) = data {
                tracing::info!(node = act.cx.id, term = act.term, index = meta.last_included.index, "installing snapshot from the leader");
                act.cx.snapshots.restore.do_send(RestoreSnapshot {
                    last_included: meta.last_included,
                    data,
                });
                act.cx.log.do_send(InstallSnapshotLog {
                    meta: meta.clone(),
                    durable,
                });
            }
            async move { durable_rx.await.is_ok().then_some(meta) }.into_actor(act)
        }).map(move |installed, act, _| {
            act.installing = false;
            if let Some(meta) = installed {
                let at = meta.last_included;
                act.cx.snapshots.installed.do_send(SnapshotInstalled(at));
                Counters::bump(&act.cx.counters.snapshots_installed);
                act.cx.tell(SnapshotTaken(at));
                act.cx.tell(CommitTo { term: act.term, index: at.index });
                act.snapshot_reply(from, &meta, meta.size, true);
            }
        }));
    }
}

impl Handler<SnapshotChunk> for Follower {
    type Result = ();
    fn handle(&mut self, msg: SnapshotChunk, ctx: &mut Context<Self>) {
        self.arm_timer(ctx);
        let SnapshotChunk {
            from,
            meta,
            offset,
            data,
            commit_index,
        } = msg;
        if self.installing {
            return; // the reply follows the installation
        }
        let receiving_it = self.receiving.as_ref().is_some_and(|(m, _)| *m == meta);
        match receive_chunk(commit_index, meta.last_included.index, receiving_it, offset) {
            ChunkStep::AlreadyHave => {
                self.drop_transfer_behind(commit_index);
                return self.snapshot_reply(from, &meta, meta.size, true);
            }
            ChunkStep::AskFromStart => return self.snapshot_reply(from, &meta, 0, false),
            ChunkStep::Continue => {}
            ChunkStep::Begin => match self.cx.snapshots.store.sink(meta.clone()) {
                Ok(sink) => self.receiving = Some((meta.clone(), sink)),
                Err(e) => {
                    tracing::error!(node = self.cx.id, error = %e, "cannot store a snapshot");
                    return;
                }
            },
        }
        let (_, sink) = self.receiving.as_mut().expect("set above");
        if chunk_is_next(offset, sink.written(), data.len()) {
            if let Err(e) = sink.write(&data) {
                tracing::warn!(node = self.cx.id, error = %e, "snapshot chunk refused; restarting the transfer");
                self.receiving = None;
                self.snapshot_reply(from, &meta, 0, false);
                return;
            }
        }
        let written = sink.written();
        if written == meta.size {
            let (meta, sink) = self.receiving.take().expect("set above");
            self.install(from, meta, sink, ctx);
        } else {
            // Also answers duplicates and gaps: the leader resumes here.
            self.snapshot_reply(from, &meta, written, false);
        }
    }
}
