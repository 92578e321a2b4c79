//! Founding a cluster on an empty directory: the node asks the other
//! founders whether the cluster exists (core::founding), founds once all
//! of them say it does not, and stops with an error that says what to do
//! if one of them holds its state.

use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::Node;
use crate::applier::Committed;
use crate::core::founding::{self, Decision, Founding};
use crate::core::types::{Membership, NodeId};
use crate::log_store::Found;
use crate::message::Message;

/// How long a founder waits for every other founder to answer before it
/// gives up (it never founds blind).
const FOUNDING_PATIENCE: Duration = Duration::from_secs(300);

/// A founder on an empty directory that has not founded yet.
pub(super) struct PendingFounding {
    founding: Founding,
    members: Membership,
    since: Instant,
    asked: u64,
}

impl PendingFounding {
    pub(super) fn new(me: NodeId, members: Membership) -> Self {
        PendingFounding {
            founding: Founding::new(me, members.voters.iter().copied()),
            members,
            since: Instant::now(),
            asked: 0,
        }
    }
}

impl Node {
    /// Whether `id` is one of the founders this node waits to found with.
    pub(super) fn is_founder(&self, id: NodeId) -> bool {
        self.founding
            .as_ref()
            .is_some_and(|p| p.members.is_voter(id))
    }

    /// Starts asking the other founders, if this node waits to found.
    pub(super) fn start_founding(&mut self, ctx: &mut Context<Self>) {
        let Some(p) = &self.founding else { return };
        for (id, addr) in &p.members.addresses {
            if *id != self.id() {
                self.cx.transport.set_address(*id, addr);
            }
        }
        tracing::info!(
            node = self.id(),
            founders = ?p.members.voters,
            "empty data directory: asking the other founders whether the cluster exists before founding it"
        );
        self.decide_founding(ctx);
        self.ask_founders(ctx);
    }

    fn ask_founders(&mut self, ctx: &mut Context<Self>) {
        let id = self.id();
        let Some(p) = &mut self.founding else { return };
        let missing = match p.founding.decide() {
            Decision::Wait { missing } => missing,
            _ => return,
        };
        if p.since.elapsed() >= FOUNDING_PATIENCE {
            if let Some(peer) = p.founding.exists_from() {
                // Waited for a founder that might have vouched for this
                // directory; none did.
                self.fail(Self::exists_cause(peer), ctx);
                return;
            }
            let cause = format!(
                "could not found the cluster: founders {missing:?} did not answer within {FOUNDING_PATIENCE:?}, \
                 and a node on an empty directory never founds without knowing that the cluster does not exist \
                 yet. Start them (with the same initial cluster), or, if this node's disk was replaced under a \
                 running cluster, start it with --join and add it back (README: Replacing a disk)"
            );
            self.fail(cause, ctx);
            return;
        }
        p.asked += 1;
        if p.asked % 20 == 0 {
            tracing::info!(node = id, waiting_for = ?missing, "still waiting for founders to answer before founding");
        }
        // Every other founder, not only the silent ones: one that answered
        // "pending" may have founded since (with this directory), and its
        // new answer lets this node found without the silent one.
        let others: Vec<NodeId> = p.founding.others().collect();
        for peer in others {
            self.send(peer, Message::FoundingQuery);
        }
        let interval = self.cx.config.election_timeout_min / 2;
        ctx.run_later(interval, |act, ctx| act.ask_founders(ctx));
    }

