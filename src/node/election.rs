//! Elections from the node's side: starting a pre-vote or an election,
//! and answering a vote request (the vote is made durable before the
//! reply leaves: the durability barrier).

use actix::prelude::{ActorFutureExt, AsyncContext, Context, WrapFuture};

use super::*;

impl Node {
    /// Whether this node may grant votes and campaign now
    /// (`core::incarnations::may_vote`); nor while it waits to learn
    /// whether it may found.
    pub(super) fn may_vote(&self) -> bool {
        self.founding.is_none()
            && crate::core::incarnations::may_vote(
                &self.membership,
                self.id(),
                self.cx.identity.get(),
            )
    }

    pub(super) fn start_pre_vote(&mut self, ctx: &mut Context<Self>) {
        self.stop_role();
        // The leader may be alive (this node may only have stalled past
        // its timeout): a pre-vote changes no term, so what was forwarded
        // to it still gets its answer. Only if it stays silent for another
        // election timeout (or an election starts) are those writes
        // answered unknown, well before the client timeout.
        self.leader = None;
        ctx.run_later(self.cx.config.election_timeout_min, |act, _| {
            if act.leader.is_none() {
                act.fail_forwarded(None);
            }
        });
        let term = self.hs.term;
        self.role_term = term;
        self.publish();
        ctx.wait(
            self.cx
                .log
                .send(LastLogId)
                .into_actor(self)
                .map(move |last, act, _| {
                    let (Ok(last), RoleState::Pending) = (last, &act.role) else {
                        return;
                    };
                    if act.hs.term == term {
                        act.start_candidate(term, true, false, last);
                    }
                }),
        );
    }

    /// The election timer fired (or a transfer asked us to campaign): the
    /// leader is presumed gone. Requests forwarded to it are answered now
    /// — a write as indeterminate, since it may still commit there — not
    /// at the client timeout; the client may retry through the next leader.
    fn stop_believing_in_the_leader(&mut self) {
        self.fail_forwarded(None);
        self.leader = None;
    }

    pub(super) fn start_candidate(&mut self, term: u64, pre_vote: bool, force: bool, last: LogId) {
        let membership = self.membership.clone();
        let c = Candidate::new(self.cx.clone(), term, pre_vote, force, membership, last);
        self.role = RoleState::Candidate {
            addr: crate::spawn::start_in(c, &self.cx.span),
            pre_vote,
        };
    }

    pub(super) fn start_election(&mut self, force: bool, ctx: &mut Context<Self>) {
        self.stop_role();
        self.stop_believing_in_the_leader();
        let term = self.hs.term + 1;
        self.hs = HardState {
            term,
            voted_for: Some(self.id()),
        };
        self.role_term = term;
        self.publish();
        let (durable, durable_rx) = oneshot::channel();
        self.cx.log.do_send(SaveHardState {
            hard_state: self.hs,
            durable: Some(durable),
        });
        let log = self.cx.log.clone();
        // Our own vote counts only once it is durable.
        ctx.spawn(
            async move {
                durable_rx.await.ok()?;
                log.send(LastLogId).await.ok()
            }
            .into_actor(self)
            .map(move |last, act, _| {
                let Some(last) = last else { return };
                if act.hs.term == term && matches!(act.role, RoleState::Pending) {
                    act.start_candidate(term, false, force, last);
                }
            }),
        );
    }

    pub(super) fn handle_vote_request(
        &mut self,
        from: NodeId,
        req: VoteRequest,
        force: bool,
        ctx: &mut Context<Self>,
    ) {
        let alive = self.leader_alive() && !force;
        ctx.wait(
            self.cx
                .log
                .send(LastLogId)
                .into_actor(self)
                .map(move |last, act, ctx| {
                    let Ok(last) = last else { return };
                    let answer = answer_vote(&act.hs, last, &req, alive, act.may_vote());
                    let reply = answer.reply;
                    if answer.reset_election_timer {
                        if let RoleState::Follower(f) = &act.role {
                            f.do_send(ResetElectionTimer);
                        }
                    }
                    match answer.persist {
                        Some(hs) => {
                            act.hs = hs;
                            let (durable, durable_rx) = oneshot::channel();
                            act.cx.log.do_send(SaveHardState {
                                hard_state: hs,
                                durable: Some(durable),
                            });
                            let transport = act.cx.transport.clone();
                            let id = act.id();
                            ctx.spawn(
                                async move {
                                    if durable_rx.await.is_ok() {
                                        transport.send(Envelope::new(id, from, reply));
                                    }
                                }
                                .into_actor(act),
                            );
                            act.publish();
                        }
                        None => act.send(from, reply),
                    }
                }),
        );
    }
}
