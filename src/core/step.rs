//! The per-node rules every message passes before any role sees it: the
//! term preamble (Raft §5.1, with the dissertation's §4.2.3 guard against
//! disruptive servers and §9.6 pre-vote), the answer to a vote request
//! with its durability barrier, and which vote replies a candidate counts.
//!
//! The node actor (`node/inbound.rs`, `node/election.rs`) carries these
//! decisions out: it adopts terms, sends replies, and holds a granted vote
//! back until the log store says the vote is durable.

use super::types::{HardState, LogId, NodeId};
use super::vote::{decide_vote, VoteRequest};
use crate::core::log::ConflictHint;
use crate::message::Message;

/// What to do with a message before the roles see it.
#[derive(Clone, Debug, PartialEq, Eq)]
// Decided once per message and matched at once, never stored: the size of
// the refusal's reply costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Preamble {
    /// Handle it in the current term.
    Handle,
    /// Adopt the newer `term` first (become a follower, of `leader` when
    /// the message came from that term's leader), then handle it.
    AdoptTerm {
        /// The message's term.
        term: u64,
        /// The sender, when the message proves it leads `term`.
        leader: Option<NodeId>,
    },
    /// Drop it; send `reply` back to the sender if there is one (so a
    /// stale sender learns the newer term).
    Refuse {
        /// The answer, if the message expects one.
        reply: Option<Message>,
    },
}

/// The term rules for a message from `from` while this node is in
/// `our_term`. `leader_alive`: this node heard from a current leader within
/// the minimum election timeout.
pub fn preamble(our_term: u64, leader_alive: bool, from: NodeId, message: &Message) -> Preamble {
    let Some(term) = message.term() else {
        return Preamble::Handle;
    };
    if let Message::RequestVote {
        pre_vote,
        force: false,
        ..
    } = message
    {
        // A node that hears a live leader ignores vote requests without
        // adopting their term: a rejoining node cannot disrupt it.
        if term > our_term && leader_alive {
            return Preamble::Refuse {
                reply: Some(Message::RequestVoteResponse {
                    term: our_term,
                    granted: false,
                    pre_vote: *pre_vote,
                }),
            };
        }
    }
    // A pre-vote request, and a granted pre-vote reply, carry a term nobody
    // is in yet: adopting it would be the disruption pre-vote prevents.
    let carries_real_term = !matches!(
        message,
        Message::RequestVote { pre_vote: true, .. }
            | Message::RequestVoteResponse {
                pre_vote: true,
                granted: true,
                ..
            }
    );
    if carries_real_term && term > our_term {
        let leader = matches!(
            message,
            Message::AppendEntries { .. } | Message::Quiesce { .. }
        )
        .then_some(from);
        return Preamble::AdoptTerm { term, leader };
    }
    if term >= our_term {
        return Preamble::Handle;
    }
    Preamble::Refuse {
        reply: stale_reply(our_term, message),
    }
}

/// The refusal a sender of a stale request gets, carrying our term.
fn stale_reply(our_term: u64, message: &Message) -> Option<Message> {
    match message {
        Message::AppendEntries { prev, round, .. } => Some(Message::AppendEntriesResponse {
            term: our_term,
            result: Err(ConflictHint {
                conflict_term: None,
                first_index: 0,
            }),
            prev_index: prev.index,
            round: *round,
        }),
        // A deposed leader that went quiet learns of the newer term.
        Message::Quiesce { last, .. } => Some(Message::AppendEntriesResponse {
            term: our_term,
            result: Err(ConflictHint {
                conflict_term: None,
                first_index: 0,
            }),
            prev_index: last.index,
            round: 0,
        }),
        Message::RequestVote { pre_vote, .. } => Some(Message::RequestVoteResponse {
            term: our_term,
            granted: false,
            pre_vote: *pre_vote,
        }),
        Message::InstallSnapshot { meta, .. } => Some(Message::InstallSnapshotResponse {
            term: our_term,
            last_included: meta.last_included,
            received: 0,
            done: false,
        }),
        _ => None,
    }
}