    /// A founding query or answer from `from`'s `incarnation`.
    pub(super) fn on_founding(
        &mut self,
        from: NodeId,
        incarnation: u64,
        message: Message,
        ctx: &mut Context<Self>,
    ) {
        match message {
            Message::FoundingQuery => {
                // A founder that holds the founding entry and nothing
                // else — no other entry, no vote, no term past the first —
                // has seen nothing the asker could have taken part in: it
                // counts as not founded yet (a founder that crashed after
                // founding, before any election, and forgot whom it
                // founded with; found by the simulator, seed 3811).
                let untouched = self.last_log_id == crate::core::types::LogId::new(1, 1)
                    && self.snapshot_index == 0
                    && self.hs.term <= 1
                    && self.hs.voted_for.is_none();
                let pending = self.founding.is_some() || untouched;
                let answer =
                    founding::answer(pending, &self.founded_incarnations, from, incarnation);
                self.send(from, Message::FoundingReply { answer });
            }
            Message::FoundingReply { answer } => {
                if let Some(p) = &mut self.founding {
                    p.founding.record(from, answer, incarnation);
                    self.decide_founding(ctx);
                }
            }
            _ => {}
        }
    }

    /// The founders' incarnations this node founded with, its own among
    /// them.
    fn remember_founders(&mut self, with: std::collections::BTreeMap<NodeId, u64>) {
        self.founded_incarnations = with;
        self.founded_incarnations
            .insert(self.id(), self.cx.identity.get().incarnation);
    }

    fn exists_cause(peer: NodeId) -> String {
        format!(
            "refusing to found the cluster: founder {peer} holds its state, so this node's data \
             directory is not new but was lost or replaced. A voter back on an empty disk has \
             forgotten its votes and the entries it acknowledged; it must be added back as a new \
             member: start it with --join (Node::builder(..).join()) and replace it through the \
             cluster (README: Replacing a disk)"
        )
    }

    fn decide_founding(&mut self, ctx: &mut Context<Self>) {
        let Some(p) = &self.founding else { return };
        match p.founding.decide() {
            Decision::Wait { .. } => {}
            Decision::Exists { peer } => self.fail(Self::exists_cause(peer), ctx),
            Decision::Found { with } if self.last_log_id.index > 0 => {
                // A leader has already replicated the cluster's log here
                // (this directory was among the founders): nothing to
                // found, and the configuration in the log stands.
                self.founding = None;
                self.remember_founders(with);
                self.cx.log.do_send(crate::log_store::SaveFounders(
                    self.founded_incarnations.clone(),
                ));
                tracing::info!(
                    node = self.id(),
                    "the cluster was founded with this directory; following its log"
                );
                // A founder all the same (the others vouched for it): it
                // votes where the configuration names it unpinned.
                self.cx.identity.mark_founder();
                self.cx
                    .log
                    .do_send(crate::log_store::SaveIdentity(self.cx.identity.get()));
                // Its election timer may have fired while it could not
                // vote yet, and a follower arms it again only when a
                // leader speaks: with that leader gone it never campaigned
                // (simulator, seed 8038541). A fresh follower's timer
                // counts from now.
                if matches!(self.role, super::RoleState::Follower(_)) {
                    self.stop_role();
                    self.become_follower(self.hs.term, None);
                }
            }
            Decision::Found { with } => {
                let Some(p) = self.founding.take() else {
                    return;
                };
                tracing::info!(node = self.id(), founders = ?p.members.voters, "founding the cluster");
                // Every founder writes exactly the configuration it was
                // given, so the first entries agree by construction (naming
                // incarnations in it made them differ when a founder's
                // identity was not yet durable: found by the simulator,
                // seed 49267). The incarnations heard while founding are
                // kept beside it, durably: a founder that asks again from
                // the same directory is recognized even after this node
                // restarted (one that forgot answered "exists", and the
                // asker, holding the cluster's log, refused to go on:
                // simulator, seed 3002595 with --slow-apply --sessions).
                self.remember_founders(with);
                self.cx.identity.mark_founder();
                self.cx.log.do_send(Found {
                    members: p.members,
                    identity: self.cx.identity.get(),
                    hard_state: self.hs,
                    founders: self.founded_incarnations.clone(),
                });
                // A follower (of term 1, unless it heard a later one),
                // whose election timer counts.
                self.become_follower(self.hs.term.max(1), None);
                // The founding configuration is committed by construction:
                // every founder writes the same entry.
                self.commit_index = self.commit_index.max(1);
                self.applier.do_send(Committed(self.commit_index));
                self.publish();
            }
        }
    }
}
