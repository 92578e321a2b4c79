//! The `Replicator` actor, one per follower per leader term: streams
//! AppendEntries with several in flight, backtracks fast on refusals,
//! sends heartbeats when idle and reports every reply to the leader.

mod snapshot;

pub(crate) use snapshot::SnapshotReply;

use tokio::time::Instant;

use actix::prelude::*;

use crate::core::incarnations::{Heard, Incarnations};
use crate::core::log::ConflictHint;
use crate::core::progress::Progress;
use crate::core::types::{LogId, NodeId};
use crate::log_store::{NextIndexAfterConflict, ReadForPeer};
use crate::message::{Envelope, Message};
use crate::metrics::Counters;
use crate::role::{RoleContext, StopRole};

pub(crate) struct Replicator {
    cx: RoleContext,
    leader: Recipient<PeerReply>,
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
    /// The leader commit index last sent to the peer.
    sent_commit: u64,
    /// A heartbeat carrying only a new commit index is scheduled.
    commit_notice_scheduled: bool,
    epoch: Instant,
    /// A snapshot being sent because the entries the follower needs are
    /// compacted. AppendEntries wait until it is installed.
    transfer: Option<snapshot::Transfer>,
    /// The snapshot is being loaded from the store.
    loading: bool,
    /// The peer's live incarnation, once it has answered, and those it
    /// replaced (whose late answers never count again).
    peer_incarnation: Incarnations,
    /// The heartbeat timer; cancelled while the group is quiet.
    tick: Option<SpawnHandle>,
}

impl Replicator {
    pub(crate) fn new(
        cx: RoleContext,
        leader: Recipient<PeerReply>,
        term: u64,
        (peer, pinned): (NodeId, Option<u64>),
        last_index: u64,
        commit_index: u64,
    ) -> Self {
        // The pinned incarnation is older than any other heard later.
        let mut peer_incarnation = Incarnations::new(1);
        if let Some(pinned) = pinned {
            peer_incarnation.seed(peer, pinned);
        }
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
            sent_commit: 0,
            commit_notice_scheduled: false,
            epoch: Instant::now(),
            transfer: None,
            loading: false,
            peer_incarnation,
            tick: None,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn send(&mut self, prev: LogId, entries: Vec<crate::core::types::Entry>) {
        Counters::bump(&self.cx.counters.append_entries_sent);
        if !entries.is_empty() {
            let histograms = &self.cx.counters.histograms;
            histograms.append_batch_entries.record(entries.len() as u64);
        }
        self.sent_since_tick = true;
        self.sent_round = self.round;
        self.sent_commit = self.commit_index;
        self.cx.transport.send(Envelope::new(
            self.cx.id,
            self.peer,
            Message::AppendEntries {
                term: self.term,
                prev,
                entries,
                leader_commit: self.commit_index,
                round: self.round,
            },
        ));
    }

    fn heartbeat(&mut self) {
        self.send(self.matched, Vec::new());
    }

    /// Sends whatever can be sent now.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.reading || self.backtracking || self.loading || self.transfer.is_some() {
            if self.round > self.sent_round {
                self.heartbeat();
            }
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
                    Ok(Err(_compacted)) => act.start_transfer(ctx),
                    Err(_) => ctx.stop(),
                }
            }));
            return;
        }
        if self.round > self.sent_round {
            self.heartbeat();
        } else {
            self.schedule_commit_notice(ctx);
        }
    }

    /// Tells an idle peer about a commit index it has not been sent, so
    /// followers apply (and serve reads) promptly instead of at the next
    /// heartbeat, one or two intervals later. Waits a tenth of a heartbeat
    /// interval first: under load the next AppendEntries carries the new
    /// commit index anyway, and then no extra message is sent.
    fn schedule_commit_notice(&mut self, ctx: &mut Context<Self>) {
        let idle = self.progress.inflight() == 0;
        if !idle || self.commit_index <= self.sent_commit || self.commit_notice_scheduled {
            return;
        }
        self.commit_notice_scheduled = true;
        ctx.run_later(self.cx.config.heartbeat_interval / 10, |act, _| {
            act.commit_notice_scheduled = false;
            if act.commit_index > act.sent_commit && act.progress.inflight() == 0 {
                act.heartbeat();
            }
        });
    }

    /// The peer's live incarnation (0 until one has answered).
    fn live_incarnation(&self) -> u64 {
        self.peer_incarnation.live(self.peer).unwrap_or(0)
    }

    /// A reply from a new incarnation of the peer means it lost its state
    /// (its directory was wiped): forget what it had acknowledged and
    /// start over from probing. Returns whether that happened, or `None`
    /// for a reply from an incarnation already replaced: ignore it.
    fn check_incarnation(&mut self, incarnation: u64) -> Option<bool> {
        match self.peer_incarnation.hear(self.peer, incarnation) {
            Heard::Retired | Heard::Untracked => return None,
            Heard::Replaced { .. } => {}
            Heard::Live | Heard::First => return Some(false),
        }
        tracing::info!(
            node = self.cx.id,
            term = self.term,
            peer = self.peer,
            "peer came back with new state (a new incarnation); replicating from scratch"
        );
        // Probe from the last entry, as after a rejection: a heartbeat at
        // the new match point (nothing) always succeeds, and with the
        // cluster idle nothing else would ever find where the logs part.
        self.progress = Progress::new(
            self.last_index.saturating_sub(1),
            self.cx.config.max_inflight,
        );
        self.matched = LogId::default();
        self.transfer = None;
        Some(true)
    }

    fn on_reject(&mut self, hint: ConflictHint, prev_index: u64, ctx: &mut Context<Self>) {
        if self.backtracking || self.transfer.is_some() || self.loading {
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
        self.start_tick(ctx);
    }
}

