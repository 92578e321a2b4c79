//! Commit latency as the leader sees it: from appending a batch of
//! entries to the commit index passing them. One queue entry per append
//! (not per write), so the cost per write is a share of one push and pop.

use std::collections::VecDeque;

use tokio::time::Instant;

use crate::metrics::histogram::AtomicHistogram;

/// Appended batches not yet committed, oldest first.
#[derive(Debug, Default)]
pub(super) struct CommitClock {
    pending: VecDeque<Batch>,
}

#[derive(Debug)]
struct Batch {
    first: u64,
    last: u64,
    appended: Instant,
}

/// Bound on batches tracked: past it (a leader that cannot commit) the
/// oldest are dropped, so memory stays bounded; their latency is lost.
const MAX_PENDING: usize = 4096;

impl CommitClock {
    /// Entries `first..=last` were appended at `now`.
    pub(super) fn appended(&mut self, first: u64, last: u64, now: Instant) {
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(Batch {
            first,
            last,
            appended: now,
        });
    }

    /// The commit index reached `commit` at `now`: records one latency
    /// per newly committed entry.
    pub(super) fn committed(&mut self, commit: u64, now: Instant, into: &AtomicHistogram) {
        while let Some(batch) = self.pending.front_mut() {
            if batch.first > commit {
                break;
            }
            let upto = batch.last.min(commit);
            let latency = now.saturating_duration_since(batch.appended);
            into.record_n(
                u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
                upto - batch.first + 1,
            );
            if upto == batch.last {
                self.pending.pop_front();
            } else {
                batch.first = upto + 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_entry_counts_once_with_its_own_batch_time() {
        let h = AtomicHistogram::default();
        let mut clock = CommitClock::default();
        let t0 = Instant::now();
        clock.appended(1, 3, t0);
        clock.appended(4, 4, t0 + Duration::from_micros(100));
        // A commit in the middle of the first batch.
        clock.committed(2, t0 + Duration::from_micros(10), &h);
        assert_eq!(h.read().count, 2);
        clock.committed(4, t0 + Duration::from_micros(300), &h);
        let read = h.read();
        assert_eq!(read.count, 4);
        // 10 + 10 + 300 + 200 µs.
        assert_eq!(read.sum, 520);
        // Nothing left to count.
        clock.committed(10, t0 + Duration::from_micros(900), &h);
        assert_eq!(h.read().count, 4);
    }
}
