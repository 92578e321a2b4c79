//! Client requests: served by the leader, forwarded to it by any other
//! node, and failed as soon as their fate is known (or known to be
//! unknowable).

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{ClientAdmin, ClientPropose, ClientRead, ClientWrite, Node, RoleState};
use crate::applier::WriteReply;
use crate::config::Config;
use crate::core::types::{ClientCommand, NodeId};
use crate::error::RaftError;
use crate::leader::{
    AddLearner, ChangeMembership, ChangeReply, Leader, Propose, ReadIndex, ReadReply,
    RemoveLearner, Replace, SetMetadata, TransferLeadership,
};
use crate::message::{AdminRequest, Envelope, Message, RemoteError};

pub(super) enum Forwarded {
    Write(WriteReply),
    Read(ReadReply),
    Admin(ChangeReply),
}

impl Forwarded {
    pub(super) fn fail(self, error: RaftError) {
        match self {
            Forwarded::Write(r) => drop(r.send(Err(error))),
            Forwarded::Read(r) => drop(r.send(Err(error))),
            Forwarded::Admin(r) => drop(r.send(Err(error))),
        }
    }
}

/// How often forwarded requests are checked for their deadline: a
/// request gives up at most this much after its time.
const FORWARD_SWEEP: std::time::Duration = std::time::Duration::from_millis(20);

