//! Quiescence on the leader's side: going quiet when the group is idle,
//! and waking when the node says something needs the group.

use actix::prelude::*;

use super::Leader;
use crate::core::quiescence::Activity;
use crate::core::types::LogId;
use crate::replicator::QuiescePeer;
use crate::role::{Quiesced, Unquiesce};

impl Leader {
    /// Every few heartbeats: goes quiet if the group has been idle for
    /// a while (only on a host, whose heartbeat stands in for ours).
    pub(super) fn look_for_quiescence(&mut self, ctx: &mut Context<Self>) {
        // The blank entry of this term must be in the log: the last
        // entry's term is then ours, which `Quiesce` names.
        if self.cx.quiescence.is_none() || self.last_index < self.first_index_of_term {
            return;
        }
        let activity = Activity {
            work_in_flight: !self.proposals.is_empty()
                || self.flush_scheduled
                || !self.reads.is_idle()
                || self.change.is_some()
                || self.transfer.is_some()
                || self.promotion.is_some()
                || self.replacing.is_some()
                || !self.leaving.is_empty(),
            last_index: self.last_index,
            commit_index: self.commit_index,
            self_durable: self.self_durable,
            peers_matched: self
                .membership
                .members()
                .into_iter()
                .filter(|peer| *peer != self.cx.id)
                .map(|peer| self.tracker.matched(peer))
                .collect(),
        };
        if !self.quiescence.look(&activity) {
            return;
        }
        tracing::debug!(
            node = self.cx.id,
            term = self.term,
            index = self.last_index,
            "group quiet"
        );
        for handle in self.ticks.drain(..) {
            ctx.cancel_future(handle);
        }
        let last = LogId::new(self.term, self.last_index);
        for replicator in self.replicators.values() {
            replicator.do_send(QuiescePeer {
                last,
                commit_index: self.commit_index,
            });
        }
        self.cx.tell(Quiesced {
            term: self.term,
            quiet: true,
        });
    }
}

impl Handler<Unquiesce> for Leader {
    type Result = ();
    fn handle(&mut self, _: Unquiesce, ctx: &mut Context<Self>) {
        if !self.quiescence.wake() {
            return;
        }
        tracing::debug!(node = self.cx.id, term = self.term, "group awake");
        self.start_ticks(ctx);
        for replicator in self.replicators.values() {
            replicator.do_send(Unquiesce);
        }
        self.cx.tell(Quiesced {
            term: self.term,
            quiet: false,
        });
    }
}
