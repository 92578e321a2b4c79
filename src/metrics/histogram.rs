//! Distributions recorded on the hot path: power-of-two buckets in
//! relaxed atomics, so recording a value costs one `leading_zeros` and
//! three uncontended atomic adds, takes no lock and allocates nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Buckets: `[0, 1]`, `(1, 2]`, `(2, 4]`, … `(2^30, 2^31]`, then overflow.
const BUCKETS: usize = 33;

/// A histogram written by the actors and read when someone asks.
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    buckets: [AtomicU64; BUCKETS],
    sum: AtomicU64,
    count: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    /// Records one value.
    pub(crate) fn record(&self, value: u64) {
        self.buckets[bucket_of(value)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Records `value` `n` times.
    pub(crate) fn record_n(&self, value: u64, n: u64) {
        if n == 0 {
            return;
        }
        self.buckets[bucket_of(value)].fetch_add(n, Ordering::Relaxed);
        self.sum
            .fetch_add(value.saturating_mul(n), Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    /// Records a duration in microseconds.
    pub(crate) fn record_duration(&self, elapsed: Duration) {
        self.record(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    pub(crate) fn read(&self) -> Histogram {
        let mut cumulative = 0;
        let buckets = self
            .buckets
            .iter()
            .take(BUCKETS - 1)
            .enumerate()
            .map(|(i, b)| {
                cumulative += b.load(Ordering::Relaxed);
                (1u64 << i, cumulative)
            })
            .collect();
        cumulative += self.buckets[BUCKETS - 1].load(Ordering::Relaxed);
        Histogram {
            buckets,
            // Read after the buckets: a value recorded in between shows in
            // the count, never in a bucket without its count.
            count: cumulative.max(self.count.load(Ordering::Relaxed)),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

fn bucket_of(value: u64) -> usize {
    if value <= 1 {
        0
    } else {
        // The smallest i with value <= 2^i.
        let i = (64 - (value - 1).leading_zeros()) as usize;
        i.min(BUCKETS - 1)
    }
}

/// A distribution of values since the node started: latencies in
/// microseconds, sizes in entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// `(upper bound, values at or below it)`, bounds doubling from 1;
    /// values above the last bound count only in `count`.
    pub buckets: Vec<(u64, u64)>,
    /// Sum of the values.
    pub sum: u64,
    /// Number of values.
    pub count: u64,
}

impl Histogram {
    /// The upper bound of the bucket holding the `q`-quantile (`0.0..=1.0`)
    /// — at most twice the true value; `None` when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        Some(
            self.buckets
                .iter()
                .find(|(_, below)| *below >= rank)
                .map_or(u64::MAX, |(bound, _)| *bound),
        )
    }

    /// The mean value, `None` when nothing was recorded.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }
}

/// The distributions a node records ([`crate::Raft::histograms`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histograms {
    /// Leader: microseconds from appending a batch of entries to their
    /// commit, one value per entry.
    pub commit_latency_us: Histogram,
    /// Microseconds from learning a commit to applying it, per batch
    /// applied.
    pub apply_latency_us: Histogram,
    /// Microseconds the log writer took to make one batch durable
    /// (writes and fsync).
    pub fsync_latency_us: Histogram,
    /// Entries per durable batch (group commit).
    pub write_batch_entries: Histogram,
    /// Entries per AppendEntries sent, as leader (heartbeats not counted).
    pub append_batch_entries: Histogram,
    /// Microseconds to build and store a snapshot.
    pub snapshot_build_us: Histogram,
    /// Leader: microseconds to send a snapshot to a follower, first chunk
    /// to installed.
    pub snapshot_transfer_us: Histogram,
    /// Microseconds to restore the state machine from a received snapshot.
    pub snapshot_restore_us: Histogram,
}

/// Where the actors record [`Histograms`].
#[derive(Debug, Default)]
pub(crate) struct AtomicHistograms {
    pub commit_latency_us: AtomicHistogram,
    pub apply_latency_us: AtomicHistogram,
    pub fsync_latency_us: AtomicHistogram,
    pub write_batch_entries: AtomicHistogram,
    pub append_batch_entries: AtomicHistogram,
    pub snapshot_build_us: AtomicHistogram,
    pub snapshot_transfer_us: AtomicHistogram,
    pub snapshot_restore_us: AtomicHistogram,
}

impl AtomicHistograms {
    pub(crate) fn read(&self) -> Histograms {
        Histograms {
            commit_latency_us: self.commit_latency_us.read(),
            apply_latency_us: self.apply_latency_us.read(),
            fsync_latency_us: self.fsync_latency_us.read(),
            write_batch_entries: self.write_batch_entries.read(),
            append_batch_entries: self.append_batch_entries.read(),
            snapshot_build_us: self.snapshot_build_us.read(),
            snapshot_transfer_us: self.snapshot_transfer_us.read(),
            snapshot_restore_us: self.snapshot_restore_us.read(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_smallest_power_of_two_at_or_above_them() {
        let h = AtomicHistogram::default();
        for v in [0, 1, 2, 3, 4, 5, 1000, u64::MAX] {
            h.record(v);
        }
        let read = h.read();
        let below = |bound: u64| read.buckets.iter().find(|(b, _)| *b == bound).unwrap().1;
        assert_eq!(below(1), 2); // 0, 1
        assert_eq!(below(2), 3); // 2
        assert_eq!(below(4), 5); // 3, 4
        assert_eq!(below(8), 6); // 5
        assert_eq!(below(1024), 7); // 1000
        assert_eq!(read.buckets.last().unwrap().1, 7, "u64::MAX overflows");
        assert_eq!(read.count, 8);
    }

    #[test]
    fn quantiles_are_bucket_bounds() {
        let h = AtomicHistogram::default();
        assert_eq!(h.read().quantile(0.5), None);
        for v in 1..=100 {
            h.record(v);
        }
        let read = h.read();
        assert_eq!(read.quantile(0.5), Some(64));
        assert_eq!(read.quantile(0.99), Some(128));
        assert_eq!(read.quantile(0.0), Some(1));
        assert_eq!(read.mean(), Some(50.5));
    }
}
