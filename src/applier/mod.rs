//! The `Applier` actor: hands committed entries to the user's state machine
//! in log order, in batches, and routes each response to the client waiting
//! for it.

use std::collections::BTreeMap;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::core::types::{LogId, NodeId, Payload};
use crate::error::RaftError;
use crate::log_store::{LogStore, ReadRange};
use crate::state_machine::{Apply, StateMachine};

/// The commit index advanced.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub(crate) struct Committed(pub u64);

/// Entries up to this index have been applied.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub(crate) struct Applied(pub u64);

/// Where a write's response goes once applied.
pub(crate) type WriteReply = oneshot::Sender<Result<Bytes, RaftError>>;

/// Waits for the entry at `log_id` to be applied.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RegisterWaiter {
    pub log_id: LogId,
    pub reply: WriteReply,
}

pub(crate) struct Applier<SM: StateMachine> {
    node_id: NodeId,
    sm: Addr<SM>,
    log: Addr<LogStore>,
    applied_to: Recipient<Applied>,
    last_applied: u64,
    commit_index: u64,
    busy: bool,
    max_batch: usize,
    waiters: BTreeMap<u64, (u64, WriteReply)>,
}

impl<SM: StateMachine> Applier<SM> {
    pub(crate) fn new(
        node_id: NodeId,
        sm: Addr<SM>,
        log: Addr<LogStore>,
        applied_to: Recipient<Applied>,
        last_applied: u64,
        max_batch: usize,
    ) -> Self {
        Applier {
            node_id,
            sm,
            log,
            applied_to,
            last_applied,
            commit_index: last_applied,
            busy: false,
            max_batch,
            waiters: BTreeMap::new(),
        }
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.commit_index <= self.last_applied {
            return;
        }
        self.busy = true;
        let read = self.log.send(ReadRange {
            from: self.last_applied + 1,
            to: self.commit_index,
            max: self.max_batch,
        });
        let fut = async move { read.await.unwrap_or_default() }
            .into_actor(self)
            .then(|entries, act, _ctx| {
                let last = entries.last().map(|e| e.log_id.index);
                let mut commands = Vec::new();
                let mut failed = Vec::new();
                for e in entries {
                    if let Payload::Command(bytes) = &e.payload {
                        match rmp_serde::from_slice::<SM::Command>(bytes) {
                            Ok(c) => commands.push((e.log_id, c)),
                            Err(err) => failed.push((e.log_id, err.to_string())),
                        }
                    }
                }
                for (log_id, err) in failed {
                    tracing::warn!(node = act.node_id, index = log_id.index, error = %err, "undecodable command skipped");
                    act.respond(log_id, Err(RaftError::Codec(err)));
                }
                let ids: Vec<LogId> = commands.iter().map(|(id, _)| *id).collect();
                let apply = (!commands.is_empty()).then(|| act.sm.send(Apply { entries: commands }));
                async move {
                    let responses = match apply {
                        Some(f) => f.await.ok(),
                        None => Some(Vec::new()),
                    };
                    (last, ids, responses)
                }
                .into_actor(act)
            })
            .map(|(last, ids, responses), act, ctx| {
                act.busy = false;
                let Some(last) = last else { return };
                let Some(responses) = responses else {
                    // The state machine is gone: the node is shutting down.
                    tracing::error!(node = act.node_id, "state machine stopped; applier stops");
                    ctx.stop();
                    return;
                };
                if responses.len() != ids.len() {
                    tracing::error!(node = act.node_id, "state machine returned {} responses for {} commands", responses.len(), ids.len());
                }
                for (id, resp) in ids.into_iter().zip(responses) {
                    let encoded = rmp_serde::to_vec(&resp)
                        .map(Bytes::from)
                        .map_err(|e| RaftError::Codec(e.to_string()));
                    act.respond(id, encoded);
                }
                act.settle_upto(last);
                act.last_applied = last;
                act.applied_to.do_send(Applied(last));
                act.pump(ctx);
            });
        ctx.spawn(fut);
    }

    fn respond(&mut self, log_id: LogId, result: Result<Bytes, RaftError>) {
        if let Some((term, reply)) = self.waiters.remove(&log_id.index) {
            // A waiter registered for another term at this index lost its
            // entry to another leader's; whether its command commits later
            // elsewhere is unknown here.
            let _ = reply.send(if term == log_id.term {
                result
            } else {
                Err(RaftError::Indeterminate)
            });
        }
    }

    /// Waiters up to `index` whose entry turned out not to be a command.
    fn settle_upto(&mut self, index: u64) {
        let rest = self.waiters.split_off(&(index + 1));
        for (_, (_, reply)) in std::mem::replace(&mut self.waiters, rest) {
            let _ = reply.send(Err(RaftError::Indeterminate));
        }
    }
}

impl<SM: StateMachine> Actor for Applier<SM> {
    type Context = Context<Self>;
}

impl<SM: StateMachine> Handler<Committed> for Applier<SM> {
    type Result = ();
    fn handle(&mut self, msg: Committed, ctx: &mut Context<Self>) {
        if msg.0 > self.commit_index {
            self.commit_index = msg.0;
            self.pump(ctx);
        }
    }
}

impl<SM: StateMachine> Handler<RegisterWaiter> for Applier<SM> {
    type Result = ();
    fn handle(&mut self, msg: RegisterWaiter, _ctx: &mut Context<Self>) {
        if msg.log_id.index <= self.last_applied {
            let _ = msg.reply.send(Err(RaftError::Indeterminate));
            return;
        }
        if let Some((_, old)) = self
            .waiters
            .insert(msg.log_id.index, (msg.log_id.term, msg.reply))
        {
            let _ = old.send(Err(RaftError::Indeterminate));
        }
    }
}
