//! Client writes on the leader: proposals queue up while the mailbox
//! drains, then one flush gives them their positions, registers who waits
//! for each, appends them as one batch and wakes the replicators.

use actix::prelude::*;

use super::*;

/// An entry accepted for the next append, with who waits for it.
pub(super) struct Proposal {
    pub(super) payload: Payload,
    /// Answered once the entry is applied.
    pub(super) reply: Option<WriteReply>,
    /// Answered once the entry has its position.
    pub(super) appended: Option<oneshot::Sender<Result<LogId, RaftError>>>,
    /// The client's write span (disabled unless debug tracing is on).
    pub(super) span: tracing::Span,
}

impl Leader {
    pub(super) fn propose(
        &mut self,
        payload: Payload,
        reply: Option<WriteReply>,
        ctx: &mut Context<Self>,
    ) {
        self.proposals.push(Proposal {
            payload,
            reply,
            appended: None,
            span: tracing::Span::none(),
        });
        self.schedule_flush(ctx);
    }

    pub(super) fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_scheduled {
            // Everything already in the mailbox lands in the same append.
            self.flush_scheduled = true;
            ctx.notify(FlushProposals);
        }
    }
}

/// A client write to append.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Propose {
    pub command: ClientCommand,
    pub reply: Option<WriteReply>,
    /// Told the entry's position as soon as it is appended.
    pub appended: Option<oneshot::Sender<Result<LogId, RaftError>>>,
    /// The client's write span (disabled unless debug tracing is on).
    pub span: tracing::Span,
}

impl Leader {
    /// The log time to stamp on a session entry of the batch being
    /// gathered (read once per batch).
    fn log_time(&mut self) -> u64 {
        if let Some(stamp) = self.batch_log_time {
            return stamp;
        }
        let applied = self
            .cx
            .applied_log_time
            .load(std::sync::atomic::Ordering::Relaxed);
        let now_ms = self.cx.io.clock_ms(self.now_ms());
        let stamp = self.log_clock.stamp(applied, now_ms);
        self.batch_log_time = Some(stamp);
        stamp
    }
}

impl Handler<Propose> for Leader {
    type Result = ();
    fn handle(&mut self, msg: Propose, ctx: &mut Context<Self>) {
        if let Some((transfer, _)) = &self.transfer {
            // Handing over: nothing new is accepted, so the target can
            // catch up; the client retries with the next leader.
            let refused = RaftError::NotLeader(Some(transfer.target()));
            if let Some(reply) = msg.reply {
                let _ = reply.send(Err(refused.clone()));
            }
            if let Some(appended) = msg.appended {
                let _ = appended.send(Err(refused));
            }
            return;
        }
        let payload = match msg.command {
            ClientCommand::Empty => Payload::Blank,
            ClientCommand::Command(command) => Payload::Command(command),
            ClientCommand::OpenSession => Payload::OpenSession {
                time_ms: self.log_time(),
            },
            ClientCommand::Tagged(tag, command) => Payload::Tagged {
                tag,
                time_ms: self.log_time(),
                command,
            },
        };
        self.proposals.push(Proposal {
            payload,
            reply: msg.reply,
            appended: msg.appended,
            span: msg.span,
        });
        self.schedule_flush(ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct FlushProposals;

impl Handler<FlushProposals> for Leader {
    type Result = ();
    fn handle(&mut self, _: FlushProposals, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        self.batch_log_time = None;
        if self.proposals.is_empty() {
            return;
        }
        let mut entries = Vec::with_capacity(self.proposals.len());
        let mut waiters = Vec::with_capacity(self.proposals.len());
        let mut configs = Vec::new();
        for proposal in std::mem::take(&mut self.proposals) {
            let Proposal {
                payload,
                reply,
                appended,
                span,
            } = proposal;
            self.last_index += 1;
            let log_id = LogId::new(self.term, self.last_index);
            if !span.is_disabled() {
                span.record("term", log_id.term);
                span.record("index", log_id.index);
                tracing::debug!(parent: &span, node = self.cx.id, term = log_id.term, index = log_id.index, "appended");
            }
            if let Some(reply) = reply {
                waiters.push(Waiter {
                    log_id,
                    reply,
                    span,
                });
            }
            if let Some(appended) = appended {
                let _ = appended.send(Ok(log_id));
            }
            if let Payload::Membership(m) = &payload {
                configs.push(((**m).clone(), log_id.index));
            }
            entries.push(Entry { log_id, payload });
        }
        if !waiters.is_empty() {
            self.waiters.do_send(RegisterWaiters(waiters));
        }
        for (m, index) in configs {
            self.on_config_appended(m, index, ctx);
        }
        self.cx
            .counters
            .entries_proposed
            .fetch_add(entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let last = self.last_index;
        if let Some(first) = entries.first() {
            self.commit_clock
                .appended(first.log_id.index, last, Instant::now());
        }
        let (durable, durable_rx) = oneshot::channel();
        self.cx.log.do_send(LeaderAppend { entries, durable });
        // Replicate while our own copy is being made durable (thesis
        // §10.2.1); we count ourselves only once it is.
        self.wake_all();
        ctx.spawn(
            async move { durable_rx.await.is_ok() }
                .into_actor(self)
                .map(move |durable, act, ctx| {
                    if durable {
                        act.self_durable = act.self_durable.max(last);
                        act.update_commit(ctx);
                    } else {
                        tracing::error!(
                            node = act.cx.id,
                            term = act.term,
                            "own append was not stored"
                        );
                        act.cx.tell(StepDown { term: act.term });
                    }
                }),
        );
    }
}
