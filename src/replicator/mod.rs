//! The `Replicator` actor, one per follower per leader term: streams
//! AppendEntries with several in flight, backtracks fast on refusals,
//! sends heartbeats when idle and reports every reply to the leader.

use std::time::Instant;

use actix::prelude::*;

use crate::core::log::ConflictHint;
use crate::core::progress::Progress;
use crate::core::types::{LogId, NodeId};
use crate::leader::{Leader, PeerReply};
use crate::log_store::{NextIndexAfterConflict, ReadForPeer};
use crate::message::{Envelope, Message};
use crate::node::{RoleContext, StopRole};

pub(crate) struct Replicator {
    cx: RoleContext,
    leader: Addr<Leader>,
    term: u64,
    peer: NodeId,
    progress: Progress,
    /// The entry at `progress.match_index`, the anchor for heartbeats.
    matched: LogId,
    last_index: u64,
    commit_index: u64,
    /// Latest heartbeat round the leader asked for, and the latest sent.
    round: u64,
    sent_round: u64,
    /// A read from the log store is under way.
    reading: bool,
    /// A conflict lookup is under way.
    backtracking: bool,
    sent_since_tick: bool,
    epoch: Instant,
}

impl Replicator {
    pub(crate) fn new(
        cx: RoleContext,
        leader: Addr<Leader>,
        term: u64,
        peer: NodeId,
        last_index: u64,
        commit_index: u64,
    ) -> Self {
        let progress = Progress::new(last_index, cx.config.max_inflight);
        Replicator {
            cx,
            leader,
            term,
            peer,
            progress,
            matched: LogId::default(),
            last_index,
            commit_index,
            round: 0,
            sent_round: 0,
            reading: false,
            backtracking: false,
            sent_since_tick: false,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn send(&mut self, prev: LogId, entries: Vec<crate::core::types::Entry>) {
        self.sent_since_tick = true;
        self.sent_round = self.round;
        self.cx.transport.send(Envelope {
            from: self.cx.id,
            to: self.peer,
            message: Message::AppendEntries {
                term: self.term,
                prev,
                entries,
                leader_commit: self.commit_index,
                round: self.round,
            },
        });
    }

    fn heartbeat(&mut self) {
        self.send(self.matched, Vec::new());
    }

    /// Sends whatever can be sent now.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.reading || self.backtracking {
            return;
        }
        if self.progress.can_send() && self.progress.next_index <= self.last_index {
            let from = self.progress.next_index;
            self.reading = true;
            let read = self.cx.log.send(ReadForPeer {
                from,
                max_entries: self.cx.config.max_batch_entries,
                max_bytes: self.cx.config.max_batch_bytes,
            });
            ctx.spawn(read.into_actor(self).map(move |res, act, ctx| {
                act.reading = false;
                match res {
                    Ok(Ok((prev, entries))) => {
                        // Progress may have moved while we read; only send
                        // what is still wanted.
                        if act.progress.next_index == from && act.progress.can_send() {
                            if let Some(last) = entries.last().map(|e| e.log_id.index) {
                                act.progress.sent(last, act.now_ms());
                                act.send(prev, entries);
                            }
                        }
                        act.pump(ctx);
                    }
                    Ok(Err(_compacted)) => {
                        tracing::warn!(
                            node = act.cx.id,
                            peer = act.peer,
                            from,
                            "entries compacted; follower needs a snapshot"
                        );
                    }
                    Err(_) => ctx.stop(),
                }
            }));
            return;
        }
        if self.round > self.sent_round {
            self.heartbeat();
        }
    }

    fn on_reject(&mut self, hint: ConflictHint, prev_index: u64, ctx: &mut Context<Self>) {
        if self.backtracking {
            return;
        }
        self.backtracking = true;
        let lookup = self.cx.log.send(NextIndexAfterConflict(hint));
        ctx.spawn(lookup.into_actor(self).map(move |res, act, ctx| {
            act.backtracking = false;
            if let Ok(next) = res {
                if act.progress.on_reject(prev_index, next) {
                    tracing::debug!(
                        node = act.cx.id,
                        peer = act.peer,
                        next = act.progress.next_index,
                        "backtracking"
                    );
                }
            }
            act.pump(ctx);
        }));
    }
}

impl Actor for Replicator {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        // Announce leadership at once, then keep the follower's timer from
        // firing.
        self.heartbeat();
        self.pump(ctx);
        ctx.run_interval(self.cx.config.heartbeat_interval, |act, ctx| {
            let deadline = act
                .now_ms()
                .saturating_sub(act.cx.config.rpc_timeout().as_millis() as u64);
            if act.progress.expire(deadline) {
                tracing::debug!(
                    node = act.cx.id,
                    peer = act.peer,
                    "AppendEntries reply lost; probing again"
                );
            }
            if !act.sent_since_tick {
                act.heartbeat();
            }
            act.sent_since_tick = false;
            act.pump(ctx);
        });
    }
}

impl Handler<StopRole> for Replicator {
    type Result = ();
    fn handle(&mut self, _: StopRole, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The leader's log, commit index or heartbeat round moved.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) struct Wake {
    pub last_index: u64,
    pub commit_index: u64,
    pub round: u64,
}

impl Handler<Wake> for Replicator {
    type Result = ();
    fn handle(&mut self, msg: Wake, ctx: &mut Context<Self>) {
        self.last_index = self.last_index.max(msg.last_index);
        self.commit_index = self.commit_index.max(msg.commit_index);
        self.round = self.round.max(msg.round);
        self.pump(ctx);
    }
}

/// The follower's reply to an AppendEntries of this term.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AppendReply {
    pub result: Result<LogId, ConflictHint>,
    pub prev_index: u64,
    pub round: u64,
}

impl Handler<AppendReply> for Replicator {
    type Result = ();
    fn handle(&mut self, msg: AppendReply, ctx: &mut Context<Self>) {
        match msg.result {
            Ok(matched) => {
                // A reply to a heartbeat (no entries) proves liveness only.
                let carried_entries = matched.index > msg.prev_index;
                if carried_entries && self.progress.on_success(matched.index) {
                    self.matched = matched;
                }
            }
            Err(hint) => self.on_reject(hint, msg.prev_index, ctx),
        }
        self.leader.do_send(PeerReply {
            peer: self.peer,
            match_index: self.progress.match_index,
            round: msg.round,
        });
        self.pump(ctx);
    }
}
