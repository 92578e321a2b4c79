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
        if incarnation != 0 {
            self.incarnations.insert(from, incarnation);
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
        if let Some(term) = env.message.term() {
            // A node that hears a live leader ignores vote requests without
            // adopting their term: a rejoining node cannot disrupt it.
            if let Message::RequestVote {
                pre_vote,
                force: false,
                ..
            } = &env.message
            {
                if term > self.hs.term && self.leader_alive() {
                    let reply = Message::RequestVoteResponse {
                        term: self.hs.term,
                        granted: false,
                        pre_vote: *pre_vote,
                    };
                    self.send(from, reply);
                    return;
                }
            }
            let adopts = !matches!(
                env.message,
                Message::RequestVote { pre_vote: true, .. }
                    | Message::RequestVoteResponse {
                        pre_vote: true,
                        granted: true,
                        ..
                    }
            );
            if adopts && term > self.hs.term {
                let leader = matches!(env.message, Message::AppendEntries { .. }).then_some(from);
                tracing::debug!(node = self.id(), term, from, "newer term seen");
                self.become_follower(term, leader);
            } else if term < self.hs.term {
                // Tell the stale sender about the newer term.
                match env.message {
                    Message::AppendEntries { prev, round, .. } => self.send(
                        from,
                        Message::AppendEntriesResponse {
                            term: self.hs.term,
                            result: Err(ConflictHint {
                                conflict_term: None,
                                first_index: 0,
                            }),
                            prev_index: prev.index,
                            round,
                        },
                    ),
                    Message::RequestVote { pre_vote, .. } => self.send(
                        from,
                        Message::RequestVoteResponse {
                            term: self.hs.term,
                            granted: false,
                            pre_vote,
                        },
                    ),
                    Message::InstallSnapshot { meta, .. } => self.send(
                        from,
                        Message::InstallSnapshotResponse {
                            term: self.hs.term,
                            last_included: meta.last_included,
                            received: 0,
                            done: false,
                        },
                    ),
                    _ => {}
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
                    });
                }
            }
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
                    let expected = if *p { self.hs.term + 1 } else { self.hs.term };
                    if *p == pre_vote && (term == expected || (!granted && term <= expected)) {
                        addr.do_send(VoteReply { from, granted });
                    }
                }
            }
            Message::TimeoutNow { .. } => {
                if self.membership.is_voter(self.id()) && !matches!(self.role, RoleState::Leader(_))
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
            | Message::ReadIndexRequest { .. }
            | Message::ReadIndexResponse { .. }) => self.on_forwarding(from, incarnation, message),
            Message::Refused { .. } => {} // handled by `same_cluster`
        }
    }
}
