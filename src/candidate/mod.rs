//! The `Candidate` actor, one per (pre-)election: asks every voter, counts
//! the replies over a possibly joint configuration, and reports the outcome.

use actix::prelude::*;

use crate::core::election::random_timeout;
use crate::core::quorum::{ElectionResult, VoteTally};
use crate::core::types::{LogId, Membership, NodeId};
use crate::message::{Envelope, Message};
use crate::metrics::Counters;
use crate::role::{ElectionTimeout, ElectionWon, PreVoteWon, RoleContext, StopRole};

pub(crate) struct Candidate {
    cx: RoleContext,
    /// The node's current term (a pre-vote campaigns for `term + 1`).
    term: u64,
    pre_vote: bool,
    force: bool,
    last_log_id: LogId,
    tally: VoteTally,
    reported: bool,
}

impl Candidate {
    pub(crate) fn new(
        cx: RoleContext,
        term: u64,
        pre_vote: bool,
        force: bool,
        membership: Membership,
        last_log_id: LogId,
    ) -> Self {
        Candidate {
            cx,
            term,
            pre_vote,
            force,
            last_log_id,
            tally: VoteTally::new(membership),
            reported: false,
        }
    }

    fn check(&mut self) {
        if self.reported || self.tally.result() != ElectionResult::Won {
            return;
        }
        self.reported = true;
        let term = self.term;
        if self.pre_vote {
            self.cx.tell(PreVoteWon { term });
        } else {
            self.cx.tell(ElectionWon { term });
        }
    }
}

impl Actor for Candidate {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        if !self.pre_vote {
            Counters::bump(&self.cx.counters.elections_started);
        }
        let asked_term = if self.pre_vote {
            self.term + 1
        } else {
            self.term
        };
        tracing::debug!(
            node = self.cx.id,
            term = asked_term,
            pre_vote = self.pre_vote,
            "campaigning"
        );
        let voters = self.tally.voters();
        for peer in voters.into_iter().filter(|p| *p != self.cx.id) {
            self.cx.transport.send(Envelope::new(
                self.cx.id,
                peer,
                Message::RequestVote {
                    term: asked_term,
                    last_log_id: self.last_log_id,
                    pre_vote: self.pre_vote,
                    force: self.force,
                },
            ));
        }
        self.tally.record(self.cx.id, true);
        self.check();
        let mut rng = fastrand::Rng::with_seed(fastrand::u64(..) ^ self.cx.id);
        let d = random_timeout(
            &mut rng,
            self.cx.config.election_timeout_min,
            self.cx.config.election_timeout_max,
        );
        let term = self.term;
        // Lost or split: try again after a fresh random timeout.
        ctx.run_later(d, move |act, _| {
            act.cx.tell(ElectionTimeout { term });
        });
    }
}

impl Handler<StopRole> for Candidate {
    type Result = ();
    fn handle(&mut self, _: StopRole, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// A vote reply for this election (the node checked term and phase).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct VoteReply {
    pub from: NodeId,
    pub granted: bool,
}

impl Handler<VoteReply> for Candidate {
    type Result = ();
    fn handle(&mut self, msg: VoteReply, _ctx: &mut Context<Self>) {
        if self.tally.record(msg.from, msg.granted) == ElectionResult::Lost && !self.reported {
            // Reported once: later replies cannot change a lost tally.
            self.reported = true;
            if self.pre_vote {
                Counters::bump(&self.cx.counters.pre_votes_lost);
            }
            tracing::info!(
                node = self.cx.id,
                term = self.term,
                pre_vote = self.pre_vote,
                "election lost; waiting for the next timeout"
            );
        }
        self.check();
    }
}
