//! When an idle group stops sending heartbeats (multi-raft quiescence,
//! as in CockroachDB and dragonboat). A group on a host with nothing to
//! do — no proposals, reads or changes in flight, every entry committed,
//! every member holding the whole log — goes quiet: its leader sends no
//! heartbeats and its followers run no election timers. The hosts'
//! heartbeat to each other stands in for them: a follower's host that
//! stops hearing the leader's host wakes the group, which then elects as
//! usual. Anything the group must act on wakes it first.
//!
//! Quiescence changes timers only, never what is voted, appended or
//! committed, so it cannot lose or reorder an entry; the worst a wrong
//! wake-up does is an election.

/// What the leader knows of its group when it looks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Proposals, reads, a membership change or a transfer in flight.
    pub work_in_flight: bool,
    /// The leader's last index.
    pub last_index: u64,
    /// The commit index.
    pub commit_index: u64,
    /// How far the leader's own log is durable.
    pub self_durable: u64,
    /// Every other member's match index.
    pub peers_matched: Vec<u64>,
}

impl Activity {
    /// Nothing to do and nothing to tell anyone.
    pub fn idle(&self) -> bool {
        !self.work_in_flight
            && self.commit_index == self.last_index
            && self.self_durable >= self.last_index
            && self.peers_matched.iter().all(|m| *m == self.last_index)
    }
}

/// The leader's quiescence state: quiet after `after` idle looks in a row.
#[derive(Clone, Debug)]
pub struct Quiescence {
    after: u32,
    idle_looks: u32,
    quiet: bool,
}

impl Quiescence {
    /// Quiet after `after` (at least 1) consecutive idle looks.
    pub fn new(after: u32) -> Self {
        Quiescence {
            after: after.max(1),
            idle_looks: 0,
            quiet: false,
        }
    }

    /// One look at the group; true when it should go quiet now.
    pub fn look(&mut self, activity: &Activity) -> bool {
        if self.quiet {
            return false;
        }
        if !activity.idle() {
            self.idle_looks = 0;
            return false;
        }
        self.idle_looks += 1;
        if self.idle_looks >= self.after {
            self.quiet = true;
        }
        self.quiet
    }

    /// Something woke the group; true if it was quiet.
    pub fn wake(&mut self) -> bool {
        self.idle_looks = 0;
        std::mem::replace(&mut self.quiet, false)
    }

    /// Whether the group is quiet.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle() -> Activity {
        Activity {
            work_in_flight: false,
            last_index: 7,
            commit_index: 7,
            self_durable: 7,
            peers_matched: vec![7, 7],
        }
    }

    #[test]
    fn only_a_group_with_everything_committed_everywhere_is_idle() {
        assert!(idle().idle());
        let busy = [
            Activity {
                work_in_flight: true,
                ..idle()
            },
            Activity {
                commit_index: 6,
                ..idle()
            },
            Activity {
                self_durable: 6,
                ..idle()
            },
            // A follower behind still needs entries (or a snapshot).
            Activity {
                peers_matched: vec![7, 5],
                ..idle()
            },
        ];
        for activity in busy {
            assert!(!activity.idle(), "{activity:?}");
        }
    }

    #[test]
    fn quiet_after_consecutive_idle_looks_and_awake_after_a_wake() {
        let mut q = Quiescence::new(2);
        assert!(!q.look(&idle()));
        // Activity in between starts the count over.
        assert!(!q.look(&Activity {
            work_in_flight: true,
            ..idle()
        }));
        assert!(!q.look(&idle()));
        assert!(q.look(&idle()));
        assert!(q.is_quiet());
        // Already quiet: no second transition.
        assert!(!q.look(&idle()));
        assert!(q.wake());
        assert!(!q.wake());
        assert!(!q.is_quiet());
    }
}
