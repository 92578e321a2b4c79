//! Sending a snapshot to a follower that needs compacted entries, one
//! chunk in flight; the pace and resends are decided by
//! `core::snapshot_transfer::SnapshotSend`.

use tokio::time::Instant;

use actix::prelude::*;
use bytes::Bytes;

use super::{PeerReply, Replicator};
use crate::core::snapshot_transfer::{SendStep, SnapshotSend};
use crate::core::types::LogId;
use crate::message::{Envelope, Message};
use crate::metrics::Counters;
use crate::storage::snapshot::SnapshotMeta;

/// A snapshot on its way to the peer.
pub(super) struct Transfer {
    meta: SnapshotMeta,
    data: Bytes,
    send: SnapshotSend,
    /// When the first chunk went out.
    started: Instant,
}

impl Replicator {
    /// Loads the latest snapshot (off the actor thread) and starts sending
    /// it.
    pub(super) fn start_transfer(&mut self, ctx: &mut Context<Self>) {
        tracing::debug!(
            node = self.cx.id,
            peer = self.peer,
            "loading the snapshot to send"
        );
        self.loading = true;
        let store = self.cx.snapshots.store.clone();
        let load = self.cx.io.blocking(move || store.latest());
        ctx.spawn(load.into_actor(self).map(|res, act, ctx| {
            act.loading = false;
            match res {
                Ok(Ok(Some((meta, data)))) => {
                    tracing::info!(
                        node = act.cx.id,
                        peer = act.peer,
                        term = act.term,
                        index = meta.last_included.index,
                        bytes = meta.size,
                        "follower needs compacted entries; sending a snapshot"
                    );
                    let config = &act.cx.config;
                    let send = SnapshotSend::new(
                        meta.last_included,
                        data.len() as u64,
                        config.snapshot_chunk_bytes as u64,
                        config.rpc_timeout().as_millis() as u64,
                        config.snapshot_chunk_timeout.as_millis() as u64,
                    );
                    act.transfer = Some(Transfer {
                        meta,
                        data,
                        send,
                        started: Instant::now(),
                    });
                    let now_ms = act.now_ms();
                    if let Some(t) = &mut act.transfer {
                        let first = t.send.chunk(now_ms);
                        act.send_chunk(first);
                    }
                }
                Ok(Ok(None)) => {
                    tracing::error!(node = act.cx.id, peer = act.peer, "entries compacted but no snapshot found")
                }
                Ok(Err(e)) => {
                    tracing::error!(node = act.cx.id, peer = act.peer, error = %e, "cannot load the snapshot to send")
                }
                Err(e) => tracing::error!(node = act.cx.id, error = %e, "snapshot loading thread failed"),
            }
            act.pump(ctx);
        }));
    }

    /// Sends the byte range `range` of the snapshot under way.
    fn send_chunk(&mut self, range: std::ops::Range<u64>) {
        let Some(t) = &self.transfer else { return };
        let message = Message::InstallSnapshot {
            term: self.term,
            meta: t.meta.clone(),
            offset: range.start,
            data: t.data.slice(range.start as usize..range.end as usize),
        };
        self.sent_since_tick = true;
        self.cx
            .transport
            .send(Envelope::new(self.cx.id, self.peer, message));
    }

    /// On each tick: resends the chunk in flight if it has gone unanswered
    /// too long (it or its acknowledgement was lost).
    pub(super) fn resend_lost_chunk(&mut self) {
        let now_ms = self.now_ms();
        let Some(range) = self.transfer.as_mut().and_then(|t| t.send.on_tick(now_ms)) else {
            return;
        };
        tracing::debug!(
            node = self.cx.id,
            peer = self.peer,
            offset = range.start,
            "snapshot chunk unacknowledged; resending"
        );
        self.send_chunk(range);
    }
}

/// The follower's reply to an InstallSnapshot chunk.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SnapshotReply {
    pub last_included: LogId,
    pub received: u64,
    pub done: bool,
    /// The incarnation of the follower that answered.
    pub incarnation: u64,
}

impl Handler<SnapshotReply> for Replicator {
    type Result = ();
    fn handle(&mut self, msg: SnapshotReply, ctx: &mut Context<Self>) {
        let Some(reset) = self.check_incarnation(msg.incarnation) else {
            return;
        };
        if reset {
            self.leader.do_send(PeerReply {
                peer: self.peer,
                match_index: 0,
                round: 0,
                reset: true,
                inflight: self.progress.inflight() as u64,
                incarnation: self.live_incarnation(),
            });
            self.pump(ctx);
            return;
        }
        let now_ms = self.now_ms();
        let Some(t) = &mut self.transfer else { return };
        match t
            .send
            .on_reply(msg.last_included, msg.received, msg.done, now_ms)
        {
            SendStep::Wait => {}
            SendStep::Send(range) => self.send_chunk(range),
            SendStep::Done => {
                let elapsed = t.started.elapsed();
                self.cx
                    .counters
                    .histograms
                    .snapshot_transfer_us
                    .record_duration(elapsed);
                tracing::info!(
                    node = self.cx.id,
                    peer = self.peer,
                    index = msg.last_included.index,
                    elapsed_ms = elapsed.as_millis() as u64,
                    "snapshot installed on the follower"
                );
                self.transfer = None;
                Counters::bump(&self.cx.counters.snapshots_sent);
                self.progress.on_success(msg.last_included.index);
                self.matched = msg.last_included;
                self.leader.do_send(PeerReply {
                    peer: self.peer,
                    match_index: self.progress.match_index,
                    round: 0,
                    reset: false,
                    inflight: self.progress.inflight() as u64,
                    incarnation: self.live_incarnation(),
                });
                self.pump(ctx);
            }
        }
    }
}
