//! Leadership transfer (dissertation §3.10): stop taking writes, bring the
//! target up to date, send it TimeoutNow.

use actix::prelude::*;

use super::{Leader, TransferReply};
use crate::core::types::NodeId;
use crate::error::{RaftError, TransferError};

impl Leader {
    /// Sends TimeoutNow once the transfer target has everything we have.
    pub(super) fn try_hand_over(&mut self) {
        let Some((to, sent, _)) = &mut self.transfer else {
            return;
        };
        // Proposals accepted before the transfer began are appended by the
        // next flush: the target must have those too, or voters that got
        // them refuse it and the transfer ends with another leader.
        let caught_up = self.proposals.is_empty()
            && !self.flush_scheduled
            && self.tracker.matched(*to) >= self.last_index;
        if !*sent && caught_up {
            *sent = true;
            tracing::info!(
                node = self.cx.id,
                term = self.term,
                to = *to,
                "transferring leadership"
            );
            self.cx.transport.send(crate::message::Envelope::new(
                self.cx.id,
                *to,
                crate::message::Message::TimeoutNow { term: self.term },
            ));
        }
    }
}

/// Hands leadership to a voter (dissertation §3.10).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TransferLeadership {
    pub to: NodeId,
    pub reply: TransferReply,
}

impl Handler<TransferLeadership> for Leader {
    type Result = ();
    fn handle(&mut self, msg: TransferLeadership, ctx: &mut Context<Self>) {
        if msg.to == self.cx.id {
            let _ = msg.reply.send(Ok(()));
            return;
        }
        if !self.membership.is_voter(msg.to) {
            let _ = msg
                .reply
                .send(Err(RaftError::Transfer(TransferError::NotAVoter(msg.to))));
            return;
        }
        if self.transfer.is_some() {
            let _ = msg
                .reply
                .send(Err(RaftError::Transfer(TransferError::InProgress)));
            return;
        }
        self.transfer = Some((msg.to, false, msg.reply));
        self.wake_all();
        self.try_hand_over();
        // A target that cannot catch up (or win) within an election timeout
        // is given up on, and this leader carries on.
        ctx.run_later(self.cx.config.election_timeout_max, move |act, _| {
            if let Some((to, _, reply)) = act.transfer.take() {
                tracing::warn!(
                    node = act.cx.id,
                    term = act.term,
                    to,
                    "leadership transfer gave up"
                );
                let _ = reply.send(Err(RaftError::Transfer(
                    TransferError::TargetDidNotTakeOver(to),
                )));
            }
        });
    }
}
