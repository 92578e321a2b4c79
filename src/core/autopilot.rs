//! Adding a voter safely (raft-autopilot's "stable server" rule): a new
//! member joins as a learner and becomes a voter only once it has stayed
//! caught up and in contact for a stabilization time — a node that is
//! still receiving a snapshot, or whose link flaps, would otherwise count
//! toward quorums it cannot serve.
//!
//! Time is explicit (milliseconds on the caller's clock).

/// How the leader sees the learner now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    /// The learner's last matching index.
    pub matched: u64,
    /// The leader's commit index: under load the leader's last index runs
    /// ahead of every follower by a pipeline's worth, so "caught up" means
    /// keeping up with what commits.
    pub last_index: u64,
    /// Since the learner last answered (`None`: never).
    pub heard_ms_ago: Option<u64>,
}

/// The thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// At most this many entries behind.
    pub max_lag: u64,
    /// Heard from within this long.
    pub contact_ms: u64,
    /// Healthy without a break for this long before promotion.
    pub stabilization_ms: u64,
    /// Give up if it has not been healthy for a stabilization time this
    /// long after the start.
    pub give_up_ms: u64,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep watching.
    Wait,
    /// Healthy for the whole stabilization time: promote it.
    Promote,
    /// Never caught up in time: this far behind at the end.
    Behind(u64),
    /// Caught up at times, but never for a whole stabilization time.
    Unstable {
        /// The longest healthy stretch seen.
        longest_ms: u64,
    },
}

/// Watches one learner.
#[derive(Clone, Debug)]
pub struct Stabilizer {
    rules: Rules,
    started_ms: u64,
    healthy_since: Option<u64>,
    longest_ms: u64,
    ever_healthy: bool,
    /// The commit index at the previous look.
    previous_commit: Option<u64>,
}

impl Stabilizer {
    /// Starts watching at `now_ms`.
    pub fn new(rules: Rules, now_ms: u64) -> Self {
        Stabilizer {
            rules,
            started_ms: now_ms,
            healthy_since: None,
            longest_ms: 0,
            ever_healthy: false,
            previous_commit: None,
        }
    }

    /// One look at the learner.
    pub fn observe(&mut self, now_ms: u64, health: Health) -> Verdict {
        // Caught up: within the lag of the commit index, or (under load,
        // where a pipeline's worth of entries is always in flight) past
        // what had committed at the previous look — keeping pace.
        let caught_up = health.matched.saturating_add(self.rules.max_lag) >= health.last_index
            || self
                .previous_commit
                .is_some_and(|previous| health.matched >= previous);
        self.previous_commit = Some(health.last_index);
        let in_contact = health
            .heard_ms_ago
            .is_some_and(|ago| ago <= self.rules.contact_ms);
        if caught_up && in_contact {
            let since = *self.healthy_since.get_or_insert(now_ms);
            self.ever_healthy = true;
            let stretch = now_ms.saturating_sub(since);
            self.longest_ms = self.longest_ms.max(stretch);
            if stretch >= self.rules.stabilization_ms {
                return Verdict::Promote;
            }
        } else {
            self.healthy_since = None;
        }
        if now_ms.saturating_sub(self.started_ms) < self.rules.give_up_ms {
            return Verdict::Wait;
        }
        if self.ever_healthy {
            Verdict::Unstable {
                longest_ms: self.longest_ms,
            }
        } else {
            Verdict::Behind(health.last_index.saturating_sub(health.matched))
        }
    }
}

