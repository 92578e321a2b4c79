//! Vote decisions (Raft §5.2, §5.4.1) including pre-vote (dissertation §9.6).

use super::types::{HardState, LogId, NodeId};

/// A (pre-)vote request as the voter sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteRequest {
    /// The term the candidate is (or, for a pre-vote, would be) in.
    pub term: u64,
    /// Who asks.
    pub candidate: NodeId,
    /// The candidate's last log entry.
    pub last_log_id: LogId,
    /// A pre-vote changes no state: it asks "would you vote for me?".
    pub pre_vote: bool,
}

/// The voter's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteDecision {
    /// Whether the vote is granted.
    pub granted: bool,
    /// For a real vote that is granted: the hard state that must be durable
    /// before the reply may be sent (also for a repeated grant, whose
    /// first write may not be durable yet).
    pub persist: Option<HardState>,
}

/// Whether a candidate's log is at least as up to date as ours (§5.4.1):
/// compare last terms, then last indices.
pub fn log_is_up_to_date(candidate_last: LogId, our_last: LogId) -> bool {
    candidate_last >= our_last
}

/// Decides a vote. `hard_state` is the voter's state *after* adopting a
/// higher term from the request (the caller does that for real votes).
/// `leader_alive` is true while this node has heard from a current leader
/// within the minimum election timeout: such a node refuses to help depose it.
pub fn decide_vote(
    hard_state: &HardState,
    our_last: LogId,
    req: &VoteRequest,
    leader_alive: bool,
) -> VoteDecision {
    let refuse = VoteDecision {
        granted: false,
        persist: None,
    };
    if req.term < hard_state.term || leader_alive {
        return refuse;
    }
    if !log_is_up_to_date(req.last_log_id, our_last) {
        return refuse;
    }
    if req.pre_vote {
        // The candidate has not incremented its term yet; it asks for the
        // next one. Granting changes nothing locally.
        return VoteDecision {
            granted: req.term > hard_state.term
                || (req.term == hard_state.term && hard_state.voted_for.is_none()),
            persist: None,
        };
    }
    // One vote per term, first come first served. A repeated request gets
    // the same answer, and the same durability barrier: the first grant's
    // write may still be in flight, and no grant may leave before it is
    // durable.
    match hard_state.voted_for {
        Some(v) if v != req.candidate => refuse,
        Some(_) | None => VoteDecision {
            granted: true,
            persist: Some(HardState {
                term: req.term,
                voted_for: Some(req.candidate),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(term: u64, voted_for: Option<NodeId>) -> HardState {
        HardState { term, voted_for }
    }

    fn req(term: u64, candidate: NodeId, last: (u64, u64)) -> VoteRequest {
        VoteRequest {
            term,
            candidate,
            last_log_id: LogId::new(last.0, last.1),
            pre_vote: false,
        }
    }

    #[test]
    fn stale_term_is_refused() {
        let d = decide_vote(&hs(5, None), LogId::default(), &req(4, 2, (0, 0)), false);
        assert!(!d.granted);
    }

    #[test]
    fn at_most_one_vote_per_term_first_come_first_served() {
        let mut state = hs(3, None);
        let d = decide_vote(&state, LogId::new(1, 1), &req(3, 2, (1, 1)), false);
        assert!(d.granted);
        state = d.persist.expect("a grant must be persisted");
        assert_eq!(state.voted_for, Some(2));
        // Another candidate in the same term is refused.
        assert!(!decide_vote(&state, LogId::new(1, 1), &req(3, 3, (1, 1)), false).granted);
        // The same candidate asking again gets the same answer, behind the
        // same durability barrier.
        let again = decide_vote(&state, LogId::new(1, 1), &req(3, 2, (1, 1)), false);
        assert!(again.granted);
        assert_eq!(again.persist, Some(state));
    }

    #[test]
    fn voter_denies_a_less_up_to_date_log() {
        let ours = LogId::new(3, 10);
        // Lower last term loses even with a longer log.
        assert!(!decide_vote(&hs(4, None), ours, &req(4, 2, (2, 20)), false).granted);
        // Same last term, shorter log loses.
        assert!(!decide_vote(&hs(4, None), ours, &req(4, 2, (3, 9)), false).granted);
        // Same term and length wins; higher last term wins even if shorter.
        assert!(decide_vote(&hs(4, None), ours, &req(4, 2, (3, 10)), false).granted);
        assert!(decide_vote(&hs(4, None), ours, &req(4, 2, (4, 1)), false).granted);
    }

    #[test]
    fn pre_vote_changes_nothing_and_respects_a_live_leader() {
        let state = hs(4, Some(1));
        let mut r = req(5, 2, (4, 7));
        r.pre_vote = true;
        let d = decide_vote(&state, LogId::new(4, 7), &r, false);
        assert!(d.granted);
        assert!(d.persist.is_none(), "a pre-vote never persists");
        // While a leader is known to be alive, neither pre-votes nor votes
        // are granted: a rejoining node cannot disrupt a healthy leader.
        assert!(!decide_vote(&state, LogId::new(4, 7), &r, true).granted);
        assert!(!decide_vote(&hs(5, None), LogId::new(4, 7), &req(5, 2, (4, 7)), true).granted);
    }
}