impl Node {
    /// Fails requests forwarded to a leader other than `leader` (a new
    /// term or a new leader began): a write's fate is unknown, a read can
    /// be retried.
    pub(super) fn fail_forwarded(&mut self, leader: Option<NodeId>) {
        let stale: Vec<u64> = self
            .forwarded
            .iter()
            .filter(|(_, (to, _, _))| Some(*to) != leader)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some((_, _, f)) = self.forwarded.remove(&id) {
                match f {
                    Forwarded::Write(r) => drop(r.send(Err(RaftError::Indeterminate))),
                    Forwarded::Admin(r) => drop(r.send(Err(RaftError::Indeterminate))),
                    Forwarded::Read(r) => drop(r.send(Err(RaftError::NotLeader(leader)))),
                }
            }
        }
    }

    pub(super) fn forward(
        &mut self,
        ctx: &mut Context<Self>,
        pending: Forwarded,
        make: impl FnOnce(u64) -> Message,
    ) {
        let within = self.cx.config.client_timeout;
        self.forward_within(ctx, pending, within, make)
    }

    /// [`Node::forward`], failing the request (as unknown, for a write or
    /// an administrative call) if no answer comes `within`.
    fn forward_within(
        &mut self,
        ctx: &mut Context<Self>,
        pending: Forwarded,
        within: std::time::Duration,
        make: impl FnOnce(u64) -> Message,
    ) {
        let Some(leader) = self.leader.filter(|l| *l != self.id()) else {
            pending.fail(RaftError::NotLeader(None));
            return;
        };
        let id = self.next_request;
        self.next_request += 1;
        let incarnation = self.incarnations.live(leader).unwrap_or(0);
        self.forwarded.insert(id, (leader, incarnation, pending));
        tracing::debug!(node = self.id(), leader, request = id, "forwarding");
        self.send(leader, make(id));
        self.forward_deadlines
            .insert((tokio::time::Instant::now() + within, id));
        if !self.forward_sweep_scheduled {
            self.forward_sweep_scheduled = true;
            ctx.run_later(FORWARD_SWEEP, |act, ctx| act.sweep_forwarded(ctx));
        }
    }

    /// Fails the forwarded requests whose time is up.
    fn sweep_forwarded(&mut self, ctx: &mut Context<Self>) {
        let now = tokio::time::Instant::now();
        while let Some(&(deadline, id)) = self.forward_deadlines.first() {
            if deadline > now {
                break;
            }
            self.forward_deadlines.pop_first();
            match self.forwarded.remove(&id) {
                // The leader may have applied it; we cannot tell.
                Some((_, _, Forwarded::Write(r))) => drop(r.send(Err(RaftError::Indeterminate))),
                Some((_, _, Forwarded::Admin(r))) => drop(r.send(Err(RaftError::Indeterminate))),
                Some((_, _, Forwarded::Read(r))) => drop(r.send(Err(RaftError::Timeout))),
                None => {}
            }
        }
        if self.forward_deadlines.is_empty() {
            self.forward_sweep_scheduled = false;
        } else {
            ctx.run_later(FORWARD_SWEEP, |act, ctx| act.sweep_forwarded(ctx));
        }
    }

    /// Sends `to` the outcome of a request it forwarded, once `rx` has it;
    /// `lost` is the answer if the request was dropped (role change).
    fn answer_remote<T: Send + 'static>(
        &self,
        to: NodeId,
        rx: oneshot::Receiver<Result<T, RaftError>>,
        lost: RemoteError,
        make: impl FnOnce(Result<T, RemoteError>) -> Message + Send + 'static,
    ) {
        let transport = self.cx.transport.clone();
        let from = self.id();
        actix::spawn(async move {
            let result = match rx.await {
                Ok(r) => r.map_err(RemoteError::from),
                Err(_) => Err(lost),
            };
            transport.send(Envelope::new(from, to, make(result)));
        });
    }

    /// A forwarded request, or the answer to one.
    pub(super) fn on_forwarding(&mut self, from: NodeId, incarnation: u64, message: Message) {
        match message {
            Message::ForwardWrite { id, term, command } => {
                tracing::debug!(node = self.id(), from, request = id, "forward received");
                // A copy duplicated by the network is proposed again: its
                // session tag (the forwarding node's, or its client's)
                // makes every node's applier answer it from the cache
                // instead of applying it twice — across leader changes and
                // restarts, since the table is in the log and snapshots. A
                // "not leader" to a copy racing the real outcome is safe
                // too: the forwarding node retries with the same tag.
                let leading = matches!(self.role, RoleState::Leader(_)) && term == self.hs.term;
                if leading && !self.seen_forwards.first_copy(term, (from, incarnation, id)) {
                    // Its first copy was proposed and will be answered.
                    tracing::debug!(
                        node = self.id(),
                        from,
                        request = id,
                        "duplicate forward dropped"
                    );
                    return;
                }
                let (tx, rx) = oneshot::channel();
                match &self.role {
                    // Only for the term it was sent to: a copy delayed past
                    // a restart of this node must not be proposed again by
                    // its next incarnation, which leads a later term.
                    RoleState::Leader(l) if term == self.hs.term => l.do_send(Propose {
                        command,
                        reply: Some(tx),
                        appended: None,
                        span: tracing::debug_span!(
                            "forwarded_write",
                            node = self.id(),
                            from,
                            term = tracing::field::Empty,
                            index = tracing::field::Empty
                        ),
                    }),
                    // Sent to the leader of `term`, which this node was;
                    // if that was in a previous run, that run may have
                    // proposed an earlier copy: the outcome is unknown.
                    _ if term <= self.boot_term => drop(tx.send(Err(RaftError::Indeterminate))),
                    _ => drop(tx.send(Err(RaftError::NotLeader(self.leader)))),
                }
                self.answer_remote(from, rx, RemoteError::Indeterminate, move |result| {
                    Message::ForwardWriteResponse { id, result }
                });
            }
            Message::ForwardWriteResponse { id, result } => {
                tracing::debug!(node = self.id(), from, request = id, "forward answered");
                if let Some((_, sent_to, Forwarded::Write(r))) = self.forwarded.remove(&id) {
                    let _ = r.send(result.map_err(|e| forward_failure(e, sent_to, incarnation)));
                }
            }
            Message::ForwardAdmin { id, term, request } => {
                let (tx, rx) = oneshot::channel();
                match &self.role {
                    RoleState::Leader(l) if term == self.hs.term => {
                        carry_out(l, request, &self.membership, &self.cx.config, tx)
                    }
                    // As for a write: a leader of this term in a previous
                    // run may have carried out an earlier copy.
                    _ if term <= self.boot_term => drop(tx.send(Err(RaftError::Indeterminate))),
                    _ => drop(tx.send(Err(RaftError::NotLeader(self.leader)))),
                }
                self.answer_remote(from, rx, RemoteError::Indeterminate, move |result| {
                    Message::ForwardAdminResponse { id, result }
                });
            }
            Message::ForwardAdminResponse { id, result } => {
                if let Some((_, sent_to, Forwarded::Admin(r))) = self.forwarded.remove(&id) {
                    let _ = r.send(result.map_err(|e| forward_failure(e, sent_to, incarnation)));
                }
            }
            Message::ReadIndexRequest { id } => {
                let (tx, rx) = oneshot::channel();
                match &self.role {
                    RoleState::Leader(l) => l.do_send(ReadIndex { reply: tx }),
                    _ => drop(tx.send(Err(RaftError::NotLeader(self.leader)))),
                }
                self.answer_remote(from, rx, RemoteError::NotLeader(None), move |result| {
                    Message::ReadIndexResponse { id, result }
                });
            }
            Message::ReadIndexResponse { id, result } => {
                if let Some((_, _, Forwarded::Read(r))) = self.forwarded.remove(&id) {
                    let _ = r.send(result.map_err(RaftError::from));
                }
            }
            _ => {}
        }
    }
}

