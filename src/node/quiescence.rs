//! Quiescence on the node's side (groups on a [`crate::Host`]): the role
//! reports going quiet, and the node wakes it for anything that needs a
//! live group — a client request, a message of the group, or the host's
//! suspicion that the leader's host is down.

use actix::prelude::{Context, Handler};

use super::*;

impl Node {
    /// The role reported going quiet or waking up.
    pub(super) fn on_quiesced(&mut self, e: Quiesced) {
        if e.term != self.hs.term || e.term != self.role_term {
            return;
        }
        if self.quiesced != e.quiet {
            tracing::debug!(
                node = self.id(),
                term = e.term,
                quiet = e.quiet,
                "quiescence"
            );
            self.quiesced = e.quiet;
            self.publish();
        }
    }

    /// Whether the leader's host has been heard within an election
    /// timeout (the hosts' heartbeat stands in for the quiet leader's).
    pub(super) fn leader_host_heard(&self) -> bool {
        match (&self.cx.quiescence, self.leader) {
            (Some(heard), Some(leader)) => heard(leader),
            _ => false,
        }
    }

    /// Wakes the role if it is quiet; it reports back when it is awake.
    /// A follower whose leader's host is still heard counts its leader as
    /// just heard, so it goes on refusing (pre-)votes for an election
    /// timeout, as after a heartbeat; if the host is silent, it does not.
    pub(super) fn wake_role(&mut self) {
        if !self.quiesced {
            return;
        }
        if matches!(self.role, RoleState::Follower(_)) && self.leader_host_heard() {
            self.leader_seen = Some(tokio::time::Instant::now());
        }
        self.quiesced = false;
        match &self.role {
            RoleState::Leader(leader) => leader.do_send(Unquiesce),
            RoleState::Follower(follower) => follower.do_send(Unquiesce),
            _ => {}
        }
        self.publish();
    }
}

/// Whether a message from the network needs the group awake. Answers do
/// not (the answers to the leader's own `Quiesce` must not undo it), nor
/// does a `Quiesce`.
pub(super) fn wakes_the_group(message: &Message) -> bool {
    !matches!(
        message,
        Message::AppendEntriesResponse { .. }
            | Message::InstallSnapshotResponse { .. }
            | Message::RequestVoteResponse { .. }
            | Message::Quiesce { .. }
            | Message::HostHeartbeat
            | Message::DeleteGroup
            | Message::GroupDeleted
    )
}

/// The host suspects the leader's host is down: a quiescent follower
/// starts its election timer again.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct WakeGroup;

impl Handler<WakeGroup> for Node {
    type Result = ();
    fn handle(&mut self, _: WakeGroup, _ctx: &mut Context<Self>) {
        self.wake_role();
    }
}