/// How a node answers a (pre-)vote request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteAnswer {
    /// The reply to the candidate.
    pub reply: Message,
    /// For a granted real vote: the hard state to make durable *before*
    /// `reply` may leave (a vote forgotten in a crash could be cast twice).
    pub persist: Option<HardState>,
    /// A granted real vote restarts the follower's election timer: the
    /// candidate gets its chance to win.
    pub reset_election_timer: bool,
}

/// Answers a vote request (after the preamble adopted its term). A node
/// that holds no configuration grants nothing: it is new or back on an
/// empty disk, waiting to be added, and may have forgotten a vote and the
/// entries it acknowledged; its grant could elect a leader missing
/// committed entries. (A learner, or a voter not yet told of its
/// promotion, does grant: a joint configuration may need its vote.)
pub fn answer_vote(
    hard_state: &HardState,
    our_last: LogId,
    req: &VoteRequest,
    leader_alive: bool,
    configured: bool,
) -> VoteAnswer {
    let decision = if configured {
        decide_vote(hard_state, our_last, req, leader_alive)
    } else {
        crate::core::vote::VoteDecision {
            granted: false,
            persist: None,
        }
    };
    // A granted pre-vote answers in the term asked about, so the candidate
    // can tell it from a refusal of an older round.
    let term = if req.pre_vote && decision.granted {
        req.term
    } else {
        hard_state.term
    };
    VoteAnswer {
        reply: Message::RequestVoteResponse {
            term,
            granted: decision.granted,
            pre_vote: req.pre_vote,
        },
        persist: decision.persist,
        reset_election_timer: decision.granted && !req.pre_vote,
    }
}

/// Whether a candidate of `our_term` (asking for `our_term + 1` in a
/// pre-vote round) counts a vote reply: it must answer this round's kind
/// and, if granted, this round's term — a grant from an older round must
/// not count toward this one.
pub fn counts_vote_reply(
    our_term: u64,
    candidate_pre_vote: bool,
    reply_term: u64,
    granted: bool,
    reply_pre_vote: bool,
) -> bool {
    let asked = if candidate_pre_vote {
        our_term + 1
    } else {
        our_term
    };
    candidate_pre_vote == reply_pre_vote
        && (reply_term == asked || (!granted && reply_term <= asked))
}

/// A node's role, as the election rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Following (or waiting for) a leader.
    Follower,
    /// Asking for pre-votes or votes.
    Candidate,
    /// Leading.
    Leader,
    /// Starting up or stopped.
    Inactive,
}

/// What a node does when an election timer fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Campaign {
    /// Nothing: the timer is stale, or this node does not campaign.
    Ignore,
    /// Ask whether it could win before bumping the term (§9.6).
    PreVote,
    /// Bump the term and ask for votes (§5.2).
    Election,
}