impl Handler<ClientWrite> for Node {
    type Result = ();
    fn handle(&mut self, msg: ClientWrite, ctx: &mut Context<Self>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.wake_role();
        match &self.role {
            RoleState::Leader(l) => l.do_send(Propose {
                // This node's own tag only guards copies on the network:
                // a write no attempt of which was ever forwarded has no
                // copy elsewhere, and it goes without. Once one was
                // forwarded, the leader of then may have proposed it (its
                // "not leader" can answer a network duplicate and race the
                // real outcome), and only the tag makes the copies apply
                // once.
                command: match msg.command {
                    ClientCommand::Tagged(tag, command)
                        if tag.implicit && !msg.forwarded.load(Relaxed) =>
                    {
                        ClientCommand::Command(command)
                    }
                    command => command,
                },
                reply: Some(msg.reply),
                appended: None,
                span: msg.span,
            }),
            RoleState::Stopped => drop(msg.reply.send(Err(RaftError::ShuttingDown))),
            _ => {
                let (command, term, forwarded) = (msg.command, self.hs.term, msg.forwarded);
                self.forward(ctx, Forwarded::Write(msg.reply), move |id| {
                    forwarded.store(true, Relaxed);
                    Message::ForwardWrite { id, term, command }
                });
            }
        }
    }
}

impl Node {
    /// Hands a request only a leader serves to this node's leader actor,
    /// or refuses it: `ShuttingDown` once stopped, else `NotLeader` with
    /// the leader this node knows of (nothing was done: retry there).
    fn leader_only<T>(
        &self,
        reply: oneshot::Sender<Result<T, RaftError>>,
        to_leader: impl FnOnce(&Addr<Leader>, oneshot::Sender<Result<T, RaftError>>),
    ) {
        match &self.role {
            RoleState::Leader(l) => to_leader(l, reply),
            RoleState::Stopped => drop(reply.send(Err(RaftError::ShuttingDown))),
            _ => drop(reply.send(Err(RaftError::NotLeader(self.leader)))),
        }
    }
}

impl Handler<ClientPropose> for Node {
    type Result = ();
    fn handle(&mut self, msg: ClientPropose, _ctx: &mut Context<Self>) {
        self.wake_role();
        self.leader_only(msg.appended, |l, appended| {
            // Nobody waits for the outcome: the sender of the reply is
            // dropped, and the applier's answer goes nowhere.
            let (reply, _) = oneshot::channel();
            l.do_send(Propose {
                command: ClientCommand::Command(msg.command),
                reply: Some(reply),
                appended: Some(appended),
                span: tracing::Span::none(),
            })
        });
    }
}

