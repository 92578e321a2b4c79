//! Client sessions (dissertation §6.3): what makes a retried write apply
//! at most once. Every input comes from a committed log entry — the
//! session tag, the client's acknowledgement watermark and the leader's
//! clock — so every node holds the same table after the same entries, and
//! the table travels in snapshots.

mod responses;

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use responses::Responses;

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

/// A leader's clock for the log (the time it stamps on session entries,
/// which expires idle sessions on every node). A leader never reads the
/// wall clock for it: its stamps move on from the latest log time its
/// node has applied by the time the leader has itself seen passing on
/// its monotonic clock. So a leader whose wall clock jumps (or runs a
/// day ahead) cannot expire every session at once; at worst a leader
/// that starts behind the log's clock stamps low, and sessions live a
/// little longer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogClock {
    base_ms: u64,
    /// The leader's monotonic time when `base_ms` was taken.
    at_ms: u64,
}

impl LogClock {
    /// The log time to stamp at `now_ms` (the leader's own monotonic
    /// milliseconds), given the latest log time applied on its node.
    pub fn stamp(&mut self, applied_ms: u64, now_ms: u64) -> u64 {
        let own = self
            .base_ms
            .saturating_add(now_ms.saturating_sub(self.at_ms));
        if applied_ms > own {
            // Another leader's stamps (bounded the same way) are ahead:
            // continue from them.
            self.base_ms = applied_ms;
            self.at_ms = now_ms;
            return applied_ms;
        }
        own
    }
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
    /// Nodes' forwarding sessions that expired: id → (floor, when). A
    /// forwarding session is reopened by its node's next write, so its
    /// floor stays behind: a late network copy of a write it had sent
    /// before is refused, never applied again.
    #[serde(default)]
    retired_implicit: BTreeMap<u64, (u64, u64)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    last_active_ms: u64,
    /// Every sequence at or below this is answered or given up.
    floor: u64,
    /// Responses of applied sequences above `floor`; `None` while being
    /// applied.
    responses: Responses,
    /// A node's own forwarding session: opened by its first write, never
    /// evicted by the cap (strangers cannot push it out), and remembered
    /// by its floor when it expires.
    #[serde(default)]
    implicit: bool,
}

impl Session {
    /// Every sequence at or below this may have been applied.
    fn highest(&self) -> u64 {
        self.responses
            .last_seq()
            .map_or(self.floor, |seq| seq.max(self.floor))
    }
}

/// Answers a node's own forwarding session keeps at least.
const MIN_IMPLICIT_CACHED: usize = 65_536;

/// How often, in log time, idle sessions are looked for.
const SWEEP_EVERY_MS: u64 = 1_000;

/// Expired forwarding sessions whose floors are kept (the oldest goes
/// first). One is opened per run of a node, so this covers thousands of
/// restarts.
const MAX_RETIRED_IMPLICIT: usize = 4_096;