/// Dead-voter cleanup (raft-autopilot's `CleanupDeadServers`): the voter
/// to remove now, if any — one not heard from for `dead_after_ms`
/// (`heard_ms_ago` gives `None` for never), never the leader `me`, and
/// only while the voters left would still number at least `min_voters`
/// and be a majority of those heard from. One at a time, the longest
/// silent first.
pub fn dead_voter(
    voters: &std::collections::BTreeSet<super::types::NodeId>,
    me: super::types::NodeId,
    heard_ms_ago: impl Fn(super::types::NodeId) -> Option<u64>,
    dead_after_ms: u64,
    min_voters: usize,
) -> Option<super::types::NodeId> {
    if voters.len() <= min_voters {
        return None;
    }
    let silence = |id| heard_ms_ago(id).unwrap_or(u64::MAX);
    let dead: Vec<_> = voters
        .iter()
        .copied()
        .filter(|id| *id != me && silence(*id) > dead_after_ms)
        .collect();
    let victim = dead.iter().copied().max_by_key(|id| silence(*id))?;
    // The rest must still make a quorum of the smaller configuration by
    // themselves, or the change could not commit (and removing would not
    // help anyone).
    let alive = voters.len() - dead.len();
    let after = voters.len() - 1;
    (alive > after / 2).then_some(victim)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        max_lag: 10,
        contact_ms: 300,
        stabilization_ms: 1_000,
        give_up_ms: 5_000,
    };

    fn health(matched: u64, ago: Option<u64>) -> Health {
        Health {
            matched,
            last_index: 100,
            heard_ms_ago: ago,
        }
    }

    #[test]
    fn a_learner_is_promoted_after_a_whole_healthy_stabilization_time() {
        let mut s = Stabilizer::new(RULES, 0);
        assert_eq!(s.observe(0, health(95, Some(10))), Verdict::Wait);
        assert_eq!(s.observe(999, health(100, Some(10))), Verdict::Wait);
        assert_eq!(s.observe(1_000, health(100, Some(10))), Verdict::Promote);
    }

    #[test]
    fn a_learner_a_pipeline_behind_under_load_is_caught_up_when_it_keeps_pace() {
        // Found by the snapshot bench: at 50,000 writes/s, 256-entry
        // batches in flight put a healthy learner hundreds of entries
        // behind the commit index at any instant, and it was never
        // promoted. It keeps pace: each look finds it past what had
        // committed at the previous look.
        let mut s = Stabilizer::new(RULES, 0);
        let mut commit = 10_000;
        let mut verdict = Verdict::Wait;
        for now in (0..=1_050).step_by(50) {
            let h = Health {
                matched: commit - 300,
                last_index: commit,
                heard_ms_ago: Some(5),
            };
            verdict = s.observe(now, h);
            commit += 2_500;
        }
        assert_eq!(verdict, Verdict::Promote);
        // One slower than the writes, falling further behind at every
        // look, is not.
        let mut s = Stabilizer::new(RULES, 0);
        let (mut matched, mut commit) = (9_700, 10_000);
        for now in (0..=5_000).step_by(50) {
            let h = Health {
                matched,
                last_index: commit,
                heard_ms_ago: Some(5),
            };
            verdict = s.observe(now, h);
            matched += 2_000;
            commit += 2_500;
        }
        assert!(
            matches!(verdict, Verdict::Unstable { longest_ms } if longest_ms < 1_000),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_break_in_health_starts_the_stabilization_over() {
        let mut s = Stabilizer::new(RULES, 0);
        s.observe(0, health(100, Some(10)));
        // Out of contact for a moment: the clock starts again.
        assert_eq!(s.observe(900, health(100, Some(400))), Verdict::Wait);
        assert_eq!(s.observe(1_500, health(100, Some(10))), Verdict::Wait);
        assert_eq!(s.observe(2_499, health(100, Some(10))), Verdict::Wait);
        assert_eq!(s.observe(2_500, health(100, Some(10))), Verdict::Promote);
    }

    #[test]
    fn a_learner_that_never_catches_up_is_given_up_with_its_lag() {
        let mut s = Stabilizer::new(RULES, 0);
        assert_eq!(s.observe(100, health(20, Some(10))), Verdict::Wait);
        assert_eq!(s.observe(5_000, health(40, Some(10))), Verdict::Behind(60));
        let mut silent = Stabilizer::new(RULES, 0);
        assert_eq!(silent.observe(5_000, health(100, None)), Verdict::Behind(0));
    }

    #[test]
    fn a_flapping_learner_is_given_up_as_unstable() {
        let mut s = Stabilizer::new(RULES, 0);
        for t in (0..5_000).step_by(100) {
            let ago = if (t / 100) % 8 == 7 { 500 } else { 10 };
            assert_eq!(
                s.observe(t, health(100, Some(ago))),
                Verdict::Wait,
                "at {t}"
            );
        }
        assert_eq!(
            s.observe(5_000, health(100, Some(500))),
            Verdict::Unstable { longest_ms: 600 }
        );
    }

    #[test]
    fn dead_voters_go_one_at_a_time_down_to_the_minimum() {
        let voters: std::collections::BTreeSet<u64> = [1, 2, 3, 4, 5].into();
        let heard = |dead: &'static [u64]| {
            move |id: u64| {
                if dead.contains(&id) {
                    Some(5_000)
                } else {
                    Some(10)
                }
            }
        };
        assert_eq!(dead_voter(&voters, 1, heard(&[]), 1_000, 3), None);
        assert_eq!(dead_voter(&voters, 1, heard(&[5]), 1_000, 3), Some(5));
        // Never the leader, whatever it thinks of itself.
        assert_eq!(dead_voter(&voters, 5, heard(&[5]), 1_000, 3), None);
        // Not below the minimum.
        let three: std::collections::BTreeSet<u64> = [1, 2, 3].into();
        assert_eq!(dead_voter(&three, 1, heard(&[3]), 1_000, 3), None);
        // Not when those left could not commit the change by themselves.
        assert_eq!(dead_voter(&voters, 1, heard(&[3, 4, 5]), 1_000, 3), None);
        // Never heard counts as silent.
        assert_eq!(
            dead_voter(&voters, 1, |id| (id != 4).then_some(10), 1_000, 3),
            Some(4)
        );
    }
}
