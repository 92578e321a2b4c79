//! What the node hears from its own parts: the roles (timeouts, election
//! outcomes, commits), the log store, the applier, the snapshotter.

use actix::prelude::*;

use super::*;
use crate::core::step::{on_election_timeout, Campaign, Role as ElectionRole};

impl Handler<RoleEvent> for Node {
    type Result = ();
    fn handle(&mut self, event: RoleEvent, ctx: &mut Context<Self>) {
        match event {
            RoleEvent::ElectionTimeout(e) => self.on_election_timeout(e, ctx),
            RoleEvent::PreVoteWon(e) => self.on_pre_vote_won(e, ctx),
            RoleEvent::ElectionWon(e) => self.on_election_won(e, ctx),
            RoleEvent::StepDown(e) => self.on_step_down(e, ctx),
            RoleEvent::CommitTo(e) => self.on_commit_to(e, ctx),
            RoleEvent::ReplicationProgress(e) => self.on_replication_progress(e, ctx),
            RoleEvent::SnapshotTaken(e) => Handler::handle(self, e, ctx),
            RoleEvent::Quiesced(e) => self.on_quiesced(e),
        }
    }
}

impl Handler<ComponentFailed> for Node {
    type Result = ();
    fn handle(&mut self, msg: ComponentFailed, ctx: &mut Context<Self>) {
        if matches!(self.role, RoleState::Stopped) {
            return;
        }
        let cause = format!("the {} stopped: {}", msg.component, msg.cause);
        tracing::error!(node = self.id(), term = self.hs.term, %cause, "stopping the node");
        self.fail(cause, ctx);
    }
}

impl Node {
    fn on_election_timeout(&mut self, msg: ElectionTimeout, ctx: &mut Context<Self>) {
        let role = match self.role {
            RoleState::Follower(_) => ElectionRole::Follower,
            RoleState::Candidate { .. } => ElectionRole::Candidate,
            RoleState::Leader(_) => ElectionRole::Leader,
            RoleState::Pending | RoleState::Stopped => ElectionRole::Inactive,
        };
        let campaign = on_election_timeout(
            msg.term,
            self.hs.term,
            self.role_term,
            role,
            self.membership.is_voter(self.id()) && self.may_vote(),
            self.cx.config.pre_vote,
        );
        if campaign != Campaign::Ignore {
            tracing::info!(node = self.id(), term = self.hs.term, "election timeout");
        }
        match campaign {
            Campaign::Ignore => {}
            Campaign::PreVote => self.start_pre_vote(ctx),
            Campaign::Election => self.start_election(false, ctx),
        }
    }
}

impl Node {
    fn on_pre_vote_won(&mut self, msg: PreVoteWon, ctx: &mut Context<Self>) {
        if msg.term == self.hs.term
            && matches!(self.role, RoleState::Candidate { pre_vote: true, .. })
        {
            self.start_election(false, ctx);
        }
    }
}

impl Node {
    fn on_election_won(&mut self, msg: ElectionWon, ctx: &mut Context<Self>) {
        if msg.term != self.hs.term
            || !matches!(
                self.role,
                RoleState::Candidate {
                    pre_vote: false,
                    ..
                }
            )
        {
            return;
        }
        self.stop_role();
        if self.leader != Some(self.id()) {
            crate::metrics::Counters::bump(&self.cx.counters.leader_changes);
        }
        self.leader = Some(self.id());
        let term = msg.term;
        ctx.wait(
            self.cx
                .log
                .send(LastLogId)
                .into_actor(self)
                .map(move |last, act, _| {
                    let Ok(last) = last else { return };
                    if act.hs.term != term || !matches!(act.role, RoleState::Pending) {
                        return;
                    }
                    let l = Leader::new(
                        act.cx.clone(),
                        term,
                        act.membership.clone(),
                        last,
                        act.commit_index,
                        act.waiters.clone(),
                    );
                    act.role = RoleState::Leader(crate::spawn::start_in(l, &act.cx.span));
                    act.role_term = term;
                    act.publish();
                    if let Some(probe) = &act.cx.probe {
                        probe(act.id(), ProbeEvent::Leader { term });
                    }
                }),
        );
    }
}

impl Node {
    fn on_step_down(&mut self, msg: StepDown, _ctx: &mut Context<Self>) {
        if msg.term == self.hs.term && matches!(self.role, RoleState::Leader(_)) {
            self.stop_role();
            self.leader = None;
            self.become_follower(self.hs.term, None);
        }
    }
}

impl Node {
    fn on_commit_to(&mut self, msg: CommitTo, _ctx: &mut Context<Self>) {
        if msg.term == self.hs.term && msg.index > self.commit_index {
            self.commit_index = msg.index;
            self.applier.do_send(Committed(msg.index));
            self.publish();
        }
    }
}

impl Node {
    fn on_replication_progress(&mut self, msg: ReplicationProgress, _ctx: &mut Context<Self>) {
        if msg.term == self.hs.term && matches!(self.role, RoleState::Leader(_)) {
            self.replication = msg.peers;
            self.publish();
        }
    }
}

impl Handler<LogChanged> for Node {
    type Result = ();
    fn handle(&mut self, msg: LogChanged, _ctx: &mut Context<Self>) {
        self.last_log_id = msg.last_log_id;
        if let Some(m) = msg.membership {
            if m != self.membership {
                tracing::info!(
                    node = self.id(),
                    term = self.hs.term,
                    index = msg.last_log_id.index,
                    voters = ?m.voters,
                    old_voters = ?m.old_voters,
                    learners = ?m.learners,
                    "configuration changed"
                );
            }
            self.membership = m;
            self.seed_pinned_incarnations();
            // Incarnations of members only, once the table is half full: a
            // removed member's retired incarnations are kept as long as
            // there is room, or a late message from one of them would
            // pass for a new incarnation (found by the simulator).
            if self.incarnations.len() > super::MAX_TRACKED_PEERS / 2 {
                let members = &self.membership;
                self.incarnations.retain(|id| members.is_member(id));
            }
            self.learn_addresses();
        }
        self.publish();
    }
}

impl Handler<SnapshotTaken> for Node {
    type Result = ();
    fn handle(&mut self, msg: SnapshotTaken, _ctx: &mut Context<Self>) {
        if msg.0.index > self.snapshot_index {
            self.snapshot_index = msg.0.index;
            self.publish();
        }
    }
}

impl Handler<Applied> for Node {
    type Result = ();
    fn handle(&mut self, msg: Applied, _ctx: &mut Context<Self>) {
        self.last_applied = self.last_applied.max(msg.0);
        self.publish();
    }
}

impl Handler<StorageFailed> for Node {
    type Result = ();
    fn handle(&mut self, msg: StorageFailed, ctx: &mut Context<Self>) {
        tracing::error!(node = self.id(), error = %msg.0, "stopping after a storage failure");
        self.fail(format!("the log storage failed: {}", msg.0), ctx);
    }
}

impl Handler<Shutdown> for Node {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        tracing::info!(node = self.id(), term = self.hs.term, "shutting down");
        self.stop_role();
        let close = self.cx.log.send(Close);
        Box::pin(
            async move {
                let _ = close.await;
            }
            .into_actor(self)
            .map(|_, act, ctx| act.shutdown(ctx)),
        )
    }
}
