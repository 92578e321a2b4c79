//! Membership changes on the leader: adding and removing learners, and
//! changing the voters by joint consensus once new voters have caught up.

use std::collections::{BTreeMap, BTreeSet};

use actix::prelude::*;

use super::{ChangeReply, Leader, PendingChange};
use crate::core::autopilot::Health;
use crate::core::confchange::{
    add_learner, check_voters, demote, enter_joint, lagging, leave_joint, pin_voters,
    remove_learner, set_metadata, ChangeDriver,
};
use crate::core::types::{Membership, NodeId, Payload};
use crate::error::{MembershipError, RaftError};

/// Adds a non-voting member that receives the log.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AddLearner {
    pub id: NodeId,
    pub address: String,
    pub metadata: BTreeMap<String, String>,
    pub reply: ChangeReply,
}

impl Handler<AddLearner> for Leader {
    type Result = ();
    fn handle(&mut self, msg: AddLearner, ctx: &mut Context<Self>) {
        if let Err(e) = self.check_idle() {
            let _ = msg.reply.send(Err(e));
            return;
        }
        let next = match add_learner(&self.membership, msg.id, msg.address, msg.metadata) {
            Ok(next) => next,
            Err(e) => {
                let _ = msg.reply.send(Err(RaftError::Membership(e)));
                return;
            }
        };
        if next == self.membership {
            let _ = msg.reply.send(Ok(next));
            return;
        }
        self.propose_configuration(next, msg.reply, ctx);
    }
}

impl Leader {
    /// Appends `next`, a change of learners only (one entry, no joint
    /// phase), and answers `reply` once it has committed.
    fn propose_configuration(
        &mut self,
        next: Membership,
        reply: ChangeReply,
        ctx: &mut Context<Self>,
    ) {
        self.change = Some(PendingChange {
            driver: ChangeDriver::single(),
            reply: Some(reply),
        });
        let next = self.pin(next);
        self.propose(Payload::Membership(Box::new(next)), None, ctx);
    }

    /// `next` with its voters' incarnations pinned where this leader knows
    /// them (`core::confchange::pin_voters`): its own; a new voter's, the
    /// one that caught up; a founder's, once it has acknowledged this
    /// leader's first entry (so it holds everything committed before).
    pub(super) fn pin(&self, next: Membership) -> Membership {
        let me = self.cx.id;
        let mine = self.cx.identity.get().incarnation;
        pin_voters(next, |id| {
            if id == me {
                return Some(mine);
            }
            let incarnation = self.tracker.incarnation(id)?;
            let new_voter = !self.membership.is_voter(id);
            // A founder only as the incarnation that counts now (not one
            // back on a new disk) and once it holds the log.
            let founder_ok = self.tracker.counts(&self.membership, id)
                && self.tracker.matched(id) >= self.first_index_of_term;
            (new_voter || founder_ok).then_some(incarnation)
        })
    }
}

/// Removes a learner (one configuration entry: it never voted).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RemoveLearner {
    pub id: NodeId,
    pub reply: ChangeReply,
}

impl Handler<RemoveLearner> for Leader {
    type Result = ();
    fn handle(&mut self, msg: RemoveLearner, ctx: &mut Context<Self>) {
        if let Err(e) = self.check_idle() {
            let _ = msg.reply.send(Err(e));
            return;
        }
        match remove_learner(&self.membership, msg.id) {
            Ok(next) => self.propose_configuration(next, msg.reply, ctx),
            Err(e) => {
                let _ = msg.reply.send(Err(RaftError::Membership(e)));
            }
        }
    }
}

/// Sets (or removes) one metadata key of a member: one configuration
/// entry, voters and learners unchanged.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetMetadata {
    pub id: NodeId,
    pub key: String,
    pub value: Option<String>,
    pub reply: ChangeReply,
}

impl Handler<SetMetadata> for Leader {
    type Result = ();
    fn handle(&mut self, msg: SetMetadata, ctx: &mut Context<Self>) {
        if let Err(e) = self.check_idle() {
            let _ = msg.reply.send(Err(e));
            return;
        }
        match set_metadata(&self.membership, msg.id, msg.key, msg.value) {
            Ok(next) if next == self.membership => {
                let _ = msg.reply.send(Ok(next));
            }
            Ok(next) => self.propose_configuration(next, msg.reply, ctx),
            Err(e) => refuse(msg.reply, e),
        }
    }
}

impl Leader {
    /// Dead-voter cleanup: removes one voter unheard for `after`, if the
    /// rules of `core::autopilot::dead_voter` allow it and no change is
    /// under way.
    pub(super) fn remove_a_dead_voter(
        &mut self,
        after: std::time::Duration,
        ctx: &mut Context<Self>,
    ) {
        if self.check_idle().is_err() || self.transfer.is_some() {
            return;
        }
        let now_ms = self.now_ms();
        let tracker = &self.tracker;
        let victim = crate::core::autopilot::dead_voter(
            &self.membership.voters,
            self.cx.id,
            |id| {
                tracker
                    .peer(id)
                    .and_then(|p| p.last_heard_ms)
                    .map(|t| now_ms.saturating_sub(t))
            },
            after.as_millis() as u64,
            self.cx.config.min_voters,
        );
        let Some(victim) = victim else { return };
        tracing::warn!(
            node = self.cx.id,
            term = self.term,
            voter = victim,
            silent_ms = ?tracker.peer(victim).and_then(|p| p.last_heard_ms).map(|t| now_ms.saturating_sub(t)),
            "removing a voter unreachable for longer than the dead-voter bound"
        );
        crate::metrics::Counters::bump(&self.cx.counters.dead_voters_removed);
        let mut voters = self.membership.voters.clone();
        voters.remove(&victim);
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let node = self.cx.id;
        ctx.notify(ChangeMembership { voters, reply });
        actix::spawn(async move {
            if let Ok(Err(e)) = outcome.await {
                tracing::warn!(node, voter = victim, error = %e, "dead-voter removal did not complete");
            }
        });
    }
}