impl Replicator {
    /// The heartbeat timer: keeps the follower's election timer from
    /// firing, and retries what was lost.
    fn start_tick(&mut self, ctx: &mut Context<Self>) {
        let tick = ctx.run_interval(self.cx.config.heartbeat_interval, |act, ctx| {
            if act.tick.is_none() {
                // Cancelled (quiet), but already due in this poll.
                return;
            }
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
            tracing::trace!(
                node = act.cx.id,
                peer = act.peer,
                reading = act.reading,
                backtracking = act.backtracking,
                loading = act.loading,
                transfer = act.transfer.is_some(),
                next = act.progress.next_index,
                matched = act.progress.match_index,
                last = act.last_index,
                "tick"
            );
            act.resend_lost_chunk();
            if !act.sent_since_tick {
                act.heartbeat();
            }
            act.sent_since_tick = false;
            act.pump(ctx);
        });
        self.tick = Some(tick);
    }

    /// Leaves quiescence: heartbeats again, starting now.
    fn resume(&mut self, ctx: &mut Context<Self>) {
        if self.tick.is_none() {
            self.start_tick(ctx);
            self.heartbeat();
        }
    }
}

/// The group is idle: tell the peer (if it holds everything up to
/// `last`) and stop heartbeats.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct QuiescePeer {
    pub last: LogId,
    pub commit_index: u64,
}

impl Handler<QuiescePeer> for Replicator {
    type Result = ();
    fn handle(&mut self, msg: QuiescePeer, ctx: &mut Context<Self>) {
        let settled = self.matched == msg.last
            && self.progress.inflight() == 0
            && !(self.reading || self.backtracking || self.loading || self.transfer.is_some());
        if !settled {
            tracing::debug!(
                node = self.cx.id,
                term = self.term,
                peer = self.peer,
                matched = ?self.matched,
                last = ?msg.last,
                inflight = self.progress.inflight(),
                "not quiescing this peer yet"
            );
            return; // keeps its heartbeats: the peer stays awake
        }
        if let Some(tick) = self.tick.take() {
            ctx.cancel_future(tick);
        }
        self.sent_commit = msg.commit_index;
        self.cx.transport.send(Envelope::new(
            self.cx.id,
            self.peer,
            Message::Quiesce {
                term: self.term,
                last: msg.last,
                leader_commit: msg.commit_index,
            },
        ));
    }
}

impl Handler<crate::role::Unquiesce> for Replicator {
    type Result = ();
    fn handle(&mut self, _: crate::role::Unquiesce, ctx: &mut Context<Self>) {
        self.resume(ctx);
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
        // The leader wakes its replicators before it has anything new;
        // this is the backstop should news come first.
        self.resume(ctx);
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
    /// The incarnation of the follower that answered.
    pub incarnation: u64,
}

impl Handler<AppendReply> for Replicator {
    type Result = ();
    fn handle(&mut self, msg: AppendReply, ctx: &mut Context<Self>) {
        let Some(reset) = self.check_incarnation(msg.incarnation) else {
            return;
        };
        if reset && msg.result.is_ok() {
            // An answer to what we sent its previous incarnation.
            self.leader.do_send(PeerReply {
                peer: self.peer,
                match_index: 0,
                round: msg.round,
                reset,
                inflight: self.progress.inflight() as u64,
                incarnation: self.live_incarnation(),
            });
            self.pump(ctx);
            return;
        }
        if let Err(why) = crate::core::validate::append_response(
            self.term,
            self.last_index,
            &msg.result,
            msg.prev_index,
        ) {
            // Not an answer to anything this leader sent: a confused,
            // foreign or hostile peer.
            Counters::bump(&self.cx.counters.messages_invalid);
            tracing::warn!(
                node = self.cx.id,
                term = self.term,
                peer = self.peer,
                reason = %why,
                "invalid AppendEntries answer; ignored"
            );
            return;
        }
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
            reset,
            inflight: self.progress.inflight() as u64,
            incarnation: self.live_incarnation(),
        });
        self.pump(ctx);
    }
}

/// What a replicator tells its leader after each answer from its peer.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PeerReply {
    pub peer: NodeId,
    pub match_index: u64,
    pub round: u64,
    /// The peer lost its state: `match_index` replaces what it had
    /// acknowledged before.
    pub reset: bool,
    /// AppendEntries still unanswered after this reply.
    pub inflight: u64,
    /// The peer's incarnation that answered.
    pub incarnation: u64,
}