/// Decides what an election timer armed in `timer_term` means for a node
/// in `term`, whose role was taken in `role_term`. Only voters campaign:
/// a learner or a removed node waits to be told (§4.2.2).
pub fn on_election_timeout(
    timer_term: u64,
    term: u64,
    role_term: u64,
    role: Role,
    is_voter: bool,
    pre_vote: bool,
) -> Campaign {
    let current = timer_term == term && timer_term == role_term;
    let waiting = matches!(role, Role::Follower | Role::Candidate);
    match (current && waiting && is_voter, pre_vote) {
        (false, _) => Campaign::Ignore,
        (true, true) => Campaign::PreVote,
        (true, false) => Campaign::Election,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::Entry;

    fn append(term: u64) -> Message {
        Message::AppendEntries {
            term,
            prev: LogId::new(1, 4),
            entries: Vec::<Entry>::new(),
            leader_commit: 0,
            round: 9,
        }
    }

    fn vote(term: u64, pre_vote: bool, force: bool) -> Message {
        Message::RequestVote {
            term,
            last_log_id: LogId::new(1, 4),
            pre_vote,
            force,
        }
    }

    #[test]
    fn a_newer_term_is_adopted_and_an_append_names_the_leader() {
        // §5.1: "If RPC request or response contains term T > currentTerm:
        // set currentTerm = T, convert to follower."
        assert_eq!(
            preamble(3, false, 2, &append(5)),
            Preamble::AdoptTerm {
                term: 5,
                leader: Some(2)
            }
        );
        assert_eq!(
            preamble(3, false, 2, &vote(5, false, false)),
            Preamble::AdoptTerm {
                term: 5,
                leader: None
            }
        );
        let reply = Message::AppendEntriesResponse {
            term: 4,
            result: Ok(LogId::new(1, 4)),
            prev_index: 4,
            round: 0,
        };
        assert_eq!(
            preamble(3, false, 2, &reply),
            Preamble::AdoptTerm {
                term: 4,
                leader: None
            }
        );
    }

    #[test]
    fn a_stale_request_is_refused_with_our_term() {
        // §5.1: "If a server receives a request with a stale term number,
        // it rejects the request."
        let Preamble::Refuse { reply: Some(reply) } = preamble(7, false, 2, &append(6)) else {
            panic!("a stale append must be answered");
        };
        assert_eq!(reply.term(), Some(7));
        assert!(matches!(
            reply,
            Message::AppendEntriesResponse {
                result: Err(_),
                prev_index: 4,
                round: 9,
                ..
            }
        ));
        let Preamble::Refuse { reply: Some(reply) } = preamble(7, false, 2, &vote(6, false, false))
        else {
            panic!("a stale vote request must be answered");
        };
        assert!(matches!(
            reply,
            Message::RequestVoteResponse {
                term: 7,
                granted: false,
                ..
            }
        ));
        // A stale reply is just dropped.
        let old = Message::RequestVoteResponse {
            term: 6,
            granted: true,
            pre_vote: false,
        };
        assert_eq!(
            preamble(7, false, 2, &old),
            Preamble::Refuse { reply: None }
        );
    }

    #[test]
    fn the_current_term_is_handled() {
        assert_eq!(preamble(5, true, 2, &append(5)), Preamble::Handle);
        assert_eq!(
            preamble(5, false, 2, &vote(5, false, false)),
            Preamble::Handle
        );
    }

    #[test]
    fn pre_votes_never_move_the_term() {
        // A pre-vote asks about a term nobody is in yet (§9.6).
        assert_eq!(
            preamble(3, false, 2, &vote(4, true, false)),
            Preamble::Handle
        );
        let granted = Message::RequestVoteResponse {
            term: 4,
            granted: true,
            pre_vote: true,
        };
        assert_eq!(preamble(3, false, 2, &granted), Preamble::Handle);
        // A refused pre-vote carries the voter's real, newer term.
        let refused = Message::RequestVoteResponse {
            term: 6,
            granted: false,
            pre_vote: true,
        };
        assert_eq!(
            preamble(3, false, 2, &refused),
            Preamble::AdoptTerm {
                term: 6,
                leader: None
            }
        );
    }

    #[test]
    fn a_live_leader_shields_the_term_from_vote_requests_unless_forced() {
        // Dissertation §4.2.3: a server that heard a leader within the
        // minimum election timeout neither adopts the term nor votes.
        assert_eq!(
            preamble(3, true, 2, &vote(9, false, false)),
            Preamble::Refuse {
                reply: Some(Message::RequestVoteResponse {
                    term: 3,
                    granted: false,
                    pre_vote: false
                })
            }
        );
        // A leadership transfer's election (TimeoutNow) is forced through.
        assert_eq!(
            preamble(3, true, 2, &vote(9, false, true)),
            Preamble::AdoptTerm {
                term: 9,
                leader: None
            }
        );
    }

    #[test]
    fn a_granted_vote_waits_for_durability_and_resets_the_timer() {
        let hs = HardState {
            term: 4,
            voted_for: None,
        };
        let req = VoteRequest {
            term: 4,
            candidate: 2,
            last_log_id: LogId::new(3, 10),
            pre_vote: false,
        };
        let answer = answer_vote(&hs, LogId::new(3, 10), &req, false, true);
        assert_eq!(
            answer.persist,
            Some(HardState {
                term: 4,
                voted_for: Some(2)
            })
        );
        assert!(answer.reset_election_timer);
        assert!(matches!(
            answer.reply,
            Message::RequestVoteResponse {
                term: 4,
                granted: true,
                pre_vote: false
            }
        ));
        // A refusal persists nothing and leaves the timer running.
        let refused = answer_vote(&hs, LogId::new(3, 11), &req, false, true);
        assert!(refused.persist.is_none() && !refused.reset_election_timer);
    }

    /// Review finding 1 (2026-12): a voter back on an empty disk, waiting
    /// to be added again, granted votes at once (it had forgotten its
    /// vote and its entries): a candidate missing an acknowledged entry
    /// could win with it. A node without a configuration grants neither
    /// votes nor pre-votes.
    #[test]
    fn a_node_without_a_configuration_grants_nothing() {
        let empty = HardState::default();
        for pre_vote in [true, false] {
            let req = VoteRequest {
                term: 4,
                candidate: 3,
                last_log_id: LogId::new(2, 5),
                pre_vote,
            };
            let answer = answer_vote(&empty, LogId::default(), &req, false, false);
            assert!(answer.persist.is_none() && !answer.reset_election_timer);
            assert!(matches!(
                answer.reply,
                Message::RequestVoteResponse { granted: false, .. }
            ));
            // The same request to a configured node is granted.
            let granted = answer_vote(&empty, LogId::default(), &req, false, true);
            assert!(matches!(
                granted.reply,
                Message::RequestVoteResponse { granted: true, .. }
            ));
        }
    }

    #[test]
    fn a_granted_pre_vote_answers_in_the_term_asked_about() {
        let hs = HardState {
            term: 4,
            voted_for: Some(1),
        };
        let req = VoteRequest {
            term: 5,
            candidate: 2,
            last_log_id: LogId::new(4, 10),
            pre_vote: true,
        };
        let answer = answer_vote(&hs, LogId::new(4, 10), &req, false, true);
        assert_eq!(answer.reply.term(), Some(5));
        assert!(answer.persist.is_none() && !answer.reset_election_timer);
        let refused = answer_vote(&hs, LogId::new(4, 11), &req, false, true);
        assert_eq!(refused.reply.term(), Some(4));
    }

    #[test]
    fn a_candidate_counts_only_replies_to_its_own_round() {
        // Real round in term 6.
        assert!(counts_vote_reply(6, false, 6, true, false));
        assert!(!counts_vote_reply(6, false, 5, true, false), "old grant");
        assert!(
            !counts_vote_reply(6, false, 6, true, true),
            "pre-vote reply"
        );
        assert!(counts_vote_reply(6, false, 5, false, false), "old refusal");
        // Pre-vote round of term 6 asks about term 7.
        assert!(counts_vote_reply(6, true, 7, true, true));
        assert!(!counts_vote_reply(6, true, 6, true, true), "older round");
        assert!(!counts_vote_reply(6, true, 7, true, false), "real vote");
    }

    #[test]
    fn only_a_voter_waiting_for_a_leader_campaigns_on_a_current_timer() {
        use Campaign::*;
        // §5.2: a follower that hears nothing campaigns (after a pre-vote
        // round when enabled); a candidate whose election timed out tries
        // again.
        assert_eq!(
            on_election_timeout(4, 4, 4, Role::Follower, true, true),
            PreVote
        );
        assert_eq!(
            on_election_timeout(4, 4, 4, Role::Follower, true, false),
            Election
        );
        assert_eq!(
            on_election_timeout(4, 4, 4, Role::Candidate, true, false),
            Election
        );
        // A timer of an earlier term or role is stale.
        assert_eq!(
            on_election_timeout(3, 4, 4, Role::Follower, true, true),
            Ignore
        );
        assert_eq!(
            on_election_timeout(4, 4, 5, Role::Follower, true, true),
            Ignore
        );
        // A leader, a learner and a node not started never campaign.
        assert_eq!(
            on_election_timeout(4, 4, 4, Role::Leader, true, true),
            Ignore
        );
        assert_eq!(
            on_election_timeout(4, 4, 4, Role::Follower, false, true),
            Ignore
        );
        assert_eq!(
            on_election_timeout(4, 4, 4, Role::Inactive, true, true),
            Ignore
        );
    }
}