/// How the leader sees member `id` now, with the configuration: for
/// `add_voter`'s stabilization watch.
#[derive(Message)]
#[rtype(result = "(Membership, Option<Health>)")]
pub(crate) struct PeerHealth(pub NodeId);

impl Handler<PeerHealth> for Leader {
    type Result = MessageResult<PeerHealth>;
    fn handle(&mut self, msg: PeerHealth, _ctx: &mut Context<Self>) -> Self::Result {
        let now_ms = self.now_ms();
        let health = self.tracker.peer(msg.0).map(|p| Health {
            matched: p.matched,
            last_index: self.commit_index,
            // Replication starting counts as contact for check-quorum,
            // not here: only an answer does.
            heard_ms_ago: p
                .incarnation
                .and(p.last_heard_ms)
                .map(|t| now_ms.saturating_sub(t)),
        });
        MessageResult((self.membership.clone(), health))
    }
}

/// Answers a refused change (nothing was proposed: definite).
fn refuse(reply: ChangeReply, why: MembershipError) {
    let _ = reply.send(Err(RaftError::Membership(why)));
}

/// Changes the voters by joint consensus: C_old,new, then C_new.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ChangeMembership {
    pub voters: BTreeSet<NodeId>,
    pub reply: ChangeReply,
}

impl Handler<ChangeMembership> for Leader {
    type Result = ();
    fn handle(&mut self, msg: ChangeMembership, ctx: &mut Context<Self>) {
        if let Err(e) = self.check_idle() {
            let _ = msg.reply.send(Err(e));
            return;
        }
        match check_voters(&self.membership, &msg.voters) {
            Ok(true) => {}
            Ok(false) => {
                let _ = msg.reply.send(Ok(self.membership.clone()));
                return;
            }
            Err(why) => return refuse(msg.reply, why),
        }
        self.await_promotion(msg.voters, msg.reply, ctx);
    }
}

/// Replaces voter `id`'s incarnation (its disk was replaced and the node
/// started again): the old incarnation is removed from the voters (the
/// node stays a learner and catches up), then the new one is promoted and
/// pinned. Two joint changes, each keeping every quorum a majority of
/// incarnations that hold the log.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Replace {
    pub id: NodeId,
    pub reply: ChangeReply,
}

impl Handler<Replace> for Leader {
    type Result = ();
    fn handle(&mut self, msg: Replace, ctx: &mut Context<Self>) {
        if let Err(e) = self.check_idle() {
            let _ = msg.reply.send(Err(e));
            return;
        }
        let id = msg.id;
        if !self.membership.voters.contains(&id) {
            return refuse(msg.reply, MembershipError::NotAVoter(id));
        }
        // Only an incarnation other than the pinned one is a replacement;
        // the leader's own directory is in use.
        let live = self.tracker.incarnation(id);
        let pinned = self.membership.incarnations.get(&id).copied();
        if id == self.cx.id || live.is_none() || live == pinned {
            return refuse(msg.reply, MembershipError::NotReplaced(id));
        }
        tracing::info!(
            node = self.cx.id,
            term = self.term,
            peer = id,
            incarnation = live,
            pinned,
            "replacing a voter's incarnation"
        );
        let (joint, target) = demote(&self.membership, id);
        let joint = self.pin(joint);
        let target = self.pin(target);
        self.change = Some(PendingChange {
            driver: ChangeDriver::joint(target),
            reply: None,
        });
        self.replacing = Some((id, msg.reply));
        self.propose(Payload::Membership(Box::new(joint)), None, ctx);
    }
}

impl Leader {
    /// Waits until every new voter in `voters` has caught up (replies
    /// arrive shortly after a learner applies), for at most an election
    /// timeout, then starts the change, or refuses.
    pub(super) fn await_promotion(
        &mut self,
        voters: BTreeSet<NodeId>,
        reply: ChangeReply,
        ctx: &mut Context<Self>,
    ) {
        self.promotion = Some((voters, reply));
        self.try_promote(ctx);
        if self.promotion.is_some() {
            ctx.run_later(self.cx.config.election_timeout_max, |act, _| {
                if let Some((voters, reply)) = act.promotion.take() {
                    let error = match act.lagging(&voters) {
                        Some((learner, behind)) => {
                            MembershipError::LearnerBehind { learner, behind }
                        }
                        None => MembershipError::TimedOut,
                    };
                    let _ = reply.send(Err(RaftError::Membership(error)));
                }
            });
        }
    }

    /// A new voter in `voters` that may not vote yet, with how far behind
    /// it is.
    fn lagging(&self, voters: &BTreeSet<NodeId>) -> Option<(NodeId, u64)> {
        lagging(
            &self.membership,
            voters,
            |id| self.tracker.matched(id),
            self.last_index,
            self.cx.config.learner_max_lag,
        )
    }

    /// Starts the waiting change once every new voter has caught up.
    pub(super) fn try_promote(&mut self, ctx: &mut Context<Self>) {
        let ready = match &self.promotion {
            Some((voters, _)) => self.lagging(voters).is_none(),
            None => false,
        };
        if !ready {
            return;
        }
        let (voters, reply) = self.promotion.take().expect("checked above");
        let joint = self.pin(enter_joint(&self.membership, voters));
        self.change = Some(PendingChange {
            driver: ChangeDriver::joint(leave_joint(&joint)),
            reply: Some(reply),
        });
        self.propose(Payload::Membership(Box::new(joint)), None, ctx);
    }
}