impl SessionTable {
    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The log's clock: the latest leader time applied (ms).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
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
            if let Some(s) = self.sessions.remove(id) {
                if s.implicit {
                    self.retire_implicit(*id, s.highest());
                }
            }
        }
        expired
    }

    fn retire_implicit(&mut self, id: u64, floor: u64) {
        if self.retired_implicit.len() >= MAX_RETIRED_IMPLICIT {
            let oldest = self
                .retired_implicit
                .iter()
                .min_by_key(|(id, (_, at))| (*at, **id))
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.retired_implicit.remove(&oldest);
            }
        }
        self.retired_implicit.insert(id, (floor, self.now_ms));
    }

    /// Opens session `id` (the index of its entry) at `time_ms`. Returns
    /// the sessions evicted to stay within the cap, least recently used
    /// first.
    pub fn open(&mut self, id: u64, time_ms: u64, limits: &SessionLimits) -> Vec<u64> {
        self.advance(time_ms, limits);
        let mut evicted = Vec::new();
        // Clients' sessions only: nodes' forwarding sessions are few (one
        // per run of a node) and must not be pushed out by strangers.
        let mut explicit = self.sessions.values().filter(|s| !s.implicit).count();
        while explicit > 0 && explicit >= limits.max_sessions {
            let lru = self
                .sessions
                .iter()
                .filter(|(_, s)| !s.implicit)
                .min_by_key(|(id, s)| (s.last_active_ms, **id))
                .map(|(id, _)| *id);
            match lru {
                Some(victim) => {
                    self.sessions.remove(&victim);
                    evicted.push(victim);
                    explicit -= 1;
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
        let now = self.now_ms;
        // One search of the table per write.
        let s = match self.sessions.entry(session) {
            Entry::Occupied(found) => found.into_mut(),
            Entry::Vacant(_) if !implicit => {
                return Admission::Refused(SessionError::Unknown(session))
            }
            // A node's forwarding session opens on its first write, at the
            // floor it left if it expired before.
            Entry::Vacant(slot) => slot.insert(Session {
                floor: self
                    .retired_implicit
                    .remove(&session)
                    .map_or(0, |(floor, _)| floor),
                implicit: true,
                ..Session::default()
            }),
        };
        s.last_active_ms = now;
        if received > s.floor {
            s.floor = received;
            s.responses.drop_upto(received);
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
                let Some(oldest) = s.responses.oldest_answered() else {
                    break;
                };
                s.responses.remove(oldest);
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
        match s.responses.get(seq) {
            Some(Some(response)) => Admission::Answered(response.clone()),
            Some(None) => Admission::Pending,
            None if !implicit && s.responses.len() >= limits.max_cached => {
                Admission::Refused(SessionError::TooManyUnacknowledged {
                    session,
                    limit: limits.max_cached,
                })
            }
            None => {
                s.responses.insert_pending(seq);
                Admission::Apply
            }
        }
    }

    /// Records the response of an admitted write.
    pub fn record(&mut self, session: u64, seq: u64, response: Bytes) {
        if let Some(slot) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.responses.get_mut(seq))
        {
            *slot = Some(response);
        }
    }

    /// Forgets an admitted write that was not applied after all (its
    /// command did not decode), so a retry is admitted again.
    pub fn forget(&mut self, session: u64, seq: u64) {
        if let Some(s) = self.sessions.get_mut(&session) {
            if s.responses.get(seq) == Some(&None) {
                s.responses.remove(seq);
            }
        }
    }

    /// The recorded response of `seq`, while the session holds it.
    pub fn response(&self, session: u64, seq: u64) -> Option<Bytes> {
        self.sessions.get(&session)?.responses.get(seq)?.clone()
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

    /// Review finding 2 (2026-12): a node's forwarding session that
    /// expired (or was evicted) was reopened empty by its next write, so a
    /// late network copy of a write it had already applied was applied
    /// again.
    #[test]
    fn an_expired_forwarding_session_keeps_its_floor() {
        let mut t = SessionTable::default();
        for seq in 1..=3 {
            assert_eq!(t.admit(9, seq, 0, 0, true, &LIMITS), Admission::Apply);
            t.record(9, seq, Bytes::new());
        }
        // Idle past the timeout (here a clock far ahead): expired.
        assert_eq!(t.advance(LIMITS.timeout_ms + 5_000, &LIMITS), vec![9]);
        assert!(!t.contains(9));
        // A late copy of seq 2 is refused, not applied again.
        assert!(matches!(
            t.admit(9, 2, 0, LIMITS.timeout_ms + 6_000, true, &LIMITS),
            Admission::Refused(SessionError::Stale { .. })
        ));
        // The node's next writes go on.
        assert_eq!(
            t.admit(9, 4, 0, LIMITS.timeout_ms + 6_000, true, &LIMITS),
            Admission::Apply
        );
    }

    #[test]
    fn clients_opening_sessions_never_evict_a_forwarding_session() {
        let mut t = SessionTable::default();
        assert_eq!(t.admit(9, 1, 0, 0, true, &LIMITS), Admission::Apply);
        t.record(9, 1, Bytes::new());
        for id in 100..110 {
            let evicted = t.open(id, 1, &LIMITS);
            assert!(!evicted.contains(&9), "evicted the forwarding session");
        }
        assert!(t.contains(9));
        assert_eq!(t.len(), LIMITS.max_sessions + 1);
        assert_eq!(
            t.admit(9, 1, 0, 2, true, &LIMITS),
            Admission::Answered(Bytes::new())
        );
    }

    #[test]
    fn a_table_written_before_floors_existed_still_loads() {
        // The fields added for forwarding sessions default when absent.
        #[derive(Serialize)]
        struct OldSession {
            last_active_ms: u64,
            floor: u64,
            responses: BTreeMap<u64, Option<Bytes>>,
        }
        #[derive(Serialize)]
        struct OldTable {
            sessions: BTreeMap<u64, OldSession>,
            now_ms: u64,
            swept_ms: u64,
        }
        let old = OldTable {
            sessions: BTreeMap::from([(
                7,
                OldSession {
                    last_active_ms: 5,
                    floor: 2,
                    responses: BTreeMap::new(),
                },
            )]),
            now_ms: 5,
            swept_ms: 0,
        };
        let bytes = rmp_serde::to_vec(&old).unwrap();
        let t: SessionTable = rmp_serde::from_slice(&bytes).unwrap();
        assert!(t.contains(7));
    }

    #[test]
    fn a_leader_stamps_the_time_it_saw_pass_not_its_wall_clock() {
        let mut c = LogClock::default();
        // The log stood at 50 s when this leader took over at its own 7 s.
        assert_eq!(c.stamp(50_000, 7_000), 50_000);
        // Its stamps move with its own monotonic clock only.
        assert_eq!(c.stamp(50_000, 8_500), 51_500);
        // Applied stamps behind its own change nothing.
        assert_eq!(c.stamp(10_000, 9_000), 52_000);
        // Applied stamps ahead of it (another leader's): continue there.
        assert_eq!(c.stamp(60_000, 9_000), 60_000);
        assert_eq!(c.stamp(60_000, 10_000), 61_000);
    }
}
