//! Client sessions (dissertation §6.3): what makes a retried write apply
//! at most once. Every input comes from a committed log entry — the
//! session tag, the client's acknowledgement watermark and the leader's
//! clock — so every node holds the same table after the same entries, and
//! the table travels in snapshots.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Limits of the session table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session idle this long (by the leaders' clocks in the log) expires.
    pub timeout_ms: u64,
    /// Most sessions kept; opening one more evicts the least recently used.
    pub max_sessions: usize,
    /// Most responses cached per session (writes applied but not yet
    /// acknowledged by the client); a write beyond it is refused.
    pub max_cached: usize,
}

/// Why a session write is not applied. Each is definite: this attempt
/// changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SessionError {
    /// The session is not in the table: it expired, was evicted, or was
    /// never opened. Writes sent on it earlier may or may not have been
    /// applied; open a new session and read the state before retrying.
    #[error("session {0} is unknown (expired or evicted): open a new session, and check what earlier writes did before retrying them")]
    Unknown(u64),
    /// The sequence number is at or below what the client said it has
    /// answers for: a late duplicate, or a client bug. Not applied.
    #[error(
        "sequence {seq} of session {session} is at or below the acknowledged {floor}: not applied"
    )]
    Stale {
        /// The session.
        session: u64,
        /// The refused sequence number.
        seq: u64,
        /// The client's acknowledgement watermark.
        floor: u64,
    },
    /// Too many of the session's writes are applied but unacknowledged.
    #[error("session {session} has {limit} unacknowledged answers cached: acknowledge some before writing more")]
    TooManyUnacknowledged {
        /// The session.
        session: u64,
        /// The per-session cap.
        limit: usize,
    },
}

/// What to do with a tagged write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// New: apply it, then [`SessionTable::record`] its response.
    Apply,
    /// Already applied: answer with this response.
    Answered(Bytes),
    /// Being applied by an earlier entry of the same batch: answer with
    /// that entry's response once recorded.
    Pending,
    /// Refused; nothing is applied.
    Refused(SessionError),
}

/// The sessions every node keeps, identical on all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTable {
    sessions: BTreeMap<u64, Session>,
    /// The latest leader time seen in the log (ms since the Unix epoch).
    now_ms: u64,
    /// When sessions were last checked for expiry.
    swept_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    last_active_ms: u64,
    /// Every sequence at or below this is answered or given up.
    floor: u64,
    /// Responses of applied sequences above `floor`; `None` while being
    /// applied.
    responses: BTreeMap<u64, Option<Bytes>>,
}

/// Answers a node's own forwarding session keeps at least.
const MIN_IMPLICIT_CACHED: usize = 65_536;

/// How often, in log time, idle sessions are looked for.
const SWEEP_EVERY_MS: u64 = 1_000;

impl SessionTable {
    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Whether `id` is live.
    pub fn contains(&self, id: u64) -> bool {
        self.sessions.contains_key(&id)
    }

