//! Linearizable reads on the leader (ReadIndex, thesis §6.4): the rules
//! are in [`crate::core::read_index`]; this sends the rounds and answers.

use actix::prelude::*;

use super::*;

impl Leader {
    /// Sends a heartbeat round if the read queue asks for one, and answers
    /// what is already confirmed (a single-node cluster confirms at once).
    pub(super) fn start_round(&mut self, action: ReadAction) {
        if let ReadAction::SendRound(round) = action {
            self.lease.round_began(round, self.now_ms());
            self.wake_all();
            self.resolve_reads();
        }
    }

    /// Whether no other leader can have been elected yet (the lease).
    fn lease_holds(&mut self) -> bool {
        let now_ms = self.now_ms();
        let duration_ms = self.cx.config.lease_duration().as_millis() as u64;
        let (reads, membership, me) = (&self.reads, &self.membership, self.cx.id);
        self.lease.holds(now_ms, duration_ms, |round| {
            reads.confirmed(membership, me, round)
        })
    }

    /// Answers the reads a quorum has confirmed with their read index.
    pub(super) fn resolve_reads(&mut self) {
        for (index, reply) in self.reads.ready(&self.membership, self.cx.id) {
            Counters::bump(&self.cx.counters.reads_by_round);
            let _ = reply.send(Ok(index));
        }
    }
}

/// Asks for a read index (ReadIndex, thesis §6.4).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ReadIndex {
    pub reply: ReadReply,
}

impl Handler<ReadIndex> for Leader {
    type Result = ();
    fn handle(&mut self, msg: ReadIndex, _ctx: &mut Context<Self>) {
        // Until this term's first entry commits the leader may not know
        // the latest committed index: the queue holds the read until then.
        let term_committed = self.commit_index >= self.first_index_of_term;
        if term_committed && self.cx.config.lease_reads && self.lease_holds() {
            Counters::bump(&self.cx.counters.reads_by_lease);
            let _ = msg.reply.send(Ok(self.commit_index));
            return;
        }
        let action = self
            .reads
            .request(msg.reply, self.commit_index, term_committed);
        self.start_round(action);
    }
}
