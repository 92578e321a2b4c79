//! Leadership transfer (dissertation §3.10): stop taking writes, bring the
//! target up to date, send it TimeoutNow. The decisions are in
//! `core::transfer`.

use actix::prelude::*;

use super::{Leader, TransferReply};
use crate::core::transfer::{start_transfer, TransferStart};
use crate::core::types::NodeId;
use crate::error::{RaftError, TransferError};
use crate::message::{Envelope, Message};

impl Leader {
    /// Sends TimeoutNow once the transfer target has everything we have.
    pub(super) fn try_hand_over(&mut self) {
        let Some((transfer, _)) = &mut self.transfer else {
            return;
        };
        // Proposals accepted before the transfer began are appended by the
        // next flush.
        let writes_pending = !self.proposals.is_empty() || self.flush_scheduled;
        let matched = self.tracker.matched(transfer.target());
        if let Some(to) = transfer.hand_over(writes_pending, matched, self.last_index) {
            tracing::info!(
                node = self.cx.id,
                term = self.term,
                to,
                "transferring leadership"
            );
            // The target campaigns at once and is voted for whoever the
            // followers heard: no lease from now on in this term.
            self.lease.revoke();
            let timeout_now = Message::TimeoutNow { term: self.term };
            self.cx
                .transport
                .send(Envelope::new(self.cx.id, to, timeout_now));
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
        let in_progress = self.transfer.is_some();
        let transfer = match start_transfer(self.cx.id, &self.membership, in_progress, msg.to) {
            Ok(TransferStart::AlreadyLeader) => {
                let _ = msg.reply.send(Ok(()));
                return;
            }
            Ok(TransferStart::Start(transfer)) => transfer,
            Err(e) => {
                let _ = msg.reply.send(Err(RaftError::Transfer(e)));
                return;
            }
        };
        self.transfer = Some((transfer, msg.reply));
        self.wake_all();
        self.try_hand_over();
        // A target that cannot catch up (or win) within an election timeout
        // is given up on, and this leader carries on.
        ctx.run_later(self.cx.config.election_timeout_max, move |act, _| {
            if let Some((transfer, reply)) = act.transfer.take() {
                let to = transfer.target();
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
