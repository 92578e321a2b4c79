//! Membership changes on the leader: adding and removing learners, and
//! changing the voters by joint consensus once new voters have caught up.

use std::collections::BTreeMap;

use actix::prelude::*;

use super::{ChangeReply, Leader, PendingChange};
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
        if self.membership.is_voter(msg.id) {
            let _ = msg
                .reply
                .send(Err(RaftError::Membership(MembershipError::AlreadyVoter(
                    msg.id,
                ))));
            return;
        }
        let mut next = self.membership.clone();
        next.learners.insert(msg.id);
        if !msg.address.is_empty() {
            next.addresses.insert(msg.id, msg.address);
        }
        if !msg.metadata.is_empty() {
            next.metadata.insert(msg.id, msg.metadata);
        }
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
            awaiting: None,
            then: None,
            reply: Some(reply),
        });
        self.propose(Payload::Membership(next), None, ctx);
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
        if !self.membership.learners.contains(&msg.id) {
            let refused = MembershipError::NotALearner(msg.id);
            let _ = msg.reply.send(Err(RaftError::Membership(refused)));
            return;
        }
        let mut next = self.membership.clone();
        next.learners.remove(&msg.id);
        next.addresses.remove(&msg.id);
        next.metadata.remove(&msg.id);
        self.propose_configuration(next, msg.reply, ctx);
    }
}

/// Changes the voters by joint consensus: C_old,new, then C_new.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ChangeMembership {
    pub voters: std::collections::BTreeSet<NodeId>,
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
        if msg.voters.is_empty() {
            return refuse(msg.reply, MembershipError::NoVoters);
        }
        if msg.voters == self.membership.voters {
            let _ = msg.reply.send(Ok(self.membership.clone()));
            return;
        }
        for id in &msg.voters {
            if !self.membership.voters.contains(id) && !self.membership.learners.contains(id) {
                return refuse(msg.reply, MembershipError::NotAMember(*id));
            }
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
    fn lagging(&self, voters: &std::collections::BTreeSet<NodeId>) -> Option<(NodeId, u64)> {
        let lag = self.cx.config.learner_max_lag;
        voters
            .iter()
            .filter(|id| !self.membership.voters.contains(id))
            .find_map(|id| {
                // A learner that has acknowledged nothing (this incarnation
                // of it) is not caught up, however short the log.
                let matched = self.tracker.matched(*id);
                (matched == 0 || matched + lag < self.last_index)
                    .then(|| (*id, self.last_index.saturating_sub(matched)))
            })
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
        let mut joint = self.membership.clone();
        joint.old_voters = Some(std::mem::replace(&mut joint.voters, voters));
        joint.learners.retain(|id| !joint.voters.contains(id));
        let mut target = joint.clone();
        target.old_voters = None;
        let members = target.members();
        target.addresses.retain(|id, _| members.contains(id));
        target.metadata.retain(|id, _| members.contains(id));
        self.change = Some(PendingChange {
            awaiting: None,
            then: Some(target),
            reply: Some(reply),
        });
        self.propose(Payload::Membership(joint), None, ctx);
    }
}