impl Handler<ClientAdmin> for Node {
    type Result = ();
    fn handle(&mut self, msg: ClientAdmin, ctx: &mut Context<Self>) {
        self.wake_role();
        match &self.role {
            RoleState::Leader(l) => {
                carry_out(l, msg.request, &self.membership, &self.cx.config, msg.reply)
            }
            RoleState::Stopped => drop(msg.reply.send(Err(RaftError::ShuttingDown))),
            _ => {
                let (request, term) = (msg.request, self.hs.term);
                let within = admin_timeout(&request, &self.cx.config);
                self.forward_within(ctx, Forwarded::Admin(msg.reply), within, move |id| {
                    Message::ForwardAdmin { id, term, request }
                });
            }
        }
    }
}

/// How long an administrative request may take: `add_voter` waits for
/// the new member to catch up and stabilize.
pub(crate) fn admin_timeout(request: &AdminRequest, config: &Config) -> std::time::Duration {
    match request {
        AdminRequest::AddVoter { .. } => {
            config.client_timeout + config.voter_catch_up_timeout + config.voter_stabilization
        }
        _ => config.client_timeout,
    }
}

/// Hands an administrative request to the leader actor; `reply` gets the
/// configuration after it (for a transfer, `membership`: it changes no
/// configuration).
fn carry_out(
    leader: &Addr<Leader>,
    request: AdminRequest,
    membership: &crate::core::types::Membership,
    config: &std::sync::Arc<Config>,
    reply: ChangeReply,
) {
    match request {
        AdminRequest::AddVoter {
            id,
            address,
            metadata,
        } => super::add_voter::start(
            leader.clone(),
            config.clone(),
            (id, address, metadata),
            reply,
        ),
        AdminRequest::AddLearner {
            id,
            address,
            metadata,
        } => leader.do_send(AddLearner {
            id,
            address,
            metadata,
            reply,
        }),
        AdminRequest::Change { voters } => leader.do_send(ChangeMembership { voters, reply }),
        AdminRequest::RemoveLearner { id } => leader.do_send(RemoveLearner { id, reply }),
        AdminRequest::Replace { id } => leader.do_send(Replace { id, reply }),
        AdminRequest::SetMetadata { id, key, value } => leader.do_send(SetMetadata {
            id,
            key,
            value,
            reply,
        }),
        AdminRequest::Transfer { to } => {
            let (done, outcome) = oneshot::channel();
            leader.do_send(TransferLeadership { to, reply: done });
            let membership = membership.clone();
            actix::spawn(async move {
                let result = match outcome.await {
                    Ok(r) => r.map(|()| membership),
                    Err(_) => Err(RaftError::Indeterminate),
                };
                let _ = reply.send(result);
            });
        }
    }
}

/// What a forwarded request's failure means for the node that forwarded
/// it.
fn forward_failure(e: RemoteError, sent_to: u64, incarnation: u64) -> RaftError {
    match e {
        // The leader's node was stopping: it may have carried the request
        // out before.
        RemoteError::ShuttingDown => RaftError::Indeterminate,
        // "Not leader" says this copy was not carried out. It speaks for
        // the original only if it comes from the incarnation we sent to: a
        // restarted node does not remember what its predecessor did.
        RemoteError::NotLeader(_) if sent_to == 0 || incarnation != sent_to => {
            RaftError::Indeterminate
        }
        e => RaftError::from(e),
    }
}

impl Handler<ClientRead> for Node {
    type Result = ();
    fn handle(&mut self, msg: ClientRead, ctx: &mut Context<Self>) {
        self.wake_role();
        match &self.role {
            RoleState::Leader(l) => l.do_send(ReadIndex { reply: msg.reply }),
            RoleState::Stopped => drop(msg.reply.send(Err(RaftError::ShuttingDown))),
            _ => self.forward(ctx, Forwarded::Read(msg.reply), |id| {
                Message::ReadIndexRequest { id }
            }),
        }
    }
}
