//! Membership changes on the leader: adding and removing learners, and
//! changing the voters by joint consensus once new voters have caught up.

use std::collections::{BTreeMap, BTreeSet};

use actix::prelude::*;

use super::{ChangeReply, Leader, PendingChange};
use crate::core::confchange::{
    add_learner, check_voters, enter_joint, lagging, leave_joint, remove_learner, ChangeDriver,
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
        self.propose(Payload::Membership(Box::new(next)), None, ctx);
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
        let refuse = |reply: ChangeReply, why: MembershipError| {
            let _ = reply.send(Err(RaftError::Membership(why)));
        };
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
        // New voters must have caught up; wait for that (replies arrive
        // shortly after a learner applies), for at most an election
        // timeout, then refuse.
        self.promotion = Some((msg.voters, msg.reply));
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
}

impl Leader {
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
        let joint = enter_joint(&self.membership, voters);
        self.change = Some(PendingChange {
            driver: ChangeDriver::joint(leave_joint(&joint)),
            reply: Some(reply),
        });
        self.propose(Payload::Membership(Box::new(joint)), None, ctx);
    }
}
