//! Linearizable reads on the leader (ReadIndex, thesis §6.4): a read
//! waits for this term's first entry to commit, then for one heartbeat
//! round acknowledged by a quorum, and gets the commit index of that time.

use actix::prelude::*;

use super::*;

impl Leader {
    pub(super) fn start_read(&mut self, reply: ReadReply) {
        self.round += 1;
        self.reads.push((self.round, self.commit_index, reply));
        self.wake_all();
        self.resolve_reads();
    }

    pub(super) fn resolve_reads(&mut self) {
        let id = self.cx.id;
        let acked = &self.acked_round;
        let membership = &self.membership;
        let mut i = 0;
        while i < self.reads.len() {
            let round = self.reads[i].0;
            if is_quorum(membership, |n| {
                n == id || acked.get(&n).is_some_and(|r| *r >= round)
            }) {
                let (_, index, reply) = self.reads.swap_remove(i);
                let _ = reply.send(Ok(index));
            } else {
                i += 1;
            }
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
        if self.commit_index < self.first_index_of_term {
            // Until our blank entry commits we may not know the latest
            // committed index.
            self.reads_waiting_commit.push(msg.reply);
        } else {
            self.start_read(msg.reply);
        }
    }
}
