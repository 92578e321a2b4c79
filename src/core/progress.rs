//! The leader's view of one follower: how far it matches, what to send next,
//! and how many AppendEntries may be in flight.

use std::collections::VecDeque;

/// How the leader is currently talking to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Finding the match point: one AppendEntries at a time.
    Probe,
    /// The follower matches: stream with several AppendEntries in flight.
    Replicate,
}

/// Replication progress of one follower (etcd's `Progress`). Time is passed
/// in as a plain number (milliseconds on any monotonic clock).
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be stored on the follower.
    pub match_index: u64,
    /// Next index to send.
    pub next_index: u64,
    /// Current mode.
    pub state: ProgressState,
    /// Last index of each AppendEntries in flight, with the time it was sent.
    inflight: VecDeque<(u64, u64)>,
    max_inflight: usize,
}

impl Progress {
    /// A fresh progress for a leader whose last index is `last_index`.
    pub fn new(last_index: u64, max_inflight: usize) -> Self {
        Progress {
            match_index: 0,
            next_index: last_index + 1,
            state: ProgressState::Probe,
            inflight: VecDeque::new(),
            max_inflight: max_inflight.max(1),
        }
    }

    /// Whether another AppendEntries with entries may be sent now.
    pub fn can_send(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.inflight.is_empty(),
            ProgressState::Replicate => self.inflight.len() < self.max_inflight,
        }
    }

    /// Number of AppendEntries in flight.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Records that entries up to `last_index` were sent at `now`.
    pub fn sent(&mut self, last_index: u64, now: u64) {
        self.inflight.push_back((last_index, now));
        if self.state == ProgressState::Replicate {
            // Optimistically continue after what is in flight.
            self.next_index = last_index + 1;
        }
    }

    /// The follower stores everything up to `index`. Returns whether this
    /// was news (a stale or duplicated reply is not).
    pub fn on_success(&mut self, index: u64) -> bool {
        while self
            .inflight
            .front()
            .is_some_and(|(last, _)| *last <= index)
        {
            self.inflight.pop_front();
        }
        if index <= self.match_index && self.state == ProgressState::Replicate {
            return false;
        }
        let news = index > self.match_index;
        self.match_index = self.match_index.max(index);
        if self.state == ProgressState::Probe {
            self.state = ProgressState::Replicate;
            self.inflight.clear();
            self.next_index = self.match_index + 1;
        } else {
            self.next_index = self.next_index.max(self.match_index + 1);
        }
        news
    }

    /// The follower refused entries after `rejected_prev`; the leader's log
    /// suggests resuming at `suggested_next`. Returns whether the refusal
    /// was acted on (stale refusals are ignored).
    pub fn on_reject(&mut self, rejected_prev: u64, suggested_next: u64) -> bool {
        if rejected_prev < self.match_index {
            return false; // older than what we know matches
        }
        if self.state == ProgressState::Probe && rejected_prev.saturating_add(1) != self.next_index
        {
            return false; // answers a probe we no longer wait for
        }
        self.state = ProgressState::Probe;
        self.inflight.clear();
        // Always move back, never below what is known to match.
        self.next_index = suggested_next
            .min(rejected_prev)
            .max(self.match_index.saturating_add(1));
        true
    }

    /// If the oldest AppendEntries in flight was sent before `deadline`, its
    /// reply is considered lost: go back to probing from the match point.
    pub fn expire(&mut self, deadline: u64) -> bool {
        if self.inflight.front().is_some_and(|(_, at)| *at < deadline) {
            self.state = ProgressState::Probe;
            self.inflight.clear();
            self.next_index = self.match_index + 1;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sends_one_at_a_time_then_pipelines() {
        let mut p = Progress::new(10, 3);
        assert!(p.can_send());
        p.sent(10, 0);
        assert!(!p.can_send(), "probe waits for the answer");
        assert!(p.on_success(10));
        assert_eq!(p.state, ProgressState::Replicate);
        for i in 0..3 {
            assert!(p.can_send());
            p.sent(11 + i, 1);
        }
        assert!(!p.can_send(), "window of 3 is full");
        assert_eq!(p.next_index, 14);
        p.on_success(12);
        assert_eq!(p.inflight(), 1);
        assert!(!p.on_success(11), "a reordered older reply is not news");
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(10, 3);
        p.sent(10, 0);
        assert!(p.on_reject(10, 5));
        assert_eq!(p.next_index, 5);
        // A duplicate of the same refusal no longer matches the probe.
        assert!(!p.on_reject(10, 3));
        assert_eq!(p.next_index, 5);
        p.sent(7, 1);
        p.on_success(7);
        assert!(!p.on_reject(4, 1), "refusal older than the match point");
        assert_eq!(p.match_index, 7);
    }

    #[test]
    fn a_refusal_at_the_end_of_the_index_space_does_not_overflow() {
        let mut p = Progress::new(10, 3);
        p.sent(10, 0);
        assert!(!p.on_reject(u64::MAX, 1), "answers no probe of ours");
        p.on_success(10);
        assert!(p.on_reject(u64::MAX, 1));
        assert_eq!(p.next_index, 11, "never below the match point");
    }

    #[test]
    fn lost_replies_fall_back_to_probing() {
        let mut p = Progress::new(0, 4);
        p.sent(0, 0);
        p.on_success(0);
        p.sent(5, 100);
        p.sent(9, 110);
        assert!(!p.expire(50));
        assert!(p.expire(105));
        assert_eq!(p.state, ProgressState::Probe);
        assert_eq!(p.next_index, 1);
        assert!(p.can_send());
    }
}