    /// Moves the clock to the leader time of an entry (never backwards:
    /// leaders' clocks differ) and expires idle sessions. Returns those
    /// that expired.
    pub fn advance(&mut self, time_ms: u64, limits: &SessionLimits) -> Vec<u64> {
        self.now_ms = self.now_ms.max(time_ms);
        if self.now_ms < self.swept_ms.saturating_add(SWEEP_EVERY_MS) {
            return Vec::new();
        }
        self.swept_ms = self.now_ms;
        let cutoff = self.now_ms.saturating_sub(limits.timeout_ms);
        let expired: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.last_active_ms < cutoff)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.sessions.remove(id);
        }
        expired
    }

    /// Opens session `id` (the index of its entry) at `time_ms`. Returns
    /// the sessions evicted to stay within the cap, least recently used
    /// first.
    pub fn open(&mut self, id: u64, time_ms: u64, limits: &SessionLimits) -> Vec<u64> {
        self.advance(time_ms, limits);
        let mut evicted = Vec::new();
        while !self.sessions.is_empty() && self.sessions.len() >= limits.max_sessions {
            let lru = self
                .sessions
                .iter()
                .min_by_key(|(id, s)| (s.last_active_ms, **id))
                .map(|(id, _)| *id);
            match lru {
                Some(victim) => {
                    self.sessions.remove(&victim);
                    evicted.push(victim);
                }
                None => break,
            }
        }
        self.sessions.insert(
            id,
            Session {
                last_active_ms: self.now_ms,
                ..Session::default()
            },
        );
        evicted
    }

    /// Decides about write `seq` of `session`, whose client has answers
    /// for every sequence up to `received`. An `implicit` session (a
    /// node's own, for the writes it forwards) is opened on first use.
    pub fn admit(
        &mut self,
        session: u64,
        seq: u64,
        received: u64,
        time_ms: u64,
        implicit: bool,
        limits: &SessionLimits,
    ) -> Admission {
        self.advance(time_ms, limits);
        if !self.sessions.contains_key(&session) {
            if !implicit {
                return Admission::Refused(SessionError::Unknown(session));
            }
            self.open(session, time_ms, limits);
        }
        let now = self.now_ms;
        let Some(s) = self.sessions.get_mut(&session) else {
            return Admission::Refused(SessionError::Unknown(session));
        };
        s.last_active_ms = now;
        if received > s.floor {
            s.floor = received;
            // Usually one or two answers: popping allocates nothing.
            while s
                .responses
                .first_key_value()
                .is_some_and(|(k, _)| *k <= received)
            {
                s.responses.pop_first();
            }
        }
        if seq <= s.floor {
            return Admission::Refused(SessionError::Stale {
                session,
                seq,
                floor: s.floor,
            });
        }
        if implicit {
            // A node's own session has no client to acknowledge a stuck
            // write: past the cap the oldest answers go, and the floor
            // rises with them, so a late copy of one is refused (the
            // forwarding node reports it as unknown), never applied.
            while s.responses.len() >= limits.max_cached.max(MIN_IMPLICIT_CACHED) {
                let Some((&oldest, _)) = s.responses.iter().find(|(_, r)| r.is_some()) else {
                    break;
                };
                s.responses.remove(&oldest);
                s.floor = s.floor.max(oldest);
            }
            if seq <= s.floor {
                return Admission::Refused(SessionError::Stale {
                    session,
                    seq,
                    floor: s.floor,
                });
            }
        }
        match s.responses.get(&seq) {
            Some(Some(response)) => Admission::Answered(response.clone()),
            Some(None) => Admission::Pending,
            None if !implicit && s.responses.len() >= limits.max_cached => {
                Admission::Refused(SessionError::TooManyUnacknowledged {
                    session,
                    limit: limits.max_cached,
                })
            }
            None => {
                s.responses.insert(seq, None);
                Admission::Apply
            }
        }
    }

    /// Records the response of an admitted write.
    pub fn record(&mut self, session: u64, seq: u64, response: Bytes) {
        if let Some(slot) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.responses.get_mut(&seq))
        {
            *slot = Some(response);
        }
    }

    /// Forgets an admitted write that was not applied after all (its
    /// command did not decode), so a retry is admitted again.
    pub fn forget(&mut self, session: u64, seq: u64) {
        if let Some(s) = self.sessions.get_mut(&session) {
            if s.responses.get(&seq) == Some(&None) {
                s.responses.remove(&seq);
            }
        }
    }

    /// The recorded response of `seq`, for entries that were `Pending`.
    pub fn response(&self, session: u64, seq: u64) -> Option<Bytes> {
        self.sessions.get(&session)?.responses.get(&seq)?.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SessionLimits = SessionLimits {
        timeout_ms: 60_000,
        max_sessions: 3,
        max_cached: 4,
    };

    fn applied(t: &mut SessionTable, session: u64, seq: u64, received: u64, now: u64) -> Admission {
        let a = t.admit(session, seq, received, now, false, &LIMITS);
        if a == Admission::Apply {
            t.record(session, seq, Bytes::from(format!("r{seq}")));
        }
        a
    }

    #[test]
    fn a_retried_write_is_answered_from_the_cache_not_applied_again() {
        let mut t = SessionTable::default();
        t.open(7, 1_000, &LIMITS);
        assert_eq!(applied(&mut t, 7, 1, 0, 1_000), Admission::Apply);
        assert_eq!(applied(&mut t, 7, 2, 0, 1_001), Admission::Apply);
        // Out of order is fine: 4 before 3.
        assert_eq!(applied(&mut t, 7, 4, 0, 1_002), Admission::Apply);
        assert_eq!(applied(&mut t, 7, 3, 0, 1_003), Admission::Apply);
        assert_eq!(
            applied(&mut t, 7, 2, 0, 1_004),
            Admission::Answered(Bytes::from("r2"))
        );
    }

    #[test]
    fn acknowledged_answers_are_trimmed_and_their_duplicates_refused() {
        let mut t = SessionTable::default();
        t.open(7, 0, &LIMITS);
        for seq in 1..=4 {
            assert_eq!(applied(&mut t, 7, seq, 0, 0), Admission::Apply);
        }
        // The cache is full until the client acknowledges.
        assert!(matches!(
            applied(&mut t, 7, 5, 0, 0),
            Admission::Refused(SessionError::TooManyUnacknowledged { .. })
        ));
        assert_eq!(applied(&mut t, 7, 5, 3, 0), Admission::Apply);
        assert!(matches!(
            applied(&mut t, 7, 2, 3, 0),
            Admission::Refused(SessionError::Stale { floor: 3, .. })
        ));
        assert_eq!(
            applied(&mut t, 7, 4, 3, 0),
            Admission::Answered(Bytes::from("r4"))
        );
    }

    #[test]
    fn a_duplicate_in_the_same_batch_waits_for_the_first() {
        let mut t = SessionTable::default();
        t.open(7, 0, &LIMITS);
        assert_eq!(t.admit(7, 1, 0, 0, false, &LIMITS), Admission::Apply);
        assert_eq!(t.admit(7, 1, 0, 0, false, &LIMITS), Admission::Pending);
        t.record(7, 1, Bytes::from("one"));
        assert_eq!(t.response(7, 1), Some(Bytes::from("one")));
        // A command that did not decode can be sent again.
        assert_eq!(t.admit(7, 2, 0, 0, false, &LIMITS), Admission::Apply);
        t.forget(7, 2);
        assert_eq!(t.admit(7, 2, 0, 0, false, &LIMITS), Admission::Apply);
    }

    #[test]
    fn sessions_expire_by_the_log_clock_and_the_least_recently_used_is_evicted() {
        let mut t = SessionTable::default();
        t.open(1, 0, &LIMITS);
        t.open(2, 10_000, &LIMITS);
        t.open(3, 20_000, &LIMITS);
        assert_eq!(applied(&mut t, 1, 1, 0, 30_000), Admission::Apply);
        // Four sessions do not fit in three: 2 is the least recently used.
        assert_eq!(t.open(4, 30_000, &LIMITS), vec![2]);
        assert_eq!(
            applied(&mut t, 2, 1, 0, 30_000),
            Admission::Refused(SessionError::Unknown(2))
        );
        // A clock that goes back (another leader) changes nothing.
        assert!(t.advance(5_000, &LIMITS).is_empty());
        // 3 was last active at 20 s: idle for over a minute at 81 s.
        assert_eq!(t.advance(81_000, &LIMITS), vec![3]);
        assert!(t.contains(1) && t.contains(4) && !t.contains(3));
        // An implicit session is opened on first use.
        assert_eq!(t.admit(9, 1, 0, 81_000, true, &LIMITS), Admission::Apply);
    }

    #[test]
    fn a_forwarding_session_drops_its_oldest_answers_and_refuses_their_copies() {
        let mut t = SessionTable::default();
        let cap = MIN_IMPLICIT_CACHED as u64;
        for seq in 1..=cap + 10 {
            let a = t.admit(9, seq, 0, 0, true, &LIMITS);
            assert_eq!(a, Admission::Apply, "seq {seq}");
            t.record(9, seq, Bytes::new());
        }
        // The ten oldest answers went; a late copy of one is refused.
        assert!(matches!(
            t.admit(9, 3, 0, 0, true, &LIMITS),
            Admission::Refused(SessionError::Stale { .. })
        ));
        assert_eq!(
            t.admit(9, cap, 0, 0, true, &LIMITS),
            Admission::Answered(Bytes::new())
        );
    }
}
