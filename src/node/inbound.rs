//! Every message from the network enters here: checked (cluster,
//! validity), the term rules applied, then routed to the role actor of the
//! current term or answered by the node itself.

use actix::prelude::{Context, Handler};

use super::*;

impl Handler<Inbound> for Node {
    type Result = ();

    fn handle(&mut self, Inbound(env): Inbound, ctx: &mut Context<Self>) {
        if matches!(self.role, RoleState::Stopped) || env.to != self.id() {
            return;
        }
        let from = env.from;
        let incarnation = env.incarnation;
        if !self.same_cluster(&env) {
            return;
        }
        match self.incarnations.hear(from, incarnation) {
            Heard::Live | Heard::First => {}
            Heard::Replaced { retired } => tracing::info!(
                node = self.id(),
                term = self.hs.term,
                peer = from,
                incarnation,
                retired,
                "peer came back with a new incarnation; the old one is ignored from now on"
            ),
            Heard::Retired => {
                tracing::debug!(
                    node = self.id(),
                    from,
                    incarnation,
                    "message from a replaced incarnation ignored"
                );
                return;
            }
            Heard::Untracked => {
                if self.should_log_refusal(from) {
                    tracing::warn!(
                        node = self.id(),
                        peer = from,
                        "message from a peer beyond the {MAX_TRACKED_PEERS} this node tracks; ignored"
                    );
                }
                return;
            }
        }
        if let Err(rule) = validate(&env.message) {
            crate::metrics::Counters::bump(&self.cx.counters.messages_invalid);
            tracing::warn!(
                node = self.id(),
                term = self.hs.term,
                from,
                %rule,
                "invalid message refused"
            );
            return;
        }
        if super::quiescence::wakes_the_group(&env.message) {
            self.wake_role();
        }
        match preamble(self.hs.term, self.leader_alive(), from, &env.message) {
            Preamble::Handle => {}
            Preamble::AdoptTerm { term, leader } => {
                tracing::debug!(node = self.id(), term, from, "newer term seen");
                self.become_follower(term, leader);
            }
            Preamble::Refuse { reply } => {
                if let Some(reply) = reply {
                    self.send(from, reply);
                }
                return;
            }
        }
        match env.message {
            Message::AppendEntries {
                term: _,
                prev,
                entries,
                leader_commit,
                round,
            } => {
                let commit_index = self.commit_index;
                if let Some(f) = self.follow(from) {
                    f.do_send(AppendEntriesRequest {
                        from,
                        prev,
                        entries,
                        leader_commit,
                        round,
                        commit_index,
                        quiesce: false,
                    });
                }
            }
            // A heartbeat that also quiets the follower's election timer.
            Message::Quiesce {
                term: _,
                last,
                leader_commit,
            } => {
                let commit_index = self.commit_index;
                if let Some(f) = self.follow(from) {
                    f.do_send(AppendEntriesRequest {
                        from,
                        prev: last,
                        entries: Vec::new(),
                        leader_commit,
                        round: 0,
                        commit_index,
                        quiesce: true,
                    });
                }
            }
            // The host's business: never routed to a group.
            Message::HostHeartbeat | Message::DeleteGroup | Message::GroupDeleted => {}
            Message::InstallSnapshot {
                meta, offset, data, ..
            } => {
                let commit_index = self.commit_index;
                if let Some(f) = self.follow(from) {
                    f.do_send(SnapshotChunk {
                        from,
                        meta,
                        offset,
                        data,
                        commit_index,
                    });
                }
            }
            Message::InstallSnapshotResponse {
                last_included,
                received,
                done,
                ..
            } => {
                if let RoleState::Leader(l) = &self.role {
                    l.do_send(RouteSnapshotReply {
                        from,
                        reply: SnapshotReply {
                            last_included,
                            received,
                            done,
                            incarnation,
                        },
                    });
                }
            }
            Message::AppendEntriesResponse {
                result,
                prev_index,
                round,
                ..
            } => {
                if let RoleState::Leader(l) = &self.role {
                    l.do_send(RouteAppendReply {
                        from,
                        reply: AppendReply {
                            result,
                            prev_index,
                            round,
                            incarnation,
                        },
                    });
                }
            }
            Message::RequestVote {
                term,
                last_log_id,
                pre_vote,
                force,
            } => {
                let req = VoteRequest {
                    term,
                    candidate: from,
                    last_log_id,
                    pre_vote,
                };
                self.handle_vote_request(from, req, force, ctx);
            }
            Message::RequestVoteResponse {
                term,
                granted,
                pre_vote,
            } => {
                if let RoleState::Candidate { addr, pre_vote: p } = &self.role {
                    // A vote from another incarnation than the pinned one
                    // speaks for a disk that is gone.
                    if counts_vote_reply(self.hs.term, *p, term, granted, pre_vote)
                        && self.membership.counts(from, incarnation)
                    {
                        addr.do_send(VoteReply { from, granted });
                    }
                }
            }
            Message::TimeoutNow { .. } => {
                if self.membership.is_voter(self.id())
                    && self.may_vote()
                    && !matches!(self.role, RoleState::Leader(_))
                {
                    tracing::info!(
                        node = self.id(),
                        term = self.hs.term,
                        "TimeoutNow: campaigning at once"
                    );
                    self.start_election(true, ctx);
                }
            }
            message @ (Message::ForwardWrite { .. }
            | Message::ForwardWriteResponse { .. }
            | Message::ForwardAdmin { .. }
            | Message::ForwardAdminResponse { .. }
            | Message::ReadIndexRequest { .. }
            | Message::ReadIndexResponse { .. }) => self.on_forwarding(from, incarnation, message),
            Message::Refused { .. } => {} // handled by `same_cluster`
            message @ (Message::FoundingQuery | Message::FoundingReply { .. }) => {
                self.on_founding(from, incarnation, message, ctx)
            }
        }
    }
}
